"""LLM backends: Ollama, OpenAI-compatible servers, the local llama-server, and a Router.

All backends share one ``aiohttp.ClientSession`` and one contract (``Backend``):

* ``await backend.complete(LLMRequest(messages, schema, options))`` sends ONE request and
  returns a ``Completion`` whose ``data`` passed the fail-closed schema guard, or raises an
  ``emailwb.errors.BackendError`` subclass (never a raw aiohttp/json error);
* ``await backend.info()`` -> ``BackendInfo`` (model, digest, slots, options, kind, version);
* ``await backend.warm()`` loads the model before timing starts;
* ``backend.stats`` -> {endpoint URL: ``EndpointStats``} (requests, errors by class,
  schema violations, in flight, latency);
* ``await backend.aclose()``.

The implementations live in ``emailwb.llm.contract`` (contract, error mapping, schema
guard), ``emailwb.llm.ollama`` and ``emailwb.llm.openai``; this module adds the ``Router``
(several endpoints, least outstanding requests weighted by observed latency, resting
through an ``EndpointBreaker``), ``guard_backend`` and the ``make_backend`` factory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from emailwb.errors import (
    BackendError,
    BackendOverloaded,
    BackendUnavailable,
    ConfigError,
)
from emailwb.llm.breaker import EndpointBreaker, EndpointResting, GuardedBackend
from emailwb.llm.contract import (
    Backend,
    BackendInfo,
    CallState,
    Completion,
    EndpointStats,
    LLMRequest,
    Reply,
)
from emailwb.llm.ollama import (
    OllamaBackend,
)
from emailwb.llm.openai import OpenAIBackend

__all__ = ["Router", "guard_backend", "make_backend"]


@dataclass(slots=True)
class _Load:
    outstanding: int = 0  # requests this Router has in flight there
    busy_until: float = 0.0  # after a 429/503: avoided (not down) until Retry-After passes


class Router(Backend):
    """Several endpoints behind one Backend interface.

    Each request goes to the live endpoint with the least ``(outstanding + 1) * latency``,
    where latency is the endpoint's moving average of observed request times (queueing
    included), so faster endpoints take proportionally more work and a saturated one sheds
    it. An endpoint that answers 429/503 (``BackendOverloaded``) is avoided while its
    Retry-After runs, as long as another endpoint is free. Resting is the ``breaker``'s
    (``emailwb.llm.breaker.EndpointBreaker``, the one mechanism that rests endpoints): by
    default an endpoint that raises ``BackendUnavailable`` is rested for ``cooldown`` seconds
    (doubling on each consecutive failure, up to ``max_cooldown``); after that, one probe
    request at a time is let through until one succeeds. The processor passes its own
    breaker (``guard_backend``), which also counts timeouts and 5xx replies. A request refused with
    ``BackendUnavailable`` is passed on to the next live endpoint (each endpoint is asked at
    most once per call); other errors are raised to the caller. When every endpoint is down,
    ``BackendUnavailable`` is raised with ``retry_after`` = time to the next probe.
    """

    name = "router"
    server_kind = "router"

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        cooldown: float = 5.0,
        max_cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        breaker: EndpointBreaker | None = None,
    ) -> None:
        if not backends:
            raise ConfigError("a Router needs at least one backend", hint="pass one or more URLs")
        urls = [b.url for b in backends]
        if len(set(urls)) != len(urls):
            raise ConfigError(
                f"the same endpoint is listed twice: {urls}", hint="list each server URL once"
            )
        super().__init__(",".join(urls), backends[0].model, backends[0].options, None)
        self._own_session = False
        self.backends = list(backends)
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._clock = clock
        self.breaker = breaker or EndpointBreaker(
            threshold=1,
            cooldown=cooldown,
            max_cooldown=max_cooldown,
            clock=clock,
            counted=(BackendUnavailable,),
        )
        self._load: dict[int, _Load] = {id(b): _Load() for b in self.backends}

    @property
    def stats(self) -> dict[str, EndpointStats]:
        merged: dict[str, EndpointStats] = {}
        for b in self.backends:
            merged.update(b.stats)
        return merged

    def health(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: up or down, consecutive failures, seconds until the next probe."""
        return {
            b.url: {
                "up": self.breaker.failures(b.url) == 0,
                "failures": self.breaker.failures(b.url),
                "retry_in_s": self.breaker.retry_in(b.url),
                "outstanding": self._load[id(b)].outstanding,
            }
            for b in self.backends
        }

    def _latency(self, b: Backend) -> float | None:
        known = [s.latency_ewma for s in b.stats.values() if s.latency_ewma is not None]
        return sum(known) / len(known) if known else None

    def _pick(self, tried: list[Backend]) -> Backend | None:
        now = self._clock()
        candidates = []
        for b in self.backends:
            if b in tried or self.breaker.resting(b.url):
                continue
            candidates.append(b)
        if not candidates:
            return None
        idle = [b for b in candidates if self._load[id(b)].busy_until <= now]
        candidates = idle or candidates  # all busy: let the servers say so again
        known = [lat for b in self.backends if (lat := self._latency(b)) is not None]
        default = min(known) if known else 1.0  # unmeasured endpoints look fast: try them

        def score(b: Backend) -> float:
            lat = self._latency(b)
            return (self._load[id(b)].outstanding + 1) * (lat if lat is not None else default)

        return min(candidates, key=score)  # ties go to the endpoint listed first

    def _healthy(self, b: Backend) -> None:
        """Mirror the breaker's view into the endpoint's statistics."""
        up = self.breaker.failures(b.url) == 0
        for s in b.stats.values():
            s.healthy = up

    def _all_down(self, last: BackendError | None) -> BackendUnavailable:
        waits = [self.breaker.retry_in(b.url) for b in self.backends]
        retry = min(waits) if waits else self.cooldown
        what = (
            f"router: all {len(self.backends)} endpoints are down or being probed "
            f"({', '.join(b.url for b in self.backends)}); next try in {retry:.1f} s"
        )
        hint = "start the servers or fix the URLs; emailwb keeps retrying meanwhile"
        if last is None:  # nothing was tried: every endpoint rests (no attempt spent)
            return EndpointResting(what, hint=hint, endpoint=self.url, retry_after=retry)
        err = BackendUnavailable(
            what + f"; last error: {last.message}",
            hint=hint,
            endpoint=self.url,
            retry_after=retry,
        )
        err.__cause__ = last
        return err

    async def complete(self, req: LLMRequest) -> Completion:
        tried: list[Backend] = []
        last: BackendError | None = None
        while (b := self._pick(tried)) is not None:
            tried.append(b)
            try:
                trial = self.breaker.before(b.url)
            except EndpointResting:
                continue  # rested since it was picked
            since = self.breaker.generation(b.url)
            load = self._load[id(b)]
            load.outstanding += 1
            try:
                completion = await b.complete(req)
            except BackendUnavailable as exc:
                self.breaker.failure(b.url, exc, trial)
                self._healthy(b)
                last = exc
                continue  # the next endpoint takes this request
            except BackendOverloaded as exc:
                self.breaker.failure(b.url, exc, trial)  # back-pressure: not a failure
                load.busy_until = self._clock() + (exc.retry_after or self.cooldown / 5)
                raise
            except BackendError as exc:
                self.breaker.failure(b.url, exc, trial)
                self._healthy(b)
                raise
            except BaseException:
                if trial:
                    self.breaker.release_trial(b.url)
                raise
            finally:
                load.outstanding -= 1
            self.breaker.success(b.url, since)
            self._healthy(b)
            return completion
        raise self._all_down(last)

    async def _send(self, req: LLMRequest, t0: float, state: CallState) -> Reply:
        raise NotImplementedError("Router.complete dispatches to its backends")

    def _status_error(self, status: int, body: str, headers: Mapping[str, str]) -> BackendError:
        raise NotImplementedError("Router.complete dispatches to its backends")

    async def info(self) -> BackendInfo:
        """Combined provenance; ``details["endpoints"]`` holds each endpoint's own info."""
        results = await asyncio.gather(*(b.info() for b in self.backends), return_exceptions=True)
        infos = [r for r in results if isinstance(r, BackendInfo)]
        if not infos:
            first = results[0]
            if isinstance(first, BaseException):
                raise first
        endpoints: list[dict[str, Any]] = []
        for b, r in zip(self.backends, results, strict=True):
            if isinstance(r, BackendInfo):
                endpoints.append(r.as_dict())
            elif isinstance(r, BackendError):
                endpoints.append({"endpoint": b.url, "error": str(r)})
            else:
                raise r
        slots = [i.slots for i in infos if i.slots is not None]
        digests = {i.digest for i in infos}
        return BackendInfo(
            model=infos[0].model,
            digest=digests.pop() if len(digests) == 1 else None,
            # a total only when every endpoint told its slots (the processor caps at it)
            slots=sum(slots) if slots and len(slots) == len(self.backends) else None,
            options=dict(infos[0].options),
            server_kind="router",
            version=None,
            endpoint=self.url,
            details={"endpoints": endpoints, "kinds": sorted({i.server_kind for i in infos})},
        )

    async def warm(self) -> None:
        """Warm every endpoint; unreachable ones are marked down. Raises if none warmed."""
        results = await asyncio.gather(*(b.warm() for b in self.backends), return_exceptions=True)
        errors = []
        for b, r in zip(self.backends, results, strict=True):
            if isinstance(r, BackendUnavailable):
                self.breaker.failure(b.url, r, False)
                self._healthy(b)
            if isinstance(r, BaseException):
                if not isinstance(r, BackendError):
                    raise r
                errors.append(r)
        if len(errors) == len(self.backends):
            raise errors[0]

    async def aclose(self) -> None:
        for b in self.backends:
            await b.aclose()


