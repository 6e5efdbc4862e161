"""Retry policies for activities and the backoff arithmetic the engine applies.

A retry appends nothing to history: the engine re-enqueues the activity task with
``visible_at = now + delay`` and keeps the attempt count and last failure on the pending task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class RetryPolicy:
    """How an activity is retried after a failed attempt.

    The delay before attempt ``n + 1`` is
    ``min(initial_interval * backoff_coefficient ** (n - 1), maximum_interval)``.
    """

    initial_interval: timedelta = timedelta(seconds=1)
    """Delay before the first retry. Default 1 second."""

    backoff_coefficient: float = 2.0
    """Factor applied to the delay after each attempt. Default 2.0."""

    maximum_interval: timedelta | None = None
    """Cap on the delay. Default ``None``: 100 times ``initial_interval``."""

    maximum_attempts: int = 0
    """Attempts in all, the first included. Default 0: unlimited."""

    non_retryable_error_types: Sequence[str] = field(default_factory=tuple)
    """Error types (``ApplicationError.type`` or exception class names) never retried."""

    def __post_init__(self) -> None:
        if self.initial_interval <= timedelta(0):
            raise ValueError("RetryPolicy.initial_interval must be positive")
        if self.backoff_coefficient < 1.0:
            raise ValueError("RetryPolicy.backoff_coefficient must be >= 1.0")
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError("RetryPolicy.maximum_interval must be >= initial_interval")
        if self.maximum_attempts < 0:
            raise ValueError("RetryPolicy.maximum_attempts must be >= 0 (0 means unlimited)")
        object.__setattr__(self, "non_retryable_error_types", tuple(self.non_retryable_error_types))

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        initial = self.initial_interval.total_seconds()
        cap = (
            self.maximum_interval.total_seconds()
            if self.maximum_interval is not None
            else initial * 100
        )
        # Exponent capped so huge attempt numbers cannot overflow a float.
        delay = initial * self.backoff_coefficient ** min(attempt - 1, 1000)
        return float(min(delay, cap))

    def next_delay(
        self,
        attempt: int,
        *,
        error_type: str,
        non_retryable: bool = False,
        next_retry_delay: float | None = None,
    ) -> float | None:
        """Seconds until the next attempt after ``attempt`` failed, or ``None`` to give up.

        ``next_retry_delay`` (from ``ApplicationError``) replaces the computed backoff, so a
        server-suggested delay such as ``Retry-After`` is honoured; attempts still count.
        """
        if non_retryable or error_type in self.non_retryable_error_types:
            return None
        if self.maximum_attempts and attempt >= self.maximum_attempts:
            return None
        if next_retry_delay is not None:
            return max(0.0, next_retry_delay)
        return self.backoff(attempt)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored with a scheduled activity."""
        return {
            "initial_interval": self.initial_interval.total_seconds(),
            "backoff_coefficient": self.backoff_coefficient,
            "maximum_interval": (
                self.maximum_interval.total_seconds() if self.maximum_interval else None
            ),
            "maximum_attempts": self.maximum_attempts,
            "non_retryable_error_types": list(self.non_retryable_error_types),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryPolicy:
        """Read the stored form; missing fields take their defaults (forward compatible)."""
        maximum = data.get("maximum_interval")
        return cls(
            initial_interval=timedelta(seconds=data.get("initial_interval", 1.0)),
            backoff_coefficient=data.get("backoff_coefficient", 2.0),
            maximum_interval=timedelta(seconds=maximum) if maximum is not None else None,
            maximum_attempts=data.get("maximum_attempts", 0),
            non_retryable_error_types=tuple(data.get("non_retryable_error_types", ())),
        )
