"""Grounding: which extracted values the email's own text supports.

``grounding(result, email_text)`` checks people, organizations, amounts and dates (scored)
plus deal references and the business-value evidence quote (reported), tolerant to case,
spacing, punctuation, accents, number formats ($5 million == 5,000,000 == 5000000; 1.5MM),
name order ("Smith, John"), nicknames (Dave/David), user names (jdasovich), organization
suffixes and acronyms (Enron North America / ENA), and date formats (12/13/2000, Dec 13,
December 13, 2000, 2000-12-13, Oct-00, Q3, weekdays, "tomorrow", "next week").
``amounts_missed`` lists the money mentions no extracted amount accounts for.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from emailwb.facts.money import Money, as_number, close, find_money, plain_numbers


# --- text normalisation -----------------------------------------------------------------
def _fold(text: str) -> str:
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def _norm(text: str) -> str:
    """Lower case, accents off, '&' as 'and', punctuation as space, spaces collapsed."""
    text = re.sub(r"['’]", "", _fold(text)).replace("&", " and ")  # "don't" -> "dont"
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", _fold(text))


# nicknames to one spelling ("will", "rich", "drew", "sue" left out: they are common words)
_NICK = {
    "dave": "david",
    "bill": "william",
    "billy": "william",
    "jim": "james",
    "jimmy": "james",
    "bob": "robert",
    "rob": "robert",
    "bobby": "robert",
    "mike": "michael",
    "chris": "christopher",
    "tim": "timothy",
    "tom": "thomas",
    "jeff": "jeffrey",
    "geoff": "jeffrey",
    "steve": "steven",
    "stephen": "steven",
    "rick": "richard",
    "dick": "richard",
    "joe": "joseph",
    "ken": "kenneth",
    "dan": "daniel",
    "danny": "daniel",
    "don": "donald",
    "greg": "gregory",
    "ron": "ronald",
    "sam": "samuel",
    "tony": "anthony",
    "kate": "katherine",
    "kathy": "katherine",
    "liz": "elizabeth",
    "beth": "elizabeth",
    "jenny": "jennifer",
    "jen": "jennifer",
    "matt": "matthew",
    "andy": "andrew",
    "pat": "patrick",
    "phil": "phillip",
    "philip": "phillip",
    "wes": "wesley",
    "fred": "frederick",
    "larry": "lawrence",
    "jerry": "gerald",
    "nick": "nicholas",
    "ed": "edward",
    "ted": "edward",
    "vince": "vincent",
    "barb": "barbara",
    "debbie": "deborah",
    "deb": "deborah",
    "becky": "rebecca",
    "peggy": "margaret",
    "maggie": "margaret",
    "jon": "john",
    "johnny": "john",
    "kim": "kimberly",
}
_TITLES = {
    "mr",
    "mrs",
    "ms",
    "miss",
    "dr",
    "prof",
    "sir",
    "jr",
    "sr",
    "ii",
    "iii",
    "iv",
    "phd",
    "esq",
}
_ORG_NOISE = {
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "co",
    "company",
    "llc",
    "ltd",
    "limited",
    "lp",
    "llp",
    "plc",
    "the",
    "sa",
    "ag",
    "gmbh",
    "nv",
}


class _Text:
    """One email text prepared once for every matcher."""

    def __init__(self, text: str) -> None:
        self.raw = text
        self.norm = f" {_norm(text)} "
        self.squashed = _squash(text)
        self.words = set(self.norm.split())
        self.canon = {_NICK.get(w, w) for w in self.words}
        self.tokens = set(re.sub(r"[^a-z0-9\s]+", "", _fold(text)).split())
        self.money = find_money(text)
        self.numbers = plain_numbers(text) | {c for m in self.money for c in m.candidates()}

    def has_word(self, token: str) -> bool:
        if _NICK.get(token, token) in self.canon:
            return True
        # a user name ("jdasovich", "tsoto", "delaineyd") holds a surname and an initial or two
        return len(token) >= 4 and any(
            len(w) - 2 <= len(token) < len(w) and (w.endswith(token) or w.startswith(token))
            for w in self.words
        )


# --- dates ------------------------------------------------------------------------------
_MON = (
    r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DATE_RES = [
    re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b"),
    re.compile(r"(?<![\d/.])\b(?P<m>\d{1,2})/(?P<d>\d{1,2})(?:/(?P<y>\d{4}|\d{2}))?\b(?![/.]\d)"),
    re.compile(r"(?<![\d/.-])\b(?P<m>\d{1,2})([.-])(?P<d>\d{1,2})\2(?P<y>\d{4}|\d{2})\b(?![.-]\d)"),
    re.compile(rf"\b{_MON}\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b(?!:)(?:,?\s+(?P<y>\d{{4}})\b)?"),
    re.compile(
        rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MON}\b(?:,?\s+(?P<y>\d{{4}})\b)?"
    ),
    re.compile(rf"\b{_MON}(?:[\s,]+(?P<y>\d{{4}})|\s?['-](?P<y2>\d{{2}}))\b"),
]
_WEEKDAY_RE = re.compile(
    r"\b(mon|tue|wed|thu|fri|sat|sun)(?:day|s|sday|nesday|r|rs|rsday|urday)?\b"
)
_YEAR_RE = re.compile(r"\b(19[5-9]\d|20[0-4]\d)\b")
_QUARTER_RE = re.compile(
    r"\bq([1-4])\b|\b([1-4])q\b|\b(first|second|third|fourth|1st|2nd|3rd|4th) quarter\b"
)
_RELATIVE = (
    "tomorrow",
    "today",
    "tonight",
    "yesterday",
    "this week",
    "next week",
    "last week",
    "this weekend",
    "next weekend",
    "this month",
    "next month",
    "last month",
    "this year",
    "next year",
    "this morning",
    "this afternoon",
    "end of the day",
    "end of day",
    "end of the week",
    "end of week",
    "end of the month",
    "end of month",
    "end of the year",
    "end of year",
    "end of the quarter",
    "next quarter",
    "eod",
    "eow",
    "eom",
    "asap",
)


def _year(text: str | None) -> int | None:
    if not text:
        return None
    y = int(text)
    return y if y >= 100 else (2000 + y if y < 50 else 1900 + y)


@dataclass
class _DateKeys:
    md: set[tuple[int, int, int | None]] = field(default_factory=set)  # month, day, year
    ym: set[tuple[int | None, int]] = field(default_factory=set)  # year, month (no day given)
    years: set[int] = field(default_factory=set)
    weekdays: set[int] = field(default_factory=set)
    quarters: set[int] = field(default_factory=set)
    relative: set[str] = field(default_factory=set)


def _date_keys(text: str, sent: date | None = None) -> _DateKeys:
    low, keys = _fold(text), _DateKeys()
    for rx in _DATE_RES:
        for m in rx.finditer(low):
            g = m.groupdict()
            y = _year(g.get("y") or g.get("y2"))
            month = _MONTHS.index(g["mon"][:3]) + 1 if g.get("mon") else int(g["m"])
            if not g.get("d"):
                keys.ym.add((y, month))
                continue
            day = int(g["d"])
            for mo, d in ((month, day), (day, month)) if not g.get("mon") else ((month, day),):
                if 1 <= mo <= 12 and 1 <= d <= 31:
                    keys.md.add((mo, d, y))
                    break
    keys.years = (
        {int(y) for y in _YEAR_RE.findall(low)}
        | {y for *_, y in keys.md if y}
        | {y for y, _ in keys.ym if y}
    )
    keys.weekdays = {_WEEKDAYS.index(w) for w in _WEEKDAY_RE.findall(low)}
    for m in _QUARTER_RE.finditer(low):
        q = m.group(1) or m.group(2) or m.group(3)
        keys.quarters.add(
            int(q[0]) if q[0].isdigit() else ["first", "second", "third", "fourth"].index(q) + 1
        )
    spaced = f" {_norm(text)} "
    keys.relative = {r for r in _RELATIVE if f" {r} " in spaced}
    if sent is not None:  # resolve relative words and weekdays against the sent date
        days: set[date] = set()
        offsets = {
            "today": [0],
            "tonight": [0],
            "this morning": [0],
            "this afternoon": [0],
            "tomorrow": [1],
            "yesterday": [-1],
        }
        for word in keys.relative:
            days.update(sent + timedelta(o) for o in offsets.get(word, []))
        if keys.relative & {"next week", "next weekend"}:
            monday = sent + timedelta(7 - sent.weekday())
            days.update(monday + timedelta(i) for i in range(7))
        for wd in keys.weekdays:
            ahead = (wd - sent.weekday()) % 7
            days.update({sent + timedelta(ahead), sent - timedelta((7 - ahead) % 7)})
        keys.md.update((d.month, d.day, d.year) for d in days)
    return keys


def _date_grounded(value: str, text: _Text, tkeys: _DateKeys) -> bool:
    n = _norm(value)
    if len(n) >= 3 and f" {n} " in text.norm:
        return True
    e = _date_keys(value)

    def year_ok(a: int | None, b: int | None) -> bool:
        return a is None or b is None or a == b

    if e.md:
        return any(
            m == tm and d == td and year_ok(y, ty) for m, d, y in e.md for tm, td, ty in tkeys.md
        )
    if e.ym:
        return any(
            m == tm and year_ok(y, ty)
            for y, m in e.ym
            for ty, tm in tkeys.ym | {(ty, tm) for tm, _, ty in tkeys.md}
        )
    if e.weekdays or e.quarters or e.relative:
        return bool(
            e.weekdays & tkeys.weekdays
            or e.quarters & tkeys.quarters
            or e.relative & tkeys.relative
        )
    if e.years:
        return bool(e.years & tkeys.years)
    return False


# --- grounding --------------------------------------------------------------------------
SCORED_FIELDS = ("people", "organizations", "amounts", "dates")


@dataclass(frozen=True, slots=True)
class FieldGrounding:
    """One field's extracted values split by whether the email's text supports them."""

    grounded: list[str] = field(default_factory=list)
    ungrounded: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)  # grounded by a loose match only
    ungrounded_index: list[int] = field(default_factory=list)  # positions in the result's list

    @property
    def checked(self) -> int:
        return len(self.grounded) + len(self.ungrounded)

    @property
    def share(self) -> float | None:
        return len(self.grounded) / self.checked if self.checked else None


@dataclass(frozen=True, slots=True)
class Grounding:
    """Per-field grounding; ``score`` pools people, organizations, amounts and dates
    (grounded values / checked values; None when the result extracted none of them).
    ``deal_refs`` and ``evidence`` (business_value.evidence) are reported but not scored."""

    fields: dict[str, FieldGrounding]
    score: float | None

    def share(self, name: str) -> float | None:
        return self.fields[name].share

    @property
    def ungrounded(self) -> dict[str, list[str]]:
        return {k: v.ungrounded for k, v in self.fields.items() if v.ungrounded}

    @property
    def ungrounded_count(self) -> int:
        return sum(len(self.fields[f].ungrounded) for f in SCORED_FIELDS)

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "fields": {k: asdict(v) for k, v in self.fields.items()}}


def _items(result: Mapping[str, Any], name: str) -> list[Any]:
    value = result.get(name)
    return value if isinstance(value, list) else []


def _person(item: Any, text: _Text) -> tuple[str, str | None]:
    """(label, "full" | "partial" | None); label "" means nothing to check."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, Mapping):
        return "", None
    name, addr = str(item.get("name") or "").strip(), str(item.get("email") or "").strip().lower()
    label = name or addr
    if addr and addr in text.raw.lower():
        return label, "full"
    if "," in name:  # "Smith, John" -> "John Smith"
        last, _, first = name.partition(",")
        name = f"{first} {last}"
    tokens = [t for t in _norm(name).split() if len(t) > 1 and t not in _TITLES]
    if not tokens:
        return label, None
    found = [text.has_word(t) for t in tokens]
    if all(found):
        return label, "full"
    return label, "partial" if found[0] or found[-1] else None


