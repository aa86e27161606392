"""Concurrency control: how many requests to keep in flight, fixed or found automatically.

The processor asks a ``Gate`` for a slot before every HTTP attempt and gives it back with the
outcome. The gate enforces the current limit (an asyncio semaphore whose size can change
while waiters wait) and feeds every outcome to a controller:

* ``FixedConcurrency(n)``: always ``n``.
* ``AutoConcurrency()``: finds the throughput knee of whatever server it talks to. It
  measures throughput over *windows of completed requests* (never wall-clock guesses) with
  Little's law, ``throughput = mean requests in flight / mean latency``, which stays exact
  when a server finishes requests in bursts. It starts at the server's parallel slots when
  the backend reports them (else at 2) and doubles while a step still gains ``grow_gain``
  (3%). Growing stops at the declared slots: above them only probes go, never past one and
  a half times them (a server runs at most its slots at once; a few queued requests hide
  the gaps between short ones, more only wait and time out there). Past the knee (latency
  grows, throughput does not) it settles on the better of the last two levels and holds
  there, with a small probe every few windows: up (kept when it gains ``keep_gain``) or,
  when latency shows queueing, down (kept when it costs less than ``keep_gain``). 429/503
  replies and error-heavy windows cut the limit at once (multiplicative decrease) and
  suppress probing up for a while.

Controllers take explicit timestamps, so they can be tested against a discrete-event model
without a server or a clock. Policy lives here; backends never throttle.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from emailwb.errors import ConfigError
from emailwb.settings import parse_concurrency

Outcome = Literal["ok", "overload", "timeout", "error", "invalid"]
#: outcomes that mean "the server is saturated": cut the limit
_OVERLOAD: frozenset[str] = frozenset({"overload"})
_FAILED: frozenset[str] = frozenset({"overload", "timeout", "error"})


class Controller:
    """Base: a concurrency limit that reacts to dispatch and completion events."""

    limit: int = 1

    def on_dispatch(self, now: float) -> int:
        """A request starts; returns a token to pass back to ``on_complete``."""
        return 0

    def on_complete(self, now: float, token: int, latency: float, outcome: Outcome) -> None:
        """A request ended after ``latency`` seconds with ``outcome``."""

    def on_cancel(self, now: float, token: int) -> None:
        """A request was abandoned (cancelled): no sample."""

    def describe(self) -> dict[str, Any]:
        """The policy, for the run's provenance."""
        return {"policy": type(self).__name__}


