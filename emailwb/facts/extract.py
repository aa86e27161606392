"""People, organizations, amounts, dates and deal references, each with its evidence.

``extract_many(emails)`` runs spaCy once over the counted segments of a whole batch
(``nlp.pipe``) and the rules over each segment; ``extract_facts(email)`` is the one-email
form. Every ``Fact`` keeps the text as written, its character span in the email's body
(``body[start:end] == text``) and its source:

* ``spacy``: PERSON and ORG entities of the small English pipeline, filtered by the
  labeling guide's rules (no role words, no generic departments, no addresses, one entry
  per person or organization in its fullest form);
* ``money``: emailwb's money detector (currency-marked amounts, unit prices, scales);
* ``rule``: dates that pin a day (a weekday, a calendar date, a month with a year, a range
  as one item), organizations of the mailbox vocabulary (Enron's units, regulators,
  exchanges, utilities) and deal references (``deal #123456``);
* ``signature``: the name a signature starts with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from emailwb.facts import nlp
from emailwb.facts.asks import Ask, find_asks
from emailwb.facts.counted import Segment, counted_segments
from emailwb.facts.money import find_money
from emailwb.mail.message import Email

FIELDS = ("people", "organizations", "amounts", "dates", "deal_refs")


@dataclass(frozen=True, slots=True)
class Fact:
    """One extracted value: the text as written and where it stands in the body."""

    field: str
    text: str
    start: int  # offset in the email body; -1 when the segment could not be located
    end: int
    source: str  # spacy | money | rule | signature
    value: float | None = None  # amounts: the number it means ($5MM -> 5e6)
    currency: str | None = None
    unit: str = ""  # amounts: "MWh" for a price per MWh, "cents", "share"; "" for a total
    #: amounts: every mention of the same amount in the body, [start, end] each (this one first)
    mentions: tuple[tuple[int, int], ...] = ()

    @property
    def kind(self) -> str:
        """amounts: ``unit_price`` (a price per unit) or ``total``."""
        return "unit_price" if self.unit else "total"

    def as_evidence(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "source": self.source,
            "match": "exact" if self.start >= 0 else "unplaced",
        }
        if self.value is not None:
            d["value"] = self.value
        if self.mentions:
            d["mentions"] = [list(m) for m in self.mentions]
        return d

    def as_amount(self) -> dict[str, Any]:
        """The result's entry for one distinct amount (``field == "amounts"``)."""
        value = self.value or 0.0
        spans = self.mentions or ((self.start, self.end),)
        return {
            "value": value,
            "currency": self.currency or "USD",
            "context": self.text,
            "kind": self.kind,
            "unit": self.unit or None,
            "negative": value < 0,
            "mentions": len(spans),
        }


@dataclass(slots=True)
class Facts:
    """All facts of one email, field by field, in body order."""

    people: list[Fact] = field(default_factory=list)
    organizations: list[Fact] = field(default_factory=list)
    amounts: list[Fact] = field(default_factory=list)
    dates: list[Fact] = field(default_factory=list)
    deal_refs: list[Fact] = field(default_factory=list)
    action_items: list[Ask] = field(default_factory=list)

    def of(self, name: str) -> list[Any]:
        """One field's facts (``Ask``s for action_items)."""
        return list(getattr(self, name))

    def result_fields(self) -> dict[str, Any]:
        """The fields in the result schema's shape (``emailwb.llm.schema.EmailAnalysis``)."""
        return {
            "people": [{"name": f.text, "role": ""} for f in self.people],
            "organizations": [f.text for f in self.organizations],
            "amounts": [f.as_amount() for f in self.amounts],
            "dates": [{"date": f.text, "what": ""} for f in self.dates],
            "deal_refs": [f.text for f in self.deal_refs],
            "action_items": [a.as_item() for a in self.action_items],
        }

    def evidence(self) -> dict[str, list[dict[str, Any]]]:
        return {name: [f.as_evidence() for f in getattr(self, name)] for name in FIELDS}

    def as_dict(self) -> dict[str, list[dict[str, Any]]]:
        out = {name: [asdict(f) for f in getattr(self, name)] for name in FIELDS}
        out["action_items"] = [a.as_dict() for a in self.action_items]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, list[dict[str, Any]]]) -> Facts:
        def fact(f: dict[str, Any]) -> Fact:
            mentions = tuple(tuple(m) for m in f.get("mentions") or ())
            return Fact(**{**f, "mentions": mentions})

        asks = [Ask.from_dict(a) for a in data.get("action_items") or []]
        return cls(
            **{name: [fact(f) for f in data.get(name, [])] for name in FIELDS}, action_items=asks
        )

    def candidates(self, name: str) -> list[str]:
        """The distinct texts of one field (a choice field's enum)."""
        return list(dict.fromkeys(f.text for f in getattr(self, name)))


