"""What the simulated LLM servers do besides serving: faults, request records, default answers.

Job: the pieces of ``emailwb.testing.servers`` that are plain data and pure functions, so the
server module stays about HTTP. ``FaultPlan`` decides which chat requests fail and how
(``FAULTS``); ``RequestRecord`` is what a ``SimServer`` keeps of each request;
``default_answer`` builds a schema-valid analysis from the email in a request (regexes and
the rule detector only, so an "instant server" costs next to nothing). Import them from
``emailwb.testing.servers``, which re-exports them.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emailwb.llm.schema import EmailAnalysis
from emailwb.mail.detect import detect_text

FAULTS = (
    "http500",
    "http503",
    "http429",
    "http404",
    "hang",
    "drop",
    "reset",
    "broken_json",
    "stream_error",
    "garbage",
    "schema_violation",
    "token_limit",
    "restart",
)
KINDS = ("ollama", "openai", "llama-server")

AnswerFn = Callable[[dict[str, Any]], "str | dict[str, Any]"]
ServiceTime = float | Callable[[dict[str, Any]], float]


@dataclass
class FaultPlan:
    """Which requests fail, and how. Chat requests are numbered from 0 in arrival order."""

    per_request: dict[int, str] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)  # kind -> probability per request
    match: dict[str, str] = field(default_factory=dict)  # prompt substring -> kind (always)
    seed: int = 0
    retry_after: float | None = 1.0  # seconds sent in Retry-After with 429/503 (None: none)
    hang_s: float = 3600.0
    restart_delay: float = 0.5
    drop_after_chunks: int = 2

    def __post_init__(self) -> None:
        for kind in [*self.per_request.values(), *self.rates, *self.match.values()]:
            if kind not in FAULTS:
                raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULTS)}")
        self._rng = random.Random(self.seed)

    def pick(self, index: int, prompt: str) -> str | None:
        if index in self.per_request:
            return self.per_request[index]
        for needle, kind in self.match.items():
            if needle in prompt:
                return kind
        for kind, rate in self.rates.items():
            if self._rng.random() < rate:
                return kind
        return None


@dataclass
class RequestRecord:
    """One request the server received."""

    index: int  # chat requests: 0, 1, 2...; other paths: -1
    path: str
    body: dict[str, Any]
    prompt: str = ""  # the last user message
    fault: str | None = None
    status: int = 200
    t_start: float = 0.0
    t_end: float | None = None


def last_user(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "user":
            return str(msg.get("content") or "")
    return ""


_CAPS = re.compile(r"\b[A-Z][a-z]{2,}(?:\s[A-Z][a-z]{2,})?\b")
_MONEY = re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)")


def default_answer(body: dict[str, Any]) -> str:
    """A schema-valid analysis that mentions words of the email (cheap: regexes only)."""
    prompt = last_user(body)
    subject = next((line[9:] for line in prompt.splitlines() if line.startswith("Subject: ")), "")
    sender = next((line[6:] for line in prompt.splitlines() if line.startswith("From: ")), "")
    text = prompt.split("\n\n", 2)[-1][:2000]
    email_type, score = detect_text(subject, text, sender)
    words = text.split()
    names = list(dict.fromkeys(_CAPS.findall(text)))[:3]
    amounts = [
        {"value": float(m.replace(",", "")), "currency": "USD", "context": subject[:60]}
        for m in _MONEY.findall(text)[:2]
    ]
    analysis = EmailAnalysis(
        email_type=email_type,
        workflow=email_type.replace("_", " "),
        priority="high" if score >= 0.6 else "medium" if score >= 0.3 else "low",
        priority_reason=f"simulated from the subject {subject[:60]!r}",
        summary=" ".join(words[:20]),
        people=[{"name": sender.split("<")[0].strip()[:60] or "unknown"}],
        organizations=names,
        amounts=amounts,
        business_value={"level": "medium", "evidence": " ".join(words[:8])},
        confidence=0.7,
    )
    data = analysis.model_dump()
    schema = _requested_schema(body)
    if schema is not None and isinstance(schema.get("properties"), dict):
        # a server follows the schema it is sent: only its keys, enums picked from
        props = schema["properties"]
        data = {k: v for k, v in data.items() if k in props}
        for key, node in props.items():
            enum = (node.get("items") or {}).get("enum") if isinstance(node, dict) else None
            if node.get("maxItems") == 0:
                data[key] = []
            elif enum is not None:
                data[key] = list(enum[:2])
    return json.dumps(data)


def _requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request carries (Ollama ``format``, OpenAI ``response_format``)."""
    fmt = body.get("format")
    if isinstance(fmt, dict):
        return fmt
    rf = body.get("response_format")
    if isinstance(rf, dict):
        inner = rf.get("json_schema")
        if isinstance(inner, dict) and isinstance(inner.get("schema"), dict):
            return inner["schema"]
        if isinstance(rf.get("schema"), dict):
            return rf["schema"]
    if isinstance(body.get("json_schema"), dict):
        return body["json_schema"]
    return None


#: how many characters of reply text a simulated token stands for (the usage counts use it)
CHARS_PER_TOKEN = 4


def token_limit(body: dict[str, Any]) -> int | None:
    """The request's limit on reply tokens: Ollama's ``options.num_predict``, else OpenAI's
    ``max_completion_tokens`` or ``max_tokens``; None when the request sets none."""
    for value in (
        (body.get("options") or {}).get("num_predict"),
        body.get("max_completion_tokens"),
        body.get("max_tokens"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def cut_at_token_limit(content: str, body: dict[str, Any]) -> str:
    """``content`` as a server sends it when generation stops at the token limit: its first
    ``limit * CHARS_PER_TOKEN`` characters, and never more than half of it, so the reply is
    always cut (a JSON object cut before its closing brace does not parse)."""
    keep = len(content) // 2
    limit = token_limit(body)
    if limit is not None:
        keep = min(keep, limit * CHARS_PER_TOKEN)
    return content[:keep]


VIOLATION = json.dumps({"email_type": "invoice-ish", "priority": 7, "made_up_key": True})
