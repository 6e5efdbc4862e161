"""Flow control rules: token buckets for rate limits (pure; ``now`` is an argument).

Limits themselves are rows in the store (``flow_limits``) so every worker sees the same
budget: a concurrency limit counts leased activity attempts (or admitted runs of a key), a rate
limit is a token bucket refilled at ``rate`` tokens per second up to ``burst``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Bucket:
    rate: float
    burst: float
    tokens: float
    refilled_at: float


def take(bucket: Bucket, now: float) -> bool:
    """Refill ``bucket`` up to ``now`` and take one token if there is one."""
    elapsed = max(0.0, now - bucket.refilled_at)
    bucket.tokens = min(bucket.burst, bucket.tokens + elapsed * bucket.rate)
    bucket.refilled_at = now
    if bucket.tokens >= 1.0:
        bucket.tokens -= 1.0
        return True
    return False


def next_token_at(bucket: Bucket) -> float:
    """When the bucket holds a whole token again."""
    missing = max(0.0, 1.0 - bucket.tokens)
    return bucket.refilled_at + (missing / bucket.rate if bucket.rate > 0 else float("inf"))
