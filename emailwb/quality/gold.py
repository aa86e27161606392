"""Hand labels and scoring extractions against them.

The labels are a JSONL file, one object per email, written by the rules of the labeling
guide (``shared/gold/labeling.md``): ``message_id``, ``email_type`` (seven types),
``priority``, ``people``, ``organizations``, ``amounts``, ``dates`` (strings as written),
``has_action_item``, ``notes`` and, optionally, ``split`` ("dev"/"test") and ``path``.
``load_labels`` reads and checks them (a row without ``split`` takes it from a
``selection.tsv`` beside the labels file).

``score`` compares predictions (a run's stored result JSON per email, or None where there is
no result) with the labels as the guide's "Scoring an extraction against labels" says:

* email_type, priority, has_action_item: accuracy over the labeled emails; no result counts
  as wrong. Predicted types come from the 12-value schema and are mapped onto the labels'
  seven (status_update and newsletter -> report, legal -> deal, regulatory ->
  announcement, spam -> other).
* people, organizations, dates: micro-averaged precision, recall and F1. A predicted string
  matches a label when, lower-cased with punctuation turned into spaces, the two are equal
  or the shorter (3+ characters) occurs in the longer at word boundaries; each label is
  matched at most once (greedily, predictions in order) and a repeated prediction counts
  once.
* amounts: the same, matching by value: a predicted number within 1% of a value the label
  can mean (``emailwb.facts.money.find_money``; "84 3/8", "12,500" and "50-cent" parse too).
* grounding: the share of predicted strings found in the email's text.

Every figure carries a 95% percentile interval from a seeded bootstrap over emails (1000
resamples; micro-averages are recomputed from the resampled per-email counts), so two
extractions scored on the same labels get the same resamples and can be compared.
``majority_baseline`` scores the majority-class prediction, ``score_table`` prints columns
of scores side by side and ``predictions_from_run``/``email_texts`` read a run's results and
the emails' texts from the store.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from operator import itemgetter
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from emailwb.errors import ConfigError
from emailwb.facts.money import as_number, find_money
from emailwb.facts.records import read_ask
from emailwb.quality.grounding import grounding_text
from emailwb.store import runs
from emailwb.store.runs import stored_date, stored_list

if TYPE_CHECKING:
    from emailwb.store.database import Store

LABEL_TYPES: tuple[str, ...] = (
    "deal",
    "meeting",
    "report",
    "request",
    "announcement",
    "personal",
    "other",
)
PRIORITIES: tuple[str, ...] = ("low", "medium", "high", "urgent")
#: schema types that are not label types, and the label type each scores as
TYPE_MAP: dict[str, str] = {
    "status_update": "report",
    "newsletter": "report",
    "legal": "deal",
    "regulatory": "announcement",
    "spam": "other",
}
ACCURACY_FIELDS: tuple[str, ...] = ("email_type", "priority", "has_action_item")
LIST_FIELDS: tuple[str, ...] = ("people", "organizations", "amounts", "dates")
RESAMPLES = 1000
SEED = 20240917
_REQUIRED = ("message_id", "email_type", "priority", "has_action_item", *LIST_FIELDS)
_LABELS_HINT = "fix the labels file (one JSON object per line, see shared/gold/labeling.md)"


# --- loading ------------------------------------------------------------------------------
def _message_id(value: Any) -> str:
    """A Message-ID as the store keeps it: without <> and surrounding spaces."""
    return str(value or "").strip().strip("<>").strip()


def _selection(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(split by message_id, split by path) from a selection.tsv; empty when there is none."""
    if not path.exists():
        return {}, {}
    by_id: dict[str, str] = {}
    by_path: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                split = (row.get("split") or "").strip()
                if not split:
                    continue
                if row.get("message_id"):
                    by_id[_message_id(row["message_id"])] = split
                if row.get("path"):
                    by_path[row["path"].strip()] = split
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}",
            hint="fix or remove the selection.tsv beside the labels file",
        ) from exc
    return by_id, by_path


