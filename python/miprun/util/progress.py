"""Progress bars that appear only when asked for and when stderr is a terminal (never in logs or CI)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_enabled", "progress_bar"]


def progress_enabled(progress: bool) -> bool:
    """Progress bars only when asked for and when stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, progress: bool, *, desc: str = "blocks", unit: str = "block"):
    """A tqdm bar, or a no-op stand-in when progress is off or stderr is not a terminal."""
    if not progress_enabled(progress):
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, leave=False)