def _org(value: Any, text: _Text) -> tuple[str, str | None]:
    label = str(value or "").strip()
    words = [w for w in _norm(label).split() if w not in _ORG_NOISE]
    if not words:
        return label, None
    phrase = " ".join(words)
    squashed = "".join(words)
    if (
        f" {phrase} " in text.norm
        or squashed in text.tokens
        or (len(squashed) >= 8 and squashed in text.squashed)
    ):
        return label, "full"
    if len(words) >= 2 and "".join(w[0] for w in words) in text.words:
        return label, "full"  # "Enron North America" -> "ENA"
    sig = [w for w in words if len(w) >= 3]
    if sig and all(text.has_word(w) for w in sig):
        return label, "full"
    return label, None


def _amount(item: Any, text: _Text) -> tuple[str, str | None]:
    value = as_number(item.get("value") if isinstance(item, Mapping) else item)
    if value is None:
        return str(item), None
    cur = str(item.get("currency") or "") if isinstance(item, Mapping) else ""
    label = f"{value:,.2f}".rstrip("0").rstrip(".") + (f" {cur}" if cur else "")
    return label, "full" if any(close(value, c) for c in text.numbers) else None


def _check(values: Iterable[tuple[str, str | None]]) -> FieldGrounding:
    fg = FieldGrounding()
    for i, (label, verdict) in enumerate(values):
        if not label:
            continue
        if verdict:
            fg.grounded.append(label)
            if verdict == "partial":
                fg.partial.append(label)
        else:
            fg.ungrounded.append(label)
            fg.ungrounded_index.append(i)
    return fg