def _check_row(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ConfigError(
            f"{where}: expected a JSON object, got {type(row).__name__}", hint=_LABELS_HINT
        )
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}", hint=_LABELS_HINT)
    out = dict(row)
    out["message_id"] = _message_id(row["message_id"])
    if not out["message_id"]:
        raise ConfigError(f"{where}: empty message_id", hint=_LABELS_HINT)
    if row["email_type"] not in LABEL_TYPES:
        raise ConfigError(
            f"{where}: unknown email_type {row['email_type']!r} "
            f"(labels use {', '.join(LABEL_TYPES)})",
            hint=_LABELS_HINT,
        )
    if row["priority"] not in PRIORITIES:
        raise ConfigError(
            f"{where}: unknown priority {row['priority']!r} (labels use {', '.join(PRIORITIES)})",
            hint=_LABELS_HINT,
        )
    if not isinstance(row["has_action_item"], bool):
        raise ConfigError(
            f"{where}: has_action_item must be true or false, got {row['has_action_item']!r}",
            hint=_LABELS_HINT,
        )
    for name in LIST_FIELDS:
        value = row[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f"{where}: {name} must be a list of strings, got {value!r}", hint=_LABELS_HINT
            )
    if "split" in row and row["split"] is not None and not isinstance(row["split"], str):
        raise ConfigError(
            f'{where}: split must be a string such as "dev" or "test"', hint=_LABELS_HINT
        )
    return out


