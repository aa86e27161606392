"""Extraction plans: which source each field of a result comes from.

A plan maps every field of ``emailwb.llm.schema.EmailAnalysis`` (plus ``has_action_item``) to a
source:

* ``facts``: the deterministic extractors (``emailwb.facts.extract``), with spans;
* ``rules``: the judgment baselines (``emailwb.facts.judgment``);
* ``llm``: the model writes it; the model's schema holds only the fields a plan gives it;
* ``choice``: the model picks among the extracted candidates (an enum of their texts in the
  schema, so grammar-constrained decoding cannot invent a value);
* ``none``: not produced: ``null`` in the stored result (never a schema default that
  would read as an answer), listed in ``sources`` as ``none``.

``has_action_item`` is always whether ``action_items`` is non-empty, in every plan: the
flag and the list have one source (``emailwb.facts.asks`` under ``facts``, the model under
``llm``, the model's pick among the extracted asks under ``choice``).

``reference`` and ``llm`` give every field to the model (the seed's design and the former
defaults); ``facts`` asks no model at all (a whole mailbox's entities in minutes);
``default`` takes each field from the source that scored best on the hand labels' dev split
(numbers in the README, "Where each field comes from"). Plans are chosen by name:
``emailwb run --plan NAME``, the launch panel, or ``plan = "..."`` in the config file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from emailwb.errors import ConfigError, ProcessingError
from emailwb.facts.asks import Ask
from emailwb.facts.evidence import place, place_amount
from emailwb.facts.extract import Facts
from emailwb.facts.judgment import Judgment
from emailwb.llm.schema import EmailAnalysis

SOURCES = ("facts", "rules", "llm", "choice", "none")
#: the version of a stored result's shape; results without ``result_version`` are older (1):
#: their unproduced fields hold the schema's defaults (``"low"``, ``"neutral"``, ``0.5``)
RESULT_VERSION = 2
#: the fields a plan routes; has_action_item is derived from action_items when the LLM writes them
FIELDS = (
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
    "has_action_item",
    "business_value",
    "sentiment",
    "confidence",
)
#: which sources each field can have
ALLOWED: dict[str, tuple[str, ...]] = {
    **{f: ("llm", "none") for f in FIELDS},
    "email_type": ("rules", "llm", "none"),
    "priority": ("rules", "llm", "none"),
    "has_action_item": ("rules", "facts", "llm", "choice", "none"),
    **{
        f: ("facts", "llm", "choice", "none")
        for f in ("people", "organizations", "amounts", "dates", "deal_refs", "action_items")
    },
}


@dataclass(frozen=True)
class Plan:
    """A named routing of fields to sources."""

    name: str
    description: str
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, src in self.sources.items():
            if name not in ALLOWED:
                raise ConfigError(
                    f"plan {self.name!r}: unknown field {name!r}",
                    hint="fields: " + ", ".join(FIELDS),
                )
            if src not in ALLOWED[name]:
                raise ConfigError(
                    f"plan {self.name!r}: {name} cannot come from {src!r}",
                    hint=f"{name} can come from: {', '.join(ALLOWED[name])}",
                )

    def fields_from(self, *sources: str) -> tuple[str, ...]:
        return tuple(f for f in FIELDS if self.source(f) in sources)

    def source(self, name: str) -> str:
        if name == "has_action_item" and self.sources.get("action_items", "none") != "none":
            return self.sources["action_items"]  # the flag follows the list
        return self.sources.get(name, "none")

    @cached_property  # a plan's routing does not change: asked for every unit
    def llm_fields(self) -> tuple[str, ...]:
        """The schema fields the model is asked for (``has_action_item`` maps to action_items)."""
        out = [f for f in self.fields_from("llm", "choice") if f != "has_action_item"]
        if self.source("has_action_item") in ("llm", "choice") and "action_items" not in out:
            out.append("action_items")
        return tuple(f for f in FIELDS if f in out)

    def produces(self, name: str) -> bool:
        """Whether the plan gives ``name`` a value (``none``: it is null in every result)."""
        return self.source(name) != "none"

    @cached_property  # a plan's routing does not change: asked for every unit
    def uses_llm(self) -> bool:
        return bool(self.llm_fields)

    @cached_property  # a plan's routing does not change: asked for every unit
    def all_llm(self) -> bool:
        """Every schema field from the model: the result is the model's reply as it was."""
        return all(self.source(f) == "llm" for f in FIELDS)

    @cached_property  # a plan's routing does not change: asked for every unit
    def choice_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields_from("choice") if f != "has_action_item")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sources": {f: self.source(f) for f in FIELDS},
            "llm_fields": list(self.llm_fields),
            "hash": self.hash(),
        }

    def hash(self) -> str:
        text = json.dumps(self.sources, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_ENTITIES = ("people", "organizations", "amounts", "dates", "deal_refs", "action_items")
_ALL_LLM = {f: "llm" for f in FIELDS}

PLANS: dict[str, Plan] = {
    p.name: p
    for p in (
        Plan("reference", "the seed's design: every field written by the model", dict(_ALL_LLM)),
        Plan("llm", "every field written by the model (the defaults before plans)", dict(_ALL_LLM)),
        Plan(
            "facts",
            "no model: entities from the extractors, type, priority and action from "
            "the rules (a whole mailbox in minutes)",
            {
                **{f: "facts" for f in _ENTITIES},
                "email_type": "rules",
                "priority": "rules",
            },
        ),
        Plan(
            "default",
            "each field from the source that scored best on the hand labels: "
            "entities from the extractors, type, priority and action from the rules; the model "
            "writes only the summary (no deterministic source does)",
            {
                **{f: "facts" for f in _ENTITIES},
                "email_type": "rules",
                "priority": "rules",
                "summary": "llm",
            },
        ),
        Plan(
            "choice",
            "the model picks people, organizations, dates and action items among the "
            "extracted candidates (it cannot invent one); type and priority from the model",
            {
                "people": "choice",
                "organizations": "choice",
                "dates": "choice",
                "action_items": "choice",
                "amounts": "facts",
                "deal_refs": "facts",
                "email_type": "llm",
                "priority": "llm",
                "summary": "llm",
            },
        ),
    )
}


def get_plan(name: str | Plan | None) -> Plan:
    """A plan by name (``None``: ``default``)."""
    if isinstance(name, Plan):
        return name
    key = name or "default"
    if key not in PLANS:
        raise ConfigError(
            f"unknown extraction plan {key!r}", hint="choose one of: " + ", ".join(PLANS)
        )
    return PLANS[key]


# --- putting a result together ----------------------------------------------------------------
_RULE_FIELDS = ("email_type", "priority", "has_action_item")
#: what a plan's llm field holds when the model left it out of its reply
_LLM_EMPTY: dict[str, Any] = {
    "people": [],
    "organizations": [],
    "amounts": [],
    "dates": [],
    "deal_refs": [],
    "action_items": [],
}


def _llm_strings(name: str, value: Any) -> list[str]:
    """The strings of an LLM-written entity field, as the model wrote them."""
    out = []
    for item in value or []:
        if isinstance(item, dict):
            text = item.get("name") or item.get("date") or item.get("context") or ""
            if name == "amounts":
                text = item.get("context") or ""
        else:
            text = str(item)
        out.append(str(text))
    return out


def compose(
    plan: Plan,
    text: str,
    llm: dict[str, Any] | None = None,
    *,
    facts: Facts | None = None,
    judgment: Judgment | None = None,
) -> dict[str, Any]:
    """One result: each field from its plan source, with ``evidence`` and ``sources``.

    ``llm`` is the model's validated reply (only the plan's fields), None when the plan asks
    no model. ``facts`` and ``judgment`` are needed unless every field is the model's.
    Choice fields keep only candidates the model picked (a value outside them,
    from a server that ignored the enum, is dropped and listed as refused). Every entity
    value carries evidence: its span in ``text`` (exact or fuzzy), or ``unplaced``.
    """
    llm = llm or {}
    if (facts is None or judgment is None) and not plan.all_llm:
        raise ProcessingError(
            f"plan {plan.name!r} needs the email's facts and judgment",
            hint="report this: the work queue prepares facts for plans that use them",
        )
    facts = facts or Facts()
    # a field the plan does not produce is null, never a schema default read as an answer
    data: dict[str, Any] = dict.fromkeys(FIELDS)
    if plan.all_llm:
        data.update(EmailAnalysis().model_dump())  # the model was asked for every field
        data.update(llm)
    else:
        for name in FIELDS:
            src = plan.source(name)
            if src == "llm":
                data[name] = llm.get(name, _LLM_EMPTY.get(name))
    fact_fields = facts.result_fields()
    evidence: dict[str, list[dict[str, Any]]] = {}
    refused: dict[str, list[str]] = {}
    for name in _ENTITIES:
        src = plan.source(name)
        if src == "facts":
            data[name] = fact_fields[name]
            evidence[name] = [_evidence(f) for f in facts.of(name)]
        elif src == "choice":
            by_text = {" ".join(f.text.split()): f for f in facts.of(name)}
            given = [" ".join(str(v).split()) for v in llm.get(name) or []]
            picked = [v for v in dict.fromkeys(given) if v in by_text]
            refused[name] = [v for v in given if v not in by_text]
            chosen = [by_text[v] for v in picked]
            picked_only: dict[str, Any] = {name: chosen}
            data[name] = Facts(**picked_only).result_fields()[name]
            evidence[name] = [_evidence(f) for f in chosen]
        elif src == "llm" and name == "action_items":
            evidence[name] = [
                {**place(str(item.get("task") or ""), text), "source": "llm"}
                for item in data.get(name) or []
                if isinstance(item, dict)
            ]
        elif src == "llm" and name == "amounts":
            evidence[name] = [
                {**place_amount(item, text), "source": "llm"}
                for item in data.get(name) or []
                if isinstance(item, dict)
            ]
        elif src == "llm":
            evidence[name] = [
                {**place(value, text), "source": "llm"}
                for value in _llm_strings(name, data.get(name))
            ]
    if judgment is not None:
        rules = judgment._asdict()
        for name in _RULE_FIELDS:
            if plan.source(name) == "rules":
                data[name] = rules[name]
    if data.get("action_items") is not None:  # one source of truth: the list
        data["has_action_item"] = bool(data["action_items"])
    for name in FIELDS:
        if plan.source(name) == "none":
            data[name] = None
    data["evidence"] = evidence
    data["sources"] = {name: plan.source(name) for name in FIELDS}
    data["plan"] = plan.name
    data["result_version"] = RESULT_VERSION
    if any(refused.values()):
        data["refused"] = {k: v for k, v in refused.items() if v}
    return data


def _evidence(fact: Any) -> dict[str, Any]:
    """A fact's evidence; an action item's carries the spans of its parts."""
    if isinstance(fact, Ask):
        item = fact.as_item()
        return {
            "text": fact.text,
            "start": fact.start,
            "end": fact.end,
            "source": fact.source,
            "match": "exact" if fact.start >= 0 else "unplaced",
            "who_spans": item["who_spans"],
            "due_span": item["due_span"],
        }
    return dict(fact.as_evidence())


def grounded_share(data: dict[str, Any]) -> tuple[int, int]:
    """(placed, checked) over a result's entity evidence: values with a span count as grounded."""
    placed = checked = 0
    for items in (data.get("evidence") or {}).values():
        for item in items:
            checked += 1
            placed += item.get("match") in ("exact", "fuzzy")
    return placed, checked
