"""Deterministic baselines for the judgment fields: email_type, priority, has_action_item.

Keyword rules over the counted text (``emailwb.facts.counted``) and the subject, plus a few
structural cues (recipients, a forward passed on without a word, the sender's own ask),
tuned on the dev split of the hand-labeled set (``gold/``: round 1's 136 emails), never on
its test split (round 2). They are the yardstick an LLM must beat to be given a field, and
the source of the field when it does not (``emailwb.facts.plans``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from emailwb.facts.asks import find_asks, is_mass, without_offers
from emailwb.facts.counted import counted_segments, forward_is_point
from emailwb.mail.message import Email


class Judgment(NamedTuple):
    email_type: str  # one of the labeling guide's seven types
    priority: str
    has_action_item: bool


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


TYPE_RULES: tuple[tuple[str, re.Pattern[str], float, str], ...] = (
    (
        "meeting",
        _rx(
            r"\b(meeting|conference call|agenda|reschedul\w*|dial[- ]in|conf(erence)? "
            r"room|get together|call-in|demos?|presentation will|invite you|"
            r"(will|to) meet|meet (with|at|on))\b"
        ),
        1.5,
        "both",
    ),
    (
        "request",
        _rx(
            r"\b(can|could|would|will) you\b|\bplease (send|provide|review|let|call|"
            r"forward|confirm|advise|give|get|fill|return|respond|reply|submit|approve|"
            r"sign|update|check|look|contact|make|process|agree|enroll|complete)\b|"
            r"\bneed (you|your|to know)\b|\blet me know\b|\bi need\b|\bcan we\b|"
            r"\bwhat is the status\b|\bare you\b|\bdo you\b|\bready for your "
            r"(approval|review)\b"
        ),
        1.4,
        "text",
    ),
    (
        "deal",
        _rx(
            r"\b(deal|counterpart(y|ies)|mmbtu|mwh?|megawatts?|swap|hedge|bid|"
            r"offer|term sheet|transaction|pricing|purchase agreement|confirm(ation)? of "
            r"(the|a) (trade|deal)|volumes?|tolling|ppa)\b"
        ),
        1.0,
        "both",
    ),
    (
        "report",
        _rx(
            r"\b(report|spreadsheet|p&l|forecast|summary|results|weekly|monthly|"
            r"estimates?|update|status|news(letter)?|article|press release|minutes|"
            r"index(es)?|recap|went well|presentation|rollout|live|prices)\b"
        ),
        0.9,
        "both",
    ),
    (
        "announcement",
        _rx(
            r"\b(announce\w*|pleased to|effective (immediately|today|\w+ \d)|all "
            r"(employees|users)|reorgani[sz]ation|please welcome|new role|"
            r"reminder|outage|will be (unavailable|down|closed|disconnected)|"
            r"training|holiday|notice|renamed|available|version|procedures?|"
            r"policy|virus|do not destroy)\b"
        ),
        1.3,
        "both",
    ),
    (
        "personal",
        _rx(
            r"\b(family|kids|wife|husband|birthday|weekend|vacation|golf|party|"
            r"baby|wedding|mom|dad|love|football|tickets?|dinner|beer|fun|"
            r"church|hey|buddy|dude|class|homework|assignment|housewarming)\b"
        ),
        1.0,
        "both",
    ),
    (
        "other",
        _rx(
            r"\b(unsubscribe|click here|password|your (account|order)|"
            r"congratulations|thank you for|order (number|confirmation)|survey|"
            r"attached (is|are) the|acknowledge)\b"
        ),
        1.0,
        "both",
    ),
)
_PERSONAL_DOMAINS_RE = _rx(
    r"@(aol|hotmail|yahoo|msn|juno|earthlink|excite|swbell|pdq|"
    r"prodigy|flash|home|mindspring|netzero|compuserve)\."
)


ASK_WEIGHT = 1.0
_HELD_RE = _rx(r"\b(meeting minutes|minutes (of|from) the|trip report|recap of)\b")


def _features(email: Email, text: str) -> dict[str, float]:
    """Extra evidence beyond keywords: who sent it to how many, and what it passes on."""
    extra: dict[str, float] = {}
    recipients = len(email.to) + len(email.cc)
    own = len(email.new_text.split())
    if _PERSONAL_DOMAINS_RE.search(email.sender or ""):
        extra["personal"] = extra.get("personal", 0.0) + 1.5
    if is_mass(email):
        extra["announcement"] = extra.get("announcement", 0.0) + 1.2
    asks = re.search(r"\?(\s|$)", email.new_text) is not None and recipients <= 4
    if forward_is_point(email) and own <= 15 and not asks:
        # a forwarded story or newsletter passed on without a word is the guide's report
        long = len(email.forwarded.split()) >= 250
        extra["report"] = extra.get("report", 0.0) + (2.5 if long else 1.0)
    if _HELD_RE.search(f"{email.subject or ''}\n{text[:4000]}"):
        extra["report"] = extra.get("report", 0.0) + 3.0  # the summary of a meeting held

    if own and own <= 8 and not email.forwarded.strip():
        extra["other"] = extra.get("other", 0.0) + 1.0
    if _ACTION_RE.search(without_offers(email.new_text)[:4000]) and not _BULK_RE.search(text):
        extra["request"] = extra.get("request", 0.0) + ASK_WEIGHT  # the sender's own ask
    if asks:  # a question to a few people; in a short cover note, it is the point
        extra["request"] = extra.get("request", 0.0) + (2.5 if own <= 30 else 1.0)

    return extra


_URGENT_RE = _rx(
    r"\b(urgent|asap|right away|by (noon|end of (the )?day|close of business|cob|eod|"
    r"this (morning|afternoon)|tonight)|(please|need|must|should)\b[^.!?\n]{0,60}"
    r"\bimmediately)\b"
)
_HIGH_RE = _rx(
    r"\b(as soon as (possible|you can)|by tomorrow|deadline|no later than|"
    r"end of today|by today)\b"
)
_ASK = (
    r"(send|provide|review|approve|confirm|call|contact|forward|return|respond|reply|"
    r"submit|sign|update|fill|complete|enroll|process|agree|log ?off|let|advise|give|"
    r"get|check|make|read|prepare|attend|come|register|rsvp|remove|add|verify|match|"
    r"schedule|print|bring|look)"
)
_DUTY = (
    r"\bit is (necessary|required|mandatory)\b|\b(are|is) required to\b|\bremember to\b|"
    r"\breminder to\b|\bwhy don't you\b|\bhope you (are|can)\b"
)
_ACTION_RE = _rx(
    rf"\bplease\s+(?:\w+\s+)?{_ASK}\b|\b(can|could|would|will) you\b|\blet me know\b|"
    rf"\bneed (you|your)\b|\bi need\b|\b{_ASK} me\b|\bmake sure\b|\bshould\s+{_ASK}\b|"
    r"\bcontact\b.{0,40}\bif you\b|\bif you\b.{0,60}\b(contact|call|let me)\b|"
    r"\bare you\b[^.?!]{0,80}\?|\bdo you\b[^.?!]{0,80}\?|\bwhat is\b[^.?!]{0,80}\?|"
    r"\bplease\s+(do not|don't)\b|\bi would (like|appreciate)\b|"
    r"\b(would be|is) (greatly )?appreciated\b|\blook forward to hear|\bwhere are you\b|"
    r"\bready for your (approval|review)\b|\brequires? your (approval|attention|signature)\b|"
    + _DUTY
)
#: marketing and subscriptions: their "please click" asks nothing of a colleague
_BULK_RE = _rx(
    r"\bunsubscribe\b|\bto be removed\b|\bclick here\b|\bsubscri(be|ption)\b|"
    r"\bnewsletter\b|\bthank you for (your order|shopping|purchasing)\b|"
    r"\border (number|confirmation|status)\b"
)
_LOW_TYPES = ("announcement", "personal", "other")


def counted_text(email: Email) -> str:
    return "\n".join(s.text for s in counted_segments(email)) or email.body


def classify(subject: str, text: str, extra: dict[str, float] | None = None) -> str:
    """The email type from the subject, the counted text and ``extra`` evidence per type."""
    scores: dict[str, float] = dict(extra or {})
    body = text[:4000]
    for name, rx, weight, where in TYPE_RULES:
        hits = min(len(rx.findall(body)), 3)
        if where == "both":
            hits += 2 * min(len(rx.findall(subject)), 1)
        if hits:
            scores[name] = scores.get(name, 0.0) + hits * weight
    if not scores:
        # no cue at all: a substantive text is most often a status or data report (the
        # guide's "report"), a short one an acknowledgement or a note ("other")
        return "report" if len(text.split()) >= 50 else "other"
    return max(scores, key=lambda t: scores[t])


def judge(email: Email, asks: Sequence[Any] | None = None) -> Judgment:
    """Type, priority and whether the email asks its recipients to do something.

    ``has_action_item`` is whether ``emailwb.facts.asks`` finds an action item (``asks``, the
    email's action items when already found): one source of truth for the list and the flag.
    """
    text = without_offers(counted_text(email))
    subject = email.subject or ""
    email_type = classify(subject, text, _features(email, text))
    action = bool(find_asks(email) if asks is None else asks)
    if email_type == "personal" or _BULK_RE.search(text[:8000]):
        priority = "low"  # personal mail and marketing, whatever their wording
    elif _URGENT_RE.search(subject) or _URGENT_RE.search(text[:4000]):
        priority = "urgent"
    elif _HIGH_RE.search(subject + " " + text[:4000]):
        priority = "high"
    elif email_type in _LOW_TYPES or (email_type == "report" and forward_is_point(email)):
        priority = "low"
    else:
        priority = "medium"
    return Judgment(email_type, priority, action)
