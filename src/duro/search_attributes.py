"""Typed search attribute values: what can be stored, and how, for queries by value.

Allowed: ``str``, ``int``, ``float``, ``bool`` and timezone-aware ``datetime``; ``None``
removes the attribute. Anything else is refused with the attribute named.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

SearchAttributeValue = str | int | float | bool | datetime | None


def encode(name: str, value: Any) -> Any:
    """The JSON form kept in history (a datetime becomes a tagged ISO string)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"search attribute {name!r} must be a finite number, not {value}")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return {"datetime": when.astimezone(UTC).isoformat()}
    raise ValueError(
        f"search attribute {name!r} must be str, int, float, bool or datetime, "
        f"not {type(value).__name__}"
    )


def encode_all(attrs: dict[str, Any]) -> dict[str, Any]:
    from duro.visibility import FIELDS  # the built-in fields a query means by these names

    for name in attrs:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"search attribute name {name!r} must be an identifier")
        if name in FIELDS:
            raise ValueError(f"{name!r} is a built-in field, not a search attribute")
    return {name: encode(name, value) for name, value in attrs.items()}


def columns(value: Any) -> tuple[str | None, float | None]:
    """``(str_value, num_value)`` of an encoded value, as the store indexes it."""
    if isinstance(value, dict) and "datetime" in value:
        iso = str(value["datetime"])
        return iso, datetime.fromisoformat(iso).timestamp()
    if isinstance(value, bool):
        return None, float(value)
    if isinstance(value, int | float):
        return None, float(value)
    return str(value), None


def decode(str_value: str | None, num_value: float | None) -> Any:
    if str_value is not None and num_value is not None:
        return datetime.fromisoformat(str_value)
    if str_value is not None:
        return str_value
    if num_value is not None and num_value.is_integer():
        return int(num_value)
    return num_value
