"""Extraction plans: which source each field of a result comes from.

A plan maps every field of ``emailwb.schema.EmailAnalysis`` (plus ``has_action_item``) to a
source:

* ``facts``: the deterministic extractors (``emailwb.facts.extract``), with spans;
* ``rules``: the judgment baselines (``emailwb.facts.judgment``);
* ``llm``: the model writes it; the model's schema holds only the fields a plan gives it;
* ``choice``: the model picks among the extracted candidates (an enum of their texts in the
  schema, so grammar-constrained decoding cannot invent a value);
* ``none``: left at the schema's default (the plan does not produce it).

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
from typing import Any

from emailwb.errors import ConfigError

SOURCES = ("facts", "rules", "llm", "choice", "none")
#: the fields a plan routes; has_action_item is derived from action_items when the LLM writes them
FIELDS = ("email_type", "workflow", "priority", "priority_reason", "summary", "people",
          "organizations", "amounts", "dates", "deal_refs", "action_items", "has_action_item",
          "business_value", "sentiment", "confidence")
#: which sources each field can have
ALLOWED: dict[str, tuple[str, ...]] = {
    **{f: ("llm", "none") for f in FIELDS},
    "email_type": ("rules", "llm", "none"),
    "priority": ("rules", "llm", "none"),
    "has_action_item": ("rules", "llm", "none"),
    **{f: ("facts", "llm", "choice", "none") for f in
       ("people", "organizations", "amounts", "dates", "deal_refs")},
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
                raise ConfigError(f"plan {self.name!r}: unknown field {name!r}",
                                  hint="fields: " + ", ".join(FIELDS))
            if src not in ALLOWED[name]:
                raise ConfigError(f"plan {self.name!r}: {name} cannot come from {src!r}",
                                  hint=f"{name} can come from: {', '.join(ALLOWED[name])}")

    def source(self, name: str) -> str:
        return self.sources.get(name, "none")

    def fields_from(self, *sources: str) -> tuple[str, ...]:
        return tuple(f for f in FIELDS if self.source(f) in sources)

    @property
    def llm_fields(self) -> tuple[str, ...]:
        """The schema fields the model is asked for (``has_action_item`` maps to action_items)."""
        out = [f for f in self.fields_from("llm", "choice") if f != "has_action_item"]
        if self.source("has_action_item") == "llm" and "action_items" not in out:
            out.append("action_items")
        return tuple(f for f in FIELDS if f in out)

    @property
    def uses_llm(self) -> bool:
        return bool(self.llm_fields)

    @property
    def all_llm(self) -> bool:
        """Every schema field from the model: the result is the model's reply as it was."""
        return all(self.source(f) == "llm" for f in FIELDS)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sources": dict(self.sources), "hash": self.hash()}

    def hash(self) -> str:
        text = json.dumps(self.sources, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_ENTITIES = ("people", "organizations", "amounts", "dates", "deal_refs")
_ALL_LLM = {f: "llm" for f in FIELDS}

PLANS: dict[str, Plan] = {p.name: p for p in (
    Plan("reference", "the seed's design: every field written by the model", dict(_ALL_LLM)),
    Plan("llm", "every field written by the model (the defaults before plans)", dict(_ALL_LLM)),
    Plan("facts", "no model: entities from the extractors, type, priority and action from "
         "the rules (a whole mailbox in minutes)",
         {**{f: "facts" for f in _ENTITIES}, "email_type": "rules", "priority": "rules",
          "has_action_item": "rules"}),
    Plan("default", "each field from the source that scored best on the hand labels: "
         "entities from the extractors, type, priority and action from the rules; the model "
         "writes the summary, workflow and action items",
         {**{f: "facts" for f in _ENTITIES}, "email_type": "rules", "priority": "rules",
          "has_action_item": "rules", "summary": "llm", "workflow": "llm",
          "action_items": "llm"}),
    Plan("choice", "the model picks people, organizations and dates among the extracted "
         "candidates (it cannot invent one); type, priority and action from the model",
         {"people": "choice", "organizations": "choice", "dates": "choice",
          "amounts": "facts", "deal_refs": "facts", "email_type": "llm", "priority": "llm",
          "has_action_item": "llm", "summary": "llm"}),
)}


def get_plan(name: str | Plan | None) -> Plan:
    """A plan by name (``None``: ``default``)."""
    if isinstance(name, Plan):
        return name
    key = name or "default"
    if key not in PLANS:
        raise ConfigError(f"unknown extraction plan {key!r}",
                          hint="choose one of: " + ", ".join(PLANS))
    return PLANS[key]
