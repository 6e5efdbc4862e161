"""The test clock: real time plus the time skipped so far.

Between jumps time flows at real speed, so code that waits a few real milliseconds (an activity
doing real work, a poll interval) behaves as in production; a jump only ever moves time forward,
because every rule in the engine assumes a clock that never goes back.
"""

from __future__ import annotations

import time

_MARGIN = 1e-5
"""Added to each jump. Epoch seconds as floats have ~0.2 µs resolution, so without a margin a
jump to exactly ``fire_at`` could land a rounding error short of it and fire nothing."""


class SkippingClock:
    """A store clock (seconds since the epoch) that tests can move forward."""

    def __init__(self, start: float | None = None) -> None:
        self._origin = time.time() if start is None else start
        self._mono = time.monotonic()
        self.skipped = 0.0
        """Seconds added by jumps so far."""

    def __call__(self) -> float:
        return self._origin + (time.monotonic() - self._mono) + self.skipped

    def jump_to(self, when: float) -> bool:
        """Move the clock to ``when`` if that is ahead of now; True if it moved."""
        gap = when - self()
        if gap <= 0:
            return False
        self.skipped += gap + _MARGIN
        return True