def _evidence_grounded(quote: str, text: _Text) -> bool:
    n = _norm(quote)
    if f" {n} " in text.norm:
        return True
    words = [w for w in n.split() if len(w) >= 3]
    return bool(words) and sum(w in text.words for w in words) / len(words) >= 0.8


def grounding(
    result: Mapping[str, Any], email_text: str, *, sent: date | datetime | None = None
) -> Grounding:
    """Which extracted values the email's text supports.

    ``email_text`` should hold what the model saw plus the header lines (From/To/Cc names
    and addresses, Subject, Date): people often come from there (``grounding_text`` builds
    it). ``sent`` (the email's date) lets "tomorrow", "next week" and weekday names ground
    the concrete dates a model resolved them to. People match on all name tokens (any order,
    nicknames, user names like "jdasovich"); a first- or last-name-only match is grounded
    but listed in ``partial``. Amounts match any number in the text, money or plain, after
    scaling ($5 million == 5,000,000), sign and rounding (0.1%).
    """
    text = _Text(email_text)
    day = sent.date() if isinstance(sent, datetime) else sent
    tkeys = _date_keys(email_text, day)
    bv = result.get("business_value")
    quote = str(bv.get("evidence") or "").strip() if isinstance(bv, Mapping) else ""
    fields = {
        "people": _check(_person(p, text) for p in _items(result, "people")),
        "organizations": _check(_org(o, text) for o in _items(result, "organizations")),
        "amounts": _check(_amount(a, text) for a in _items(result, "amounts")),
        "dates": _check(
            (str(v).strip(), "full" if _date_grounded(str(v), text, tkeys) else None)
            for v in (
                (d.get("date") if isinstance(d, Mapping) else d) or ""
                for d in _items(result, "dates")
            )
        ),
        "deal_refs": _check(
            (
                str(r).strip(),
                "full"
                if f" {_norm(str(r))} " in text.norm
                or (len(_squash(str(r))) >= 3 and _squash(str(r)) in text.squashed)
                else None,
            )
            for r in _items(result, "deal_refs")
        ),
        "evidence": _check(
            [(quote, "full" if quote and _evidence_grounded(quote, text) else None)]
        ),
    }
    checked = sum(fields[f].checked for f in SCORED_FIELDS)
    score = sum(len(fields[f].grounded) for f in SCORED_FIELDS) / checked if checked else None
    return Grounding(fields, score)


