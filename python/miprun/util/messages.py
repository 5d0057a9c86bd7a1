"""How miprun's messages look on the terminal."""

from __future__ import annotations

import warnings

__all__ = ["install_warning_format", "format_warning"]


def format_warning(message, category, filename, lineno, line=None) -> str:
    """``miprun: warning: <message>`` on one line: no file name, line number or source line."""
    text = " ".join(str(message).split()) or category.__name__
    return f"miprun: warning: {text}\n"


def install_warning_format():
    """Make :mod:`warnings` print each warning as one line ``miprun: warning: <message>``.

    Returns
    -------
    callable
        The formatter it replaced, to put back with ``warnings.formatwarning = previous``.
    """
    previous = warnings.formatwarning
    warnings.formatwarning = format_warning
    return previous
