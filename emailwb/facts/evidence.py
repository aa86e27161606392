"""Place a value in an email's text: exact, then fuzzy, else unplaced.

An LLM writes strings; whether the email holds them is the first thing an analyst needs
to know. ``place(value, text)`` looks for the value as written (case-insensitive, any
run of whitespace matching any other), then for the best fuzzy alignment (rapidfuzz's
``partial_ratio_alignment``, score >= ``FUZZY_MIN``); a value found neither way is
``unplaced``.
"""

from __future__ import annotations

import re
from typing import Any

from rapidfuzz import fuzz

from emailwb.facts.money import find_money

FUZZY_MIN = 90.0  # partial ratio, 0..100
_MAX_TEXT = 60_000


def place(value: str, text: str) -> dict[str, Any]:
    """{"text", "start", "end", "match": exact|fuzzy|unplaced, "score"} for ``value``."""
    value = value.strip()
    if not value:
        return {"text": value, "start": -1, "end": -1, "match": "unplaced", "score": 0.0}
    pattern = r"\s+".join(re.escape(w) for w in value.split())
    m = re.search(pattern, text[:_MAX_TEXT], re.IGNORECASE)
    if m is not None:
        return {"text": value, "start": m.start(), "end": m.end(), "match": "exact", "score": 100.0}
    if len(value) >= 4:
        al = fuzz.partial_ratio_alignment(value.lower(), text[:_MAX_TEXT].lower())
        if al is not None and al.score >= FUZZY_MIN:
            return {
                "text": value,
                "start": al.dest_start,
                "end": al.dest_end,
                "match": "fuzzy",
                "score": round(al.score, 1),
            }
    return {"text": value, "start": -1, "end": -1, "match": "unplaced", "score": 0.0}


def place_amount(item: dict[str, Any], text: str) -> dict[str, Any]:
    """Place a model's amount (``{"value": ...}``) at a money mention of the same value (1%)."""
    try:
        value = float(item.get("value") or 0.0)
    except (TypeError, ValueError):
        value = 0.0
    for money in find_money(text[:_MAX_TEXT]):
        if any(abs(c - value) <= 0.01 * abs(c) if c else value == 0 for c in money.candidates()):
            start, end = money.span
            return {
                "text": money.text,
                "start": start,
                "end": end,
                "match": "exact",
                "score": 100.0,
                "value": value,
            }
    return {
        "text": str(item.get("context") or value),
        "start": -1,
        "end": -1,
        "match": "unplaced",
        "score": 0.0,
        "value": value,
    }
