"""What every options object shares: frozen, validated once at construction, serialised and read back.

Each step of the pipeline has one options dataclass (calibration, execution, scoring,
selection, output). They are frozen so a value checked at construction stays checked;
``to_dict`` is what the report records as its settings and ``from_dict`` reads it back
(``miprun prune --from-report``), refusing keys it does not know.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["Options", "check_int", "check_choice", "route"]

T = TypeVar("T", bound="Options")


def check_int(name: str, value, *, low: int | None = None, allow_none: bool = False) -> None:
    """Refuse anything but an int (not a bool) ``>= low``; None only when ``allow_none``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an int{bound}{none}, got {value!r}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of the per-step options: ``to_dict`` / ``from_dict`` over the dataclass fields."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{cls.__name__} does not know {unknown}; known: {list(cls.field_names())}")
        return cls(**data)

    def replace(self: T, **changes) -> T:
        return dataclasses.replace(self, **changes)


def route(kwargs: dict[str, Any], *classes: type[Options]) -> list[dict[str, Any]]:
    """Split flat keyword arguments among option classes by field name.

    A name several classes share (``seed``) goes to each of them. A name none of them
    knows is a ``TypeError`` listing the known ones, as for a misspelt keyword argument.
    """
    out: list[dict[str, Any]] = [{} for _ in classes]
    known: set[str] = set()
    for i, cls in enumerate(classes):
        names = set(cls.field_names())
        known |= names
        out[i] = {k: v for k, v in kwargs.items() if k in names}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; known: {sorted(known)}")
    return out
