"""A signal wrapped by a library in another error (e.g. inside a lazy import) still exits like the signal."""

from __future__ import annotations

import pytest

from miprun.cli import demo
from miprun.cli.main import main
from miprun.output.guard import Terminated


def _wrapped(signal_error: BaseException):
    def run(args):
        try:
            raise signal_error
        except BaseException as exc:  # what Python does to an exception raised in __set_name__
            raise RuntimeError("Error calling __set_name__ on 'x' instance 'y' in 'Axis'") from exc
    return run


@pytest.mark.parametrize("signal_error, code, said", [(Terminated("terminated by signal 15"), 143, "terminated"),
                                                      (KeyboardInterrupt(), 130, "interrupted")])
def test_a_wrapped_signal_exits_like_the_signal(monkeypatch, capsys, signal_error, code, said):
    monkeypatch.setattr(demo, "run", _wrapped(signal_error))
    assert main(["demo", "--quiet"]) == code
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_other_errors_are_not_taken_for_a_signal(monkeypatch):
    def run(args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(demo, "run", run)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["demo", "--quiet"])
