"""The versioned output schema: what every backend is asked to return for one email.

``EmailAnalysis`` is the pydantic model that validates a reply (the fail-closed schema guard
in ``emailwb.backends`` uses it); ``output_json_schema()`` is the compact JSON schema sent to
the servers (Ollama ``format``, OpenAI ``response_format``): every ``$ref`` inlined (some
servers choke on ``$defs``), no titles or defaults, every property required and
``additionalProperties: false`` so that grammar-constrained decoding writes each key once, in
a fixed order. ``schema_hash()`` identifies the schema a result was produced with.

The model is lenient only where the meaning is unambiguous (case and spacing of enum
values, a few synonyms, over-long strings and lists cut to their limits, "$1,200" as a
number, confidence given in percent), so a small model's partial answer still validates;
it is strict where a reply shows the server ignored the schema: unknown keys, unknown enum
values, wrong types, or an object with none of the schema's keys.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

SCHEMA_VERSION = "1"

EMAIL_TYPES: tuple[str, ...] = (
    "request",
    "status_update",
    "meeting",
    "deal",
    "legal",
    "regulatory",
    "report",
    "announcement",
    "personal",
    "newsletter",
    "spam",
    "other",
)
PRIORITIES: tuple[str, ...] = ("low", "medium", "high", "urgent")
LEVELS: tuple[str, ...] = ("low", "medium", "high")
SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")

#: unambiguous spellings a model (or a server that dropped the schema) may use
_SYNONYMS: dict[str, str] = {
    "trade": "deal",
    "deal/trade": "deal",
    "transaction": "deal",
    "contract": "legal",
    "contract/legal": "legal",
    "status": "status_update",
    "update": "status_update",
    "status update": "status_update",
    "calendar": "meeting",
    "meeting_request": "meeting",
    "regulation": "regulatory",
    "compliance": "regulatory",
    "junk": "spam",
    "normal": "medium",
    "critical": "urgent",
}

# --- limits (modest: a 135M-parameter model must be able to fill this) -----------------
SHORT = 50  # names, roles, organizations, references, contexts
LINE = 120  # one-line reason, task, evidence
SUMMARY = 280
#: the confidence values the servers' grammars allow (the last field of a reply)
CONFIDENCE_STEPS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))


def _norm_choice(value: Any) -> Any:
    if isinstance(value, str):
        v = re.sub(r"[\s\-]+", "_", value.strip().lower()).strip("_")
        spaced = value.strip().lower()
        return _SYNONYMS.get(spaced, _SYNONYMS.get(v, v))
    return value


def _cut(limit: int):
    def cut(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, str):
            value = " ".join(value.split())
            return value[:limit]
        return value

    return cut


def _cut_list(limit: int):
    def cut(value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, list):
            return value[:limit]
        return value

    return cut


def _number(value: Any) -> Any:
    """Accept "$1,200.50", "1.2 million" style strings; anything else is left to pydantic."""
    if isinstance(value, str):
        text = value.strip().lower().replace(",", "")
        m = re.fullmatch(r"[^\d\-.]*(-?\d+(?:\.\d+)?)\s*(k|m|mm|million|bn|billion)?\W*", text)
        if m:
            scale = {"k": 1e3, "m": 1e6, "mm": 1e6, "million": 1e6, "bn": 1e9, "billion": 1e9}
            return float(m.group(1)) * scale.get(m.group(2) or "", 1.0)
    return value


def _confidence(value: Any) -> Any:
    value = _number(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 2 <= value <= 100:
            return value / 100.0  # given in percent
        if 1 < value < 2:
            return 1.0  # a small overshoot of the 0..1 range
    return value


def Text(limit: int) -> Any:
    return Annotated[str, BeforeValidator(_cut(limit)), Field(max_length=limit)]


def Items(item: Any, limit: int) -> Any:
    return Annotated[list[item], BeforeValidator(_cut_list(limit)), Field(max_length=limit)]


EmailType = Annotated[Literal[EMAIL_TYPES], BeforeValidator(_norm_choice)]  # type: ignore[valid-type]
Priority = Annotated[Literal[PRIORITIES], BeforeValidator(_norm_choice)]  # type: ignore[valid-type]
Level = Annotated[Literal[LEVELS], BeforeValidator(_norm_choice)]  # type: ignore[valid-type]
Sentiment = Annotated[Literal[SENTIMENTS], BeforeValidator(_norm_choice)]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Person(_Strict):
    name: Text(SHORT) = ""
    role: Text(SHORT) = ""


class Amount(_Strict):
    value: Annotated[float, BeforeValidator(_number)] = 0.0
    currency: Text(8) = "USD"
    context: Text(SHORT) = ""


class DateRef(_Strict):
    date: Text(40) = ""
    what: Text(SHORT) = ""


class ActionItem(_Strict):
    task: Text(LINE) = ""
    owner: Text(SHORT) = ""
    due: Text(40) = ""


class BusinessValue(_Strict):
    level: Level = "low"
    evidence: Text(LINE) = ""


class EmailAnalysis(_Strict):
    """One email's structured analysis. Every field has a default: partial answers validate."""

    email_type: EmailType = "other"
    workflow: Text(SHORT) = ""
    priority: Priority = "medium"
    priority_reason: Text(LINE) = ""
    summary: Text(SUMMARY) = ""
    people: Items(Person, 3) = Field(default_factory=list)
    organizations: Items(Text(SHORT), 3) = Field(default_factory=list)
    amounts: Items(Amount, 3) = Field(default_factory=list)
    dates: Items(DateRef, 3) = Field(default_factory=list)
    deal_refs: Items(Text(SHORT), 3) = Field(default_factory=list)
    action_items: Items(ActionItem, 3) = Field(default_factory=list)
    business_value: BusinessValue = Field(default_factory=BusinessValue)
    sentiment: Sentiment = "neutral"
    # Grammar-constrained decoding (llama.cpp, Ollama) enforces bounds on integers only: with
    # just ge/le a small model wrote 10000 here in about 1 reply of 5 (SmolLM2-135M, Enron),
    # and the schema retry re-sent the whole email for this one trailing field. An enum of
    # tenths is enforced by every server's grammar; the validator still takes any 0..1 value.
    confidence: Annotated[float, BeforeValidator(_confidence)] = Field(
        0.5, ge=0.0, le=1.0, json_schema_extra={"enum": list(CONFIDENCE_STEPS)})


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve ``$ref``s, drop titles/defaults, require every property, forbid extras."""
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _inline(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]), defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "default", "$defs", "description"):
            continue
        if key == "properties":
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _inline(value, defs)
    if out.get("type") == "object" and "properties" in out:
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    if "const" in out and "enum" not in out:  # a one-value Literal
        out["enum"] = [out.pop("const")]
    return out


@lru_cache(maxsize=4)
def _schema_text(limits: bool) -> str:
    full = EmailAnalysis.model_json_schema()
    schema = _inline(full, full.get("$defs", {}))
    if not limits:

        def strip(node: Any) -> Any:
            if isinstance(node, dict):
                return {
                    k: strip(v)
                    for k, v in node.items()
                    if k not in ("maxLength", "maxItems", "minimum", "maximum")
                }
            if isinstance(node, list):
                return [strip(n) for n in node]
            return node

        schema = strip(schema)
    return json.dumps(schema, separators=(",", ":"))


def output_json_schema(*, limits: bool = True) -> dict[str, Any]:
    """The JSON schema sent to servers (a fresh copy; no ``$ref``, every key required).

    ``limits=False`` drops maxLength/maxItems/minimum/maximum for servers whose strict mode
    rejects those keywords.
    """
    return json.loads(_schema_text(limits))


def schema_hash() -> str:
    """A short, stable hash of the schema version and the JSON schema sent to servers."""
    text = SCHEMA_VERSION + "\n" + _schema_text(True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_reply(text: str) -> EmailAnalysis:
    """Parse and validate a reply's text; raises ``ValueError`` (pydantic's or json's).

    A reply wrapped in a Markdown code fence is unwrapped first; nothing else is repaired.
    An object with none of the schema's keys is refused even though every field has a
    default: it means the server ignored the schema.
    """
    body = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.S)
    if fence:
        body = fence.group(1)
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError(f"the reply is a JSON {type(data).__name__}, not an object")
    if not data.keys() & EmailAnalysis.model_fields.keys():
        # an object without any of our keys means the server ignored the schema
        raise ValueError("the reply has none of the schema's fields (the server probably "
                         "ignored the JSON schema)")
    return EmailAnalysis.model_validate(data)
