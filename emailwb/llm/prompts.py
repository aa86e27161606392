"""Prompt templates: one per email type plus a default, versioned and hashed.

Layout, chosen for the servers' prompt caches (llama-server, vLLM and Ollama reuse the KV
cache of a byte-identical prefix): the system message is the shared instructions and the
schema description (identical for every template), then a short type-specific focus; the
user message is a fixed lead line and then the email, LAST. Nothing that varies per email
(date, name, counter) appears before the email.

``build_messages`` fits the email into a token budget (estimated as characters / 4) and
records any truncation on the returned ``Prompt``; it never cuts silently. Modes:

* ``clean`` (default): headers (from, to, date, subject) and the text the sender wrote
  (``Email.new_text``), with the forwarded text added when the new text is nearly empty;
* ``raw``: headers and the whole decoded body, quotes and all (the reference baseline);
* chain: pass a list of Emails, oldest first; each contributes its new text under a short
  header line, and the oldest are left out first when the thread is over budget.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from emailwb.errors import ConfigError
from emailwb.llm.schema import EMAIL_TYPES, LEVELS, PRIORITIES, SCHEMA_VERSION, SENTIMENTS
from emailwb.mail.detect import detect
from emailwb.mail.message import Email

CHARS_PER_TOKEN = 4  # the budget's estimate; good enough for English mail
MIN_EMAIL_CHARS = 400  # the email always gets at least this much room
NEARLY_EMPTY = 40  # new text shorter than this falls back to the forwarded text
MAX_RECIPIENTS = 4

#: each output field's line in the instructions, in schema order
FIELD_LINES: dict[str, str] = {
    "email_type": f"email_type: one of {', '.join(EMAIL_TYPES)}",
    "workflow": 'workflow: the business process in a few words, e.g. "gas trading", '
    '"contract review"',
    "priority": f"priority: one of {', '.join(PRIORITIES)}",
    "priority_reason": "priority_reason: one short line saying why",
    "summary": "summary: one or two sentences",
    "people": 'people: list of {"name", "role"} for people named in the email (at most 3)',
    "organizations": "organizations: list of company, agency or team names",
    "amounts": 'amounts: list of {"value": number, "currency": e.g. "USD", "context": what it '
    "is for}",
    "dates": 'dates: list of {"date": as written, "what": the event or deadline}',
    "deal_refs": "deal_refs: list of deal, contract, ticket or docket numbers",
    "action_items": 'action_items: list of {"task", "owner", "due"}',
    "business_value": f'business_value: {{"level": one of {", ".join(LEVELS)}, "evidence": a '
    f"short quote from the email}}",
    "sentiment": f"sentiment: one of {', '.join(SENTIMENTS)}",
    "confidence": "confidence: a number from 0 to 1, how sure you are",
}
#: a choice field's line: the model picks among candidates extracted from the email
CHOICE_LINES: dict[str, str] = {
    "people": "people: the names, among the candidates listed after the email, of people "
    "the sender's own text names",
    "organizations": "organizations: the names, among the candidates listed after the email, "
    "of companies, agencies or teams the email names",
    "dates": "dates: the dates, among the candidates listed after the email, that pin a day "
    "the email is about",
    "amounts": "amounts: the money amounts, among the candidates listed after the email",
    "deal_refs": "deal_refs: the deal or contract numbers, among the candidates listed after "
    "the email",
    "action_items": "action_items: the sentences, among the candidates listed after the email, "
    "that ask the recipients to do something (not offers of help, not the sender's own plans)",
}
_REPLY_HEAD = "Reply with one JSON object with exactly these keys:"
_REPLY_TAIL = 'Use only facts stated in the email. Use "" or [] when something is not there.'
_SCHEMA_DESCRIPTION = "\n".join((_REPLY_HEAD, *FIELD_LINES.values(), _REPLY_TAIL))

_INTRO = "You read one business email and extract structured facts for an analyst."
_GUIDANCE = """\
Priority: urgent = needs action today; high = a deadline, money or a decision; medium = \
useful work mail; low = information only, newsletters, personal or spam.
Business value: high when the email moves a deal, contract, money or a regulatory matter."""
COMMON_INSTRUCTIONS = f"{_INTRO}\n{_SCHEMA_DESCRIPTION}\n{_GUIDANCE}"

USER_LEAD = "Analyse this email and reply with the JSON object only.\n\n"

_FOCUS: dict[str, str] = {
    "default": "Classify the email carefully; use email_type other when nothing fits.",
    "request": "Put every request in action_items, with the person asked as owner and any "
    "due date; the priority follows the deadline.",
    "status_update": "Say in the summary what changed and what is still open; list any "
    "follow-up as action_items.",
    "meeting": "Put the meeting date, time and place in dates; list attendees in people and "
    "any preparation as action_items.",
    "deal": "List every price, volume and amount in amounts, deal or ticket numbers in "
    "deal_refs, and counterparties in organizations.",
    "legal": "Name the agreement and the parties; put contract numbers in deal_refs and "
    "signing or termination dates in dates.",
    "regulatory": "Name the agency (FERC, CFTC, a state commission), the docket or order "
    "numbers in deal_refs, and filing deadlines in dates.",
    "report": "Say what the report covers and the key figures (in amounts); priority is "
    "usually low unless it flags a problem.",
    "announcement": "Say who is affected and from when; priority is usually low.",
    "personal": "Keep the summary short; business_value is low unless work is discussed.",
    "newsletter": "Summarise the main topic in one sentence; priority and business_value are low.",
    "spam": "Use email_type spam, priority low, business_value low.",
    "other": "No usual kind of business mail was recognised: fill every field from what "
    "the email says, and use email_type other only when nothing fits.",
}


@dataclass(frozen=True, slots=True)
class Template:
    """A system prompt: the shared instructions, then this type's focus. Hashed by content."""

    name: str
    focus: str
    version: str = "1"
    instructions: str | None = None  # a plan's own instructions instead of the shared ones

    @property
    def system(self) -> str:
        if self.instructions is not None:
            return f"{self.instructions}\n{self.focus}" if self.focus else self.instructions
        if self.name in ("default", "other"):
            return f"{COMMON_INSTRUCTIONS}\n{self.focus}"
        return f"{COMMON_INSTRUCTIONS}\nThis email looks like: {self.name}. {self.focus}"

    @property
    def hash(self) -> str:
        text = "\n".join((SCHEMA_VERSION, self.version, self.system, USER_LEAD))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