def grounding_text(email: Any, *, body: str | None = None) -> str:
    """Header lines and body of an ``Email`` (or any object with its attributes) as one text."""

    def people(addrs: Iterable[str]) -> str:
        return ", ".join(addrs)

    lines = [
        f"From: {getattr(email, 'sender_name', '')} <{getattr(email, 'sender', '')}>",
        f"To: {people(getattr(email, 'to', []))}",
        f"Cc: {people(getattr(email, 'cc', []))}",
        f"Subject: {getattr(email, 'subject', '')}",
    ]
    if getattr(email, "date", None):
        lines.append(f"Date: {email.date:%A, %B %d, %Y %m/%d/%Y}")
    return "\n".join(lines) + "\n\n" + (body if body is not None else getattr(email, "body", ""))


AMOUNT_SLOTS = 6  # EmailAnalysis.amounts holds at most this many


def amounts_missed(result: Mapping[str, Any] | None, email_text: str) -> list[Money]:
    """Money mentions (one per distinct value and unit) that no extracted amount matches."""
    values = [
        v
        for v in (
            as_number(a.get("value") if isinstance(a, Mapping) else a)
            for a in _items(result or {}, "amounts")
        )
        if v is not None
    ]
    seen: set[tuple[float, str]] = set()
    missed: list[Money] = []
    for money in find_money(email_text):
        key = (round(abs(money.value), 6), money.unit.lower())
        if key in seen:
            continue
        seen.add(key)
        if not any(close(v, c) for v in values for c in money.candidates()):
            missed.append(money)
    return missed
