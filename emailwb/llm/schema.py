"""The versioned output schema: what every backend is asked to return for one email.

``EmailAnalysis`` is the pydantic model that validates a reply (the fail-closed schema guard
in ``emailwb.llm.router`` uses it); ``output_json_schema()`` is the compact JSON schema sent to
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
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

SCHEMA_VERSION = "1"

EmailTypeName = Literal[
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
]
PriorityName = Literal["low", "medium", "high", "urgent"]
LevelName = Literal["low", "medium", "high"]
SentimentName = Literal["negative", "neutral", "positive"]

EMAIL_TYPES: tuple[str, ...] = get_args(EmailTypeName)
PRIORITIES: tuple[str, ...] = get_args(PriorityName)
LEVELS: tuple[str, ...] = get_args(LevelName)
SENTIMENTS: tuple[str, ...] = get_args(SentimentName)

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
ASK = 600  # an action item picked among the extracted asks (a sentence)
#: the confidence values the servers' grammars allow (the last field of a reply)
CONFIDENCE_STEPS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))


def _norm_choice(value: Any) -> Any:
    if isinstance(value, str):
        v = re.sub(r"[\s\-]+", "_", value.strip().lower()).strip("_")
        spaced = value.strip().lower()
        return _SYNONYMS.get(spaced, _SYNONYMS.get(v, v))
    return value


def _cut(limit: int) -> Callable[[Any], Any]:
    def cut(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, str):
            value = " ".join(value.split())
            return value[:limit]
        return value

    return cut


def _cut_list(limit: int) -> Callable[[Any], Any]:
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
    """A string cut to ``limit`` characters, as a type built at run time (``plan_model``)."""
    return Annotated[str, BeforeValidator(_cut(limit)), Field(max_length=limit)]


def Items(item: Any, limit: int) -> Any:
    """A list cut to ``limit`` items, as a type built at run time (``plan_model``)."""
    return Annotated[list[item], BeforeValidator(_cut_list(limit)), Field(max_length=limit)]


# The same types written out statically for the models below, so a type checker sees them
# (``Text(SHORT)`` in an annotation is a call, which it cannot read as a type).
ShortText = Annotated[str, BeforeValidator(_cut(SHORT)), Field(max_length=SHORT)]
LineText = Annotated[str, BeforeValidator(_cut(LINE)), Field(max_length=LINE)]
SummaryText = Annotated[str, BeforeValidator(_cut(SUMMARY)), Field(max_length=SUMMARY)]
DateText = Annotated[str, BeforeValidator(_cut(40)), Field(max_length=40)]
CurrencyText = Annotated[str, BeforeValidator(_cut(8)), Field(max_length=8)]
_T = TypeVar("_T")
#: a list of at most three items (``Items(item, 3)``)
Three = Annotated[list[_T], BeforeValidator(_cut_list(3)), Field(max_length=3)]

EmailType = Annotated[EmailTypeName, BeforeValidator(_norm_choice)]
Priority = Annotated[PriorityName, BeforeValidator(_norm_choice)]
Level = Annotated[LevelName, BeforeValidator(_norm_choice)]
Sentiment = Annotated[SentimentName, BeforeValidator(_norm_choice)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Person(_Strict):
    name: ShortText = ""
    role: ShortText = ""


class Amount(_Strict):
    # strict JSON: a reply with Infinity or NaN is refused (readers of the stored JSON reject them)
    value: Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)] = 0.0
    currency: CurrencyText = "USD"
    context: ShortText = ""


class DateRef(_Strict):
    date: DateText = ""
    what: ShortText = ""


class ActionItem(_Strict):
    task: LineText = ""
    owner: ShortText = ""
    due: DateText = ""


class BusinessValue(_Strict):
    level: Level = "low"
    evidence: LineText = ""


class EmailAnalysis(_Strict):
    """One email's structured analysis. Every field has a default: partial answers validate."""

    email_type: EmailType = "other"
    workflow: ShortText = ""
    priority: Priority = "medium"
    priority_reason: LineText = ""
    summary: SummaryText = ""
    people: Three[Person] = Field(default_factory=list)
    organizations: Three[ShortText] = Field(default_factory=list)
    amounts: Three[Amount] = Field(default_factory=list)
    dates: Three[DateRef] = Field(default_factory=list)
    deal_refs: Three[ShortText] = Field(default_factory=list)
    action_items: Three[ActionItem] = Field(default_factory=list)
    business_value: BusinessValue = Field(default_factory=BusinessValue)
    sentiment: Sentiment = "neutral"
    # Grammar-constrained decoding (llama.cpp, Ollama) enforces bounds on integers only: with
    # just ge/le a small model wrote 10000 here in about 1 reply of 5 (SmolLM2-135M, Enron),
    # and the schema retry re-sent the whole email for this one trailing field. An enum of
    # tenths is enforced by every server's grammar; the validator still takes any 0..1 value.
    confidence: Annotated[float, BeforeValidator(_confidence)] = Field(
        0.5, ge=0.0, le=1.0, json_schema_extra={"enum": list(CONFIDENCE_STEPS)}
    )


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


