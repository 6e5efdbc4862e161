"""Schedules: when a schedule fires next, and what an overlap policy does (pure rules).

A schedule fires at *nominal* times from cron expressions (in a time zone) and/or a fixed
interval; each firing starts a workflow whose id and request id derive from the schedule id
and the nominal time, so one nominal time can never start two runs. Jitter delays the actual
start by a deterministic fraction of ``jitter`` (the same on every evaluation).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError


class OverlapPolicy(enum.StrEnum):
    """What a firing does while the schedule's previous run is still open."""

    SKIP = "skip"
    """Do nothing for this time (default)."""
    BUFFER_ONE = "buffer_one"
    """Start it when the open run closes; later times in the meantime are skipped."""
    ALLOW_ALL = "allow_all"
    """Start it anyway: runs may overlap."""
    CANCEL_OTHER = "cancel_other"
    """Ask the open run to cancel, and start the new one."""


@dataclass(frozen=True)
class ScheduleSpec:
    """When a schedule fires."""

    cron: tuple[str, ...] = ()
    """Cron expressions (5 fields, e.g. ``"0 9 * * 1-5"``), evaluated in ``timezone``."""
    interval: float | None = None
    """Fire every ``interval`` seconds (aligned to the epoch plus ``offset``)."""
    offset: float = 0.0
    timezone: str = "UTC"
    jitter: float = 0.0
    """Delay each start by up to this many seconds (spreads load)."""
    start_at: float | None = None
    """No firing before this time (epoch seconds)."""
    end_at: float | None = None
    """No firing after this time."""

    def __post_init__(self) -> None:
        if not self.cron and not self.interval:
            raise ValueError("a schedule needs at least one cron expression or an interval")
        if self.interval is not None and self.interval <= 0:
            raise ValueError("schedule interval must be positive")
        if self.jitter < 0:
            raise ValueError("schedule jitter must not be negative")
        if self.offset < 0 or (self.interval is not None and self.offset >= self.interval):
            raise ValueError("schedule offset must be at least 0 and less than the interval")
        if self.start_at is not None and self.end_at is not None and self.start_at > self.end_at:
            raise ValueError("schedule start_at is after end_at: it would never fire")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {self.timezone!r}") from e
        now = datetime.now(UTC)
        for expr in self.cron:
            try:
                CronSim(expr, now)
            except CronSimError as e:
                raise ValueError(f"bad cron expression {expr!r}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return {
            "cron": list(self.cron),
            "interval": self.interval,
            "offset": self.offset,
            "timezone": self.timezone,
            "jitter": self.jitter,
            "start_at": self.start_at,
            "end_at": self.end_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleSpec:
        return cls(
            cron=tuple(data.get("cron", ())),
            interval=data.get("interval"),
            offset=data.get("offset", 0.0),
            timezone=data.get("timezone", "UTC"),
            jitter=data.get("jitter", 0.0),
            start_at=data.get("start_at"),
            end_at=data.get("end_at"),
        )


def next_after(spec: ScheduleSpec, after: float) -> float | None:
    """The first nominal time strictly after ``after``, or None when the schedule has ended."""
    after = max(after, (spec.start_at - 1e-6) if spec.start_at is not None else after)
    candidates: list[float] = []
    if spec.interval:
        k = int((after - spec.offset) // spec.interval) + 1
        while spec.offset + k * spec.interval <= after:  # float rounding: strictly after
            k += 1
        candidates.append(spec.offset + k * spec.interval)
    if spec.cron:
        tz = ZoneInfo(spec.timezone)
        start = datetime.fromtimestamp(after, tz)
        for expr in spec.cron:
            candidate = next(CronSim(expr, start)).timestamp()
            while candidate <= after:  # CronSim starts at whole minutes
                candidate = next(CronSim(expr, datetime.fromtimestamp(candidate, tz))).timestamp()
            candidates.append(candidate)
    best = min(candidates)
    if spec.end_at is not None and best > spec.end_at:
        return None
    return best


def occurrences(spec: ScheduleSpec, start: float, end: float, limit: int = 10_000) -> list[float]:
    """Nominal times in ``[start, end]`` (a backfill), at most ``limit``."""
    out: list[float] = []
    t = next_after(spec, start - 1e-6)
    while t is not None and t <= end and len(out) < limit:
        out.append(t)
        t = next_after(spec, t)
    return out


def jitter_delay(schedule_id: str, nominal: float, jitter: float) -> float:
    """A delay in ``[0, jitter)`` that depends only on the schedule and the nominal time."""
    if jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{schedule_id}:{nominal!r}".encode()).digest()
    return jitter * int.from_bytes(digest[:8], "big") / 2**64


def workflow_id_for(schedule_id: str, nominal: float) -> str:
    """``<schedule id>-<nominal time, UTC ISO>``: one id per nominal time."""
    when = datetime.fromtimestamp(nominal, UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:  # sub-second intervals: keep ids distinct
        stamp += f".{when.microsecond // 1000:03d}"
    return f"{schedule_id}-{stamp}Z"


class FireAction(enum.Enum):
    START = "start"
    SKIP = "skip"
    BUFFER = "buffer"
    CANCEL_AND_START = "cancel_and_start"


def decide_fire(policy: OverlapPolicy, previous_open: bool) -> FireAction:
    """What one due nominal time does, given whether the previous run is still open."""
    if not previous_open or policy == OverlapPolicy.ALLOW_ALL:
        return FireAction.START
    if policy == OverlapPolicy.CANCEL_OTHER:
        return FireAction.CANCEL_AND_START
    if policy == OverlapPolicy.BUFFER_ONE:
        return FireAction.BUFFER
    return FireAction.SKIP


@dataclass
class ScheduleAction:
    """What each firing starts."""

    workflow_type: str
    args: list[Any] = field(default_factory=list)
    task_queue: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_type": self.workflow_type,
            "args": self.args,
            "task_queue": self.task_queue,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleAction:
        return cls(
            data["workflow_type"], list(data.get("args", [])), data.get("task_queue", "default")
        )