def load_labels(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """The hand labels in a JSONL file, checked; only those of ``split`` when it is given.

    Message-IDs are returned as the store keeps them (without ``<>``). A row without a
    ``split`` takes it from ``selection.tsv`` beside the file (columns path, message_id,
    user, folder, chars, split) when that exists. Raises ``ConfigError`` for a missing
    file, a line that is not JSON (naming the line), unknown enum values, wrong types, a
    repeated message_id, and a ``split`` that keeps no labels.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"labels file {path} not found", hint="pass --labels with the JSONL file of hand labels"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read labels file {path}: {exc}",
            hint="check the path; the file must be UTF-8 JSONL",
        ) from exc
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno})", hint=_LABELS_HINT
            ) from exc
        row = _check_row(raw, where)
        if row["message_id"] in seen:
            raise ConfigError(
                f"{where}: message_id {row['message_id']!r} was already labeled "
                f"on line {seen[row['message_id']]}",
                hint=_LABELS_HINT,
            )
        seen[row["message_id"]] = number
        rows.append(row)
    if any(not r.get("split") for r in rows):
        by_id, by_path = _selection(path.parent / "selection.tsv")
        for r in rows:
            if not r.get("split"):
                found = by_id.get(r["message_id"]) or by_path.get(str(r.get("path") or "").strip())
                if found:
                    r["split"] = found
    if split is None:
        return rows
    kept = [r for r in rows if r.get("split") == split]
    if rows and not kept:
        known = sorted({str(r["split"]) for r in rows if r.get("split")})
        raise ConfigError(
            f"no labels in split {split!r} in {path} (splits there: {', '.join(known) or 'none'})",
            hint="pick another --split, or give the rows a split (or a selection.tsv beside "
            "the labels file)",
        )
    return kept


# --- matching -----------------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lower case, punctuation (anything but letters and digits) as spaces, spaces collapsed."""
    return " ".join(re.sub(r"[\W_]+", " ", str(text).lower()).split())


def strings_match(predicted: str, label: str) -> bool:
    """Whether two strings match: equal after ``normalize``, or the shorter (at least 3
    characters) occurs in the longer at word boundaries."""
    a, b = normalize(predicted), normalize(label)
    if not a or not b:
        return False
    if a == b:
        return True
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    return len(short) >= 3 and f" {short} " in f" {long} "


_MIXED_FRACTION = re.compile(r"(?<![\d.])(\d+)\s+(\d+)\s*/\s*(\d+)(?![\d/])")
_FRACTION = re.compile(r"(?<![\d./])(\d+)\s*/\s*(\d+)(?![\d/])")
_CENTS = re.compile(r"(\d+(?:\.\d+)?)\s*-?\s*(?:cents?|¢)", re.IGNORECASE)


def amount_values(text: str) -> set[float]:
    """Values a written amount can mean: every ``find_money`` candidate, else a plain number
    ("84 3/8" = 84.375, "50-cent" = 0.5, "12,500" = 12500)."""
    out: set[float] = set()
    for money in find_money(text):
        out |= money.candidates()
    if out:
        return out
    if m := _MIXED_FRACTION.search(text):
        whole, num, den = (int(g) for g in m.groups())
        if den:
            return {whole + num / den}
    if m := _CENTS.search(text):
        return {float(m.group(1)) / 100.0}
    if m := _FRACTION.search(text):
        num, den = int(m.group(1)), int(m.group(2))
        if den:
            return {num / den}
    value = as_number(text)
    return {value} if value is not None else set()


def amounts_match(predicted: Iterable[float], label: Iterable[float]) -> bool:
    """Whether any predicted value is within 1% of any label value (0 only equals 0)."""
    for c in label:
        for p in predicted:
            if c == 0 or p == 0:
                if c == p:
                    return True
            elif abs(p - c) <= 0.01 * abs(c):
                return True
    return False


def _predicted_strings(prediction: Mapping[str, Any] | None, name: str) -> list[str]:
    """A list field's predicted strings, repeats (same normalized form) and blanks dropped."""
    if not prediction:
        return []
    items = prediction.get(name)
    if not isinstance(items, list):
        return []
    key = {"people": "name", "dates": "date"}.get(name)
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        value = item.get(key) if key and isinstance(item, Mapping) else item
        if not isinstance(value, str):
            continue
        n = normalize(value)
        if n and n not in seen:
            seen.add(n)
            out.append(value)
    return out


def _predicted_amounts(prediction: Mapping[str, Any] | None) -> list[set[float]]:
    """The candidate values of each predicted amount, repeats dropped."""
    if not prediction or not isinstance(prediction.get("amounts"), list):
        return []
    out: list[set[float]] = []
    seen: set[tuple[float, ...]] = set()
    for item in prediction["amounts"]:
        if isinstance(item, Mapping):
            value = as_number(item.get("value"))
            values = {value} if value is not None else set()
        elif isinstance(item, str):
            values = amount_values(item)
        else:
            value = as_number(item)
            values = {value} if value is not None else set()
        if not values:
            continue
        key = tuple(sorted(round(v, 6) for v in values))
        if key not in seen:
            seen.add(key)
            out.append(values)
    return out


def _greedy(predicted: Sequence[Any], labels: Sequence[Any], match: Any) -> tuple[int, int, int]:
    """(tp, fp, fn): each prediction in order takes the first unmatched label it matches."""
    used = [False] * len(labels)
    tp = 0
    for p in predicted:
        for i, label in enumerate(labels):
            if not used[i] and match(p, label):
                used[i] = True
                tp += 1
                break
    return tp, len(predicted) - tp, len(labels) - tp


def match_counts(
    name: str, prediction: Mapping[str, Any] | None, label: Mapping[str, Any]
) -> tuple[int, int, int]:
    """(tp, fp, fn) of one list field of one email."""
    gold = list(label.get(name) or [])
    if name == "amounts":
        return _greedy(
            _predicted_amounts(prediction), [amount_values(g) for g in gold], amounts_match
        )
    return _greedy(_predicted_strings(prediction, name), gold, strings_match)


def predicted_value(name: str, prediction: Mapping[str, Any] | None) -> Any:
    """The prediction of an accuracy field in label terms; None when there is none."""
    if not prediction:
        return None
    if name == "has_action_item":
        value = prediction.get("has_action_item")
        if isinstance(value, bool):
            return value
        items = prediction.get("action_items")
        return len(items) > 0 if isinstance(items, list) else None
    value = prediction.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return TYPE_MAP.get(value, value) if name == "email_type" else value


def label_form(name: str, prediction: Mapping[str, Any] | None) -> Any:
    """A prediction's field as a hand label would write it (an audited-correct value becomes
    a label): the accuracy fields' value, a list field's strings (amounts as written)."""
    if name in ACCURACY_FIELDS:
        return predicted_value(name, prediction)
    if name != "amounts":
        return _predicted_strings(prediction, name)
    out: list[str] = []
    for item in (prediction or {}).get("amounts") or []:
        if isinstance(item, Mapping):
            text = item.get("text") or item.get("raw")
            value = as_number(item.get("value"))
            if isinstance(text, str) and amount_values(text):
                out.append(text)
            elif value is not None:
                out.append(f"${value:,.2f}")
        elif isinstance(item, str):
            out.append(item)
    return out


def audit_truth(store: Store, run: str | int | None = None) -> list[dict[str, Any]]:
    """Hand labels from the audit panel: per email (its Message-ID), each scored field an
    auditor marked correct, with the audited value in label form (``label_form``);
    fields marked incorrect say only what the value is not, so they are left out. Over all
    runs (newest audit first wins) unless ``run`` is given."""
    from emailwb.quality.audit import audit_run  # audit imports this module

    fields = (*ACCURACY_FIELDS, *LIST_FIELDS)
    where, params = (
        ("AND u.run_id = ?", (audit_run(store, run).id,)) if run is not None else ("", ())
    )
    rows = store.query(
        "SELECT u.run_id, u.unit_id, u.field, n.unit FROM audits u JOIN runs n ON n.id = u.run_id "
        f"WHERE u.label = 'correct' {where} ORDER BY u.created_at DESC",
        params,
    )
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = "has_action_item" if r["field"] == "action_items" else r["field"]
        if name not in fields:
            continue
        col = runs.UNIT_COLUMN[r["unit"]]
        res = store.query_one(
            f"SELECT data FROM results WHERE run_id = ? AND {col} = ?", (r["run_id"], r["unit_id"])
        )
        ids = runs.unit_email_ids(store, r["unit"], [r["unit_id"]]).get(r["unit_id"], [])
        if res is None or not res["data"] or not ids:
            continue
        mid = store.scalar("SELECT message_id FROM emails WHERE id = ?", (min(ids),))
        label = out.setdefault(str(mid), {"message_id": str(mid), "source": "audit"})
        if name not in label:
            label[name] = label_form(name, json.loads(res["data"]))
    return list(out.values())


# --- grounding ----------------------------------------------------------------------------
def _collapse(text: str) -> str:
    return " ".join(str(text).lower().split())


def grounding_strings(prediction: Mapping[str, Any] | None) -> list[str]:
    """The predicted strings grounding checks: people, organizations, dates and amounts as
    written (the evidence's ``text`` for amounts when present; numeric-only amounts are
    skipped)."""
    if not prediction:
        return []
    out = [
        s
        for name in ("people", "organizations", "dates")
        for s in _predicted_strings(prediction, name)
    ]
    amounts = (
        [a for a in prediction.get("amounts") or [] if isinstance(a, str)]
        if isinstance(prediction.get("amounts"), list)
        else []
    )
    evidence = prediction.get("evidence")
    if isinstance(evidence, Mapping) and isinstance(evidence.get("amounts"), list):
        for item in evidence["amounts"]:
            text = item.get("text") if isinstance(item, Mapping) else item
            if isinstance(text, str):
                amounts.append(text)
    seen: set[str] = set()
    for text in amounts:
        n = _collapse(text)
        if n and n not in seen:
            seen.add(n)
            out.append(text)
    return out


def grounded_counts(prediction: Mapping[str, Any] | None, text: str) -> tuple[int, int]:
    """(grounded, checked): how many predicted strings occur in ``text`` (case and spacing
    ignored)."""
    haystack = _collapse(text)
    strings = [s for s in (_collapse(s) for s in grounding_strings(prediction)) if s]
    return sum(s in haystack for s in strings), len(strings)


def _label_span(ask: str, text: str | None) -> tuple[int, int] | None:
    """Where a labeled ask stands in the email text (exactly, else with spacing collapsed)."""
    if not text or not ask:
        return None
    at = text.find(ask)
    if at >= 0:
        return at, at + len(ask)
    words = ask.split()
    if not words:
        return None
    m = re.search(r"\s+".join(re.escape(w) for w in words), text)
    return m.span() if m else None


def predicted_asks(prediction: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A result's action items as {ask, start, end, who, due} (``records.read_ask``; offsets
    -1 when unknown), blank asks dropped."""
    items = (prediction or {}).get("action_items")
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        read = read_ask(dict(item))
        if not read["ask"].strip():
            continue
        start, end = read["start"], read["end"]
        read["start"] = start if start is not None else -1
        read["end"] = end if end is not None else -1
        read["who"] = read["who"] or ["recipients"]
        out.append(read)
    return out


def _ask_match(pred: Mapping[str, Any], label: Mapping[str, Any], text: str | None) -> bool:
    span = _label_span(str(label.get("ask") or ""), text)
    at: tuple[int, int] | None = None
    if text is not None and 0 <= pred["start"] < pred["end"] <= len(text):
        if text[pred["start"] : pred["end"]] == pred["ask"]:
            at = (pred["start"], pred["end"])  # offsets into this very text
    if at is None:  # offsets into another text (the body, not headers + body): find it
        at = _label_span(pred["ask"], text)
    if span is not None and at is not None and at[0] < span[1] and span[0] < at[1]:
        return True
    a, b = normalize(pred["ask"]), normalize(str(label.get("ask") or ""))
    if not a or not b:
        return False
    short, long = sorted((a, b), key=len)
    return f" {short} " in f" {long} "


def _who_ok(pred: Sequence[str], label: Sequence[str]) -> bool:
    """The same people asked: every label name matched by a predicted one and back."""
    p = [w for w in pred if w] or ["recipients"]
    g = [w for w in label if w] or ["recipients"]
    return all(any(strings_match(x, y) for x in p) for y in g) and all(
        any(strings_match(x, y) for y in g) for x in p
    )


def _due_ok(pred: str | None, label: str | None) -> bool:
    if not pred or not label:
        return not pred and not label
    return strings_match(pred, label)


def ask_counts(
    prediction: Mapping[str, Any] | None, label: Mapping[str, Any], text: str | None = None
) -> tuple[int, int, int, int, int]:
    """(tp, fp, fn, who right, due right) of one email's action items: a prediction matches
    a label when their spans overlap in ``text`` (or the shorter normalised string occurs in
    the longer); who and due are compared on the matched pairs."""
    preds = predicted_asks(prediction)
    golds = list(label.get("action_items") or [])
    used = [False] * len(golds)
    tp = who = due = 0
    for p in preds:
        for i, g in enumerate(golds):
            if not used[i] and _ask_match(p, g, text):
                used[i] = True
                tp += 1
                who += _who_ok(p["who"], g.get("who") or [])
                due += _due_ok(p["due"], g.get("due"))
                break
    return tp, len(preds) - tp, len(golds) - tp, who, due


def predicted_identities(prediction: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(name, address) pairs a result asserts: ``people`` entries that carry an address."""
    out: list[tuple[str, str]] = []
    for item in (prediction or {}).get("people") or []:
        if isinstance(item, Mapping) and item.get("address") and item.get("name"):
            pair = (str(item["name"]), str(item["address"]).lower())
            if pair not in out:
                out.append(pair)
    return out


def identity_counts(
    prediction: Mapping[str, Any] | None, label: Mapping[str, Any]
) -> tuple[int, int, int]:
    gold = [(str(k), str(v).lower()) for k, v in (label.get("identities") or {}).items()]
    return _greedy(
        predicted_identities(prediction),
        gold,
        lambda p, g: p[1] == g[1] and strings_match(p[0], g[0]),
    )


# --- scores -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate and its 95% bootstrap interval (None where undefined)."""

    value: float | None
    low: float | None
    high: float | None

    def __str__(self) -> str:
        if self.value is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.value:.2f}"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"

    def as_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Accuracy of one field over ``n`` labeled emails."""

    accuracy: Estimate
    correct: int
    n: int


@dataclass(frozen=True, slots=True)
class ListScore:
    """Micro-averaged precision, recall and F1 of one list field, with the pooled counts."""

    precision: Estimate
    recall: Estimate
    f1: Estimate
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True, slots=True)
class GroundingScore:
    """The share of predicted strings found in their email's text."""

    share: Estimate
    grounded: int
    checked: int


