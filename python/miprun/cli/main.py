"""The ``miprun`` command: one subcommand per module (score, prune, demo, eval, compare, mi).

User errors (bad options, missing files, refused outputs) print one line to stderr and
exit with status 2; nothing is written when a check fails. Ctrl-C exits with 130 and
SIGTERM with 143, after removing any unfinished output.
"""

from __future__ import annotations

import sys

from miprun.cli import compare, demo, evaluate, mi, prune, score
from miprun.cli.common import OPENED, Parser
from miprun.output.guard import Terminated, sigterm_raises
from miprun.util.messages import install_warning_format

__all__ = ["main", "build_parser"]

# Errors that mean "the input was wrong": shown as one line, exit status 2.
USER_ERRORS = (ValueError, OSError, ImportError)


def build_parser() -> Parser:
    """The argument parser of the ``miprun`` command."""
    parser = Parser(prog="miprun", description="Depth pruning of LLMs by mutual information.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (score, prune, demo, evaluate, compare, mi):
        command.register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text


def _interruption(exc: BaseException) -> type | None:
    """KeyboardInterrupt or Terminated behind ``exc``, when some library wrapped it in another error.

    A signal lands wherever Python is: inside a class body being created (a lazy
    ``import matplotlib``), Python re-raises it as a RuntimeError whose cause is the signal's.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            return type(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the ``miprun`` command; returns the exit status (0 ok, 2 user error, 130/143 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the error
        return int(exc.code or 0)
    install_warning_format()
    try:
        with sigterm_raises():
            return int(args.func(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - sorted below; anything else is re-raised
        signal_seen = _interruption(exc)
        if signal_seen is KeyboardInterrupt:
            print("miprun: interrupted; unfinished output removed", file=sys.stderr)
            return 130
        if signal_seen is Terminated:
            print("miprun: terminated (SIGTERM); unfinished output removed", file=sys.stderr)
            return 143
        if isinstance(exc, USER_ERRORS):
            print(f"miprun: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        raise
    finally:
        while OPENED:
            OPENED.pop().close()


if __name__ == "__main__":
    sys.exit(main())