# --- normalisation ---------------------------------------------------------------------------
def norm(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed (the scorer's comparison)."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _contained(short: str, long: str) -> bool:
    return short != long and f" {short} " in f" {long} "


def _initials(text: str) -> str:
    return "".join(w[0] for w in re.findall(r"[A-Za-z][\w&']*", text) if w[0].isupper()).lower()


def fullest(facts: list[Fact], *, acronyms: bool = False) -> list[Fact]:
    """One entry per value: exact repeats dropped, a form inside a longer one dropped, and
    with ``acronyms`` an all-caps form that abbreviates a longer one (EWS, Enron Wholesale
    Services) dropped too."""
    keys = [norm(f.text) for f in facts]
    if acronyms:
        longs = {_initials(f.text) for f in facts if len(f.text.split()) > 1}
        keys = [
            "" if f.text.isupper() and f.text.lower() in longs else k
            for f, k in zip(facts, keys, strict=True)
        ]
    out: list[Fact] = []
    seen: set[str] = set()
    for f, k in zip(facts, keys, strict=True):
        if not k or k in seen or any(_contained(k, other) for other in keys):
            continue
        seen.add(k)
        out.append(f)
    return out


# --- people ------------------------------------------------------------------------------------
_ROLE_WORDS = frozenset(
    (
        "dad",
        "mom",
        "mother",
        "father",
        "hubby",
        "honey",
        "babe",
        "sir",
        "madam",
        "team",
        "guys",
        "all",
        "everyone",
        "folks",
        "thanks",
        "regards",
        "fyi",
        "re",
        "fw",
        "cc",
        "pm",
        "am",
    )
)
_NOT_PERSON_RE = re.compile(r"[\d@/\\_#=<>|:;*]|^[^A-Za-z]|\bEnron\b|\bInc\b|\bCorp\b", re.I)
_NAME_LINE_RE = re.compile(
    r"[A-Z][a-z]+(?:[ \t]+[A-Z]\.?)?(?:[ \t]+(?:St\.[ \t]+)?[A-Z][A-Za-z'\-]+){0,2}"
)
_NOT_SIGNATURE_NAMES = frozenset(
    (
        "thanks",
        "thank",
        "regards",
        "best",
        "cheers",
        "sincerely",
        "yes",
        "no",
        "ok",
        "please",
        "hi",
        "hello",
        "dear",
        "fyi",
        "note",
        "attached",
        "call",
        "see",
        "let",
        "the",
        "this",
        "enron",
        "confidential",
        "phone",
        "fax",
        "cell",
        "mobile",
        "office",
        "houston",
        "texas",
    )
)


def _clean_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Trim whitespace, punctuation and a possessive 's from an entity's span."""
    while start < end and not (text[start].isalnum()):
        start += 1
    while end > start and not (text[end - 1].isalnum() or text[end - 1] == "."):
        end -= 1
    if text[end - 2 : end] in ("'s", "’s"):
        end -= 2
    if end - start > 1 and text[end - 1] == "." and not re.search(r"\b[A-Z]\.$", text[start:end]):
        end -= 1
    return start, end


_NOT_PERSON_WORDS = frozenset(
    (
        "longhorns",
        "sooner",
        "sooners",
        "aggies",
        "agenda",
        "genco",
        "demos",
        "suite",
        "trader",
        "term",
        "log",
        "variance",
        "dial",
        "status",
        "report",
        "update",
        "thanks",
        "regards",
    )
)
_FILE_RE = re.compile(r"\.(?:doc|xls|ppt|pdf|txt|zip|htm|html)\b", re.I)
_POSITION_RE = re.compile(r"^(?:[A-Z]{1,3}/)?[A-Z]{1,3}\s+(?=[A-Z][a-z])")


def _trim_entity(text: str, start: int, end: int, label: str) -> tuple[int, int]:
    """Cut what spaCy ran on into: a next line that is not part of the name, a position
    prefix ("DT Earl Anderson"), trailing lower-case words ("Byrdsong of")."""
    ent = text[start:end]
    dash = re.search(r"\s+-{1,2}\s+", ent)
    if dash is not None and dash.start() > 0:  # "Don Miller - ENA": a name, then a unit
        end = start + dash.start()
        ent = text[start:end]
    if "\n" in ent:
        head, _, tail = ent.partition("\n")
        tail = tail.strip()
        joined = len(head.split()) == 1 and re.fullmatch(r"[A-Z][\w'.\-]+", tail) is not None
        if not joined:
            end = start + len(head.rstrip())
    if label == "PERSON":
        m = _POSITION_RE.match(text[start:end])
        if m is not None:
            start += m.end()
    while True:
        m = re.search(r"\s+[a-z][\w\-]*$", text[start:end])
        if m is None or m.start() == 0:
            break
        end = start + m.start()
    return start, end


def _person_ok(text: str) -> bool:
    if text.lower() in _NOT_PERSON_WORDS or _FILE_RE.search(text):
        return False
    if _NOT_PERSON_RE.search(text) or len(text) < 2 or "\n\n" in text:
        return False
    words = text.split()
    if len(words) > 4 or text.lower() in _ROLE_WORDS:
        return False
    if all(w.isupper() for w in words if len(w) > 1) and len(text.replace(" ", "")) > 3:
        return False  # "ENRON NORTH", a shouted heading
    return text[0].isupper()


_SIGN_OFF_RE = re.compile(
    r"^[ \t]*(?:thanks?(?: you)?(?: (?:again|so much|very much))?(?: for [^\n]{0,60})?|"
    r"regards|best regards|kind regards|best|cheers|sincerely|take care|love)[ \t]*[,.!-]*[ \t]*\n"
    r"(?:[ \t]*\n)?[ \t]*(?P<name>[^\n]+)$",
    re.IGNORECASE | re.MULTILINE,
)


def _sign_off_names(seg: Segment) -> list[Fact]:
    """The name under a sign-off line ("Thank you very much for your help,\nMeg St. John")."""
    out = []
    for m in _SIGN_OFF_RE.finditer(seg.text):
        name = m.group("name").strip()
        if _NAME_LINE_RE.fullmatch(name) is None or name.split()[0].lower() in _NOT_SIGNATURE_NAMES:
            continue
        local = m.start("name") + m.group("name").index(name)
        start = seg.offset + local if seg.offset >= 0 else -1
        out.append(
            Fact("people", name, start, start + len(name) if start >= 0 else -1, "signature")
        )
    return out


def _signature_name(seg: Segment) -> Fact | None:
    for line in seg.text.split("\n"):
        stripped = line.strip()
        if not stripped:
            continue
        m = _NAME_LINE_RE.fullmatch(stripped)
        if m is None or stripped.split()[0].lower() in _NOT_SIGNATURE_NAMES:
            return None
        local = seg.text.index(stripped)
        start = seg.offset + local if seg.offset >= 0 else -1
        return Fact(
            "people", stripped, start, start + len(stripped) if start >= 0 else -1, "signature"
        )
    return None


# --- organizations -------------------------------------------------------------------------------
_GENERIC_DEPARTMENTS_RE = re.compile(
    r"^(?:the\s+)?(?:help\s*desk|customer (?:support|service)|client relations|legal"
    r"(?: department| dept\.?)?|health center|general counsel(?: division)?|human resources|hr|"
    r"it|accounting|payroll|security|facilities|mail ?room|treasury|tax|finance|marketing|"
    r"resolution center|gas control|the board|board|management|committee)$",
    re.IGNORECASE,
)
_NOT_ORG_RE = re.compile(r"[@<>|=*#\\]|^\d|\n\s*\n|https?:|www\.|\.com\b", re.I)
#: the mailbox's own vocabulary: Enron units, regulators, exchanges, markets and utilities
VOCABULARY_RE = re.compile(
    r"\b(?:Enron(?:\s+(?:North America|Energy Services|Broadband Services|Wholesale Services|"
    r"Global Markets|Industrial Markets|Net Works|Corp\.?|Capital & Trade Resources|"
    r"Networks|Online|Europe|Transportation Services|Power Marketing, Inc\.?|"
    r"Power Operations|Gas Marketing|Global Finance|Japan|Canada|Australia))?"
    r"|ENA|EES|EBS|EWS|ECT|EGM|EIM|ENW|ETS|EPMI|FERC|CPUC|CFTC|NERC|CAISO|ERCOT|PJM|NYISO|"
    r"ISO-NE|NYMEX|PG&E|SDG&E|SCE|SoCalGas|SoCal Edison|Dynegy|Reliant|Duke Energy|"
    r"El Paso|Transwestern|Northern Natural Gas|Florida Gas Transmission|"
    r"Portland General Electric|PGE|Azurix|Arthur Andersen|Andersen|Vinson & Elkins|"
    r"Goldman Sachs|Merrill Lynch|Citibank|Chase|NYSE|SEC|DOE|DOJ|Sempra|Calpine|"
    r"Mirant|AEP|TXU|Entergy|Cinergy|Kinder Morgan|Conoco|Exxon|Chevron|Shell|BP|Amoco)\b"
)


_NOT_ORG_WORDS = frozenset(
    (
        "fyi",
        "asap",
        "tx",
        "ny",
        "ca",
        "sat",
        "sun",
        "commission",
        "project",
        "wip",
        "e-mail",
        "email",
        "free",
        "mvp",
        "log",
        "corporate",
        "gas",
        "power",
        "dba",
        "iso",
        "rto",
        "itc",
        "need",
        "total",
        "the company",
        "company",
        "board",
        "office",
        "desk",
        "team",
        "group",
        "hourahead",
        "ferc order",
        "fax",
        "e-mail/fax",
        "q&a",
        "faq",
        "ceo",
        "cfo",
        "coo",
        "vp",
        "md",
        "pm",
        "am",
        "eol",
        "enrononline",
        "outlook",
        "the commission",
    )
)


def _org_ok(text: str) -> bool:
    if "/" in text or "\n" in text or text.lower() in _NOT_ORG_WORDS:
        return False
    if _NOT_ORG_RE.search(text) or len(text) < 2 or len(text.split()) > 8 or text[0].islower():
        return False
    return _GENERIC_DEPARTMENTS_RE.match(text.strip()) is None


# --- dates -------------------------------------------------------------------------------------
_WEEKDAY = (
    r"(?:Mon(?:day)?|Tue(?:s(?:day)?)?|Wed(?:nesday)?|Thu(?:r(?:s(?:day)?)?)?|"
    r"Fri(?:day)?|Sat(?:urday)?|Sun(?:day)?)\.?"
)
_WEEKDAY_FULL = r"(?:[Mm]onday|[Tt]uesday|[Ww]ednesday|[Tt]hursday|[Ff]riday|[Ss]aturday|[Ss]unday|MONDAY|TUESDAY|WEDNESDAY|THURSDAY|FRIDAY|SATURDAY|SUNDAY)"
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d\d|'\d\d"
_NUMERIC = r"(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])/(?:\d{4}|\d\d)\b"
_MONTH_DAY = rf"{_MONTH}\s?{_DAY}(?:\s*(?:-|through|thru|to|–)\s*{_DAY}(?!\s*(?:{_MONTH})))?(?:,?\s*{_YEAR})?\b"
_DAY_MONTH = rf"{_DAY}\s+{_MONTH}(?:,?\s+{_YEAR})?\b"
_MONTH_YEAR = rf"{_MONTH},?\s+(?:19|20)\d\d\b"
_DATE_CORE = rf"(?:{_MONTH_DAY}|{_DAY_MONTH}|{_NUMERIC}|{_MONTH_YEAR}|\d{{4}}-\d\d-\d\d\b)"
DATE_RE = re.compile(
    rf"\b(?:(?:{_WEEKDAY}|{_WEEKDAY_FULL}),?\s*(?:the\s+)?{_DATE_CORE}|{_DATE_CORE}|{_WEEKDAY_FULL}\b)"
    rf"(?!\s*(?::\d|[AaPp]\.?[Mm]\b|%))"
)
_TIME_AFTER_RE = re.compile(r"\s*\d{1,2}:\d\d")


def _dates(seg: Segment) -> list[Fact]:
    out = []
    for m in DATE_RE.finditer(seg.text):
        text = m.group(0).rstrip(",. ")
        if re.fullmatch(rf"{_MONTH}", text):
            continue
        if re.fullmatch(r"May\s?\d+", text) and not re.search(r"\d", text[3:]):
            continue
        start = seg.offset + m.start() if seg.offset >= 0 else -1
        out.append(Fact("dates", text, start, start + len(text) if start >= 0 else -1, "rule"))
    return out


# --- amounts and deal references ------------------------------------------------------------------
_DEAL_RE = re.compile(
    r"\b(?:deal|ticket|trade|contract|confirm(?:ation)?)\s*(?:#|no\.?|number|num\.?)?\s*:?\s*"
    r"(?P<ref>[A-Z]{0,3}\d{5,}[A-Z0-9.\-]*)",
    re.IGNORECASE,
)


def _amounts(seg: Segment) -> list[Fact]:
    out = []
    for money in find_money(seg.text):
        s, e = money.span
        start = seg.offset + s if seg.offset >= 0 else -1
        out.append(
            Fact(
                "amounts",
                money.text,
                start,
                seg.offset + e if seg.offset >= 0 else -1,
                "money",
                value=money.value,
                currency=money.currency,
                unit=money.unit,
            )
        )
    return out


def distinct_amounts(mentions: list[Fact]) -> list[Fact]:
    """One fact per distinct amount (same value, currency and unit), in order of first
    mention, each carrying every mention's span: "$250" said three times is one amount."""
    groups: dict[tuple[float, str, str], list[Fact]] = {}
    for f in mentions:
        key = (round(f.value or 0.0, 6), f.currency or "USD", f.unit.lower())
        groups.setdefault(key, []).append(f)
    out = []
    for same in groups.values():
        first = same[0]
        spans = tuple((f.start, f.end) for f in same)
        out.append(
            Fact(
                first.field,
                first.text,
                first.start,
                first.end,
                first.source,
                first.value,
                first.currency,
                first.unit,
                spans,
            )
        )
    return out


def _deal_refs(seg: Segment) -> list[Fact]:
    out = []
    for m in _DEAL_RE.finditer(seg.text):
        s, e = m.span("ref")
        start = seg.offset + s if seg.offset >= 0 else -1
        out.append(
            Fact(
                "deal_refs",
                m.group("ref"),
                start,
                seg.offset + e if seg.offset >= 0 else -1,
                "rule",
            )
        )
    return out


def _vocabulary(seg: Segment) -> list[Fact]:
    out = []
    for m in VOCABULARY_RE.finditer(seg.text):
        start = seg.offset + m.start() if seg.offset >= 0 else -1
        out.append(
            Fact(
                "organizations",
                m.group(0),
                start,
                seg.offset + m.end() if seg.offset >= 0 else -1,
                "rule",
            )
        )
    return out


def _entities(seg: Segment, ents: Sequence[tuple[str, int, int]]) -> list[Fact]:
    out = []
    for label, s, e in ents:
        if label not in ("PERSON", "ORG"):
            continue
        s, e = _clean_span(seg.text, s, e)
        s, e = _trim_entity(seg.text, s, e, label)
        s, e = _clean_span(seg.text, s, e) if e > s else (s, e)
        text = seg.text[s:e]
        if not text:
            continue
        if label == "PERSON" and not _person_ok(text):
            continue
        if label == "ORG":
            if text.lower().startswith("the "):
                s, text = s + 4, text[4:]
            if not _org_ok(text):
                continue
        name = "people" if label == "PERSON" else "organizations"
        start = seg.offset + s if seg.offset >= 0 else -1
        out.append(Fact(name, text, start, seg.offset + e if seg.offset >= 0 else -1, "spacy"))
    return out


def _collect(
    email: Email, segments: list[Segment], ents: list[list[tuple[str, int, int]]]
) -> Facts:
    found: dict[str, list[Fact]] = {name: [] for name in FIELDS}
    for seg, seg_ents in zip(segments, ents, strict=True):
        for fact in (
            *_entities(seg, seg_ents),
            *_vocabulary(seg),
            *_amounts(seg),
            *_dates(seg),
            *_deal_refs(seg),
        ):
            found[fact.field].append(fact)
        if seg.part == "signature":
            sig = _signature_name(seg)
            if sig is not None:
                found["people"].append(sig)
        elif seg.part == "new_text":
            found["people"].extend(_sign_off_names(seg))
    org_keys = {norm(f.text) for f in found["organizations"]}
    people = [f for f in found["people"] if norm(f.text) not in org_keys]
    person_words = {w for f in people for w in norm(f.text).split()}
    found["organizations"] = [
        f
        for f in found["organizations"]
        if f.source == "rule" or not (set(norm(f.text).split()) <= person_words)
    ]
    by_start = sorted(found["organizations"], key=lambda f: (f.start, -len(f.text)))
    amounts = distinct_amounts(found["amounts"])
    return Facts(
        people=fullest(people),
        organizations=fullest(by_start, acronyms=True),
        amounts=amounts,
        dates=fullest(found["dates"]),
        deal_refs=fullest(found["deal_refs"]),
        action_items=find_asks(email, found["dates"], people),
    )


def extract_many(emails: Iterable[Email], *, batch_size: int = 64) -> list[Facts]:
    """Facts of each email, spaCy run once over all their counted segments."""
    emails = list(emails)
    all_segments = [counted_segments(e) for e in emails]
    flat = [seg.text for segs in all_segments for seg in segs]
    ents = nlp.entities(flat, batch_size=batch_size) if flat else []
    out: list[Facts] = []
    i = 0
    for email, segs in zip(emails, all_segments, strict=True):
        out.append(_collect(email, segs, ents[i : i + len(segs)]))
        i += len(segs)
    return out


def extract_facts(email: Email) -> Facts:
    """The facts of one email."""
    return extract_many([email])[0]