class FixedConcurrency(Controller):
    """Always ``n`` requests in flight (when there is work)."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ConfigError(
                f"fixed concurrency must be >= 1, got {n}",
                hint="pass --concurrency auto or a positive integer",
            )
        self.limit = int(n)

    def describe(self) -> dict[str, Any]:
        return {"policy": "fixed", "limit": self.limit}


@dataclass(slots=True)
class AutoTuneConfig:
    """Knobs of ``AutoConcurrency``; the defaults suit both a CPU llama-server and a GPU farm."""

    start: int | None = None  # None: the server's slots when known, else 2
    min: int = 1
    max: int = 64
    factor: float = 2.0  # multiplicative growth while gains are large
    grow_gain: float = 0.03  # keep doubling while a step gains at least this
    keep_gain: float = 0.02  # a probe up must gain this; a probe down may lose less than this
    window_min: int = 6  # completed requests per measurement window, at least
    window_max: int = 64  # and at most
    window_rounds: float = 1.5  # a window spans this many "rounds" of the limit
    probe_every: int = 3  # windows held between probes
    probe_step: float = 0.25  # probe by this fraction of the limit (at least 1)
    queue_latency: float = 1.3  # latency this much above the best seen suggests queueing
    backoff: float = 0.7  # multiplicative decrease on 429/503 and error-heavy windows
    error_backoff: float = 0.5  # share of failed requests in a window that triggers backoff
    cooldown: int = 3  # windows without probing up after a backoff

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max:
            raise ConfigError(
                f"auto concurrency needs 1 <= min <= max, got {self.min}..{self.max}",
                hint="raise --max-concurrency (EMAILWB_MAX_CONCURRENCY)",
            )
        if self.factor <= 1 or not 0 < self.backoff < 1:
            raise ConfigError(
                "auto concurrency needs factor > 1 and 0 < backoff < 1",
                hint="use the defaults of AutoTuneConfig",
            )


@dataclass(slots=True)
class Window:
    """One measurement at a fixed limit."""

    limit: int
    completed: int
    ok: int
    duration: float
    mean_in_flight: float
    mean_latency: float
    throughput: float  # successful requests per second (Little's law)
    rel_se: float = 0.0  # relative standard error of ``throughput`` (from latency spread)

    @property
    def saturated(self) -> bool:
        """Was the limit actually used? (False when work ran short.)"""
        return self.mean_in_flight >= 0.75 * self.limit


@dataclass(slots=True)
class Decision:
    """A change of the limit and why (kept for charts and debugging)."""

    t: float
    old: int
    new: int
    reason: str
    throughput: float | None = None


@dataclass(slots=True)
class _Acc:
    start: float
    last: float
    need: int  # completions that close the window
    area: float = 0.0  # integral of in-flight over time
    count: int = 0
    ok: int = 0
    failed: int = 0
    latency_sum: float = 0.0
    latency_sq: float = 0.0
    extended: int = 0


class AutoConcurrency(Controller):
    """Finds and tracks the throughput knee; see the module docstring for the algorithm."""

    def __init__(
        self,
        config: AutoTuneConfig | None = None,
        *,
        slots_hint: int | None = None,
        **overrides: Any,
    ) -> None:
        cfg = config or AutoTuneConfig()
        if overrides:
            cfg = AutoTuneConfig(**{**asdict(cfg), **overrides})
        self.cfg = cfg
        declared = slots_hint if slots_hint and slots_hint > 0 else None
        start = cfg.start or declared or 2
        # a server that declares N parallel slots runs at most N requests at once; a few
        # queued ones hide the gap between a slot finishing and the next request arriving
        # (simulated 8 slots, 0.2 s requests: 16 in flight beat 8 by 5%), more only wait in its
        # queue, where the wait counts against the per-request timeout (a 2-core llama-server
        # with 4 slots met 13 timeouts of 120 s in a row at 8-16 in flight).
        # Growing stops at the declared slots; above them only probes go, each kept only when
        # it pays: on a 2-core llama-server with 4 slots, 6 in flight never measured better than
        # 4 (and read 5-10% lower in bench/saturation.py), while a simulated server with 0.2 s
        # requests gained 5% from a few queued ones.
        if declared:
            self.ceiling = max(cfg.min, min(cfg.max, declared + math.ceil(declared / 2)))
            self._grow_cap = max(cfg.min, min(self.ceiling, declared))
        else:
            self.ceiling = self._grow_cap = cfg.max
        self.limit = max(cfg.min, min(self.ceiling, int(start)))
        self.phase: Literal["grow", "hold", "probe"] = "grow"
        self.decisions: list[Decision] = []
        self.windows: deque[Window] = deque(maxlen=256)
        self._start = self.limit
        self._epoch = 0
        self._in_flight = 0
        self._old = 0  # requests dispatched before the last change, still in flight
        self._skip = 0  # completions of the new epoch still to ignore (pipeline refilling)
        self._acc: _Acc | None = None
        self._prev: Window | None = None  # the level before the current one (grow phase)
        self._hold: Window | None = None  # the measurement of the level held
        self._held = 0  # windows held since the last probe
        self._interval = cfg.probe_every  # windows between probes (grows while probes fail)
        self._cooldown = 0
        self._probe_dir = 1
        self._best_latency = math.inf
        self._lowest = self.limit  # the lowest limit measured (below it is unexplored)
        self._backoff_epoch = -1  # requests dispatched before the last backoff cannot cause one

    # --- events ----------------------------------------------------------------------------
    def on_dispatch(self, now: float) -> int:
        self._advance(now)
        self._in_flight += 1
        self._maybe_start(now)
        return self._epoch

    def on_complete(self, now: float, token: int, latency: float, outcome: Outcome) -> None:
        self._advance(now)
        self._in_flight = max(0, self._in_flight - 1)
        if outcome in _OVERLOAD and token >= self._backoff_epoch:
            self._backoff(now, "the server answered 429/503 (overloaded)")
            return
        if token != self._epoch:  # started under another limit: not a sample of this one
            self._old = max(0, self._old - 1)
            self._maybe_start(now)
            return
        acc = self._acc
        if acc is None:
            self._skip = max(0, self._skip - 1)
            self._maybe_start(now)
            return
        acc.count += 1
        latency = max(latency, 1e-9)
        acc.latency_sum += latency
        acc.latency_sq += latency * latency
        if outcome == "ok":
            acc.ok += 1
        elif outcome in _FAILED:
            acc.failed += 1
        if acc.count >= acc.need:
            self._close_window(now, acc)

    def on_cancel(self, now: float, token: int) -> None:
        self._advance(now)
        self._in_flight = max(0, self._in_flight - 1)
        if token != self._epoch:
            self._old = max(0, self._old - 1)
            self._maybe_start(now)

    def describe(self) -> dict[str, Any]:
        return {"policy": "auto", **asdict(self.cfg), "start": self._start, "ceiling": self.ceiling}

    def state(self) -> dict[str, Any]:
        """Current limit, phase and the last measurement (for metrics and charts)."""
        last = self.windows[-1] if self.windows else None
        return {
            "limit": self.limit,
            "phase": self.phase,
            "throughput_rps": last.throughput if last else None,
            "decisions": len(self.decisions),
        }

    # --- measurement -----------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        acc = self._acc
        if acc is not None and now > acc.last:
            acc.area += self._in_flight * (now - acc.last)
            acc.last = now

    def _window_size(self) -> int:
        c = self.cfg
        return max(c.window_min, min(c.window_max, math.ceil(c.window_rounds * self.limit)))

    def _maybe_start(self, now: float) -> None:
        if self._acc is None and self._old == 0 and self._skip == 0:
            self._acc = _Acc(start=now, last=now, need=self._window_size())

    def _set(self, now: float, new: int, reason: str, throughput: float | None = None) -> None:
        """Move to limit ``new`` (or re-measure the same one) in a fresh epoch."""
        new = max(self.cfg.min, min(self.ceiling, int(new)))
        changed = new != self.limit
        if changed:
            self.decisions.append(Decision(now, self.limit, new, reason, throughput))
            self.limit = new
        self._epoch += 1
        self._old = self._in_flight
        # after a change, one round of completions refills the pipeline (and the server's
        # queue) before samples are steady
        self._skip = new if changed else 0
        self._acc = None
        self._maybe_start(now)

    def _close_window(self, now: float, acc: _Acc) -> None:
        duration = max(now - acc.start, 1e-9)
        mean_in_flight = acc.area / duration
        mean_latency = acc.latency_sum / acc.count
        var = max(acc.latency_sq / acc.count - mean_latency**2, 0.0)
        ok_share = acc.ok / acc.count
        w = Window(
            self.limit,
            acc.count,
            acc.ok,
            duration,
            mean_in_flight,
            mean_latency,
            mean_in_flight / mean_latency * ok_share,
            math.sqrt(var) / mean_latency / math.sqrt(acc.count),
        )
        epoch = self._epoch
        if acc.failed / acc.count >= self.cfg.error_backoff:
            self.windows.append(w)
            self._backoff(now, f"{acc.failed} of {acc.count} requests failed")
            return
        if w.saturated:
            if ok_share >= 0.5:
                self._best_latency = min(self._best_latency, mean_latency)
            self._lowest = min(self._lowest, self.limit)
            if getattr(self, f"_on_{self.phase}")(now, w) == "extend" and acc.extended < 2:
                acc.extended += 1  # too noisy to decide: measure longer at this limit
                acc.need += self._window_size()
                return
        self.windows.append(w)
        if self._epoch == epoch:  # no decision: the next window at the same limit
            self._acc = _Acc(start=now, last=now, need=self._window_size())

    def _compare(self, w: Window, ref: Window, threshold: float) -> str:
        """ "above" when ``w`` beats ``ref`` by ``threshold``, "below" when surely not."""
        gain = w.throughput / max(ref.throughput, 1e-12) - 1
        if gain >= threshold:
            return "above"
        se = math.hypot(w.rel_se, ref.rel_se)
        return "below" if gain + se < threshold else "unsure"

    # --- the phases --------------------------------------------------------------------------
    def _on_grow(self, now: float, w: Window) -> str | None:
        prev = self._prev
        verdict = "above" if prev is None else self._compare(w, prev, self.cfg.grow_gain)
        if verdict == "unsure" and self._acc is not None and self._acc.extended < 2:
            return "extend"
        if verdict == "above":
            factor = self.cfg.factor
            if prev is not None and w.throughput >= prev.throughput * (
                1 + 0.9 * (w.limit / prev.limit - 1)
            ):
                factor *= factor  # throughput rose in proportion: the knee is far, leap
            self._prev = w
            if self.limit >= self.ceiling:
                self._enter_hold(now, w, self.limit, "reached max concurrency")
            elif self.limit >= self._grow_cap:
                self._enter_hold(now, w, self.limit, "reached the server's slots")
            else:
                self._set(
                    now, min(math.ceil(self.limit * factor), self._grow_cap), "grow", w.throughput
                )
            return None
        assert prev is not None
        # past the knee: keep the better of the last two levels
        if w.throughput >= prev.throughput * (1 + self.cfg.keep_gain):
            self._enter_hold(now, w, self.limit, "knee: small gain, keep")
        else:
            self._enter_hold(now, prev, prev.limit, "knee: no gain, step back")
        return None

    def _enter_hold(self, now: float, w: Window, level: int, reason: str) -> None:
        self.phase = "hold"
        self._prev = None
        self._hold = w
        self._held = 0
        self._set(now, level, reason, w.throughput)

    def _backoff(self, now: float, reason: str) -> None:
        self._cooldown = self.cfg.cooldown
        self.phase = "hold"
        self._prev = None
        self._hold = None
        self._held = 0
        self._set(now, math.floor(self.limit * self.cfg.backoff), reason)
        self._backoff_epoch = self._epoch

    def _on_hold(self, now: float, w: Window) -> None:
        hold = self._hold
        if hold is None or hold.limit != self.limit:
            self._hold = w
            self._held = 0
            return
        # blend repeated measurements of the held level (less noise for the next probe)
        hold.throughput = 0.5 * hold.throughput + 0.5 * w.throughput
        hold.mean_latency = 0.5 * hold.mean_latency + 0.5 * w.mean_latency
        hold.rel_se = math.hypot(hold.rel_se, w.rel_se) / 2
        if self._cooldown:
            self._cooldown -= 1
        self._held += 1
        if self._held < self._interval:
            return
        self._held = 0
        step = max(1, round(self.limit * self.cfg.probe_step))
        # latency well above the best seen means requests queue: try fewer, every other probe
        queueing = hold.mean_latency > self.cfg.queue_latency * self._best_latency
        can_up = self.limit < self.ceiling and not self._cooldown
        can_down = (queueing or self.limit <= self._lowest) and self.limit > self.cfg.min
        if can_down and (self._probe_dir > 0 or not can_up):
            direction = -1
        elif can_up:
            direction = 1
        else:
            return
        self._probe_dir = direction
        self.phase = "probe"
        self._set(
            now,
            self.limit + direction * step,
            "probe up" if direction > 0 else "probe down",
            hold.throughput,
        )

    def _on_probe(self, now: float, w: Window) -> str | None:
        hold = self._hold
        assert hold is not None
        up = self.limit > hold.limit
        verdict = self._compare(w, hold, self.cfg.keep_gain if up else -self.cfg.keep_gain)
        if verdict == "unsure" and self._acc is not None and self._acc.extended < 2:
            return "extend"
        self.phase = "hold"
        if verdict == "above":
            self._hold, self._held = w, self._interval - 1  # it paid: probe again soon
            self._interval = self.cfg.probe_every
            self._set(now, self.limit, f"probe {'up' if up else 'down'} kept", w.throughput)
        else:
            self._held = 0
            self._interval = min(self._interval * 2, 4 * self.cfg.probe_every)
            self._lowest = min(self._lowest, self.limit)
            self._set(now, hold.limit, "probe reverted", w.throughput)
        return None


def make_controller(
    concurrency: int | str, *, max_concurrency: int = 64, slots_hint: int | None = None, **auto: Any
) -> Controller:
    """``"auto"`` -> ``AutoConcurrency``; an int (or digits) -> ``FixedConcurrency``."""
    n = parse_concurrency(concurrency)
    if n == "auto":
        return AutoConcurrency(slots_hint=slots_hint, max=max_concurrency, **auto)
    return FixedConcurrency(n)


@dataclass(slots=True)
class Ticket:
    """A held slot: pass it back to ``Gate.release``."""

    token: int
    started: float
    released: bool = field(default=False)


class Gate:
    """An asyncio semaphore whose size follows ``controller.limit``; never blocks the loop."""

    def __init__(self, controller: Controller, clock: Any = time.monotonic) -> None:
        self.controller = controller
        self.clock = clock
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self.controller.limit

    @property
    def free(self) -> int:
        return max(0, self.controller.limit - self.in_flight)

    async def acquire(self) -> Ticket:
        """Wait for a free slot (first come, first served), take it and tell the controller."""
        if self._waiters or self.in_flight >= self.controller.limit:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut  # resolved by _wake, which hands the slot over (in_flight counted)
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self.in_flight -= 1  # the slot was ours already: pass it on
                    self._wake()
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(fut)
                raise
        else:
            self.in_flight += 1
        now = self.clock()
        return Ticket(self.controller.on_dispatch(now), now)

    def release(self, ticket: Ticket, outcome: Outcome) -> float:
        """Give the slot back with what happened; returns the seconds it was held."""
        if ticket.released:
            return 0.0
        ticket.released = True
        self.in_flight -= 1
        now = self.clock()
        held = now - ticket.started
        self.controller.on_complete(now, ticket.token, held, outcome)
        self._wake()
        return held

    def abandon(self, ticket: Ticket) -> None:
        """Give the slot back without a sample (the request was cancelled)."""
        if ticket.released:
            return
        ticket.released = True
        self.in_flight -= 1
        self.controller.on_cancel(self.clock(), ticket.token)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.controller.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def poke(self) -> None:
        """Re-check waiters (call after changing the controller's limit from outside)."""
        self._wake()