@dataclass(frozen=True, slots=True)
class Scores:
    """One extraction scored against the labels of ``n`` emails."""

    n: int
    email_type: Accuracy
    priority: Accuracy
    has_action_item: Accuracy
    people: ListScore
    organizations: ListScore
    amounts: ListScore
    dates: ListScore
    grounding: GroundingScore | None  # None when no texts were given
    #: second-round fields, scored over the labels that carry them (None when none do)
    action_items: ListScore | None = None
    who: Accuracy | None = None  # over matched action items
    due: Accuracy | None = None  # over matched action items
    identities: ListScore | None = None

    def field(self, name: str) -> Accuracy | ListScore | GroundingScore | None:
        return getattr(self, name)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _percentiles(values: list[float | None]) -> tuple[float | None, float | None]:
    """The 2.5th and 97.5th percentiles (linear interpolation) of the defined values."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None, None

    def q(p: float) -> float:
        pos = p * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return q(0.025), q(0.975)


def _resamples(n: int, resamples: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(resamples)]


def _sum_at(values: list[int], pick: itemgetter[Any]) -> int:
    got = pick(values)
    return sum(got) if isinstance(got, tuple) else got


def _estimate(point: float | None, boot: list[float | None]) -> Estimate:
    low, high = _percentiles(boot) if point is not None else (None, None)
    return Estimate(point, low, high)


def score(
    labels: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, Mapping[str, Any] | None],
    texts: Mapping[str, str] | None = None,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Scores:
    """Score ``predictions`` (by message_id; missing or None = no result) against ``labels``.

    ``texts`` (by message_id) turns on grounding; emails without a text are left out of it.
    Intervals come from ``resamples`` bootstrap resamples of the emails drawn with ``seed``:
    the same labels get the same resamples, whatever the predictions.
    """
    if not labels:
        raise ConfigError(
            "there are no labels to score against",
            hint="pass a labels file with at least one row (and check --split)",
        )
    n = len(labels)
    preds = [predictions.get(_message_id(lab["message_id"])) for lab in labels]
    picks = [itemgetter(*idx) for idx in _resamples(n, resamples, seed)]

    acc: dict[str, Accuracy] = {}
    for name in ACCURACY_FIELDS:
        guesses = [predicted_value(name, p) for p in preds]
        hits = [
            int(g is not None and g == lab[name]) for g, lab in zip(guesses, labels, strict=True)
        ]
        boot: list[float | None] = [_sum_at(hits, pick) / n for pick in picks]
        acc[name] = Accuracy(_estimate(sum(hits) / n, boot), sum(hits), n)

    lists = {
        name: _list_score(
            [match_counts(name, p, lab) for p, lab in zip(preds, labels, strict=True)], picks
        )
        for name in LIST_FIELDS
    }

    ground: GroundingScore | None = None
    if texts is not None:
        pairs = [
            grounded_counts(p, texts[mid])
            if (mid := _message_id(lab["message_id"])) in texts
            else (0, 0)
            for p, lab in zip(preds, labels, strict=True)
        ]
        got, checked = [g for g, _ in pairs], [c for _, c in pairs]
        boot_g = [_ratio(_sum_at(got, pick), _sum_at(checked, pick)) for pick in picks]
        ground = GroundingScore(
            _estimate(_ratio(sum(got), sum(checked)), boot_g), sum(got), sum(checked)
        )

    second = [i for i, lab in enumerate(labels) if "action_items" in lab]
    asks: ListScore | None = None
    who = due = None
    idents: ListScore | None = None
    if second:
        sub_picks = [itemgetter(*idx) for idx in _resamples(len(second), resamples, seed)]
        counts5 = [
            ask_counts(
                preds[i],
                labels[i],
                (texts or {}).get(_message_id(labels[i]["message_id"])),
            )
            for i in second
        ]
        asks = _list_score([c[:3] for c in counts5], sub_picks)
        matched = [c[0] for c in counts5]
        who = _pooled_accuracy([c[3] for c in counts5], matched, sub_picks)
        due = _pooled_accuracy([c[4] for c in counts5], matched, sub_picks)
        idents = _list_score([identity_counts(preds[i], labels[i]) for i in second], sub_picks)

    return Scores(
        n,
        acc["email_type"],
        acc["priority"],
        acc["has_action_item"],
        lists["people"],
        lists["organizations"],
        lists["amounts"],
        lists["dates"],
        ground,
        asks,
        who,
        due,
        idents,
    )


def _list_score(
    counts: Sequence[tuple[int, int, int]], picks: Sequence[itemgetter[Any]]
) -> ListScore:
    """Micro-averaged P/R/F1 of per-email (tp, fp, fn), with bootstrap intervals."""
    tps, fps, fns = ([c[k] for c in counts] for k in range(3))
    tp, fp, fn = sum(tps), sum(fps), sum(fns)
    bp: list[float | None] = []
    br: list[float | None] = []
    bf: list[float | None] = []
    for pick in picks:
        a, b, c = _sum_at(tps, pick), _sum_at(fps, pick), _sum_at(fns, pick)
        bp.append(_ratio(a, a + b))
        br.append(_ratio(a, a + c))
        bf.append(_ratio(2 * a, 2 * a + b + c))
    return ListScore(
        _estimate(_ratio(tp, tp + fp), bp),
        _estimate(_ratio(tp, tp + fn), br),
        _estimate(_ratio(2 * tp, 2 * tp + fp + fn), bf),
        tp,
        fp,
        fn,
    )


def _pooled_accuracy(
    right: Sequence[int], total: Sequence[int], picks: Sequence[itemgetter[Any]]
) -> Accuracy:
    """sum(right) / sum(total) over emails, with a bootstrap interval over the emails."""
    r, t = list(right), list(total)
    boot = [_ratio(_sum_at(r, pick), _sum_at(t, pick)) for pick in picks]
    return Accuracy(_estimate(_ratio(sum(r), sum(t)), boot), sum(r), sum(t))


def majority_prediction(labels: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The most common label value of each accuracy field (ties: the first seen) and empty
    lists."""
    out: dict[str, Any] = {name: [] for name in LIST_FIELDS}
    for name in ACCURACY_FIELDS:
        counts = Counter(lab[name] for lab in labels)
        out[name] = counts.most_common(1)[0][0] if counts else None
    return out


