"""Live metrics of a run: rates, latency percentiles, errors, ETA, CPU and memory.

``Metrics`` is fed by the processor (one call per finished attempt and per finished unit;
each is O(1)) and turned into a ``MetricsSnapshot`` on demand. ``sample()`` appends a
snapshot to ``history``, a bounded list that notebook charts poll; the processor samples
once a second. Rates are rolling (the last ``window_s`` seconds, or since the start when
the run is younger). ``status_json(store, run)`` builds the same picture from the database
alone, for ``emailwb status --json`` in another process.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import psutil

from emailwb.quality.stats import percentile

if TYPE_CHECKING:
    from emailwb.store.database import Store

#: snapshots kept in ``Metrics.history`` (an hour at one per second)
HISTORY_LEN = 3600
#: units the rolling window must hold before its rate is used; fewer give the session's rate,
#: so a slow model (a unit every 10 s) does not swing the rate and the ETA by 10x
MIN_EVENTS = 20


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything a progress bar, a chart or ``status --json`` shows, at one instant."""

    t: float  # seconds since the run (this session of it) started
    wall: float  # time.time()
    state: str  # idle | running | paused | stopping | stopped | completed
    total: int  # units in this run (done + failed + pending)
    done: int
    failed: int
    pending: int
    in_flight: int  # requests on the wire now
    limit: int  # the concurrency limit now
    emails_done: int  # messages covered by done units (copies and thread members count)
    units_per_min: float  # steady: over the window once it holds MIN_EVENTS units, else the session
    emails_per_min: float  # the same span as units_per_min, messages covered
    tokens_per_s: float  # rolling, prompt + completion
    completion_tokens_per_s: float
    latency_p50: float | None  # seconds, over the last requests
    latency_p95: float | None
    ttft_p50: float | None
    ttft_p95: float | None
    attempt_error_rate: float  # attempts that failed / attempts, last window (retried ones too)
    retries: int  # attempts beyond the first, this session
    eta_s: float | None  # pending / units_per_min; None unless running or paused
    cpu_percent: float | None  # this process
    rss_mb: float | None
    server_cpu_percent: float | None  # the local llama-server, when there is one
    server_rss_mb: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class Metrics:
    """Rolling counters for one run session. All methods are cheap and non-blocking."""

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        samples: int = 512,
        server_pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        history_len: int = HISTORY_LEN,
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        self.started = clock()
        self.state = "idle"
        self.total = 0
        self.done = 0
        self.failed = 0
        self.emails_done = 0
        self.retries = 0
        self.session_units = 0  # units done in this session (the rate's fallback span)
        self.session_emails = 0
        self.in_flight = 0
        self.limit = 0
        self.history: deque[MetricsSnapshot] = deque(maxlen=history_len)
        self._events: deque[tuple[float, int, int, int]] = deque()  # t, units, emails, tokens
        self._ctokens: deque[tuple[float, int]] = deque()
        self._attempts: deque[tuple[float, bool]] = deque(maxlen=1000)
        self._latency: deque[float] = deque(maxlen=samples)
        self._ttft: deque[float] = deque(maxlen=samples)
        self._proc = psutil.Process(os.getpid())
        self._proc.cpu_percent(None)
        self._server: psutil.Process | None = None
        self.set_server_pid(server_pid)
        self._last_cpu: tuple[float, float | None, float | None, float | None, float | None] = (
            -1e9,
            None,
            None,
            None,
            None,
        )

    # --- feeding -----------------------------------------------------------------------------
    def set_server_pid(self, pid: int | None) -> None:
        """Watch a local server's CPU and memory too (None: stop watching)."""
        self._server = None
        if pid:
            try:
                self._server = psutil.Process(pid)
                self._server.cpu_percent(None)
            except psutil.Error:
                self._server = None

    def start(self, total: int, done: int = 0, failed: int = 0, emails_done: int = 0) -> None:
        """A (re)started run: counts already committed by earlier sessions."""
        self.started = self.clock()
        self.total, self.done, self.failed, self.emails_done = total, done, failed, emails_done
        self.session_units = self.session_emails = 0
        self.state = "running"

    def attempt(self, ok: bool, *, retry: bool = False) -> None:
        """One HTTP attempt ended (``ok`` False for any error)."""
        self._attempts.append((self.clock(), ok))
        if retry:
            self.retries += 1

    def unit_done(
        self,
        *,
        emails: int,
        latency_s: float | None,
        ttft_s: float | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> None:
        """A unit got its result (committed or about to be)."""
        now = self.clock()
        self.done += 1
        self.emails_done += emails
        self.session_units += 1
        self.session_emails += emails
        tokens = (prompt_tokens or 0) + (completion_tokens or 0)
        self._events.append((now, 1, emails, tokens))
        self._ctokens.append((now, completion_tokens or 0))
        if latency_s is not None:
            self._latency.append(latency_s)
        if ttft_s is not None:
            self._ttft.append(ttft_s)

    def unit_failed(self) -> None:
        self.failed += 1

    def add_units(self, n: int) -> None:
        """Units added to the run while it runs (``retry_failed``, new ingest)."""
        self.total += n

    # --- reading -----------------------------------------------------------------------------
    def _trim(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._events and self._events[0][0] < cutoff:
            self._events.popleft()
        while self._ctokens and self._ctokens[0][0] < cutoff:
            self._ctokens.popleft()

    def _resources(
        self, now: float
    ) -> tuple[float | None, float | None, float | None, float | None]:
        if now - self._last_cpu[0] < 0.5:  # psutil needs an interval; reuse a recent reading
            return self._last_cpu[1:]
        cpu = rss = scpu = srss = None
        try:
            with self._proc.oneshot():
                cpu = self._proc.cpu_percent(None)
                rss = self._proc.memory_info().rss / 2**20
        except psutil.Error:
            pass
        if self._server is not None:
            try:
                with self._server.oneshot():
                    scpu = self._server.cpu_percent(None)
                    srss = self._server.memory_info().rss / 2**20
            except psutil.Error:
                self._server = None
        self._last_cpu = (now, cpu, rss, scpu, srss)
        return cpu, rss, scpu, srss

    def snapshot(self) -> MetricsSnapshot:
        """The current picture (rates over the last ``window_s`` seconds)."""
        now = self.clock()
        self._trim(now)
        elapsed = now - self.started
        window = max(min(self.window_s, elapsed), 1e-6)
        span = window
        units = sum(e[1] for e in self._events)
        emails = sum(e[2] for e in self._events)
        if units < MIN_EVENTS:  # too few in the window for a steady rate: the whole session
            span = max(elapsed, 1e-6)
            units, emails = self.session_units, self.session_emails
        tokens = sum(e[3] for e in self._events)
        ctokens = sum(c[1] for c in self._ctokens)
        recent = [ok for t, ok in self._attempts if t >= now - self.window_s]
        error_rate = (recent.count(False) / len(recent)) if recent else 0.0
        pending = max(self.total - self.done - self.failed, 0)
        rate = units / span
        lat, ttft = list(self._latency), list(self._ttft)
        cpu, rss, scpu, srss = self._resources(now)
        return MetricsSnapshot(
            t=round(elapsed, 3),
            wall=time.time(),
            state=self.state,
            total=self.total,
            done=self.done,
            failed=self.failed,
            pending=pending,
            in_flight=self.in_flight,
            limit=self.limit,
            emails_done=self.emails_done,
            units_per_min=rate * 60,
            emails_per_min=emails / span * 60,
            tokens_per_s=tokens / window,
            completion_tokens_per_s=ctokens / window,
            latency_p50=percentile(lat, 0.5),
            latency_p95=percentile(lat, 0.95),
            ttft_p50=percentile(ttft, 0.5),
            ttft_p95=percentile(ttft, 0.95),
            attempt_error_rate=error_rate,
            retries=self.retries,
            eta_s=(pending / rate) if rate > 0 and self.state in ("running", "paused") else None,
            cpu_percent=cpu,
            rss_mb=rss,
            server_cpu_percent=scpu,
            server_rss_mb=srss,
        )

    def sample(self) -> MetricsSnapshot:
        """Take a snapshot and append it to ``history``."""
        snap = self.snapshot()
        self.history.append(snap)
        return snap


# --- from the database alone ------------------------------------------------------------------
_COUNTS_SQL = """
SELECT COUNT(*) AS results,
       SUM(status = 'done') AS done, SUM(status = 'failed') AS failed,
       SUM(CASE WHEN status = 'done' THEN emails ELSE 0 END) AS emails_done,
       SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens,
       SUM(cached_tokens) AS cached_tokens, SUM(attempts) AS attempts,
       MIN(created_at) AS first_at, MAX(created_at) AS last_at
FROM results WHERE run_id = ?"""


def status_json(store: Store, run: str | int | None = None) -> dict[str, Any]:
    """The state of one run (by name or id; default: the latest) from the database alone.

    Counts by status, pending units, tokens, latency percentiles, the error reasons, the
    throughput over the last minute of committed results, an ETA, and the live snapshot the
    processor stores every few seconds (``progress``). ``{"runs": []}`` when there is none.
    """
    from emailwb.store import runs as runs_mod  # runs imports metrics for its snapshots

    record = runs_mod.get_run(store, run)
    if record is None:
        known = [r["name"] for r in store.query("SELECT name FROM runs ORDER BY id")]
        return {"run": None, "runs": known}
    counts = dict(store.query_one(_COUNTS_SQL, (record.id,)) or {})
    total = runs_mod.count_units(store, record.unit)
    done = int(counts.get("done") or 0)
    failed = int(counts.get("failed") or 0)
    lat = [
        r[0]
        for r in store.query(
            "SELECT latency_s FROM results WHERE run_id = ? AND status = 'done' "
            "AND latency_s IS NOT NULL ORDER BY id DESC LIMIT 1000",
            (record.id,),
        )
    ]
    ttft = [
        r[0]
        for r in store.query(
            "SELECT ttft_s FROM results WHERE run_id = ? AND status = 'done' "
            "AND ttft_s IS NOT NULL ORDER BY id DESC LIMIT 1000",
            (record.id,),
        )
    ]
    # the minute before now while running; the run's last minute of work once it stopped, so
    # a stopped run's status is the same on every call
    anchor = (
        "'now'"
        if record.status in ("running", "paused")
        else ("(SELECT MAX(created_at) FROM results WHERE run_id = ?)")
    )
    recent = store.query_one(
        "SELECT COUNT(*) AS n, SUM(emails) AS emails FROM results WHERE run_id = ? "
        f"AND status = 'done' AND created_at >= strftime('%Y-%m-%dT%H:%M:%f', {anchor}, "
        "'-60 seconds')",
        (record.id,) if anchor == "'now'" else (record.id, record.id),
    )
    per_min = float(recent["n"] or 0) if recent else 0.0
    reasons = [
        dict(r)
        for r in store.query(
            "SELECT error, COUNT(*) AS n, MIN(reason) AS example FROM results "
            "WHERE run_id = ? AND status = 'failed' GROUP BY error ORDER BY n DESC",
            (record.id,),
        )
    ]
    pending = max(total - done - failed, 0)
    progress = json.loads(record.progress) if record.progress else None
    running = record.status in ("running", "paused")
    return {
        "run": {
            "id": record.id,
            "name": record.name,
            "status": record.status,
            "unit": record.unit,
            "started_at": record.started_at,
            "updated_at": record.updated_at,
            "ended_at": record.ended_at,
            "config": record.config,
        },
        "total": total,
        "done": done,
        "failed": failed,
        "pending": pending,
        "emails_done": int(counts.get("emails_done") or 0),
        "prompt_tokens": int(counts.get("prompt_tokens") or 0),
        "completion_tokens": int(counts.get("completion_tokens") or 0),
        "cached_tokens": int(counts.get("cached_tokens") or 0),
        "attempts": int(counts.get("attempts") or 0),
        "latency_p50": percentile(lat, 0.5),
        "latency_p95": percentile(lat, 0.95),
        "ttft_p50": percentile(ttft, 0.5),
        "ttft_p95": percentile(ttft, 0.95),
        "units_last_min": per_min,
        # from the live snapshot's steady rate while running; a stopped run has no ETA
        "eta_s": (progress or {}).get("eta_s") if running else None,
        "failures": reasons,
        "live": progress,
    }
