"""Retry policy: what a failed attempt tells the concurrency controller, how long to wait
before the next one, and what a schema retry changes in the request.

The processor owns the loop (``emailwb.engine.processor``); these are its pure decisions, kept
apart so they can be read and tested on their own.
"""

from __future__ import annotations

import random
from typing import Any

from emailwb.engine.autotune import Outcome
from emailwb.errors import BackendError, BackendOverloaded, BackendTimeout, SchemaViolation
from emailwb.settings import Settings

#: the token limit a request had when its options do not say (the configuration's default)
DEFAULT_MAX_TOKENS: int = Settings.model_fields["max_tokens"].default


def outcome(exc: BackendError) -> Outcome:
    """The controller's view of an error: overload (429/503), timeout, invalid reply, error."""
    if isinstance(exc, BackendOverloaded):
        return "overload"
    if isinstance(exc, BackendTimeout):
        return "timeout"
    if isinstance(exc, SchemaViolation):
        return "invalid"
    return "error"


def cut_by_token_limit(exc: BackendError) -> bool:
    """Was a schema violation a reply cut at the token limit? The server said so:
    ``finish_reason == "length"`` on the ``SchemaViolation`` (never read from the message)."""
    return isinstance(exc, SchemaViolation) and exc.finish_reason == "length"


def roomier(options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Request options for the retry of a reply cut at the token limit: twice the room."""
    limit = int(options.get("num_predict") or defaults.get("num_predict") or DEFAULT_MAX_TOKENS)
    return {**options, "num_predict": limit * 2}


def backoff_delay(
    attempt: int, exc: BackendError, *, base: float, cap: float, rng: random.Random
) -> float:
    """Exponential backoff with jitter (half to all of ``base * 2**(attempt-1)``, at most
    ``cap``); at least the server's Retry-After, plus up to 10%."""
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    delay *= 0.5 + 0.5 * rng.random()
    if exc.retry_after is not None:
        delay = max(delay, exc.retry_after * (1.0 + 0.1 * rng.random()))
    return delay
