"""The processor's quality watch: metrics per result, deep checks, drift alarm and rollback.

``QualityWatch`` is a listener the processor calls (``Processor(..., quality=...)`` takes a
``QualityConfig`` or a watch): ``start(RunContext)`` once, ``observe(...)`` for every
committed result, ``decisions()`` on its clock, ``resumed()`` after a person resumes, and
``close()`` at the end. The watch holds no processor: it *returns decisions* (``Pause``,
``RollBack``) and the processor carries them out. For every committed result it computes and stores
the automatic metrics (``emailwb.quality.scoring``) in small groups in a worker thread, feeds them
to a ``quality.DriftDetector``, puts the deep-check sample (every ``sample_every``-th
content key, deterministic) into the audit queue and asks a judge (``emailwb.quality.judge``) for
a second opinion on each, in the background: judge failures never fail a unit.

Drift: each metric's first ``baseline_size`` values are the run's baseline; once a rolling
``window`` of later values is worse by more than ``threshold``, an alert is logged, stored in
``run_events``, kept in ``alerts``/``status()`` (which the processor puts into the run's
live progress, read by ``emailwb status`` and the launch panel) and acted on as
``on_drift`` says:

* ``"alert"``: nothing more;
* ``"pause"``: a ``Pause`` decision: the processor pauses (requests in flight finish); its
  ``resume()`` re-arms the watch;
* ``"rollback"``: a ``RollBack`` decision: the following units are sent under the *baseline configuration*: the
  configuration of the run named by ``rollback_to`` (a run whose quality is trusted), or,
  without it, the run's first configuration when it was resumed with another one. The
  baseline's backend, URLs, model, options and prompt settings (mode, layout, template,
  token budget) are used; the unit kind, concurrency and retry policy stay the run's. Each
  result records its ``phase`` ("main" or "baseline"), so it is known which emails ran
  under which configuration. A second alarm under the baseline pauses the run. Options the
  baseline sets override the run's; a run resumed later starts under its own configuration
  again, with a new baseline window.

One watch belongs to one run; metrics cost about a millisecond
per result in a worker thread, nothing next to an LLM call (``QualityConfig(enabled=False)``
turns them off for pure-throughput benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emailwb.errors import BackendError, ConfigError, EmailwbError, SchemaViolation
from emailwb.llm.contract import Backend
from emailwb.llm.grammar import compact_gbnf
from emailwb.llm.router import make_backend
from emailwb.quality import scoring
from emailwb.quality.judge import JUDGEMENT_SQL, Judge
from emailwb.quality.measures import FLOORS, DriftAlert, DriftDetector, grounding_warning
from emailwb.settings import RunConfig
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.store.database import Store

log = logging.getLogger("emailwb.quality.watch")

PROMPT_KEYS = ("mode", "layout", "template", "token_budget", "plan")
BACKEND_KEYS = ("backend", "urls", "model")
SCORE_GROUP = 64  # results scored per worker-thread call
MIN_VALUES_FOR_WARNING = 20  # extracted values seen before the grounding warning shows


class QualityConfig(BaseModel):
    """What the quality watch does during a run (stored in the run's provenance)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # compute and store metrics per result
    sample_every: int = Field(100, ge=1)  # deep-check one content key in this many
    salt: str = ""  # another salt draws another (still deterministic) sample
    judge: bool = True  # ask a judge about each sampled unit
    judge_backend: Literal["same", "ollama", "openai"] = "same"  # same: the run's backend
    judge_urls: list[str] = Field(default_factory=list)
    judge_model: str | None = None
    judge_timeout: float = 120.0
    judge_wait_s: float = 60.0  # at the end of a run: how long to wait for judges in flight
    drift_metrics: list[str] = Field(
        default_factory=lambda: ["schema_valid", "grounding", "amount_recall"]
    )
    lower_is_better: list[str] = Field(default_factory=list)
    baseline_size: int = Field(50, ge=1)
    window: int = Field(50, ge=1)
    threshold: float = Field(0.15, ge=0)
    relative: bool = False
    on_drift: Literal["off", "alert", "pause", "rollback"] = "alert"
    # absolute floors per metric (window means below them alert, whatever the baseline was)
    floors: dict[str, float] = Field(default_factory=lambda: dict(FLOORS))
    rollback_to: str | None = None  # run name whose configuration is the baseline

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> QualityConfig:
        """``sample_every`` from ``emailwb.settings.Settings``; the rest from ``overrides``."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{"sample_every": getattr(settings, "sample_every", 100), **given})


@dataclass(slots=True)
class Phase:
    """A configuration units are sent under: its label, config, backend and request options."""

    label: str  # main | baseline
    config: RunConfig
    backend: Any  # the (breaker-guarded) backend
    options: dict[str, Any] = field(default_factory=dict)  # merged over the backend's own
    rebuild: bool = False  # prompts differ from the run's: rebuild each unit's messages
    since: int = 0  # results observed when it began

    @property
    def grammar(self) -> str | None:
        """The GBNF grammar its requests carry (compact JSON), or None for the JSON schema."""
        return compact_gbnf() if self.config.compact_json else None


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the watch needs of the run it watches, given by the processor at ``start``."""

    store: Store
    run_id: int
    name: str
    config: RunConfig
    backend: Any  # the run's (breaker-guarded) backend; None for a plan that asks no model


@dataclass(frozen=True, slots=True)
class Pause:
    """Decision: pause the run (requests in flight finish); ``resume()`` goes on."""

    reason: str


@dataclass(frozen=True, slots=True)
class RollBack:
    """Decision: send the following units under ``phase`` (the baseline configuration).

    ``new_backend``: the phase's backend is not the run's own (the processor guards it with
    its endpoint breaker before sending); ``phase.rebuild``: prompts differ from the run's.
    """

    phase: Phase
    new_backend: bool


Decision = Pause | RollBack


def baseline_config(
    store: Store, current: RunConfig, run_id: int | None, rollback_to: str | None
) -> RunConfig | None:
    """The configuration a rollback returns to (see the module docstring); None if none."""
    if rollback_to is not None:
        record = runs.get_run(store, rollback_to)
        if record is None:
            raise ConfigError(
                f"rollback_to names the run {rollback_to!r}, which does not exist",
                hint="pass the name of a finished run whose quality you trust "
                "(`emailwb status --json` lists them)",
            )
        stored = record.config
    elif run_id is not None:
        record = runs.get_run(store, run_id)
        stored = record.config if record is not None else {}
    else:
        return None
    known = {k: v for k, v in stored.items() if k in RunConfig.model_fields}
    try:
        base = RunConfig(**known)
    except ValueError as exc:
        raise ConfigError(
            f"the baseline run's stored configuration is not usable: {exc}",
            hint="pick another run with rollback_to",
        ) from exc
    if rollback_to is None and base == current:
        return None  # a fresh run: its first configuration is this one
    if base.unit != current.unit:
        raise ConfigError(
            f"the baseline configuration makes one unit per {base.unit}, this run one per "
            f"{current.unit}: a rollback cannot switch unit kinds mid-run",
            hint="roll back to a run with the same chain/dedup settings",
        )
    return base


class QualityWatch:
    """Per-result metrics, deep-check sampling and judging, drift alarm and rollback."""

    def __init__(
        self,
        config: QualityConfig | None = None,
        *,
        baseline: RunConfig | None = None,
        baseline_backend: Backend | None = None,
        judge_backend: Backend | None = None,
        api_key: str | None = None,
        label: str = "main",
    ) -> None:
        self.config = config or QualityConfig()
        self.baseline = baseline  # overrides rollback_to / the run's first configuration
        self._baseline_backend = baseline_backend
        self._judge_backend = judge_backend
        self._api_key = api_key
        self.label = label
        self.run: RunContext | None = None
        self.phase: Phase | None = None
        self._decisions: list[Decision] = []
        self.alerts: list[dict[str, Any]] = []
        self.scored = self.sampled = self.judged = self.judge_failed = 0
        self.checked_values = self.grounded_values = 0  # extracted values, and those in the text
        self.paused_by_drift = False
        self._pending: deque[scoring.Outcome] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._judges: set[asyncio.Task[None]] = set()
        self._judge: Judge | None = None
        self._owned: list[Backend] = []
        self._recent: dict[str, deque[float]] = {}
        self.detector = self._detector()

    @classmethod
    def of(cls, quality: QualityWatch | QualityConfig | None) -> QualityWatch:
        """``quality`` itself, or a watch with that configuration (the default when None)."""
        return quality if isinstance(quality, QualityWatch) else cls(quality)

    def _detector(self) -> DriftDetector:
        c = self.config
        return DriftDetector(
            c.drift_metrics,
            c.baseline_size,
            c.window,
            c.threshold,
            relative=c.relative,
            lower_is_better=c.lower_is_better,
            floors=c.floors,
        )

    def describe(self) -> dict[str, Any]:
        """For the run's provenance."""
        out: dict[str, Any] = self.config.model_dump()
        if self.baseline is not None:
            out["baseline"] = {
                k: v
                for k, v in self.baseline.model_dump().items()
                if k in (*BACKEND_KEYS, *PROMPT_KEYS, "options", "preset")
            }
        return out

    # --- the processor's calls ------------------------------------------------------------
    async def start(self, run: RunContext) -> Phase:
        """Before the first unit: the main phase (returned: what units are sent under), the
        baseline a rollback would return to, the judge."""
        self.run = proc = run
        self.phase = Phase("main", proc.config, proc.backend)
        if self.config.on_drift == "rollback" and self.baseline is None:
            self.baseline = await asyncio.to_thread(
                baseline_config, proc.store, proc.config, proc.run_id, self.config.rollback_to
            )
            if self.baseline is None:
                log.warning(
                    "on_drift='rollback' but there is no baseline configuration: a drift "
                    "will pause the run instead (pass rollback_to=RUN to name one)"
                )
        elif self.baseline is not None and self.baseline.unit != proc.config.unit:
            raise ConfigError(
                "the baseline configuration has another unit kind than the run",
                hint="roll back to a configuration with the same chain/dedup",
            )
        no_model = proc.backend is None and self.config.judge_backend == "same"
        if self.config.judge and self._judge is None and not no_model:  # a facts plan: no judge
            self._judge = Judge(self._make_judge_backend(), timeout=self.config.judge_timeout)
        return self.phase

    def _make_judge_backend(self) -> Backend:
        if self._judge_backend is not None:
            return self._judge_backend
        c = self.config
        if c.judge_backend == "same":
            assert self.run is not None
            return self.run.backend
        backend = make_backend(
            c.judge_backend,
            c.judge_urls or None,
            c.judge_model,
            self._api_key,
            {"temperature": 0.0},
        )
        self._owned.append(backend)
        return backend

    def observe(
        self,
        unit_id: int,
        truncated: bool,
        phase: str | None,
        comp: Any = None,
        exc: BackendError | None = None,
    ) -> list[Decision]:
        """A unit's result was handed to the writer (non-blocking: it is scored in the
        background). Returns the decisions ready now (as ``decisions()``)."""
        if not self.config.enabled:
            return self.decisions()
        if comp is not None:
            self._pending.append(
                scoring.Outcome(unit_id, comp.data, comp.raw, truncated, True, phase)
            )
        elif isinstance(exc, SchemaViolation):  # other failures say nothing about quality
            self._pending.append(scoring.Outcome(unit_id, None, exc.raw, truncated, False, phase))
        else:
            return self.decisions()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="emailwb-quality")
        return self.decisions()

    def decisions(self) -> list[Decision]:
        """What the watch decided since the last call, in order, for the processor to do."""
        out, self._decisions = self._decisions, []
        return out

    def resumed(self) -> None:
        """A person resumed the run: a pause the watch asked for is over; watch again."""
        if self.paused_by_drift:
            self.paused_by_drift = False
            self.detector.reset(keep_baseline=True)

    async def close(self) -> None:
        """At the end of a run: score what is left, wait for the judges (bounded), tidy up."""
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                await self._drainer
        if self._pending:  # observed after the last drain finished
            with contextlib.suppress(Exception):
                await self._drain()
        if self._judges:
            _, late = await asyncio.wait(set(self._judges), timeout=self.config.judge_wait_s)
            for task in late:
                task.cancel()
            if late:
                log.warning(
                    "%d judge calls were cut off at the end of the run: `emailwb audit "
                    "--judge` judges them later",
                    len(late),
                )
                await asyncio.gather(*late, return_exceptions=True)
        for backend in self._owned:
            with contextlib.suppress(Exception):
                await backend.aclose()
        self._owned.clear()

    def status(self) -> dict[str, Any]:
        """The watch's state for the live progress, ``emailwb status`` and the launch panel."""
        means = {}
        for name in self.detector.metrics:
            recent = self._recent.get(name)
            means[name] = {
                "baseline": self.detector.baseline(name),
                "current": sum(recent) / len(recent) if recent else None,
            }
        share = self.grounded_values / self.checked_values if self.checked_values else None
        warning = (
            grounding_warning(share) if self.checked_values >= MIN_VALUES_FOR_WARNING else None
        )
        return {
            "phase": self.phase.label if self.phase else None,
            "scored": self.scored,
            "grounding": share,
            "grounding_warning": warning,
            "sampled": self.sampled,
            "judged": self.judged,
            "judge_failed": self.judge_failed,
            "on_drift": self.config.on_drift,
            "paused_by_drift": self.paused_by_drift,
            "alerts": [a["message"] for a in self.alerts],
            "metrics": means,
        }

    # --- background work ------------------------------------------------------------------
    async def _drain(self) -> None:
        proc = self.run
        assert proc is not None
        while self._pending:
            group = [self._pending.popleft() for _ in range(min(SCORE_GROUP, len(self._pending)))]
            try:
                scored = await asyncio.to_thread(
                    scoring.score_units,
                    proc.store,
                    proc.run_id,
                    proc.config.unit,
                    group,
                    every=self.config.sample_every,
                    salt=self.config.salt,
                )
                scoring.write_scored(proc.store, proc.run_id, scored)
            except Exception as exc:  # quality must never stop the run
                log.warning(
                    "quality metrics for %d results were not stored: %s "
                    "(`emailwb report` computes missing ones)",
                    len(group),
                    exc,
                    exc_info=not isinstance(exc, EmailwbError),
                )
                continue
            sent = {o.unit_id: o for o in group}
            for s in scored:
                self.scored += 1
                checked = s.metrics.get("checked_total") or 0
                self.checked_values += checked
                self.grounded_values += checked - (s.metrics.get("ungrounded_total") or 0)
                outcome = sent[s.unit_id]
                if self.phase is None or outcome.phase == self.phase.label:
                    await self._feed(s)  # results sent before a rollback do not count after it
                if s.sampled:
                    self.sampled += 1
                    self._start_judge(s, outcome.data)

    async def _feed(self, s: scoring.Scored) -> None:
        for name in self.detector.metrics:
            value = s.metrics.get(name)
            if value is not None:
                self._recent.setdefault(name, deque(maxlen=self.config.window)).append(float(value))
        alert = self.detector.update(s.metrics)
        if alert is not None and self.config.on_drift != "off":
            await self._on_alert(alert)

    def _event(self, kind: str, message: str, detail: dict[str, Any]) -> None:
        assert self.run is not None
        self.run.store.submit(
            "INSERT INTO run_events (run_id, kind, message, detail, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (self.run.run_id, kind, message, json.dumps(detail, default=str), runs.now_iso()),
        )

    async def _on_alert(self, alert: DriftAlert) -> None:
        phase = self.phase.label if self.phase else "main"
        detail = {
            "metric": alert.metric,
            "baseline": alert.baseline,
            "current": alert.current,
            "change": alert.change,
            "threshold": alert.threshold,
            "seen": alert.seen,
            "window": alert.window_n,
            "phase": phase,
            "action": self.config.on_drift,
        }
        self.alerts.append({"message": alert.message, **detail})
        log.warning(
            "%s (run %s, phase %s; on_drift=%s)",
            alert.message,
            self.run.name if self.run else "?",
            phase,
            self.config.on_drift,
        )
        self._event("drift_alert", alert.message, detail)
        action = self.config.on_drift
        if action == "rollback":
            why = None
            if phase != "main":
                why = "already running under the baseline configuration"
            elif self.baseline is None:
                why = "no baseline configuration (pass rollback_to=RUN)"
            else:
                try:
                    await self._rollback(alert)
                except EmailwbError as exc:
                    why = f"the baseline could not be started: {exc}"
            if why is None:
                return
            log.warning("not rolling back: %s; pausing the run instead", why)
            action = "pause"
        if action == "pause":
            self._decisions.append(Pause(f"quality drift on {alert.metric}"))
            self.paused_by_drift = True
            self._event(
                "pause", f"paused on quality drift ({alert.metric}); resume() to go on", detail
            )

    async def _rollback(self, alert: DriftAlert) -> None:
        base = self.baseline
        assert base is not None and self.phase is not None
        main = self.phase.config
        same = all(getattr(base, k) == getattr(main, k) for k in BACKEND_KEYS)
        options: dict[str, Any] = {}
        if self._baseline_backend is not None:
            backend: Backend = self._baseline_backend
        elif same:  # the same server and model: only the request options change
            backend, options = self.phase.backend, dict(base.options)
        elif base.backend == "local":
            raise ConfigError(
                "the baseline uses another local model, which needs a second llama-server",
                hint="pass baseline_backend=..., or roll back to "
                "a configuration served by Ollama/OpenAI",
            )
        else:
            backend = make_backend(
                base.backend, base.urls or None, base.model, self._api_key, base.options
            )
            self._owned.append(backend)
            await backend.warm()
        new_backend = backend is not self.phase.backend
        rebuild = any(getattr(base, k) != getattr(main, k) for k in PROMPT_KEYS)
        self.phase = Phase("baseline", base, backend, options, rebuild, self.scored)
        self._decisions.append(RollBack(self.phase, new_backend))
        self.detector.reset(keep_baseline=True)
        msg = (
            f"rolled back to the baseline configuration ({base.backend} {base.model or ''} "
            f"{','.join(base.urls)}) after {alert.seen} results"
        )
        log.warning("%s", msg)
        self._event(
            "rollback",
            msg,
            {
                "metric": alert.metric,
                "at_result": alert.seen,
                "baseline": {k: getattr(base, k) for k in (*BACKEND_KEYS, *PROMPT_KEYS, "options")},
            },
        )

    def _start_judge(self, s: scoring.Scored, data: dict[str, Any] | None) -> None:
        if self._judge is None or data is None:
            return
        task = asyncio.create_task(self._run_judge(s, data), name=f"emailwb-judge-{s.unit_id}")
        self._judges.add(task)
        task.add_done_callback(self._judges.discard)

    async def _run_judge(self, s: scoring.Scored, data: dict[str, Any]) -> None:
        assert self._judge is not None and self.run is not None
        proc = self.run
        try:
            outcome = await self._judge.check(s.full_text, data)
            proc.store.submit(JUDGEMENT_SQL, outcome.params(proc.run_id, s.unit_id))
        except EmailwbError as exc:  # never fails the unit
            log.warning("judging unit %s failed: %s", s.unit_id, exc)
            return
        if outcome.status == "done":
            self.judged += 1
        else:
            self.judge_failed += 1
            log.warning("judge: unit %s: %s", s.unit_id, outcome.error)