TEMPLATES: dict[str, Template] = {name: Template(name, focus) for name, focus in _FOCUS.items()}


@dataclass(slots=True)
class Prompt:
    """The messages to send and what was done to build them (stored with each result)."""

    messages: list[dict[str, str]]
    template_name: str
    template_version: str
    template_hash: str
    truncated: bool
    prompt_chars: int
    dropped_chars: int = 0  # characters of email text left out for the budget
    chain_len: int = 1  # messages included (chain mode)
    chain_dropped: int = 0  # older messages left out (chain mode)
    notes: list[str] = field(default_factory=list)

    @property
    def est_tokens(self) -> int:
        return self.prompt_chars // CHARS_PER_TOKEN


PLAN_INTRO = "You read one business email and write what an analyst needs from it."


def plan_template(fields: Sequence[str], choices: Sequence[str] = ()) -> Template:
    """The template of a plan that asks the model for ``fields`` only (``emailwb.facts.plans``).

    Its instructions list just those fields (a choice field as a pick among the candidates
    given after the email), so the model writes no tokens for fields other sources fill.
    """
    lines = [CHOICE_LINES[f] if f in choices else FIELD_LINES[f] for f in fields]
    text = "\n".join((PLAN_INTRO, _REPLY_HEAD, *lines, _REPLY_TAIL))
    version = hashlib.sha256(text.encode()).hexdigest()[:8]
    return Template("plan", "", version=version, instructions=text)


