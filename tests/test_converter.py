import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from duro import ActivityError, ApplicationError, PayloadDecodeError, PayloadEncodeError
from duro.converter import (
    dumps,
    failure_from_dict,
    failure_to_dict,
    from_payload,
    loads,
    signature_of,
    to_payload,
)
from duro.errors import TimeoutError as ActivityTimeoutError


@dataclass
class Point:
    x: int
    y: int


class User(pydantic.BaseModel):
    name: str
    tags: list[str] = []


class Color(enum.Enum):
    RED = "red"


def test_primitives_pass_through() -> None:
    for v in (None, True, 3, 2.5, "s", [1, "a"], {"k": [None]}):
        assert from_payload(loads(dumps(to_payload(v)))) == v


def test_dataclass_and_pydantic_round_trip_by_type_hint() -> None:
    assert from_payload(to_payload(Point(1, 2)), Point) == Point(1, 2)
    assert from_payload(to_payload(User(name="a", tags=["x"])), User) == User(name="a", tags=["x"])
    assert from_payload(to_payload([Point(1, 2)]), list[Point]) == [Point(1, 2)]
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert from_payload(to_payload(when), datetime) == when
    assert from_payload(to_payload(Color.RED), Color) is Color.RED


def test_non_json_values_fail_with_the_type_named() -> None:
    with pytest.raises(PayloadEncodeError, match="object"):
        to_payload(object(), what="argument 0")
    with pytest.raises(PayloadEncodeError, match="argument 0"):
        to_payload(object(), what="argument 0")


def test_payload_that_does_not_fit_the_hint_names_the_field() -> None:
    with pytest.raises(PayloadDecodeError, match=r"Point.*'y'"):
        from_payload({"x": 1}, Point, what="argument 'p'")


def test_signature_decodes_arguments_by_parameter_hints() -> None:
    async def fn(p: Point, n: int, label: str = "x") -> list[Point]:
        return [p] * n

    sig = signature_of(fn)
    assert sig.decode_args([{"x": 1, "y": 2}, 3]) == [Point(1, 2), 3]
    assert sig.decode_result([{"x": 0, "y": 0}]) == [Point(0, 0)]
    with pytest.raises(PayloadDecodeError, match="takes 3 argument"):
        sig.decode_args([1, 2, 3, 4])
    with pytest.raises(PayloadDecodeError, match="missing argument"):
        sig.decode_args([{"x": 1, "y": 2}])
    with pytest.raises(PayloadDecodeError, match="argument 'n'"):
        sig.decode_args([{"x": 1, "y": 2}, "many"])


def test_signature_without_hints_passes_json_through() -> None:
    def fn(a, b):  # type: ignore[no-untyped-def]
        return a

    assert signature_of(fn).decode_args([{"k": 1}, [2]]) == [{"k": 1}, [2]]


def test_application_error_round_trip_keeps_retry_hints_and_details() -> None:
    err = ApplicationError(
        "rate limited",
        {"retry": True},
        type="RateLimited",
        non_retryable=False,
        next_retry_delay=timedelta(seconds=3),
    )
    data = loads(dumps(failure_to_dict(err)))
    back = failure_from_dict(data)
    assert isinstance(back, ApplicationError)
    assert (back.type, back.message, back.next_retry_delay) == (
        "RateLimited",
        "rate limited",
        timedelta(seconds=3),
    )
    assert back.details == ({"retry": True},)


def test_plain_exceptions_become_application_errors_named_by_class() -> None:
    try:
        raise KeyError("missing")
    except KeyError as e:
        data = failure_to_dict(e)
    assert data["type"] == "KeyError"
    assert "KeyError" in data["stack"]
    back = failure_from_dict(data)
    assert isinstance(back, ApplicationError) and back.type == "KeyError"


def test_activity_error_and_timeout_round_trip_with_cause() -> None:
    err = ActivityError("call_model", "3", 2, ActivityTimeoutError("start_to_close"))
    back = failure_from_dict(loads(dumps(failure_to_dict(err))))
    assert isinstance(back, ActivityError)
    assert back.activity_type == "call_model" and back.attempt == 2
    assert isinstance(back.cause, ActivityTimeoutError) and back.cause.kind == "start_to_close"


def test_any_hint_returns_json_unchanged() -> None:
    assert from_payload({"a": 1}, Any) == {"a": 1}