BackendKind = Literal["ollama", "openai", "local"]


def _split_urls(urls: Sequence[str] | str | None) -> list[str | None]:
    if urls is None:
        return [None]
    if isinstance(urls, str):
        urls = [u for u in urls.split(",")]
    cleaned = [u.strip() for u in urls if u and u.strip()]
    return list(cleaned) or [None]


def make_backend(
    kind: BackendKind | str,
    urls: Sequence[str] | str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    options: Mapping[str, Any] | None = None,
    session: aiohttp.ClientSession | None = None,
    **router_kw: Any,
) -> Backend:
    """Build a backend; several URLs (a list or "a,b") give a Router.

    A URL may name its own kind with a prefix, for mixed fleets:
    ``"ollama+http://gpu1:11434"``, ``"openai+http://gpu2:8000/v1"``. ``kind="local"`` is an
    OpenAI backend pointed at the URL that the local llama-server manager provides.
    ``router_kw`` (cooldown, max_cooldown) go to the Router.
    """
    backends: list[Backend] = []
    for url in _split_urls(urls):
        this_kind, this_url = str(kind), url
        if url and "+" in url.split("://", 1)[0]:
            this_kind, this_url = url.split("+", 1)
        if this_kind == "ollama":
            backends.append(OllamaBackend(this_url, model, options, session=session))
        elif this_kind == "openai":
            backends.append(OpenAIBackend(this_url, api_key, model, options, session))
        elif this_kind == "local":
            if not this_url:
                raise ConfigError(
                    "the local backend needs the URL of the running llama-server",
                    hint="start it with emailwb.llm.localserver and pass its URL, or use "
                    "--backend ollama|openai",
                )
            backends.append(
                OpenAIBackend(
                    this_url, api_key or "", model or "local", options, session, name="local"
                )
            )
        else:
            raise ConfigError(
                f"unknown backend kind {this_kind!r}", hint="use --backend local, ollama or openai"
            )
    if len(backends) == 1:
        return backends[0]
    return Router(backends, **router_kw)


def guard_backend(backend: Backend, breaker: EndpointBreaker) -> Backend:
    """``backend`` rested by ``breaker``: a Router is rebuilt over the same endpoints with it
    (its one resting mechanism), a single endpoint is wrapped in ``GuardedBackend``."""
    if isinstance(backend, GuardedBackend):
        return backend
    if isinstance(backend, Router):
        return Router(
            backend.backends,
            cooldown=backend.cooldown,
            max_cooldown=backend.max_cooldown,
            breaker=breaker,
        )
    return GuardedBackend(backend, breaker)  # type: ignore[return-value]  # a Backend stand-in
