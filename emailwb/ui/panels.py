"""The notebook panels: batch launch with live charts and results, priority tuning.

Job: plain Python objects holding ipywidgets, which a notebook displays (``panel`` as the
last expression of a cell) and tests drive (``.value = ...``, ``button.click()``).

- ``LaunchPanel``: backend, endpoints, model, concurrency (auto or a slider), options,
  limit, run name and priority profile; Start/Pause/Resume/Stop drive a real run
  (``processor.run_batch`` as a task on the kernel's event loop, so the kernel stays free);
  a refresher task updates the live charts, counters, progress bar and ETA about twice a
  second and the latest-results table every few seconds, plus a quality line (results
  scored, deep checks sampled and judged) that turns into a red drift alert naming the
  metric and what the run did (paused, rolled back to the baseline, or alert only);
  ``quality=`` takes a ``drift.QualityConfig`` (window, threshold, ``on_drift``).
  Its ``results`` (``charts.ResultsBrowser``) lists the newest results; picking one shows
  the email beside its JSON, escaped (email content is untrusted).
- ``PrioritiesPanel``: a weight slider per email type; the pending queue re-orders at once
  (polars), charts show the priority distribution and who moved; Save stores the named
  profile, which a running processor applies at once (linked panel) or within seconds.

Every callback runs under an ``ErrorLog``: an exception shows in the panel's Output widget.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import polars as pl

from emailwb.engine.library import list_prompts, prompt_warning
from emailwb.engine.throughput import MetricsSnapshot
from emailwb.facts.plans import PLANS, get_plan
from emailwb.facts.records import results_frame
from emailwb.settings import RunConfig
from emailwb.store import runs
from emailwb.store.database import Store
from emailwb.ui import charts, explore
from emailwb.ui.notebook import ErrorLog, escape, spawn

if TYPE_CHECKING:
    from emailwb.quality.watch import QualityConfig

BACKENDS = ["local", "ollama", "openai"]
_STYLE = {"description_width": "110px"}


def _open_store(db: str | Path | Store) -> tuple[Store, bool]:
    return (db, False) if isinstance(db, Store) else (explore.open_store(db), True)


class _Panel:
    """Shared display plumbing: ``widget`` is what the notebook shows."""

    widget: w.Widget

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class LaunchPanel(_Panel):
    """The batch launch panel; see the module docstring. ``await panel.run()`` runs headless."""

    def __init__(
        self,
        db: str | Path | Store,
        *,
        backend: str = "local",
        urls: str | list[str] = "",
        model: str | None = "",
        limit: int | None = None,
        run_name: str = "",
        concurrency: int | str = "auto",
        profile: str = runs.DEFAULT_PROFILE,
        api_key: str | None = None,
        refresh_s: float = 0.5,
        results_every_s: float = 2.0,
        results_rows: int = 20,
        show_charts: bool = True,
        config_overrides: dict[str, Any] | None = None,
        quality: QualityConfig | None = None,
        plan: str = "default",
        prompt: str = "builtin",
    ) -> None:
        self.store, self._own_store = _open_store(db)
        self.refresh_s, self.results_every_s = refresh_s, results_every_s
        self.config_overrides = dict(config_overrides or {})
        self.quality = quality  # None: the defaults
        self.errors = ErrorLog()
        self.state = "idle"
        self.processor: Any = None
        self.summary: Any = None
        self.error: BaseException | None = None
        self.run_id: int | None = None
        self.snapshot: MetricsSnapshot | None = None
        self.task: asyncio.Task[Any] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._api_key = api_key
        cap = w.Layout(width="420px")
        self.backend = w.Dropdown(
            options=BACKENDS, value=backend, description="backend", style=_STYLE, layout=cap
        )
        url_text = "\n".join(urls) if isinstance(urls, list) else str(urls or "")
        self.urls = w.Textarea(
            value=url_text.replace(",", "\n"),
            description="endpoints",
            placeholder="one URL per line (not needed for local)",
            style=_STYLE,
            layout=w.Layout(width="420px", height="52px"),
        )
        self.model = w.Text(
            value=model or "",
            description="model",
            placeholder="model name, or a GGUF path for local",
            style=_STYLE,
            layout=cap,
        )
        auto = str(concurrency).lower() == "auto"
        self.concurrency_mode = w.ToggleButtons(
            options=["auto", "fixed"],
            value="auto" if auto else "fixed",
            description="concurrency",
            style=_STYLE,
        )
        self.concurrency = w.IntSlider(
            value=4 if auto else int(concurrency),
            min=1,
            max=64,
            description="requests",
            style=_STYLE,
            disabled=auto,
            layout=cap,
        )
        self.max_tokens = w.BoundedIntText(
            value=RunConfig().options["num_predict"],
            min=16,
            max=8192,
            description="max tokens",
            style=_STYLE,
            layout=w.Layout(width="220px"),
        )
        self.temperature = w.BoundedFloatText(
            value=0.0,
            min=0.0,
            max=2.0,
            step=0.1,
            description="temperature",
            style=_STYLE,
            layout=w.Layout(width="220px"),
        )
        self.mode = w.Dropdown(
            options=["clean", "raw"],
            value="clean",
            description="text",
            style=_STYLE,
            layout=w.Layout(width="220px"),
        )
        self.plan = w.Dropdown(
            options=list(PLANS),
            value=get_plan(plan).name,
            description="plan",
            style=_STYLE,
            layout=w.Layout(width="220px"),
            tooltip="where each field comes from (README, 'Plans')",
        )
        self.prompt = w.Dropdown(
            options=[v["name"] for v in list_prompts(self.store)],
            value=prompt,
            description="prompt",
            style=_STYLE,
            layout=w.Layout(width="220px"),
            tooltip="the prompt version sent to the model (saved in the prompt lab)",
        )
        self.prompt_warning = w.HTML("")
        self.prompt_warning.add_class("emailwb-prompt-warning")
        self.prompt.observe(self.errors.capture(self._on_prompt), names="value")
        self.chain = w.Checkbox(value=False, description="whole threads (chain)", indent=False)
        self.limit = w.BoundedIntText(
            value=int(limit or 0),
            min=0,
            max=10_000_000,
            description="limit (0 = all)",
            style=_STYLE,
            layout=w.Layout(width="220px"),
        )
        self.run_name = w.Text(
            value=run_name,
            description="run name",
            placeholder="empty: one name per configuration (resumes)",
            style=_STYLE,
            layout=cap,
        )
        self.profile = w.Text(
            value=profile, description="priority profile", style=_STYLE, layout=cap
        )
        self.start_button = w.Button(description="Start", button_style="success", icon="play")
        self.pause_button = w.Button(description="Pause", icon="pause")
        self.resume_button = w.Button(description="Resume", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        for name, button in (
            ("start", self.start_button),
            ("pause", self.pause_button),
            ("resume", self.resume_button),
            ("stop", self.stop_button),
        ):
            button.add_class(f"emailwb-{name}")
        self.start_button.on_click(self.errors.capture(lambda _b: self.start()))
        self.pause_button.on_click(self.errors.capture(lambda _b: self.pause()))
        self.resume_button.on_click(self.errors.capture(lambda _b: self.resume()))
        self.stop_button.on_click(self.errors.capture(lambda _b: self.stop()))
        self.concurrency_mode.observe(self.errors.capture(self._on_mode), names="value")
        self.concurrency.observe(self.errors.capture(self._on_concurrency), names="value")
        self.progress = w.IntProgress(
            value=0,
            min=0,
            max=1,
            description="0 / 0",
            style={"description_width": "110px", "bar_color": "#2a9d8f"},
            layout=w.Layout(width="640px"),
        )
        self.counters = w.HTML(charts.counters_html(None, "idle"))
        self.counters.add_class("emailwb-counters")
        self.status = w.HTML("")
        self.status.add_class("emailwb-status")
        self.alerts = w.HTML("")  # deep checks and drift alerts
        self.alerts.add_class("emailwb-alerts")
        self.charts = charts.LiveCharts(widget=show_charts)  # one plotly widget per page
        self.results = charts.ResultsBrowser(self.store, rows=results_rows, errors=self.errors)
        if self.charts.figure is not None:
            self.charts.figure.add_class("emailwb-live-charts")
        form = w.HBox(
            [
                w.VBox(
                    [self.backend, self.urls, self.model, self.concurrency_mode, self.concurrency]
                ),
                w.VBox(
                    [
                        self.run_name,
                        self.profile,
                        self.limit,
                        self.plan,
                        self.prompt,
                        self.max_tokens,
                        self.temperature,
                        self.mode,
                        self.chain,
                    ]
                ),
            ]
        )
        self.widget = w.VBox(
            [
                w.HTML("<h3 style='margin:4px 0'>emailwb · batch launch</h3>"),
                form,
                w.HBox(
                    [self.start_button, self.pause_button, self.resume_button, self.stop_button]
                ),
                self.prompt_warning,
                self.status,
                self.alerts,
                self.progress,
                self.counters,
                *([self.charts.figure] if self.charts.figure is not None else []),
                self.results.widget,
                self.errors.output,
            ]
        )
        self.widget.add_class("emailwb-launch")
        self._sync_buttons()
        self._on_prompt({"new": self.prompt.value})

    # --- configuration ---------------------------------------------------------------------
    def _on_prompt(self, change: dict[str, Any]) -> None:
        """A version saved with a validation warning says so before it is launched."""
        warning = prompt_warning(self.store, change["new"])
        self.prompt_warning.value = (
            f"<div style='color:#b00020'>prompt {escape(change['new'])!s} failed validation "
            f"in the lab: {escape(warning)}. Try it again in the prompt lab before a long "
            "run.</div>"
            if warning
            else ""
        )

    def _on_mode(self, change: dict[str, Any]) -> None:
        self.concurrency.disabled = change["new"] == "auto"

    def _on_concurrency(self, change: dict[str, Any]) -> None:
        """Moving the slider mid-run sets the processor's limit (fixed mode only)."""
        from emailwb.engine.autotune import FixedConcurrency

        proc = self.processor
        if proc is not None and isinstance(proc.controller, FixedConcurrency):
            proc.controller.limit = int(change["new"])
            proc.gate.poke()

    def config(self) -> RunConfig:
        """The ``RunConfig`` the form describes."""
        urls = [
            u.strip() for line in self.urls.value.splitlines() for u in line.split(",") if u.strip()
        ]
        fields: dict[str, Any] = {
            "backend": self.backend.value,
            "urls": urls,
            "model": self.model.value.strip() or None,
            "concurrency": "auto"
            if self.concurrency_mode.value == "auto"
            else int(self.concurrency.value),
            "options": {
                "temperature": float(self.temperature.value),
                "num_predict": int(self.max_tokens.value),
            },
            "mode": self.mode.value,
            "chain": bool(self.chain.value),
            "plan": self.plan.value,
            "prompt": self.prompt.value,
            "priority_profile": self.profile.value.strip() or runs.DEFAULT_PROFILE,
        }
        return RunConfig.default(**{**fields, **self.config_overrides})

    @property
    def name(self) -> str:
        """The run's name: the one typed, else the processor's default for this config."""
        from emailwb.engine.processor import default_run_name

        return self.run_name.value.strip() or default_run_name(self.config())

    # --- control -----------------------------------------------------------------------------
    def _set_state(self, state: str, message: str | None = None) -> None:
        self.state = state
        if message is not None:
            self.status.value = f"<span>{escape(message)}</span>"
        self._sync_buttons()
        self.counters.value = charts.counters_html(self.snapshot, state, self.name_or_blank())

    def name_or_blank(self) -> str:
        if self.processor is not None:
            return str(self.processor.name)
        with contextlib.suppress(Exception):
            return self.name
        return ""

    def _sync_buttons(self) -> None:
        active = self.state in ("starting", "running", "paused", "stopping")
        self.start_button.disabled = active
        self.pause_button.disabled = self.state != "running"
        self.resume_button.disabled = self.state != "paused"
        self.stop_button.disabled = not active or self.state == "stopping"

    def start(self) -> asyncio.Task[Any]:
        """Start (or resume under the same name) a run in the background; its task."""
        if self.task is not None and not self.task.done():
            raise RuntimeError("a run is already going: pause, resume or stop it")
        config = self.config()  # form errors surface here, in the caller/Output
        self.error, self.summary, self.processor, self.snapshot = None, None, None, None
        limit = int(self.limit.value) or None
        what = "the embedded llama-server" if config.backend == "local" else "the backend"
        self._set_state("starting", f"starting {what}…")
        self.errors.clear()
        self.charts.new_session()
        self.task = spawn(self._run(config, limit), errors=self.errors, name="emailwb-launch")
        self._refresher = spawn(self._refresh_loop(), errors=self.errors, name="emailwb-refresh")
        return self.task

    async def _run(self, config: RunConfig, limit: int | None) -> Any:
        from emailwb.engine.batch import run_batch

        started = time.monotonic()
        try:
            self.summary = await run_batch(
                self.store,
                config,
                run_name=self.name,
                limit=limit,
                api_key=self._api_key,
                on_start=self._attach,
                quality=self.quality,
            )
        except asyncio.CancelledError:
            self._set_state("stopped", "stopped (cancelled)")
            return None
        except Exception as exc:
            self.error = exc
            self.errors.report(exc, "the run")
            self._set_state("failed", f"the run failed: {exc}")
            return None
        finally:
            await self._stop_refresher()
        s = self.summary
        self._set_state(
            s.status,
            f"{s.status}: {s.session_done} units this session "
            f"({s.done} done, {s.failed} failed, {s.pending} pending) in "
            f"{time.monotonic() - started:.1f} s, "
            f"{s.emails_per_min:.1f} emails/min",
        )
        return s

    def _attach(self, processor: Any) -> None:
        self.processor = processor
        self._set_state("running", "running")

    async def _stop_refresher(self) -> None:
        task, self._refresher = self._refresher, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with self.errors.guard("the last refresh"):
            self.refresh()
            self.charts.sync()
            await self.results.arefresh(self.run_id)

    async def _refresh_loop(self) -> None:
        last_results = 0.0
        while True:
            await asyncio.sleep(self.refresh_s)
            self.refresh()
            now = time.monotonic()
            if self.run_id is not None and now - last_results >= self.results_every_s:
                last_results = now
                await self.results.arefresh(self.run_id)

    def refresh(self) -> None:
        """Pull a snapshot from the processor into the charts, counters and progress bar."""
        proc = self.processor
        if proc is None or proc.run is None:
            return
        self.run_id = proc.run.id
        if proc.state in ("running", "paused", "stopping") and self.state != proc.state:
            self._set_state(proc.state, proc.state)
        snap = proc.snapshot()
        self.snapshot = snap
        self.charts.update(snap)
        self.progress.max = max(snap.total, 1)
        self.progress.value = min(snap.done + snap.failed, self.progress.max)
        self.progress.description = f"{snap.done + snap.failed:,} / {snap.total:,}"
        self.counters.value = charts.counters_html(snap, self.state, proc.name)
        watch = getattr(proc, "quality", None)
        self.alerts.value = charts.quality_html(watch.status() if watch is not None else None)

    def pause(self) -> None:
        if self.processor is None:
            raise RuntimeError("nothing to pause: the run has not started yet")
        self.processor.pause()
        self._set_state("paused", "paused: requests in flight finish, no new ones are sent")

    def resume(self) -> None:
        if self.processor is None:
            raise RuntimeError("nothing to resume: no run")
        self.processor.resume()
        self._set_state("running", "running")

    def stop(self, cancel_inflight: bool = False) -> None:
        """Stop: no new requests; in-flight ones finish (or are cancelled) and are committed."""
        if self.task is None or self.task.done():
            return
        if self.processor is None:
            self.task.cancel()  # still starting the backend
        else:
            self.processor.request_stop(cancel_inflight)
        self._set_state("stopping", "stopping: waiting for the requests in flight")

    async def wait(self) -> Any:
        """Until the run task ends; its summary. Raises the run's error, if it failed.

        Bound it with ``async with asyncio.timeout(s):``; the run itself goes on.
        """
        if self.task is None:
            raise RuntimeError("not started")
        await asyncio.shield(self.task)
        if self.error is not None:
            raise self.error
        return self.summary

    async def run(self) -> Any:
        """Start and wait: the way a headless notebook runs the panel."""
        self.start()
        return await self.wait()

    def results_df(self) -> pl.DataFrame:
        """Every email of this run with its result (``runs.results_df``)."""
        return results_frame(self.store, self.run_id if self.run_id is not None else self.name)

    def close(self) -> None:
        self.stop(cancel_inflight=True)
        if self._own_store:
            self.store.close()


