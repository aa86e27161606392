"""The prompt lab panel: edit a draft prompt, try it beside a saved version, save, launch.

A plain object of ipywidgets (``PromptLab``) that the notebook shows and tests drive:

- the sample: a dozen emails spread over the detected types (default), one type, the
  emails with hand labels, the audit queue, or a list of Message-IDs;
- the draft: the plan's instructions and one line per output field, plus the all-LLM
  templates' intro and guidance, starting from the chosen baseline version;
- **Try** (``await lab.try_draft()``): the baseline and the draft run on the sample
  through the configured backend (the embedded llama-server is started on the first Try
  and kept warm until ``close``); replies are kept by prompt hash and email, so trying
  again asks nothing. Per email, the two extractions side by side with the fields that
  differ marked; per version, reply tokens, latency, valid replies, grounding and, where
  labels exist (the gold file's, and the fields auditors marked correct in the audit panel),
  accuracy with the paired difference and its interval. Picking an email
  shows its text with the draft's evidence highlighted (``emailwb.ui.evidence``);
- **Save** stores the draft as a new immutable version; a draft that failed validation on
  the sample is saved with a warning, shown here and in the launch panel;
- **Launch** returns a ``LaunchPanel`` with the version selected.

Every callback runs under an ``ErrorLog``; email content is escaped everywhere.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import ipywidgets as w

from emailwb.engine.batch import open_backend, with_local_sampling
from emailwb.engine.lab import (
    LabComparison,
    Trial,
    audit_queue_emails,
    compare_trials,
    lab_sample,
    try_prompt,
)
from emailwb.engine.library import list_prompts, load_prompt, prompt_warning, save_prompt
from emailwb.errors import ConfigError
from emailwb.facts.cache import bodies
from emailwb.facts.plans import PLANS, get_plan
from emailwb.llm.prompts import PromptVersion
from emailwb.quality.gold import audit_truth, load_labels
from emailwb.settings import RunConfig
from emailwb.store.database import Store
from emailwb.ui import explore
from emailwb.ui.evidence import evidence_page, highlight_html, write_evidence_page
from emailwb.ui.notebook import ErrorLog, escape, spawn

_STYLE = {"description_width": "130px"}  # "guidance (all-LLM)" in full
SPREAD = "spread over the types"
LABELED = "emails with labels"
LISTED = "these Message-IDs"
AUDITED = "the audit queue"


def _fields_text(version: PromptVersion) -> str:
    return "\n".join(f"{k} = {v}" for k, v in version.fields.items())


def _parse_fields(text: str, base: PromptVersion) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key not in base.fields:
            raise ConfigError(
                f"field line {n} is not 'name = description' for a known field: {line[:60]!r}",
                hint=f"start each line with one of: {', '.join(base.fields)}",
            )
        out[key] = value.strip()
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "<span style='color:#999'>-</span>"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return escape(text if len(text) <= 160 else text[:157] + "...")


class PromptLab:
    """See the module docstring. ``await lab.try_draft()`` runs headless."""

    def __init__(
        self,
        db: str | Path | Store,
        *,
        config: RunConfig | None = None,
        api_key: str | None = None,
        labels: str | Path | None = None,
        baseline: str = "builtin",
        sample_size: int = 12,
        message_ids: list[str] | None = None,
        draft_name: str = "",
    ) -> None:
        self.store = db if isinstance(db, Store) else explore.open_store(db)
        self._own_store = not isinstance(db, Store)
        self.config = config or RunConfig.default()
        self._api_key = api_key
        self.errors = ErrorLog()
        self.labels: list[dict[str, Any]] = load_labels(labels) if labels else []
        self.comparison: LabComparison | None = None
        self.draft_trials: list[Trial] = []
        self.base_trials: list[Trial] = []
        self.tried_hash: str | None = None
        self.saved: PromptVersion | None = None
        self._backend_stack: contextlib.AsyncExitStack | None = None
        self._backend: Any = None
        self._texts: dict[int, str] = {}
        self.task: Any = None
        wide = w.Layout(width="760px")
        names = [v["name"] for v in list_prompts(self.store)]
        self.baseline = w.Dropdown(
            options=names, value=baseline, description="baseline", style=_STYLE
        )
        self.plan = w.Dropdown(
            options=[p for p in PLANS if get_plan(p).uses_llm],
            value=self.config.plan if get_plan(self.config.plan).uses_llm else "default",
            description="plan",
            style=_STYLE,
        )
        self.sample_by = w.Dropdown(
            options=[SPREAD, LABELED, AUDITED, LISTED, *(f"type: {t}" for t in self._types())],
            value=LISTED if message_ids else SPREAD,
            description="sample",
            style=_STYLE,
        )
        self.sample_size = w.BoundedIntText(
            value=sample_size, min=1, max=200, description="emails", style=_STYLE
        )
        self.message_ids = w.Textarea(
            value="\n".join(message_ids or []),
            description="Message-IDs",
            placeholder="one per line (sample: these Message-IDs)",
            style=_STYLE,
            layout=w.Layout(width="760px", height="48px"),
        )
        self.draft_name = w.Text(
            value=draft_name, description="draft name", placeholder="e.g. deals-v2", style=_STYLE
        )
        self.instructions = w.Textarea(
            description="instructions", style=_STYLE, layout=w.Layout(width="760px", height="60px")
        )
        self.instructions.add_class("emailwb-draft-instructions")
        self.fields = w.Textarea(
            description="fields", style=_STYLE, layout=w.Layout(width="760px", height="150px")
        )
        self.intro = w.Textarea(
            description="intro (all-LLM)", style=_STYLE, layout=w.Layout(width="760px")
        )
        self.guidance = w.Textarea(
            description="guidance (all-LLM)",
            style=_STYLE,
            layout=w.Layout(width="760px", height="60px"),
        )
        self.try_button = w.Button(description="Try", button_style="primary", icon="flask")
        self.save_button = w.Button(description="Save", icon="save")
        self.launch_button = w.Button(description="Launch", button_style="success", icon="play")
        for name, b in (
            ("try", self.try_button),
            ("save", self.save_button),
            ("launch", self.launch_button),
        ):
            b.add_class(f"emailwb-lab-{name}")
        self.status = w.HTML("")
        self.status.add_class("emailwb-lab-status")
        self.stats = w.HTML("")
        self.stats.add_class("emailwb-lab-stats")
        self.table = w.HTML("")
        self.table.add_class("emailwb-lab-table")
        self.pick = w.Dropdown(options=[], description="email", style=_STYLE, layout=wide)
        self.email_view = w.HTML("")
        self.email_view.add_class("emailwb-lab-email")
        self.launch_area = w.VBox([])
        self.launch_panel: Any = None
        self.baseline.observe(self.errors.capture(lambda _c: self.load_baseline()), names="value")
        self.pick.observe(self.errors.capture(lambda _c: self.show_email()), names="value")
        self.try_button.on_click(self.errors.capture(lambda _b: self.start_try()))
        self.save_button.on_click(self.errors.capture(lambda _b: self.save()))
        self.launch_button.on_click(self.errors.capture(lambda _b: self.launch()))
        self.load_baseline()
        self.widget = w.VBox(
            [
                w.HTML("<h3 style='margin:4px 0'>emailwb · prompt lab</h3>"),
                w.HBox([self.baseline, self.plan, self.draft_name]),
                w.HBox([self.sample_by, self.sample_size]),
                self.message_ids,
                self.instructions,
                self.fields,
                self.intro,
                self.guidance,
                w.HBox([self.try_button, self.save_button, self.launch_button]),
                self.status,
                self.stats,
                self.table,
                self.pick,
                self.email_view,
                self.launch_area,
                self.errors.output,
            ]
        )
        self.widget.add_class("emailwb-lab")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _types(self) -> list[str]:
        rows = self.store.query(
            "SELECT DISTINCT email_type FROM content_groups WHERE email_type IS NOT NULL "
            "ORDER BY email_type"
        )
        return [r[0] for r in rows]

    # --- the draft ---------------------------------------------------------------------------
    def load_baseline(self) -> None:
        """Fill the draft's editors from the baseline version."""
        base = load_prompt(self.store, self.baseline.value)
        self.instructions.value = base.instructions
        self.fields.value = _fields_text(base)
        self.intro.value = base.intro
        self.guidance.value = base.guidance

    def draft(self) -> PromptVersion:
        """The version the editors describe (named by the draft name, or ``draft``)."""
        base = load_prompt(self.store, self.baseline.value)
        return base.with_changes(
            self.draft_name.value.strip() or "draft",
            instructions=self.instructions.value.strip(),
            fields=_parse_fields(self.fields.value, base),
            intro=self.intro.value.strip(),
            guidance=self.guidance.value.strip(),
        )

    def run_config(self) -> RunConfig:
        return with_local_sampling(self.config.model_copy(update={"plan": self.plan.value}))

    def all_labels(self) -> list[dict[str, Any]]:
        """The hand labels accuracy is measured against: the gold file's, then the audit
        panel's (fields auditors marked correct) for emails the file does not hold."""
        held = {str(lab["message_id"]).strip() for lab in self.labels}
        audited = [r for r in audit_truth(self.store) if r["message_id"] not in held]
        return [*self.labels, *audited]

    def sample(self) -> list[int]:
        """The sampled email ids, by the sample choice."""
        n = int(self.sample_size.value)
        choice = self.sample_by.value
        if choice == LABELED:
            if not self.labels:
                raise ConfigError(
                    "the lab was opened without labels",
                    hint="pass labels='gold/enron-labels.jsonl' to PromptLab, or pick another sample",
                )
            mids = [str(lab["message_id"]).strip() for lab in self.labels]
            present = {
                r[0]
                for r in self.store.query(
                    f"SELECT message_id FROM emails WHERE message_id IN ({','.join('?' * len(mids))})",
                    mids,
                )
            }
            return lab_sample(self.store, message_ids=[m for m in mids if m in present], n=n)
        if choice == AUDITED:
            ids = audit_queue_emails(self.store)
            if not ids:
                raise ConfigError(
                    "the audit queue is empty",
                    hint="run a batch (its deep-check sample enters the queue) or pick another sample",
                )
            return lab_sample(self.store, email_ids=ids, n=n)
        if choice == LISTED:
            # as pasted from a header (<id@host>) or as the store keeps them (id@host)
            mids = [m.strip().strip("<>").strip() for m in self.message_ids.value.splitlines()]
            return lab_sample(self.store, message_ids=mids, n=n)
        if choice.startswith("type: "):
            return lab_sample(self.store, email_type=choice[6:], n=n)
        return lab_sample(self.store, n=n)

    # --- try ---------------------------------------------------------------------------------
    @property
    def backend_started(self) -> bool:
        """Whether a Try had to start (or connect to) the backend."""
        return self._backend is not None

    async def _backend_for(self, cfg: RunConfig) -> Any:
        if self._backend is None:
            stack = contextlib.AsyncExitStack()
            opened = await stack.enter_async_context(open_backend(cfg, self._api_key))
            await opened.backend.warm()
            self._backend_stack, self._backend = stack, opened.backend
        return self._backend

    def start_try(self) -> Any:
        """The Try button: ``try_draft`` as a task on the kernel's loop."""
        self.status.value = "<i>trying the draft and the baseline on the sample...</i>"
        self.task = spawn(self.try_draft(), errors=self.errors, name="emailwb-lab-try")
        return self.task

    async def try_draft(self) -> LabComparison:
        """Run the baseline and the draft on the sample; show and return the comparison."""
        cfg = self.run_config()
        draft = self.draft()
        base = load_prompt(self.store, self.baseline.value)
        ids = self.sample()
        backend = None
        try:
            for version in (base, draft):
                cached = await try_prompt(self.store, None, cfg, version, ids, only_cached=True)
                if len(cached) < len(ids):
                    backend = await self._backend_for(cfg)
                    break
            self.base_trials = await try_prompt(self.store, backend, cfg, base, ids)
            self.draft_trials = await try_prompt(self.store, backend, cfg, draft, ids)
        except Exception as exc:
            self.status.value = f"<span style='color:#b00020'>Try failed: {escape(exc)}</span>"
            raise
        self.tried_hash = draft.hash
        self._texts = bodies(self.store, ids)
        cmp = compare_trials(
            self.store,
            base.name,
            self.base_trials,
            draft.name,
            self.draft_trials,
            self.all_labels(),
        )
        self.comparison = cmp
        self._render(cmp)
        return cmp

    def _render(self, cmp: LabComparison) -> None:
        asked = sum(not t.cached for t in (*self.base_trials, *self.draft_trials))
        fail = cmp.failing
        msg = (
            f"tried {cmp.b.n} emails: {asked} requests sent, "
            f"{cmp.a.cached + cmp.b.cached} answers from earlier tries"
        )
        if fail:
            first = next((t.error for t in self.draft_trials if not t.ok), "")
            msg += (
                f"<br><span class='emailwb-lab-failing' style='color:#b00020'><b>the draft "
                f"failed validation on {fail} of {cmp.b.n} emails</b>: {escape(first)}</span>"
            )
        self.status.value = msg

        def num(v: float | None, d: int = 2) -> str:
            return "-" if v is None else f"{v:.{d}f}"

        head = "<tr><th></th><th>valid</th><th>reply tokens</th><th>latency s</th><th>grounded</th>"
        acc_fields = list(cmp.b.accuracy or cmp.a.accuracy)
        head += "".join(f"<th>{escape(f)}</th>" for f in acc_fields) + "</tr>"
        rows = ""
        for s in (cmp.a, cmp.b):
            rows += (
                f"<tr><td><b>{escape(s.name)}</b></td><td>{s.valid}/{s.n}</td>"
                f"<td>{num(s.completion_tokens, 0)}</td><td>{num(s.latency_s)}</td>"
                f"<td>{num(s.grounded)}</td>"
                + "".join(f"<td>{num(s.accuracy.get(f))}</td>" for f in acc_fields)
                + "</tr>"
            )
        if cmp.deltas:
            rows += "<tr><td>draft - baseline [95%]</td><td></td><td></td><td></td><td></td>"
            for f in acc_fields:
                if f not in cmp.deltas:
                    rows += "<td>-</td>"
                    continue
                d, lo, hi = cmp.deltas[f]
                rows += f"<td>{d:+.2f} [{lo:+.2f}, {hi:+.2f}]</td>"
            rows += "</tr>"
        note = (
            f"<div style='font-size:12px'>accuracy on {cmp.labeled} labeled emails of the sample</div>"
            if cmp.labeled
            else "<div style='font-size:12px'>no labels for these emails: accuracy not shown</div>"
        )
        self.stats.value = f"<table style='font-size:12px'>{head}{rows}</table>{note}"
        body = ""
        for row in cmp.rows:
            a, b = row["a"] or {}, row["b"] or {}
            names = [k for k in dict.fromkeys([*a, *b]) if k not in ("evidence", "sources", "plan")]
            for i, k in enumerate(names):
                differs = k in row["differs"]
                style = " style='background:#fff3cd'" if differs else ""
                label = (
                    f"<td rowspan='{len(names)}'>{escape(row['message_id'])}"
                    + (
                        f"<br><span style='color:#b00020'>{escape(row['b_error'])}</span>"
                        if row["b_error"]
                        else ""
                    )
                    + "</td>"
                    if i == 0
                    else ""
                )
                mark = " ≠" if differs else ""
                body += (
                    f"<tr{style}>{label}<td>{escape(k)}{mark}</td>"
                    f"<td>{_cell(a.get(k))}</td><td>{_cell(b.get(k))}</td></tr>"
                )
            if not names:
                body += (
                    f"<tr><td>{escape(row['message_id'])}</td><td colspan='3' style='color:#b00020'>"
                    f"{escape(row['b_error'] or row['a_error'])}</td></tr>"
                )
        self.table.value = (
            "<table class='emailwb-lab-side' style='font-size:12px;border-collapse:collapse'>"
            f"<tr><th>email</th><th>field</th><th>{escape(cmp.a.name)}</th>"
            f"<th>{escape(cmp.b.name)} (draft)</th></tr>{body}</table>"
        )
        options = [(f"{r['message_id']}", r["email_id"]) for r in cmp.rows]
        self.pick.options = options
        if options:
            self.pick.value = options[0][1]
            self.show_email()

    def _trial(self, email_id: int) -> Trial | None:
        return next((t for t in self.draft_trials if t.email_id == email_id), None)

    def show_email(self) -> None:
        """The picked email's text with the draft's evidence highlighted."""
        if self.pick.value is None:
            self.email_view.value = ""
            return
        trial = self._trial(int(self.pick.value))
        data = trial.data if trial is not None else None
        self.email_view.value = highlight_html(
            self._texts.get(int(self.pick.value), ""), (data or {}).get("evidence")
        )

    def export_html(self, path: str | Path) -> Path:
        """The sample's emails with the draft's evidence highlighted, as one HTML file."""
        items = [
            {"heading": t.message_id, "text": self._texts.get(t.email_id, ""), "data": t.data}
            for t in self.draft_trials
        ]
        return write_evidence_page(path, items, title="emailwb prompt lab: the draft's evidence")

    def page_html(self) -> str:
        items = [
            {"heading": t.message_id, "text": self._texts.get(t.email_id, ""), "data": t.data}
            for t in self.draft_trials
        ]
        return evidence_page(items)

    # --- save, launch ------------------------------------------------------------------------
    def save(self) -> PromptVersion:
        """Store the draft as a new version (with a warning when it failed validation)."""
        draft = self.draft()
        if not self.draft_name.value.strip():
            raise ConfigError(
                "the draft has no name", hint="type a name such as deals-v2, then Save"
            )
        warning = None
        if self.tried_hash != draft.hash:
            warning = "saved without a Try of this text on a sample"
        elif self.comparison is not None and self.comparison.failing:
            first = next((t.error for t in self.draft_trials if not t.ok), "")
            warning = (
                f"failed validation on {self.comparison.failing} of {self.comparison.b.n} "
                f"sampled emails ({first})"
            )
        saved = save_prompt(self.store, draft, based_on=self.baseline.value, warning=warning)
        self.saved = saved
        self.baseline.options = [v["name"] for v in list_prompts(self.store)]
        stored = prompt_warning(self.store, saved.name)
        if stored:
            self.status.value = (
                f"<span class='emailwb-lab-warning' style='color:#b00020'>saved {escape(saved.name)} "
                f"({saved.hash}) with a warning: {escape(stored)}. The launch panel repeats it "
                "before a run.</span>"
            )
        else:
            self.status.value = f"saved {escape(saved.name)} ({saved.hash})"
        return saved

    def launch(self, **kwargs: Any) -> Any:
        """A launch panel with the saved draft selected (saved first when needed)."""
        from emailwb.ui.panels import LaunchPanel

        version = self.saved if self.saved is not None else self.save()
        cfg = self.config
        panel = LaunchPanel(
            self.store,
            backend=cfg.backend,
            urls=cfg.urls,
            model=cfg.model,
            plan=self.plan.value,
            prompt=version.name,
            api_key=self._api_key,
            **kwargs,
        )
        self.launch_panel = panel
        self.launch_area.children = [panel.widget]
        return panel

    async def aclose(self) -> None:
        """Stop the backend the lab started (the embedded server) and close the store."""
        if self._backend_stack is not None:
            await self._backend_stack.aclose()
            self._backend_stack = self._backend = None
        if self.launch_panel is not None:
            self.launch_panel.close()
        if self._own_store:
            self.store.close()