def majority_baseline(
    labels: Sequence[Mapping[str, Any]], *, resamples: int = RESAMPLES, seed: int = SEED
) -> Scores:
    """The scores of predicting every email's majority type, priority and action flag, and
    nothing for the list fields (F1 0); no grounding."""
    guess = majority_prediction(labels)
    return score(
        labels,
        {_message_id(lab["message_id"]): guess for lab in labels},
        resamples=resamples,
        seed=seed,
    )


# --- output -------------------------------------------------------------------------------
TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("email_type", "email_type"),
    ("priority", "priority"),
    ("has_action_item", "has_action_item"),
    ("people F1", "people"),
    ("organizations F1", "organizations"),
    ("amounts F1", "amounts"),
    ("dates F1", "dates"),
    ("action_items F1", "action_items"),
    ("action_items who", "who"),
    ("action_items due", "due"),
    ("identities F1", "identities"),
    ("grounding", "grounding"),
)


def _cell(scores: Scores, name: str) -> str:
    got = scores.field(name)
    if got is None:
        return "n/a"
    if isinstance(got, Accuracy):
        return str(got.accuracy)
    if isinstance(got, ListScore):
        return str(got.f1)
    return str(got.share)


def score_table(columns: Mapping[str, Scores]) -> str:
    """A plain-text table: one row per field, one column per name, cells like
    ``0.62 [0.50, 0.73]`` (accuracy, F1 or grounding share; ``n/a`` where undefined)."""
    header = ["field", *columns]
    rows = [[label, *(_cell(s, name) for s in columns.values())] for label, name in TABLE_ROWS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            [
                cells[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)),
            ]
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _list_dict(s: ListScore | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "precision": s.precision.as_dict(),
        "recall": s.recall.as_dict(),
        "f1": s.f1.as_dict(),
        "tp": s.tp,
        "fp": s.fp,
        "fn": s.fn,
    }