class PrioritiesPanel(_Panel):
    """Per-type weights; the pending queue re-orders live; Save stores the named profile."""

    def __init__(
        self,
        db: str | Path | Store,
        *,
        profile: str = runs.DEFAULT_PROFILE,
        run: str | int | None = None,
        launch: LaunchPanel | None = None,
        top: int = 20,
    ) -> None:
        self.store, self._own_store = _open_store(db)
        self.launch, self.run, self.top = launch, run, top
        self.errors = ErrorLog()
        saved, _ = runs.load_profile(self.store, profile)
        default = float(saved.get("*", 1.0))
        self.sliders: dict[str, w.FloatSlider] = {}
        for t in [*explore.TYPES, "*"]:
            slider = w.FloatSlider(
                value=float(saved.get(t, default)),
                min=0.0,
                max=5.0,
                step=0.1,
                description=t if t != "*" else "other types",
                continuous_update=False,
                style={"description_width": "110px"},
                layout=w.Layout(width="360px"),
            )
            slider.observe(self.errors.capture(lambda _c: self.reorder()), names="value")
            self.sliders[t] = slider
        self.profile = w.Text(
            value=profile, description="profile name", style={"description_width": "110px"}
        )
        self.save_button = w.Button(description="Save profile", button_style="primary", icon="save")
        self.save_button.add_class("emailwb-save-profile")
        self.reload_button = w.Button(description="Reload queue", icon="refresh")
        self.save_button.on_click(self.errors.capture(lambda _b: self.save()))
        self.reload_button.on_click(self.errors.capture(lambda _b: self.reload()))
        self.status = w.HTML("")
        self.table = w.HTML("")
        self.charts = charts.PriorityCharts()
        self.queue = pl.DataFrame()
        self.baseline = pl.DataFrame()
        self.scored = pl.DataFrame()
        self.moves = pl.DataFrame()
        self.widget = w.VBox(
            [
                w.HTML("<h3 style='margin:4px 0'>emailwb · priorities</h3>"),
                w.HBox(
                    [
                        w.VBox(list(self.sliders.values())),
                        w.VBox(
                            [
                                self.profile,
                                w.HBox([self.save_button, self.reload_button]),
                                self.status,
                            ]
                        ),
                    ]
                ),
                self.charts.figure,
                w.HTML("<b>Pending queue, next first</b>"),
                self.table,
                self.errors.output,
            ]
        )
        self.reload()

    def weights(self) -> dict[str, float]:
        """The weights the sliders describe (``"*"``: every type without its own slider)."""
        return {t: round(float(s.value), 3) for t, s in self.sliders.items()}

    def set_weights(self, weights: dict[str, float]) -> None:
        """Move the sliders (the queue re-orders once, at the end)."""
        with self._quiet():
            for t, v in weights.items():
                self.sliders[t].value = float(v)
        self.reorder()

    @contextlib.contextmanager
    def _quiet(self) -> Any:
        self._hold = True
        try:
            yield
        finally:
            self._hold = False

    def _run_ref(self) -> str | int | None:
        if self.launch is not None and self.launch.run_id is not None:
            return self.launch.run_id
        return self.run

    def reload(self) -> None:
        """Read the pending queue again; what it is now becomes the 'before' of the moves."""
        self.queue = explore.pending_queue(self.store, self._run_ref())
        self.baseline = explore.score_queue(self.queue, self.weights())
        self.reorder()

    def reorder(self) -> None:
        """Score and rank the queue with the slider weights; update the table and charts.

        ``moves`` compares with the queue as the last save (or load) ordered it."""
        if getattr(self, "_hold", False):
            return
        self.scored = explore.score_queue(self.queue, self.weights())
        self.moves = explore.rank_moves(self.baseline, self.scored)
        self.charts.update(self.scored, self.moves)
        shown = self.scored.head(self.top)
        if shown.height:
            shown = shown.join(self.moves.select("unit_id", "moved"), on="unit_id", how="left")
        cols: list[str] = [
            c
            for c in ("rank", "unit_id", "email_type", "score", "moved", "subject", "sender")
            if c in shown.columns
        ]
        self.table.value = charts.table_html(
            shown, cols, caption=(f"{self.scored.height} pending units; weights {self.weights()}")
        )

    def order(self, n: int | None = None) -> list[int]:
        """Unit ids, next first (for tests and scripts)."""
        ids = self.scored["unit_id"].to_list() if self.scored.height else []
        return ids[:n] if n else ids

    def save(self) -> dict[str, float]:
        """Store the weights as the named profile; a linked running processor applies them now."""
        name = self.profile.value.strip() or runs.DEFAULT_PROFILE
        weights = self.weights()
        runs.save_profile(self.store, name, weights)
        proc = self.launch.processor if self.launch is not None else None
        applied = ""
        if (
            proc is not None
            and proc.queue is not None
            and proc.state in ("running", "paused")
            and proc.config.priority_profile == name
        ):
            proc.set_weights(weights, persist=False)
            applied = "; the running processor re-ordered its queue"
        elif proc is None:
            applied = "; a run using this profile picks it up within seconds"
        self.status.value = f"saved profile <b>{escape(name)}</b>{escape(applied)}"
        self.baseline = self.scored  # the charts keep showing what this save moved
        return weights

    def close(self) -> None:
        if self._own_store:
            self.store.close()
