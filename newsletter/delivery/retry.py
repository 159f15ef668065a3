"""How long a send waits before trying a request again: bounded exponential backoff with jitter,
honouring the provider's Retry-After, and the longest wait it accepts before stopping instead."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings

MAX_WAIT = 900.0  # longest single wait (a provider's Retry-After); longer → stop, resume later


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter, bounded; honours the provider's Retry-After."""

    max_attempts: int = 5
    base: float = 1.0
    maximum: float = 60.0
    rand: Callable[[], float] = random.random

    @classmethod
    def from_settings(cls, settings: Settings, rand: Callable[[], float] = random.random):
        d = settings.delivery
        return cls(d.max_attempts, d.backoff_base, d.backoff_max, rand)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        backoff = min(self.maximum, self.base * 2 ** (attempt - 1))
        # "Equal jitter": half fixed, half random, so retrying senders do not move in step.
        jittered = backoff / 2 + self.rand() * backoff / 2
        if retry_after is not None:
            return max(float(retry_after), jittered)
        return jittered