@dataclass(frozen=True)
class PromptVersion:
    """Everything a run tells the model, as one named, hashed, immutable version.

    ``instructions`` opens the system message of a plan that asks the model for some fields
    (the default plan); ``intro`` and ``guidance`` frame the field list of the all-LLM
    templates (the ``llm`` and ``reference`` plans), whose type-specific ``focus`` follows;
    ``fields`` and ``choices`` are the lines that describe each output field (a choice
    field's line when the model picks among extracted candidates). ``hash`` covers the
    content, not the name. The built-in texts are version ``builtin``; the prompt lab saves
    drafts as new versions (``emailwb.engine.library``) and a run names one (``--prompt``).
    """

    name: str
    instructions: str = PLAN_INTRO
    intro: str = _INTRO
    guidance: str = _GUIDANCE
    focus: Mapping[str, str] = field(default_factory=lambda: dict(_FOCUS))
    fields: Mapping[str, str] = field(default_factory=lambda: dict(FIELD_LINES))
    choices: Mapping[str, str] = field(default_factory=lambda: dict(CHOICE_LINES))

    def content(self) -> dict[str, Any]:
        """The hashed content: plain JSON-able data."""
        return {
            "instructions": self.instructions,
            "intro": self.intro,
            "guidance": self.guidance,
            "focus": dict(self.focus),
            "fields": dict(self.fields),
            "choices": dict(self.choices),
        }

    @property
    def hash(self) -> str:
        text = json.dumps(self.content(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def is_builtin(self) -> bool:
        return self.hash == BUILTIN.hash

    def with_changes(self, name: str, **changes: Any) -> PromptVersion:
        """A new version named ``name``: this one's content with ``changes`` applied (a
        mapping field is merged key by key)."""
        content = self.content()
        for key, value in changes.items():
            if key not in content:
                raise ConfigError(
                    f"a prompt has no part {key!r}",
                    hint=f"change one of: {', '.join(content)}",
                )
            content[key] = {**content[key], **value} if isinstance(content[key], dict) else value
        return PromptVersion(name, **content)

    @classmethod
    def from_content(cls, name: str, content: Mapping[str, Any]) -> PromptVersion:
        known = set(BUILTIN.content())
        unknown = set(content) - known
        if unknown:
            raise ConfigError(
                f"prompt {name!r} has unknown parts: {', '.join(sorted(unknown))}",
                hint=f"a prompt holds: {', '.join(sorted(known))}",
            )
        return BUILTIN.with_changes(name, **dict(content))

    def text(self) -> str:
        """A readable rendering, one section per part (what ``emailwb prompts show`` prints
        and ``diff`` compares line by line)."""
        out = [
            "[instructions]",
            self.instructions,
            "",
            "[fields]",
            *(f"{k} = {v}" for k, v in self.fields.items()),
            "",
            "[choices]",
            *(f"{k} = {v}" for k, v in self.choices.items()),
            "",
            "[intro]",
            self.intro,
            "",
            "[guidance]",
            self.guidance,
            "",
            "[focus]",
            *(f"{k} = {v}" for k, v in self.focus.items()),
        ]
        return "\n".join(out) + "\n"

    def plan_template(self, fields: Sequence[str], choices: Sequence[str] = ()) -> Template:
        """The system prompt of a plan that asks the model for ``fields`` only."""
        if self.is_builtin:
            return plan_template(fields, choices)
        lines = [self.choices[f] if f in choices else self.fields[f] for f in fields]
        text = "\n".join((self.instructions, _REPLY_HEAD, *lines, _REPLY_TAIL))
        return Template("plan", "", version=self.hash[:8], instructions=text)

    def template(self, email_type: str | None) -> Template:
        """The all-LLM template for a detected email type (``default`` when unknown)."""
        name = email_type if email_type in _FOCUS else "default"
        if self.is_builtin:
            return TEMPLATES[name]
        described = "\n".join((_REPLY_HEAD, *self.fields.values(), _REPLY_TAIL))
        common = f"{self.intro}\n{described}\n{self.guidance}"
        focus = self.focus.get(name, "")
        if name in ("default", "other"):
            system = f"{common}\n{focus}"
        else:
            system = f"{common}\nThis email looks like: {name}. {focus}"
        return Template(name, "", version=self.hash[:8], instructions=system)


BUILTIN = PromptVersion("builtin")

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_name(name: str) -> str:
    """A usable version name, or a ConfigError that says what is allowed."""
    if not name or len(name) > 64 or set(name) - _NAME_CHARS:
        raise ConfigError(
            f"prompt name {name!r} is not allowed",
            hint="use 1-64 letters, digits, '-', '_' or '.', e.g. deals-v2",
        )
    return name


def get_template(name: str | Template | None) -> Template:
    """A template by name (an email type or "default")."""
    if isinstance(name, Template):
        return name
    if name is None:
        return TEMPLATES["default"]
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(
            f"unknown prompt template {name!r}",
            hint=f"use one of: {', '.join(sorted(TEMPLATES))}",
        ) from None


def _headers(email: Email) -> str:
    sender = email.sender or "(unknown)"
    if email.sender_name:
        sender = f"{email.sender_name} <{sender}>"
    to = list(email.to)
    shown = ", ".join(to[:MAX_RECIPIENTS]) or "(none)"
    if len(to) > MAX_RECIPIENTS:
        shown += f" (+{len(to) - MAX_RECIPIENTS} more)"
    date = email.date.strftime("%Y-%m-%d %H:%M UTC") if email.date else "(unknown)"
    return f"From: {sender}\nTo: {shown}\nDate: {date}\nSubject: {email.subject}\n"


def _email_text(email: Email, mode: str) -> tuple[str, str | None]:
    """The text to show and a note on where it came from (None when the plain choice)."""
    if mode == "raw":
        return email.body.strip(), None
    new = email.new_text.strip()
    if len(new) < NEARLY_EMPTY:
        fwd = email.forwarded.strip()
        if fwd:
            joined = f"{new}\n\nForwarded message:\n{fwd}" if new else f"Forwarded message:\n{fwd}"
            return joined, "forwarded text used: new text nearly empty"
        if not new and email.body.strip():
            return email.body.strip(), "whole body used: no new text found"
    return new, None


def _cut(text: str, room: int) -> tuple[str, int]:
    """Cut ``text`` to ``room`` characters at a word boundary, marking the cut in the text."""
    if len(text) <= room:
        return text, 0
    marker = "\n[... {} characters cut to fit the prompt budget]"
    keep = max(room - len(marker.format(len(text))), 0)
    cut = text.rfind(" ", max(keep - 80, 0), keep)
    keep = cut if cut > 0 else keep
    dropped = len(text) - keep
    return text[:keep].rstrip() + marker.format(dropped), dropped


def _choose(email: Email, template: str | Template | None) -> Template:
    if template is not None:
        return get_template(template)
    email_type = detect(email, key=email.message_id or None).email_type
    return TEMPLATES.get(email_type, TEMPLATES["default"])


def build_messages(
    email: Email | Sequence[Email],
    *,
    template: str | Template | None = None,
    token_budget: int = 1500,
    mode: Literal["clean", "raw"] = "clean",
    context: str = "",
) -> Prompt:
    """Build the [system, user] messages for one email (or a chain, oldest first).

    ``template=None`` picks the template from the detected email type. ``token_budget``
    bounds the whole prompt (instructions included) at about ``token_budget * 4``
    characters; the email always keeps at least ``MIN_EMAIL_CHARS`` characters.
    ``context`` (e.g. a plan's extracted candidates) follows the email in the user message.
    """
    if mode not in ("clean", "raw"):
        raise ConfigError(f"unknown prompt mode {mode!r}", hint='use mode="clean" or mode="raw"')
    if token_budget <= 0:
        raise ConfigError(
            f"token budget must be positive, got {token_budget}",
            hint="pass a token budget such as 1500",
        )
    chain = list(email) if isinstance(email, Sequence) else None
    if chain is not None and not chain:
        raise ConfigError(
            "build_messages got an empty chain",
            hint="pass one Email, or a list of at least one Email, oldest first",
        )
    newest = chain[-1] if chain else email
    assert isinstance(newest, Email)
    tpl = _choose(newest, template)
    system = tpl.system
    context = f"\n\n{context.strip()}" if context.strip() else ""
    fixed = len(system) + len(USER_LEAD) + len(context)
    room = max(token_budget * CHARS_PER_TOKEN - fixed, MIN_EMAIL_CHARS)
    notes: list[str] = []
    if chain is None or len(chain) == 1:
        head = _headers(newest)
        text, note = _email_text(newest, mode)
        if note:
            notes.append(note)
        shown, dropped = _cut(text, max(room - len(head) - 1, MIN_EMAIL_CHARS // 2))
        body = f"{head}\n{shown}{context}"
        prompt = _finish(tpl, system, body, dropped, notes)
        return prompt
    return _chain(tpl, system, chain, mode, room, notes, context)


def _chain(
    tpl: Template,
    system: str,
    chain: list[Email],
    mode: str,
    room: int,
    notes: list[str],
    context: str = "",
) -> Prompt:
    blocks: list[str] = []
    for i, msg in enumerate(chain, 1):
        date = msg.date.strftime("%Y-%m-%d %H:%M") if msg.date else "undated"
        who = msg.sender_name or msg.sender or "unknown"
        text, _ = _email_text(msg, mode)
        blocks.append(f"--- [{i}/{len(chain)}] {date} from {who}: {msg.subject}\n{text}\n")
    intro = "Email thread, oldest first; analyse the LAST message in its context.\n\n"
    room -= len(intro)
    kept = list(blocks)
    dropped_chars = 0
    while len(kept) > 1 and sum(len(b) for b in kept) > room:
        dropped_chars += len(kept.pop(0))
    chain_dropped = len(blocks) - len(kept)
    if chain_dropped:
        notes.append(f"{chain_dropped} older message(s) of the thread left out for the budget")
    others = sum(len(b) for b in kept[:-1])
    last, cut = _cut(kept[-1], max(room - others, MIN_EMAIL_CHARS // 2))
    kept[-1] = last
    dropped_chars += cut
    prompt = _finish(tpl, system, intro + "\n".join(kept) + context, dropped_chars, notes)
    prompt.chain_len = len(kept)
    prompt.chain_dropped = chain_dropped
    return prompt


def _finish(tpl: Template, system: str, body: str, dropped: int, notes: list[str]) -> Prompt:
    user = USER_LEAD + body
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return Prompt(
        messages=messages,
        template_name=tpl.name,
        template_version=tpl.version,
        template_hash=tpl.hash,
        truncated=dropped > 0,
        prompt_chars=len(system) + len(user),
        dropped_chars=dropped,
        notes=notes,
    )


def describe_templates() -> list[dict[str, Any]]:
    """Name, version and hash of every template (for provenance and `emailwb templates`)."""
    return [{"name": t.name, "version": t.version, "hash": t.hash} for t in TEMPLATES.values()]
