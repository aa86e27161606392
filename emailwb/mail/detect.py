"""Rule-based email-type detector: picks the prompt template and a priority hint, no LLM.

Keyword and regex rules look at the subject (counted double), the new text the sender
wrote (the whole body when there is none) and the sender's address. Each email type has
a few weighted rules; the best-scoring type wins, and "other" when nothing scores enough.
The returned score (0..1) is a priority hint: a base per type (deals and legal mail above
newsletters) raised by urgency words. ``priority_score`` applies per-type weights to
re-order a work queue.

Results are cached by a content key the caller passes (a message id or content hash),
so detecting 100k emails twice costs one pass.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from emailwb.errors import ConfigError
from emailwb.mail.message import Email


class Detection(NamedTuple):
    """The detector's answer: ``email_type, score = detect(email)``."""

    email_type: str
    score: float  # 0..1 priority hint

    @property
    def priority_hint(self) -> str:
        """The score as one of the schema's priorities (low|medium|high|urgent)."""
        if self.score >= 0.85:
            return "urgent"
        if self.score >= 0.6:
            return "high"
        if self.score >= 0.3:
            return "medium"
        return "low"


@dataclass(frozen=True, slots=True)
class Rule:
    email_type: str
    pattern: re.Pattern[str]
    weight: float
    where: str = "text"  # "text" (subject + text) or "sender"


def _rx(words: str) -> re.Pattern[str]:
    return re.compile(words, re.IGNORECASE)


RULES: tuple[Rule, ...] = (
    # meetings and calendar
    Rule(
        "meeting",
        _rx(
            r"\b(meeting|conference call|agenda|calendar|invitation|invite|"
            r"reschedul\w*|dial[- ]in|conf(erence)? room|call-in)\b"
        ),
        1.5,
    ),
    Rule(
        "meeting",
        _rx(
            r"\b(when|where):|\b(mon|tues|wednes|thurs|fri)day\b.{0,40}"
            r"\b\d{1,2}(:\d\d)?\s*(am|pm)\b"
        ),
        1.0,
    ),
    # requests
    Rule(
        "request",
        _rx(
            r"\b(can|could|would|will) you\b|\bplease\b|\bpls\b|\bkindly\b|"
            r"\bneed (you|your|to know)\b|\blet me know\b"
        ),
        1.2,
    ),
    Rule("request", _rx(r"\b(asap|approval|approve|review and|sign off|respond by)\b"), 0.8),
    # deals and trades
    Rule(
        "deal",
        _rx(r"\$\s?\d[\d,.]*\s*(k|m|mm|million|billion)?\b|\b\d[\d,.]*\s*(usd|dollars)\b"),
        1.0,
    ),
    Rule(
        "deal",
        _rx(
            r"\b(deal|trade[sd]?|counterpart(y|ies)|mmbtu|mwh?|megawatts?|nymex|"
            r"swap|hedge|bid|offer|purchase|volumes?|term sheet|transaction)\b"
        ),
        1.2,
    ),
    Rule("deal", _rx(r"\bdeal\s*(#|no\.?|number)?\s*\d{4,}"), 2.0),
    # contracts and legal
    Rule(
        "legal",
        _rx(
            r"\b(contract|agreement|amendment|clause|legal|attorney|counsel|"
            r"litigation|lawsuit|nda|isda|indemnif\w*|liabilit\w*|guarant\w*|"
            r"termination|execution copy|redline)\b"
        ),
        1.4,
    ),
    # regulatory
    Rule(
        "regulatory",
        _rx(
            r"\b(ferc|cftc|nerc|puc|cpuc|caiso|iso|sec filing|regulat\w*|"
            r"tariff|docket|rulemaking|compliance|commission|order no\.?)\b"
        ),
        1.6,
    ),
    # reports
    Rule(
        "report",
        _rx(
            r"\b(log messages|hourahead|variances detected|schedules awarded|"
            r"automated (report|message))\b"
        ),
        2.5,
    ),
    Rule(
        "report",
        _rx(
            r"\b(report|spreadsheet|p&l|forecast|analysis|results|weekly|daily|"
            r"monthly|quarterly|estimates?|positions?|attached (is|are|please find))\b"
        ),
        1.0,
    ),
    # status updates
    Rule(
        "status_update",
        _rx(
            r"\b(update|status|fyi|progress|completed|finished|on track|"
            r"heads up|done)\b"
        ),
        0.9,
    ),
    # announcements
    Rule(
        "announcement",
        _rx(
            r"\b(announce\w*|pleased to (announce|welcome)|effective "
            r"(immediately|today)|all employees|reorgani[sz]ation|"
            r"organizational change|please welcome|new role)\b"
        ),
        1.6,
    ),
    Rule(
        "announcement",
        _rx(r"announce|all[._-]?employees|corporate\.?comm|office\.of"),
        2.0,
        "sender",
    ),
    # newsletters
    Rule(
        "newsletter",
        _rx(
            r"\b(unsubscribe|newsletter|mailing list|view (this|it) in your "
            r"browser|to be removed from|subscription|daily digest)\b"
        ),
        2.0,
    ),
    Rule(
        "newsletter",
        _rx(
            r"newsletter|news@|digest|bulletin|no-?reply|list(serv)?@|"
            r"mailer"
        ),
        2.0,
        "sender",
    ),
    # spam
    Rule(
        "spam",
        _rx(
            r"\b(viagra|lottery|winner|you have won|free offer|100% free|act now|"
            r"limited time offer|earn \$|mortgage rates|click below|enlarge)\b"
        ),
        2.5,
    ),
    # personal
    Rule(
        "personal",
        _rx(
            r"\b(family|kids|wife|husband|birthday|weekend|vacation|golf|"
            r"party|baby|wedding|mom|dad|love you|happy hour)\b"
        ),
        1.0,
    ),
)