def _accuracy_dict(a: Accuracy | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {"accuracy": a.accuracy.as_dict(), "correct": a.correct, "n": a.n}


def scores_as_dict(scores: Scores) -> dict[str, Any]:
    """``scores`` as plain JSON-ready data (second-round fields None when not labeled)."""
    out: dict[str, Any] = {"n": scores.n}
    for name in (*ACCURACY_FIELDS, "who", "due"):
        out[name] = _accuracy_dict(getattr(scores, name))
    for name in (*LIST_FIELDS, "action_items", "identities"):
        out[name] = _list_dict(getattr(scores, name))
    g = scores.grounding
    out["grounding"] = (
        None
        if g is None
        else {"share": g.share.as_dict(), "grounded": g.grounded, "checked": g.checked}
    )
    return out


# --- the store ----------------------------------------------------------------------------
def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def predictions_from_run(
    store: Store, run: Any, message_ids: Iterable[str]
) -> dict[str, dict[str, Any] | None]:
    """A run's stored result JSON for each of ``message_ids`` (None: no result, a failed one,
    or an email not in the store). ``run`` is a ``runs.RunRecord``, a run name or an id."""
    from emailwb.store.runs import get_run

    record = run if hasattr(run, "id") and hasattr(run, "name") else get_run(store, run)
    if record is None:
        raise ConfigError(
            f"no run {run!r} in {getattr(store, 'path', 'the store')}",
            hint="see `emailwb status --json` for the runs in this database",
        )
    ids = sorted({_message_id(m) for m in message_ids})
    out: dict[str, dict[str, Any] | None] = dict.fromkeys(ids)
    for chunk in _chunks(ids):
        rows = store.query(
            "SELECT e.message_id, x.status, x.data FROM emails e "
            "JOIN email_results x ON x.email_id = e.id AND x.run_id = ? "
            f"WHERE e.message_id IN ({','.join('?' * len(chunk))}) ORDER BY e.id",
            [record.id, *chunk],
        )
        for r in rows:
            if r["status"] != "done" or not r["data"] or out.get(r["message_id"]) is not None:
                continue  # several copies of a message: the first done result wins
            try:
                data = json.loads(r["data"])
            except ValueError:
                continue
            if isinstance(data, dict):
                out[r["message_id"]] = data
    return out


def present_message_ids(store: Store, message_ids: Iterable[str]) -> set[str]:
    """Which of ``message_ids`` the store's ``emails`` table holds."""
    ids = sorted({_message_id(m) for m in message_ids})
    found: set[str] = set()
    for chunk in _chunks(ids):
        rows = store.query(
            f"SELECT DISTINCT message_id FROM emails WHERE message_id IN "
            f"({','.join('?' * len(chunk))})",
            chunk,
        )
        found.update(r[0] for r in rows)
    return found


def email_texts(store: Store, message_ids: Iterable[str]) -> dict[str, str]:
    """The text grounding searches for each email in the store: its header lines and whole
    body (``grounding.grounding_text``, as the quality checks use it)."""
    ids = sorted({_message_id(m) for m in message_ids})
    out: dict[str, str] = {}
    for chunk in _chunks(ids):
        rows = store.query(
            "SELECT message_id, date, sender, sender_name, to_addrs, cc_addrs, subject, body "
            f"FROM emails WHERE message_id IN ({','.join('?' * len(chunk))}) ORDER BY id",
            chunk,
        )
        for r in rows:
            if r["message_id"] in out:
                continue
            mail = SimpleNamespace(
                sender=r["sender"] or "",
                sender_name=r["sender_name"] or "",
                to=stored_list(r["to_addrs"]),
                cc=stored_list(r["cc_addrs"]),
                subject=r["subject"] or "",
                date=stored_date(r["date"]),
            )
            out[r["message_id"]] = grounding_text(mail, body=r["body"] or "")
    return out


# --- a report over several runs (the CLI's `emailwb score` and the notebooks' view) ------------
#: below this many scored emails the bootstrap intervals say little (over one email every
#: resample is that email, and the interval collapses to the point: it looks certain)
MIN_SCORED = 20


@dataclass(slots=True)
class ScoreReport:
    """Several runs scored against the same labels, with the majority baseline and audits."""

    columns: dict[str, Scores]  # run label -> scores; "majority" last
    scored: int  # labeled emails present in the store
    missing: int  # labeled emails not in the store
    split: str | None
    audited: dict[str, list[dict[str, Any]]]  # run label -> audited accuracy rows (if any)

    def text(self) -> str:
        head = (
            f"{self.scored} labeled emails scored"
            + (f" (split {self.split})" if self.split else "")
            + "; 95% bootstrap intervals"
        )
        out = [head, score_table(self.columns)]
        if warning := self.too_few():
            out.append(warning)
        for label, rows in self.audited.items():
            lines = [
                f"  {r['field']:<16} {r['correct']:>4}/{r['n']:<4} = {r['accuracy']:.2f} "
                f"[{r['low']:.2f}, {r['high']:.2f}]"
                for r in rows
                if r["n"]
            ]
            if lines:
                out.append(f"\naudit labels of {label} (the audit panel; Wilson intervals):")
                out.extend(lines)
        return "\n".join(out)

    def too_few(self) -> str:
        """A warning when too few labeled emails were scored for the intervals to mean much."""
        if self.scored >= MIN_SCORED:
            return ""
        return (
            f"only {self.scored} labeled emails scored: too few for these intervals to mean "
            f"much (over one email an interval is the point itself); label at least "
            f"{MIN_SCORED} (the audit panel, or gold/ by shared/gold/labeling.md)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "scored": self.scored,
            "missing": self.missing,
            "columns": {k: scores_as_dict(v) for k, v in self.columns.items()},
            "audited": self.audited,
        }

    def html(self) -> str:
        """The table as HTML (every cell escaped), for the notebooks."""
        head = "".join(f"<th>{escape(str(h))}</th>" for h in ("field", *self.columns))
        body = "".join(
            "<tr><td>"
            + escape(label)
            + "</td>"
            + "".join(f"<td>{escape(_cell(s, name))}</td>" for s in self.columns.values())
            + "</tr>"
            for label, name in TABLE_ROWS
        )
        warning = self.too_few()
        note = (
            f"<p>{self.scored} labeled emails scored"
            + (f" (split {escape(self.split)})" if self.split else "")
            + (f"; {self.missing} not in this store" if self.missing else "")
            + "; 95% bootstrap intervals over emails</p>"
            + (f"<p><b>{escape(warning)}</b></p>" if warning else "")
        )
        return (
            f"{note}<table class='emailwb-score'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )

    def _repr_html_(self) -> str:  # a notebook shows the report as its HTML table
        return self.html()


def score_runs(
    store: Store,
    labels: Sequence[Mapping[str, Any]],
    runs: Sequence[Any],
    *,
    split: str | None = None,
) -> ScoreReport:
    """Score ``runs`` (names, ids or records; labelled by name) on the labeled emails present
    in the store, next to the majority baseline; audit-panel labels of each run come along.

    Raises ``ConfigError`` for an unknown run, or when no labeled email is in the store.
    """
    from emailwb.errors import ConfigError
    from emailwb.quality.audit import accuracy
    from emailwb.store.runs import get_run, list_runs

    records = []
    for name in runs or [None]:
        record = name if hasattr(name, "id") and hasattr(name, "name") else get_run(store, name)
        if record is None and isinstance(name, str) and name.isdigit():
            record = get_run(store, int(name))
        if record is None:
            known = ", ".join(r.name for r in list_runs(store)) or "none"
            what = f"no run named {name!r}" if name is not None else "there is no run yet"
            raise ConfigError(
                f"{what} in this store (runs: {known})",
                hint="see `emailwb status --json` for the runs in this database",
            )
        records.append(record)
    present = present_message_ids(store, (lab["message_id"] for lab in labels))
    kept = [lab for lab in labels if lab["message_id"] in present]
    if not kept:
        raise ConfigError(
            f"none of the {len(labels)} labeled emails is in this store",
            hint="ingest the labeled emails first, e.g. "
            "`emailwb ingest ../shared/data/enron/maildir`",
        )
    ids = [lab["message_id"] for lab in kept]
    texts = email_texts(store, ids)
    columns = {r.name: score(kept, predictions_from_run(store, r, ids), texts) for r in records}
    columns["majority"] = majority_baseline(kept)
    audited = {}
    for r in records:
        rows = [row for row in accuracy(store, r.id).to_dicts() if row["n"]]
        if rows:
            audited[r.name] = rows
    return ScoreReport(columns, len(kept), len(labels) - len(kept), split, audited)
