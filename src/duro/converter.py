"""Payloads: values to JSON and back, decoded by the receiving function's type hints.

History stores JSON only, never pickle, so a run written by one version of the code can be read
by another and inspected by people. Encoding accepts what pydantic can serialize (primitives,
dataclasses, pydantic models, datetimes, enums, UUIDs, containers of those). Decoding validates
the JSON against the type hint of the parameter or return value that receives it, so a
``@dataclass`` argument arrives as that dataclass, not as a dict.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import lru_cache
from typing import Any, get_type_hints

import pydantic
import pydantic_core

from duro.errors import (
    ActivityError,
    ApplicationError,
    PayloadDecodeError,
    PayloadEncodeError,
    TimeoutError,
)

Payload = Any
"""A JSON-compatible value (None, bool, int, float, str, list, dict)."""


def to_payload(value: Any, *, what: str = "value") -> Payload:
    """Turn ``value`` into its JSON-compatible form, or raise ``PayloadEncodeError``."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    try:
        return pydantic_core.to_jsonable_python(value)
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as e:
        raise PayloadEncodeError(
            f"cannot encode {what} of type {type(value).__qualname__} as JSON: {e}. "
            "Use primitives, dataclasses or pydantic models"
        ) from e


def to_payloads(values: Sequence[Any], *, what: str = "argument") -> list[Payload]:
    return [to_payload(v, what=f"{what} {i}") for i, v in enumerate(values)]


@lru_cache(maxsize=1024)
def _adapter(hint: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(hint)


def from_payload(data: Payload, hint: Any = Any, *, what: str = "value") -> Any:
    """Decode ``data`` into ``hint``; ``Any`` (or no hint) returns the JSON value as is."""
    if hint is Any or hint is inspect.Parameter.empty or (hint is None and data is None):
        return data
    try:
        return _adapter(hint).validate_python(data)
    except pydantic.ValidationError as e:
        raise PayloadDecodeError(
            f"cannot decode {what} as {_hint_name(hint)}: {_first_error(e)}"
        ) from e
    except pydantic.PydanticSchemaGenerationError as e:
        raise PayloadDecodeError(f"type {_hint_name(hint)} of {what} cannot be decoded: {e}") from e


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__qualname__", None) or repr(hint)


def _first_error(e: pydantic.ValidationError) -> str:
    errors = e.errors()
    if not errors:
        return str(e)
    err = errors[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{err.get('msg')}" + (f" at {loc!r}" if loc else "") + f" (got {err.get('input')!r})"


class Signature:
    """The parameter and return hints of a function, resolved once per function."""

    __slots__ = ("name", "param_hints", "param_names", "required", "return_hint", "var_args")

    def __init__(self, fn: Callable[..., Any], *, skip_self: bool = False) -> None:
        self.name = getattr(fn, "__qualname__", repr(fn))
        sig = inspect.signature(fn)
        try:
            hints = get_type_hints(fn)
        except Exception:  # unresolved forward references: decode those values as plain JSON
            hints = {}
        params = list(sig.parameters.values())
        if skip_self and params:
            params = params[1:]
        self.param_names = [
            p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        self.param_hints = [hints.get(name, Any) for name in self.param_names]
        self.var_args = any(p.kind is p.VAR_POSITIONAL for p in params)
        self.required = sum(
            1
            for p in params
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        self.return_hint = hints.get("return", Any)

    def decode_args(self, payloads: Sequence[Payload]) -> list[Any]:
        """Decode positional argument payloads by this function's parameter hints."""
        if len(payloads) > len(self.param_names) and not self.var_args:
            raise PayloadDecodeError(
                f"{self.name} takes {len(self.param_names)} argument(s), got {len(payloads)}"
            )
        if len(payloads) < self.required:
            missing = ", ".join(self.param_names[len(payloads) : self.required])
            raise PayloadDecodeError(f"{self.name} is missing argument(s): {missing}")
        out = []
        for i, data in enumerate(payloads):
            hint = self.param_hints[i] if i < len(self.param_hints) else Any
            name = self.param_names[i] if i < len(self.param_names) else f"#{i}"
            out.append(from_payload(data, hint, what=f"argument {name!r} of {self.name}"))
        return out

    def decode_result(self, data: Payload) -> Any:
        return from_payload(data, self.return_hint, what=f"result of {self.name}")


@lru_cache(maxsize=4096)
def signature_of(fn: Callable[..., Any], skip_self: bool = False) -> Signature:
    return Signature(fn, skip_self=skip_self)


# ---------------------------------------------------------------------------------------------
# Failures: exceptions to JSON and back. Stored in history for failed activities and workflows.
# ---------------------------------------------------------------------------------------------


def failure_to_dict(exc: BaseException) -> dict[str, Any]:
    """The JSON form of an exception: type, message, retry hints, stack and cause."""
    cause = exc.__cause__ if exc.__cause__ is not None else None
    data: dict[str, Any] = {
        "message": str(exc) if not isinstance(exc, ApplicationError) else exc.message,
        "type": type(exc).__name__,
        "stack": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=False))
        if exc.__traceback__ is not None
        else "",
    }
    if isinstance(exc, ApplicationError):
        data["type"] = exc.type
        data["non_retryable"] = exc.non_retryable
        if exc.next_retry_delay is not None:
            data["next_retry_delay"] = exc.next_retry_delay.total_seconds()
        if exc.details:
            try:
                data["details"] = to_payloads(exc.details, what="error detail")
            except PayloadEncodeError:
                data["details"] = [repr(d) for d in exc.details]
    elif isinstance(exc, TimeoutError):
        data["type"] = "TimeoutError"
        data["timeout_kind"] = exc.kind
    elif isinstance(exc, ActivityError):
        data["type"] = "ActivityError"
        data["activity"] = {
            "type": exc.activity_type,
            "id": exc.activity_id,
            "attempt": exc.attempt,
        }
    if cause is not None and cause is not exc:
        data["cause"] = failure_to_dict(cause)
    return data


def failure_from_dict(data: dict[str, Any]) -> Exception:
    """Rebuild the exception stored by ``failure_to_dict`` (as a duro error type)."""
    cause = failure_from_dict(data["cause"]) if data.get("cause") else None
    kind = data.get("type", "ApplicationError")
    exc: Exception
    if kind == "TimeoutError" and "timeout_kind" in data:
        exc = TimeoutError(data["timeout_kind"], data.get("message"))
    elif kind == "ActivityError" and "activity" in data and cause is not None:
        a = data["activity"]
        exc = ActivityError(a["type"], a["id"], a["attempt"], cause)
    else:
        delay = data.get("next_retry_delay")
        exc = ApplicationError(
            data.get("message", ""),
            *data.get("details", ()),
            type=kind,
            non_retryable=bool(data.get("non_retryable", False)),
            next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
        )
    if cause is not None and not isinstance(exc, ActivityError):
        exc.__cause__ = cause
    setattr(exc, "stack", data.get("stack", ""))  # noqa: B010 - not every error type declares it
    return exc


def dumps(value: Any) -> str:
    """JSON text of an already JSON-compatible value (store columns)."""
    return pydantic_core.to_json(value).decode()


def loads(text: str | bytes | None) -> Any:
    return None if text is None else pydantic_core.from_json(text)
