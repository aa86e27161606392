"""Per-result quality metrics, deep-check sampling, the judge rubric and drift detection.

* ``metrics_for``: the flat ``QualityMetrics`` stored beside each result (schema validity,
  completeness, response length, grounding per field, amounts missed, agreement with the
  rule-based detector, truncation). Money detection lives in ``emailwb.facts.money`` and grounding
  in ``emailwb.quality.grounding``; both are re-exported here.
* ``deep_check_sample``/``sample_keys``: the deterministic every-Nth choice of emails.
* ``JUDGE_SCHEMA``/``judge_messages``: the second-opinion rubric for sampled emails.
* ``DriftDetector``: each metric's rolling window against the run's baseline window.

Everything works on plain dicts (``EmailAnalysis.model_dump()`` output or a raw reply).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from emailwb.errors import ConfigError
from emailwb.facts.money import Money, find_money
from emailwb.quality.grounding import (
    AMOUNT_SLOTS,
    SCORED_FIELDS,
    FieldGrounding,
    Grounding,
    amounts_missed,
    grounding,
    grounding_text,
)

__all__ = [
    "AMOUNT_SLOTS",
    "COMPLETENESS_FIELDS",
    "JUDGED_FIELDS",
    "JUDGE_RUBRIC",
    "JUDGE_SCHEMA",
    "SCORED_FIELDS",
    "DriftAlert",
    "DriftDetector",
    "FieldGrounding",
    "Grounding",
    "JudgeVerdict",
    "Money",
    "QualityMetrics",
    "amounts_missed",
    "deep_check_sample",
    "find_money",
    "grounding",
    "grounding_text",
    "judge_json_schema",
    "judge_messages",
    "metrics_for",
    "sample_keys",
]

# --- metrics ----------------------------------------------------------------------------
COMPLETENESS_FIELDS = (
    "email_type",
    "workflow",
    "priority",
    "priority_reason",
    "summary",
    "people",
    "organizations",
    "amounts",
    "dates",
    "deal_refs",
    "action_items",
    "business_value",
)


def _filled(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_filled(v) for k, v in value.items() if k != "level")  # business_value: evidence
    if isinstance(value, (list, tuple, str)):
        return bool(value.strip() if isinstance(value, str) else value)
    return value is not None


@dataclass(slots=True)
class QualityMetrics:
    """The automatic metrics for one result; ``as_dict()`` is flat, for a table row."""

    schema_valid: bool
    truncated: bool
    completeness: float  # share of COMPLETENESS_FIELDS that are non-empty
    response_chars: int
    grounding: float | None
    grounding_people: float | None
    grounding_organizations: float | None
    grounding_amounts: float | None
    grounding_dates: float | None
    ungrounded_people: int
    ungrounded_organizations: int
    ungrounded_amounts: int
    ungrounded_dates: int
    ungrounded_total: int
    checked_total: int  # extracted values checked (grounded = checked - ungrounded)
    evidence_grounded: bool | None
    amounts_in_text: int  # distinct money mentions found by find_money
    amounts_missed: int
    amount_recall: float | None  # found / min(in text, AMOUNT_SLOTS)
    type_agrees: bool | None
    priority_agrees: bool | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def metrics_for(
    result: Mapping[str, Any] | None,
    email_text: str,
    *,
    raw: str | None = None,
    schema_valid: bool,
    truncated: bool,
    rule_type: str | None = None,
    rule_priority: str | None = None,
    sent: date | datetime | None = None,
) -> QualityMetrics:
    """Every automatic metric for one result (``None`` when no JSON object came back).

    ``email_text`` is what grounding searches: the text the model saw plus header lines
    (``grounding_text(email, body=...)``). ``raw`` is the reply as received (its length is
    ``response_chars``; without it the JSON dump of ``result`` is measured). ``rule_type`` /
    ``rule_priority`` come from the rule-based detector; agreement is None when either side
    is unknown. ``sent`` lets relative dates ground resolved ones (see ``grounding``).
    """
    res: Mapping[str, Any] = result if isinstance(result, Mapping) else {}
    g = grounding(res, email_text, sent=sent)
    missed = amounts_missed(res, email_text)
    in_text = len({(round(abs(m.value), 6), m.unit.lower()) for m in find_money(email_text)})
    ev = g.fields["evidence"]

    def agrees(key: str, rule: str | None) -> bool | None:
        if rule is None or not res:
            return None
        return str(res.get(key) or "").strip().lower() == rule.strip().lower()

    spans = _span_grounding(res.get("evidence"), res.get("sources"), g)
    if raw is not None:
        chars = len(raw)
    else:
        chars = len(json.dumps(result, ensure_ascii=False)) if result is not None else 0
    return QualityMetrics(
        schema_valid=schema_valid,
        truncated=truncated,
        completeness=sum(_filled(res.get(f)) for f in COMPLETENESS_FIELDS)
        / len(COMPLETENESS_FIELDS),
        response_chars=chars,
        **(
            spans
            if spans is not None
            else dict(
                grounding=g.score,
                grounding_people=g.share("people"),
                grounding_organizations=g.share("organizations"),
                grounding_amounts=g.share("amounts"),
                grounding_dates=g.share("dates"),
                ungrounded_people=len(g.fields["people"].ungrounded),
                ungrounded_organizations=len(g.fields["organizations"].ungrounded),
                ungrounded_amounts=len(g.fields["amounts"].ungrounded),
                ungrounded_dates=len(g.fields["dates"].ungrounded),
                ungrounded_total=g.ungrounded_count,
                checked_total=sum(g.fields[f].checked for f in SCORED_FIELDS),
            )
        ),
        evidence_grounded=bool(ev.grounded) if ev.checked else None,
        amounts_in_text=in_text,
        amounts_missed=len(missed),
        amount_recall=min(1.0, (in_text - len(missed)) / min(in_text, AMOUNT_SLOTS))
        if in_text
        else None,
        type_agrees=agrees("email_type", rule_type),
        priority_agrees=agrees("priority", rule_priority),
    )


def _span_grounding(evidence: Any, sources: Any, g: Grounding) -> dict[str, Any] | None:
    """Grounding of a plan's result: fields from the extractors by their spans (a value is
    grounded when it has one), fields the model wrote by the value-aware text check of
    ``grounding`` (names in the headers, amounts by value, resolved dates). None for results
    without evidence (runs from before plans)."""
    if not isinstance(evidence, Mapping) or not isinstance(sources, Mapping):
        return None
    out: dict[str, Any] = {}
    placed_all = checked_all = 0
    for name in ("people", "organizations", "amounts", "dates"):
        if sources.get(name) in ("facts", "choice"):
            items = [i for i in evidence.get(name) or [] if isinstance(i, Mapping)]
            placed = sum(i.get("match") in ("exact", "fuzzy") for i in items)
            checked = len(items)
        else:
            field_g = g.fields[name]
            placed, checked = len(field_g.grounded), field_g.checked
        out[f"grounding_{name}"] = placed / checked if checked else None
        out[f"ungrounded_{name}"] = checked - placed
        placed_all += placed
        checked_all += checked
    out["grounding"] = placed_all / checked_all if checked_all else None
    out["ungrounded_total"] = checked_all - placed_all
    out["checked_total"] = checked_all
    return out


# --- deep-check sampling ----------------------------------------------------------------
def deep_check_sample(key: str, every: int = 100, *, salt: str = "") -> bool:
    """True for about one key in ``every``: sha256(salt + key) mod every == 0.

    Depends only on the key (use the content group's content_key), so two runs over the same
    mailbox sample the same emails in any order; a different ``salt`` draws another sample.
    """
    if every < 1:
        raise ConfigError(f"the deep-check interval must be 1 or more, not {every}")
    digest = hashlib.sha256(f"{salt}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % every == 0


def sample_keys(keys: Iterable[str], every: int = 100, *, salt: str = "") -> list[str]:
    """The sampled keys, each once, in the order given."""
    seen: set[str] = set()
    out: list[str] = []
    for key in keys:
        if key not in seen:
            seen.add(key)
            if deep_check_sample(key, every, salt=salt):
                out.append(key)
    return out


# --- judge ------------------------------------------------------------------------------
def _verdict(value: Any) -> Any:
    if isinstance(value, str):
        v = value.strip().lower()
        return {
            "right": "correct",
            "ok": "correct",
            "yes": "correct",
            "wrong": "incorrect",
            "no": "incorrect",
            "unknown": "unsure",
            "n/a": "unsure",
        }.get(v, v)
    return value


Verdict3 = Annotated[Literal["correct", "incorrect", "unsure"], BeforeValidator(_verdict)]
JUDGED_FIELDS = (
    "email_type",
    "priority",
    "people",
    "organizations",
    "amounts",
    "dates",
    "action_items",
    "business_value",
)


class JudgeVerdict(BaseModel):
    """A judge's per-field second opinion on one extraction."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email_type: Verdict3
    priority: Verdict3
    people: Verdict3
    organizations: Verdict3
    amounts: Verdict3
    dates: Verdict3
    action_items: Verdict3
    business_value: Verdict3
    overall: int = Field(ge=1, le=5)
    notes: Annotated[str, BeforeValidator(lambda v: " ".join(str(v or "").split())[:300])] = ""


JUDGE_SCHEMA = JudgeVerdict

JUDGE_RUBRIC = """You are auditing an information-extraction system. You get one email and the JSON \
record a model extracted from it. Judge each field of the record against the email alone.

For each field answer "correct", "incorrect" or "unsure":
- email_type: the main purpose (request, status_update, meeting, deal, legal, regulatory, report, \
announcement, personal, newsletter, spam, other). Correct if a careful reader would pick it or a \
close alternative.
- priority: low/medium/high/urgent for the recipient's business. Correct unless clearly off by \
more than one level.
- people, organizations, amounts, dates: correct when every listed item appears in or follows \
directly from the email (headers included) and no important item is missing. Any invented item, \
wrong number, wrong scale (thousand vs million) or wrong currency makes the field incorrect. An \
empty list is correct when the email has nothing of the kind.
- action_items: correct when the tasks are real requests or commitments in the email.
- business_value: correct when the level is reasonable and the evidence is taken from the email.
Use "unsure" only when the email cannot settle it.

overall: 1 (useless or invented) to 5 (complete and exact).
notes: at most two short sentences naming the worst problem, or "" when none.
Reply with one JSON object with exactly the keys email_type, priority, people, organizations, \
amounts, dates, action_items, business_value, overall, notes."""


def judge_json_schema() -> dict[str, Any]:
    """JUDGE_SCHEMA as a JSON schema for the servers: every key required, no extras."""
    schema = JudgeVerdict.model_json_schema()
    props = {
        k: {kk: vv for kk, vv in v.items() if kk not in ("title", "default")}
        for k, v in schema["properties"].items()
    }
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def judge_messages(
    email_text: str, result: Mapping[str, Any], *, max_chars: int = 8000
) -> list[dict[str, str]]:
    """Chat messages for the judge: the static rubric first (a shared, cacheable prefix)."""
    body = (
        email_text if len(email_text) <= max_chars else email_text[:max_chars] + "\n[... cut ...]"
    )
    record = json.dumps(result, ensure_ascii=False, indent=1, default=str)
    return [
        {"role": "system", "content": JUDGE_RUBRIC},
        {"role": "user", "content": f"EMAIL:\n{body}\n\nEXTRACTED JSON:\n{record}"},
    ]


# --- drift ------------------------------------------------------------------------------
#: absolute floors: below these a run is not worth reading, whatever it started at
FLOORS: dict[str, float] = {"grounding": 0.5}
FLOOR_ADVICE = {
    "grounding": "most extracted strings are not in the email; switch to a plan that takes "
    "entities from the extractors (--plan default or --plan facts) or use a larger "
    "model, and check with `emailwb score --labels gold/enron-labels.jsonl`",
}


def grounding_warning(share: float | None, floor: float = FLOORS["grounding"]) -> str | None:
    """The warning for a run whose extracted strings are mostly not in the emails, or None."""
    if share is None or share >= floor:
        return None
    return (
        f"only {share:.0%} of the extracted strings are in the emails (floor {floor:.0%}): "
        + FLOOR_ADVICE["grounding"]
    )


@dataclass(frozen=True, slots=True)
class DriftAlert:
    """A metric's rolling mean fell (or, lower-is-better, rose) beyond the threshold."""

    metric: str
    baseline: float  # mean over the baseline window
    current: float  # mean over the rolling window
    change: float  # how much worse, in the threshold's terms (absolute or relative)
    threshold: float
    relative: bool
    baseline_n: int  # results in the baseline window
    window_n: int  # results in the rolling window
    seen: int  # results fed so far (the alert fired on this one)
    floor: bool = False  # an absolute floor was crossed (``baseline`` is the floor)

    @property
    def message(self) -> str:
        if self.floor:
            return (
                f"quality below the floor on {self.metric}: {self.current:.3f} over the last "
                f"{self.window_n} results, floor {self.baseline:.2f}, at result {self.seen}: "
                + FLOOR_ADVICE.get(self.metric, "check the results before using them")
            )
        kind = "relative" if self.relative else "absolute"
        return (
            f"quality drift on {self.metric}: {self.current:.3f} over the last {self.window_n} "
            f"results vs baseline {self.baseline:.3f} over the first {self.baseline_n} "
            f"({kind} change {self.change:.3f} > {self.threshold}) at result {self.seen}"
        )


class DriftDetector:
    """Compares each metric's rolling-window mean with its baseline (the first values seen).

    A metric's first ``baseline_size`` values (None and NaN skipped; bools as 0/1) form its
    baseline; later values fill a rolling window of ``window``. Once the window is full, an
    alert fires when ``baseline - window_mean > threshold`` (absolute, the default: the
    metrics are shares in 0..1) or, with ``relative=True``, when that drop divided by the
    baseline exceeds the threshold. Metrics in ``lower_is_better`` alarm on a rise instead.
    Each metric alerts once, until ``reset()``; one alert per ``update`` (the worst).
    """

    def __init__(
        self,
        metric_names: Iterable[str],
        baseline_size: int = 50,
        window: int = 50,
        threshold: float = 0.15,
        *,
        relative: bool = False,
        lower_is_better: Collection[str] = (),
        floors: Mapping[str, float] | None = None,
    ) -> None:
        if baseline_size < 1 or window < 1 or threshold < 0:
            raise ConfigError(
                "drift detector: baseline_size and window must be >= 1, threshold >= 0"
            )
        self.metrics = list(metric_names)
        self.baseline_size, self.window, self.threshold = baseline_size, window, threshold
        self.relative, self.lower_is_better = relative, set(lower_is_better)
        self.seen = 0
        self._base: dict[str, list[float]] = {m: [] for m in self.metrics}
        self._win: dict[str, deque[float]] = {m: deque(maxlen=window) for m in self.metrics}
        self._alerted: set[str] = set()
        # absolute floors, watched from the first result: a run that starts bad has no drop
        self.floors = dict(floors or {})
        self._recent: dict[str, deque[float]] = {m: deque(maxlen=window) for m in self.floors}

    def reset(self, *, keep_baseline: bool = True) -> None:
        """Empty the rolling windows and re-arm alerts (e.g. after a rollback)."""
        for m in self.metrics:
            self._win[m].clear()
            if not keep_baseline:
                self._base[m].clear()
        self._alerted.clear()

    def baseline(self, metric: str) -> float | None:
        """The metric's baseline mean, None until its baseline window is full."""
        base = self._base[metric]
        return sum(base) / len(base) if len(base) == self.baseline_size else None

    def update(self, metrics: Mapping[str, Any]) -> DriftAlert | None:
        """Feed one result's metrics (e.g. ``QualityMetrics.as_dict()``); unknown keys ignored."""
        self.seen += 1
        worst: DriftAlert | None = None
        for name, floor in self.floors.items():
            value = metrics.get(name)
            if value is None or isinstance(value, str) or math.isnan(float(value)):
                continue
            recent = self._recent[name]
            recent.append(float(value))
            key = f"floor:{name}"
            if len(recent) == self.window and key not in self._alerted:
                cur = sum(recent) / len(recent)
                if cur < floor and name not in self._alerted:
                    self._alerted.update((key, name))  # one alarm per metric, whichever first
                    return DriftAlert(
                        name,
                        floor,
                        cur,
                        floor - cur,
                        0.0,
                        False,
                        0,
                        len(recent),
                        self.seen,
                        floor=True,
                    )
        for name in self.metrics:
            value = metrics.get(name)
            if value is None or isinstance(value, str):
                continue
            value = float(value)
            if math.isnan(value):
                continue
            if len(self._base[name]) < self.baseline_size:
                self._base[name].append(value)
                continue
            win = self._win[name]
            win.append(value)
            if len(win) < self.window or name in self._alerted:
                continue
            base, cur = sum(self._base[name]) / self.baseline_size, sum(win) / len(win)
            change = (cur - base) if name in self.lower_is_better else (base - cur)
            if self.relative:
                change = change / abs(base) if base else (math.inf if change > 0 else 0.0)
            if change > self.threshold and (worst is None or change > worst.change):
                worst = DriftAlert(
                    name,
                    base,
                    cur,
                    change,
                    self.threshold,
                    self.relative,
                    self.baseline_size,
                    len(win),
                    self.seen,
                )
        if worst is not None:
            self._alerted.update((worst.metric, f"floor:{worst.metric}"))
        return worst