@lru_cache(maxsize=64)
def plan_model(fields: tuple[str, ...], choices: tuple[str, ...] = ()) -> type[BaseModel]:
    """The reply model for a plan that asks the model for ``fields`` only (in schema order).

    Fields in ``choices`` are lists of strings (the model picks among extracted candidates;
    the request's schema narrows them to an enum per email, ``choice_schema``).
    """
    unknown = set(fields) - EmailAnalysis.model_fields.keys()
    if unknown:
        raise ValueError(f"not fields of the output schema: {sorted(unknown)}")
    defs: dict[str, Any] = {}
    for name in EmailAnalysis.model_fields:
        if name not in fields:
            continue
        if name in choices:
            limit = ASK if name == "action_items" else SHORT  # an ask is a whole clause
            defs[name] = (Items(Text(limit), 6), Field(default_factory=list))
        else:
            info = EmailAnalysis.model_fields[name]
            defs[name] = (info.rebuild_annotation(), info)
    return create_model("PlanAnalysis", __base__=_Strict, **defs)


def _model_schema(model: type[BaseModel], limits: bool) -> dict[str, Any]:
    full = model.model_json_schema()
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
    return schema


@lru_cache(maxsize=64)
def _schema_text(
    limits: bool, fields: tuple[str, ...] | None = None, choices: tuple[str, ...] = ()
) -> str:
    model = EmailAnalysis if fields is None else plan_model(fields, choices)
    return json.dumps(_model_schema(model, limits), separators=(",", ":"))


def output_json_schema(
    *, limits: bool = True, fields: tuple[str, ...] | None = None, choices: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The JSON schema sent to servers (a fresh copy; no ``$ref``, every key required).

    ``limits=False`` drops maxLength/maxItems/minimum/maximum for servers whose strict mode
    rejects those keywords. ``fields`` narrows it to a plan's fields (``plan_model``).
    """
    return json.loads(_schema_text(limits, fields, choices))


def choice_schema(schema: dict[str, Any], candidates: dict[str, list[str]]) -> dict[str, Any]:
    """``schema`` with each choice field's items narrowed to an enum of that email's candidates.

    A field without candidates gets ``maxItems: 0``: the model can only leave it empty.
    """
    out = copy.deepcopy(schema)
    for name, values in candidates.items():
        node = out["properties"].get(name)
        if node is None:
            continue
        values = list(dict.fromkeys(v for v in values if v))
        if values:
            node["items"] = {"type": "string", "enum": values}
        else:
            node["items"] = {"type": "string"}
            node["maxItems"] = 0
    return out


def schema_hash(fields: tuple[str, ...] | None = None, choices: tuple[str, ...] = ()) -> str:
    """A short, stable hash of the schema version and the JSON schema sent to servers."""
    text = SCHEMA_VERSION + "\n" + _schema_text(True, fields, choices)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _no_constant(name: str) -> Any:
    raise ValueError(
        f"the reply holds {name}, which is not JSON (strict JSON has no Infinity or NaN)"
    )


def parse_reply(text: str, model: type[BaseModel] = EmailAnalysis) -> BaseModel:
    """Parse and validate a reply's text; raises ``ValueError`` (pydantic's or json's).

    A reply wrapped in a Markdown code fence is unwrapped first; nothing else is repaired.
    Strict JSON: ``Infinity``/``NaN`` are refused. An object with none of the schema's keys
    is refused even though every field has a default: it means the server ignored the
    schema. ``model`` is the reply model (``plan_model`` for a plan's fields).
    """
    body = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.S)
    if fence:
        body = fence.group(1)
    data = json.loads(body, parse_constant=_no_constant)
    if not isinstance(data, dict):
        raise ValueError(f"the reply is a JSON {type(data).__name__}, not an object")
    if not data.keys() & model.model_fields.keys():
        # an object without any of our keys means the server ignored the schema
        raise ValueError(
            "the reply has none of the schema's fields (the server probably "
            "ignored the JSON schema)"
        )
    return model.model_validate(data)
