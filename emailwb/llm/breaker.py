"""A circuit breaker per endpoint: rest a failing server instead of hammering it.

After ``threshold`` consecutive failures (unreachable, timeouts, 5xx, cut streams) an
endpoint's breaker opens for ``cooldown`` seconds (doubling on each reopening, up to
``max_cooldown``); then one trial request is let through (half-open): success closes the
breaker, failure opens it again. Overload replies (429/503) do not count: they are the
concurrency controller's signal. Schema violations and refused requests do not count
either: the server is up.

It is the one mechanism that rests an endpoint: a ``Router`` consults its breaker to skip
resting endpoints (by default one that rests an endpoint at its first ``BackendUnavailable``,
the router's own policy), and ``emailwb.llm.router.guard_backend(backend, breaker)`` gives a
backend the processor's breaker (a single endpoint is wrapped in ``GuardedBackend``; a
Router is rebuilt over the same endpoints with that breaker). A request to a resting
endpoint raises ``EndpointResting``, which is both a ``CircuitOpen`` (the processor waits
``retry_after`` without spending an attempt) and a ``BackendUnavailable``.

``generation(endpoint)`` counts the rests of an endpoint: a request that started before the
latest rest proves nothing when it succeeds (``success(endpoint, since=generation)``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emailwb.errors import (
    BackendError,
    BackendOverloaded,
    BackendProtocolError,
    BackendServerError,
    BackendTimeout,
    BackendUnavailable,
    CircuitOpen,
)
from emailwb.llm.contract import Backend, Completion, LLMRequest

log = logging.getLogger("emailwb.llm.breaker")
_COUNTED = (BackendUnavailable, BackendTimeout, BackendServerError, BackendProtocolError)


class EndpointResting(CircuitOpen, BackendUnavailable):
    """The endpoint's breaker is open: try again after ``retry_after`` seconds."""

    transient = True
    hint = "the endpoint failed repeatedly and is rested; emailwb retries it on its own"


@dataclass(slots=True)
class _State:
    failures: int = 0
    open_until: float = 0.0
    opens: int = 0
    trial: bool = False  # a half-open trial request is in flight
    generation: int = 0  # rests so far (kept across a success)


class EndpointBreaker:
    """Breakers for any number of endpoints, keyed by URL."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 2.0,
        max_cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        counted: tuple[type[BackendError], ...] = _COUNTED,
    ) -> None:
        self.threshold = max(1, threshold)
        self.counted = counted  # the failures that count towards a rest
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self._state: dict[str, _State] = {}
        self.opened = 0  # times any breaker opened (for tests and metrics)

    def state(self, endpoint: str) -> str:
        """closed | open | half-open."""
        st = self._state.get(endpoint)
        if (
            st is None
            or st.opens == 0
            or (st.failures < self.threshold and not st.trial and st.open_until == 0.0)
        ):
            return "closed"
        return "open" if self.clock() < st.open_until else "half-open"

    def failures(self, endpoint: str) -> int:
        """Consecutive counted failures of ``endpoint`` (0: it answered last time)."""
        st = self._state.get(endpoint)
        return st.failures if st is not None else 0

    def retry_in(self, endpoint: str) -> float:
        """Seconds until ``endpoint`` takes a request again (0 when it does now)."""
        st = self._state.get(endpoint)
        return max(st.open_until - self.clock(), 0.0) if st is not None else 0.0

    def resting(self, endpoint: str) -> bool:
        """Would ``before`` refuse a request now (open, or its one trial is in flight)?"""
        st = self._state.get(endpoint)
        if st is None or st.open_until == 0.0:
            return False
        return self.clock() < st.open_until or st.trial

    def generation(self, endpoint: str) -> int:
        """How often ``endpoint`` was rested so far."""
        st = self._state.get(endpoint)
        return st.generation if st is not None else 0

    def before(self, endpoint: str) -> bool:
        """Raise ``EndpointResting`` when the endpoint rests; True for a half-open trial."""
        st = self._state.get(endpoint)
        if st is None or st.open_until == 0.0:
            return False
        now = self.clock()
        if now < st.open_until:
            raise EndpointResting(
                f"{endpoint} is rested after {st.failures} failures in a row",
                endpoint=endpoint,
                retry_after=st.open_until - now,
            )
        if st.trial:
            raise EndpointResting(
                f"{endpoint} is being probed after repeated failures",
                endpoint=endpoint,
                retry_after=min(self.cooldown, 1.0),
            )
        st.trial = True
        return True

    def success(self, endpoint: str, since: int | None = None) -> None:
        """``endpoint`` answered; ``since``: the generation when the request started (a
        success of a request sent before the latest rest is ignored)."""
        st = self._state.get(endpoint)
        if st is None or (since is not None and since != st.generation):
            return
        self._state[endpoint] = _State(generation=st.generation)

    def failure(self, endpoint: str, exc: BackendError, trial: bool) -> None:
        if not isinstance(exc, self.counted) or isinstance(exc, (BackendOverloaded, CircuitOpen)):
            if trial:  # the server answered: it is up
                self.success(endpoint)
            return
        st = self._state.setdefault(endpoint, _State())
        st.failures += 1
        if trial or st.failures >= self.threshold:
            st.opens += 1
            st.generation += 1
            self.opened += 1
            rest = min(self.cooldown * 2 ** (st.opens - 1), self.max_cooldown)
            st.open_until = self.clock() + rest
            st.trial = False
            log.warning(
                "%s failed %d times in a row (%s); resting it for %.1f s, then one "
                "trial request (stop the run to give up)",
                endpoint,
                st.failures,
                exc.message,
                rest,
            )

    def release_trial(self, endpoint: str) -> None:
        """A trial request was cancelled: let another one through."""
        st = self._state.get(endpoint)
        if st is not None:
            st.trial = False


class GuardedBackend:
    """One endpoint behind its breaker; everything else is delegated to the backend."""

    def __init__(self, inner: Backend, breaker: EndpointBreaker) -> None:
        self._inner = inner
        self._breaker = breaker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def complete(self, req: LLMRequest) -> Completion:
        url = self._inner.url
        trial = self._breaker.before(url)
        since = self._breaker.generation(url)
        try:
            comp = await self._inner.complete(req)
        except BackendError as exc:
            self._breaker.failure(url, exc, trial)
            raise
        except BaseException:
            if trial:
                self._breaker.release_trial(url)
            raise
        self._breaker.success(url, since)
        return comp