#: the priority each type starts from before urgency words
TYPE_BASE: dict[str, float] = {
    "deal": 0.6,
    "legal": 0.6,
    "regulatory": 0.6,
    "request": 0.5,
    "meeting": 0.45,
    "report": 0.4,
    "status_update": 0.35,
    "announcement": 0.25,
    "other": 0.3,
    "personal": 0.15,
    "newsletter": 0.05,
    "spam": 0.0,
}
_URGENT = _rx(
    r"\b(urgent|asap|immediately|right away|critical|deadline|by (today|tomorrow|"
    r"eod|close of business|cob|noon)|end of (the )?day|time[- ]sensitive|important)\b"
)
_THRESHOLD = 1.0  # a type needs this much evidence to beat "other"
_MAX_HITS = 3  # counts per rule are capped so one long email cannot drown the others
_TEXT_CHARS = 4000  # enough of the body to classify; keeps the regexes fast


def detect_text(subject: str, text: str, sender: str = "") -> Detection:
    """Classify from plain strings (uncached). Subject words count double."""
    scores: dict[str, float] = {}
    body = text[:_TEXT_CHARS]
    for rule in RULES:
        if rule.where == "sender":
            hits = 1 if sender and rule.pattern.search(sender) else 0
        else:
            hits = min(len(rule.pattern.findall(body)), _MAX_HITS)
            hits += 2 * min(len(rule.pattern.findall(subject)), 1)
        if hits:
            scores[rule.email_type] = scores.get(rule.email_type, 0.0) + hits * rule.weight
    best = "other"
    if scores:
        # ties go to the type listed first in RULES (stable max)
        candidate = max(scores, key=lambda t: scores[t])
        if scores[candidate] >= _THRESHOLD:
            best = candidate
    score = TYPE_BASE.get(best, 0.3)
    if best not in ("newsletter", "spam"):
        urgent = min(len(_URGENT.findall(body)), 2) + 2 * min(len(_URGENT.findall(subject)), 1)
        score += 0.15 * urgent
    return Detection(best, round(min(score, 1.0), 3))


_CACHE: OrderedDict[str, Detection] = OrderedDict()
_CACHE_MAX = 200_000
_stats = {"hits": 0, "misses": 0}


def detect(email: Email, key: str | None = None) -> Detection:
    """Detect the type of one email; cached under ``key`` (e.g. its message id) when given."""
    if key is not None:
        found = _CACHE.get(key)
        if found is not None:
            _stats["hits"] += 1
            _CACHE.move_to_end(key)
            return found
        _stats["misses"] += 1
    text = (
        email.new_text
        if len(email.new_text.strip()) >= 20
        else (f"{email.new_text}\n{email.forwarded}".strip() or email.body)
    )
    sender = f"{email.sender} {email.sender_name}".strip()
    result = detect_text(email.subject, text, sender)
    if key is not None:
        _CACHE[key] = result
        if len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)
    return result


def cache_info() -> dict[str, int]:
    """Hits, misses and size of the detection cache."""
    return {**_stats, "size": len(_CACHE)}


def clear_cache() -> None:
    _CACHE.clear()
    _stats.update(hits=0, misses=0)


def priority_score(email_type: str, base: float, weights: dict[str, float]) -> float:
    """``base`` scaled by the type's weight (``weights["*"]`` or 1.0 for unlisted types).

    Sorting a queue by this value (highest first) lets a user put, say, deals first with
    ``{"deal": 3.0, "newsletter": 0.1}``.
    """
    weight = weights.get(email_type, weights.get("*", 1.0))
    if weight < 0:
        raise ConfigError(
            f"priority weight for {email_type!r} is negative ({weight}): use 0 "
            "to push a type to the back of the queue"
        )
    return base * weight
