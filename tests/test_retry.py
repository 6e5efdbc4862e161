from datetime import timedelta

import pytest

from duro import RetryPolicy


def test_defaults_double_from_one_second_capped_at_100x() -> None:
    p = RetryPolicy()
    assert [p.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert p.backoff(8) == 100.0  # 128 capped at 100 x initial
    assert p.backoff(10_000) == 100.0  # no overflow


def test_maximum_interval_and_coefficient() -> None:
    p = RetryPolicy(
        initial_interval=timedelta(milliseconds=100),
        backoff_coefficient=3.0,
        maximum_interval=timedelta(seconds=1),
    )
    assert [round(p.backoff(n), 6) for n in range(1, 5)] == [0.1, 0.3, 0.9, 1.0]


def test_next_delay_gives_up_on_attempts_and_non_retryable() -> None:
    p = RetryPolicy(maximum_attempts=3, non_retryable_error_types=["ValueError"])
    assert p.next_delay(1, error_type="RuntimeError") == 1.0
    assert p.next_delay(2, error_type="RuntimeError") == 2.0
    assert p.next_delay(3, error_type="RuntimeError") is None
    assert p.next_delay(1, error_type="ValueError") is None
    assert p.next_delay(1, error_type="RuntimeError", non_retryable=True) is None


def test_server_suggested_delay_overrides_backoff_but_attempts_still_count() -> None:
    p = RetryPolicy(maximum_attempts=2)
    assert p.next_delay(1, error_type="RateLimited", next_retry_delay=7.5) == 7.5
    assert p.next_delay(2, error_type="RateLimited", next_retry_delay=7.5) is None


def test_unlimited_attempts_by_default() -> None:
    assert RetryPolicy().next_delay(1_000_000, error_type="X") == 100.0


def test_round_trips_through_its_stored_form() -> None:
    p = RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=4,
        non_retryable_error_types=("Bad",),
    )
    assert RetryPolicy.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_interval": timedelta(0)}, "initial_interval"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
        ({"maximum_attempts": -1}, "maximum_attempts"),
        (
            {"initial_interval": timedelta(seconds=5), "maximum_interval": timedelta(seconds=1)},
            "maximum_interval",
        ),
    ],
)
def test_invalid_policies_are_rejected_with_the_field_named(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
