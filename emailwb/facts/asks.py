"""Action items: what an email asks its recipients to do, who is asked and by when.

``find_asks(email, dates)`` reads the counted text (``emailwb.facts.counted``: the sender's
new text, and a forwarded message when it is the point; never the signature or quotes),
splits it into sentences and keeps those that ask something by the labeling guide's rules:

* a request form: "please ...", "can/could/would/will you ...", "I need you to ...", "let
  me know ...", "make sure ...", "you need to/must/should ...", "remember to ...", "I would
  appreciate ...", "ready for your approval";
* an imperative: the sentence (after a name it addresses) starts with a verb of asking
  ("Send me ...", "Kay, call Sara ...");
* a question of the sender's own text to a few recipients ("Do you have the numbers?").

Not asks: generic offers of help ("call me with any questions", blanked first by
``emailwb.facts.judgment.without_offers``), the sender's own commitments ("I will send"),
FYI notes, marketing mail, and in mass mail (no or 15+ recipients) anything but a duty
("all employees must ...", "please ... by Friday") and never an optional invitation.

Each ``Ask`` keeps its verbatim span in the body, who is asked (a name it addresses, the
names of the email's greeting, or ``recipients``; a name is resolved to an address of the
email's To/Cc when exactly one matches it; only names a recipient or a person of the email
bears count as addressed) and its due date (a date of the date extractor in the same
sentence, the one after "by", "before", "due", "on" first, else in the next sentence when
that one has such a word).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from emailwb.facts.counted import Segment, counted_segments
from emailwb.mail.message import Email

#: more recipients than this (or none at all, a list address) is mass mail
MASS_RECIPIENTS = 15
#: at most this many asks per email (a 5 MB body or a wall of questions stays bounded)
MAX_ASKS = 25
#: sentences longer than this (characters) are cut for the cue search
MAX_SENTENCE = 600


@dataclass(frozen=True, slots=True)
class Who:
    """A person asked: the name as written (or ``recipients``), its span, its address."""

    name: str
    start: int = -1
    end: int = -1
    address: str | None = None  # resolved from the email's To/Cc when exactly one matches

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "end": self.end, "address": self.address}


@dataclass(frozen=True, slots=True)
class Ask:
    """One thing the email asks: its verbatim span in the body, who, and by when."""

    text: str
    start: int  # offset in the body; -1 when the segment could not be located
    end: int
    cue: str  # request | imperative | question | duty
    who: tuple[Who, ...] = ()
    due: str | None = None
    due_start: int = -1
    due_end: int = -1
    source: str = "rule"

    def as_item(self) -> dict[str, Any]:
        """The result's ``action_items`` entry (spans of each part alongside)."""
        return {
            "ask": self.text,
            "who": [w.name for w in self.who] or ["recipients"],
            "addresses": [w.address for w in self.who],
            "due": self.due,
            "start": self.start,
            "end": self.end,
            "who_spans": [[w.start, w.end] for w in self.who],
            "due_span": [self.due_start, self.due_end] if self.due else None,
            "cue": self.cue,
            "source": self.source,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "cue": self.cue,
            "who": [w.as_dict() for w in self.who],
            "due": self.due,
            "due_start": self.due_start,
            "due_end": self.due_end,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ask:
        return cls(**{**d, "who": tuple(Who(**w) for w in d.get("who") or ())})


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    start: int  # in the body (or in the segment when the segment is unplaced)
    placed: bool = True
    segment: Segment | None = field(default=None, compare=False)


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_VERBS = (
    r"send|call|forward|review|give|get|fill|return|respond|reply|submit|approve|sign|update|"
    r"check|look|contact|confirm|provide|advise|make|prepare|bring|print|schedule|add|remove|"
    r"verify|complete|read|attend|come|register|rsvp|pick|talk|tell|ask|email|e-mail|fax|"
    r"mail|set|handle|file|enroll|comment|coordinate|arrange|follow|circulate|distribute|"
    r"plan|book|pay|process|fix|change|correct|move|draft|write|put|lock|pull|run|do|"
    r"mark|choose|select|decide|consider|inform|notify|remind|delete|print|bring|drop|"
    r"give|shoot|ping|buzz|phone|grab|sort|figure|work|hold|reserve|go|take|pass|supply|"
    r"communicate|refer|purchase|use|meet|identify|include|try|select|collect"
)
_REQUEST_RE = _rx(
    r"\bplease\b(?!\s+(?:note|see|find|be advised|be aware|be informed|feel free|do not hesitate|"
    r"don't hesitate|disregard|excuse|accept my|forgive|keep in mind|enjoy|join us|"
    r"welcome))|"
    r"\b(?:can|could|would|will)\s+(?:you|u)\b(?!\s+(?:like|be interested))|"
    r"\b(?:i|we)\s+(?:need|want|would like)\s+(?:you|your|for you)\b|"
    r"\bneed\s+(?:you|your)\b|\bi\s+need\b(?=[^.?!]{0,60}\b(?:from you|by|asap|back)\b)|"
    r"\blet\s+(?:me|us|him|her|them)\s+know\b|\bmake sure\b|"
    r"\b(?:you|everyone|each of you|all of you|y'all)\s+(?:need|needs|must|should|will need|"
    r"are required|is required|have to)\s+to?\b|"
    r"\bremember to\b|\bdon'?t forget\b|\bdo not forget\b|"
    r"\b(?:are|is) (?:requested|asked|expected) to\b|"
    r"\bi(?:'d| would)(?: very much| also| really)? welcome (?:your|any|a)\b|"
    r"\blet'?s (?:discuss|talk|meet|get together|plan)\b|\bmark your calendars?\b|"
    r"^(?:any )?(?:thoughts|comments|ideas|suggestions)\?$|"
    r"\bi(?: would|'d) like (?:you|for you|your|to (?:see|get|have|receive|know|hear))\b|"
    r"\bi(?: would|'d) appreciate\b|\bi(?: would|'d) love (?:to (?:hear|get|see)|your|any|"
    r"comments|feedback)\b|\b(?:friendly )?reminder to\b|\b(?:is|are) due (?:by|on|no later)\b|"
    r"\bhope (?:you|everyone|all of you) (?:are|is|can|will be) (?:available|able)\b|"
    r"\bwe (?:would like|need) to (?:have|set up|schedule|discuss|meet)\b|"
    r"\b(?:would|will) be (?:greatly |much )?appreciated\b|\bready for your (?:approval|review)\b|"
    r"\brequires? your (?:approval|attention|signature|input|review)\b|"
    r"\bwhy don'?t you\b|\bi look forward to (?:hearing|receiving|your)\b|"
    r"\bkindly\b|\bi need (?:a|an|the|your|to (?:know|see|get|talk))\b|"
    r"\bgive me a (?:call|ring)\b|\bget back to me\b|\bcall me\b(?![^.?!]{0,40}\bquestions?\b)"
)
_DUTY_RE = _rx(
    r"\b(?:all|every|each)\s+\w+(?:\s+\w+)?\s+(?:must|should|are required|is required|need)\b|"
    r"\bmust\s+(?:be\s+)?(?:" + _VERBS + r")\w*\b|\bit is (?:necessary|required|mandatory)\b|"
    r"\b(?:are|is) (?:required|requested|asked|expected) to\b|\bremember to\b|\bdeadline\b|\bno later than\b|"
    r"\bplease\b(?!\s+(?:note|see|find|be advised|be aware|feel free|do not hesitate|"
    r"don't hesitate|disregard|excuse|keep in mind|enjoy|join|welcome|read the))|"
    r"\bif you\b[^.?!]{0,80}\b(?:contact|call|"
    r"let (?:me|us) know|please)\b"
)
_INVITATION_RE = _rx(
    r"\binvit\w*|\bwelcome to (?:attend|join)\b|\bjoin us\b|"
    r"\bencourag\w+ (?:you |all |everyone )?to (?:attend|join|participate|come)\b|"
    r"\bdrawing\b|\braffle\b|\bregist(?:er|ration)\b|\brsvp\b|\bif you (?:are|would "
    r"be|might be) interested\b|\binterested (?:parties|employees)\b|\bsign up\b|"
    r"\bopportunity to\b|\bfeel free\b|\bseats? (?:are|is) limited\b"
)
_IMPERATIVE_RE = _rx(
    r"^(?:(?:and|also|then|so|just|now)\s+)?(?:" + _VERBS + r")\b(?!\s*[:.])|"
    r"^to \w+[^,.?!]{0,80},\s*(?:please\s+)?(?:" + _VERBS + r"|click)\b"  # "To approve it, click"
)
_OWN_COMMITMENT_RE = _rx(
    r"^(?:i|we)(?:'ll|'m| will| am| shall| plan| intend| can| could| would|'d| have| hope)\b"
)
_NOT_ASK_RE = _rx(
    r"\b(?:we|i)(?: really)? (?:need to|must|should|will|would like to|want to|wanted to) "
    r"make sure\b|\btalk to (?:you|ya) (?:soon|later|then)\b|\btake care\b|"
    r"\blet (?:me|us) know if (?:you|there)\b[^.?!]{0,30}\b(?:anything|questions?|problems?|"
    r"help)\b|\blet (?:me|us) know if i can\b|\bif i can (?:help|be of)\b|\bfeel free\b|"
    r"\bhope (?:you|this|all)\b(?! (?:are|is|can|will be) (?:available|able))|"
    r"\bthanks? (?:for|again)\b|\bjoin me in (?:congratulating|welcoming)\b"
)
_FYI_RE = _rx(r"\bfyi\b|\bfor your (?:information|records|review only)\b")
_BULK_RE = _rx(
    r"\bunsubscribe\b|\bto be removed\b|\bclick here\b|\bsubscri(?:be|ption)\b|"
    r"\bnewsletter\b|\bthank you for (?:your order|shopping|purchasing)\b|"
    r"\border (?:number|confirmation|status)\b|\bopt[- ]out\b|\bzoomerang\b|"
    r"\bsurvey creator\b|\btake (?:this|our|the|a short) survey\b"
)
#: generic offers ("please call me if you have any questions", "if you need additional
#: information, please contact ..."): the labeling guide counts them as no ask, so the
#: sentences holding them are blanked before the ask and type rules read the text. A match
#: can only start where a sentence does (after . ! ? or a line break): without that anchor
#: the engine retried the sentence from every character, quadratic in its length
_OFFER_SENTENCE_RE = _rx(
    r"(?:(?<=[.!?\n])|^)[^.!?\n]*\b(?:if you (?:have|need|would like|require)\b[^.!?]{0,40}\b"
    r"(?:questions?|information|assistance|help|concerns|clarification)|"
    r"(?:any|with|for) (?:further |additional )?questions)\b[^.!?\n]*[.!?]?"
)


def without_offers(text: str) -> str:
    """``text`` with the sentences that only offer help blanked (spaces, offsets kept)."""
    return _OFFER_SENTENCE_RE.sub(lambda m: " " * len(m.group(0)), text)


_BY_RE = _rx(r"\b(?:by|before|no later than|due|deadline|until|prior to|on|this|next)\b")
_NOT_NAMES = frozenset(
    (
        "all",
        "team",
        "everyone",
        "everybody",
        "guys",
        "folks",
        "gentlemen",
        "ladies",
        "hi",
        "hello",
        "dear",
        "hey",
        "thanks",
        "thank",
        "please",
        "fyi",
        "attached",
        "here",
        "sir",
        "madam",
        "good",
        "morning",
        "afternoon",
        "yes",
        "no",
        "ok",
        "okay",
        "sorry",
        "per",
        "re",
        "fw",
        "note",
        "importance",
        "high",
        "urgent",
        "the",
        "this",
        "i",
        "we",
        "you",
        "my",
        "our",
        "just",
        "also",
        "and",
        "so",
        "now",
        "then",
        "as",
        "if",
        "what",
        "when",
        "how",
        "who",
        "why",
        "can",
        "could",
        "would",
        "will",
        "do",
        "did",
        "call",
        "send",
        "see",
        "let",
        "take",
        "need",
        "great",
        "congratulations",
    )
)
_NAME = r"(?:(?:Mr|Ms|Mrs|Dr)\.?[ \t])?[A-Z][a-z]+(?:[ \t][A-Z]\.?)?(?:[ \t][A-Z][a-z]+)?"
_VOCATIVE_RE = re.compile(
    rf"^(?P<names>{_NAME}(?:(?:[ \t]*,[ \t]*|[ \t]+(?:and|&)[ \t]+){_NAME}){{0,3}})"
    r"[ \t]*(?:,|:|-{1,2}|–)[ \t]*(?=\S)"
)
_GREETING_RE = re.compile(
    rf"^[ \t]*(?:(?:Hi|Hello|Dear|Hey|Good morning|Good afternoon)[ \t,]+)?"
    rf"(?P<names>{_NAME}(?:(?:[ \t]*,[ \t]*|[ \t]+(?:and|&)[ \t]+|[ \t]*/[ \t]*){_NAME}){{0,5}})"
    r"[ \t]*[,:!\-–]*[ \t]*$",
    re.MULTILINE,
)
_TRAILING_VOCATIVE_RE = re.compile(rf",[ \t]*(?P<names>{_NAME})[ \t]*[?.!]?$")
_SPLIT_NAMES_RE = re.compile(r"[ \t]*(?:,|/|\band\b|&)[ \t]*")


def _sentences(seg: Segment) -> list[Sentence]:
    """The sentences of a segment: blank lines, bullets, short lines and [.!?] end one."""
    out: list[Sentence] = []
    text = seg.text
    placed = seg.offset >= 0
    base = seg.offset if placed else 0
    pieces: list[tuple[int, int]] = []
    start = None
    pos = 0
    prev_short = False
    for line in text.split("\n"):
        lstart, lend = pos, pos + len(line)
        pos = lend + 1
        stripped = line.strip()
        if not stripped:
            if start is not None:
                pieces.append((start, lstart - 1))
                start = None
            prev_short = False
            continue
        bullet = re.match(r"[ \t]*(?:[-*•>]|\d{1,2}[.)]|[a-z][.)])[ \t]+", line) is not None
        if start is not None and (bullet or prev_short):
            pieces.append((start, lstart - 1))
            start = None
        if start is None:
            start = lstart + (len(line) - len(line.lstrip()))
        prev_short = len(stripped) < 45 or stripped.endswith(":")
    if start is not None:
        pieces.append((start, len(text)))
    for a, b in pieces:
        chunk = text[a:b]
        s = 0
        for m in re.finditer(r"(?<=[.!?])[\"')\]]*[ \t\n]+(?=[\"(]?[A-Z0-9])", chunk):
            if re.search(
                r"\b(?:[A-Z]|Mr|Mrs|Ms|Dr|St|Inc|Co|Corp|Jr|Sr|vs|etc|e\.g|i\.e|No)\.$",
                chunk[: m.start()],
            ):
                continue
            out.append(_sentence(chunk[s : m.start()], a + s, base, placed, seg))
            s = m.end()
        out.append(_sentence(chunk[s:], a + s, base, placed, seg))
    return [Sentence(x.text, x.start, x.placed, seg) for x in out if x.text.strip()]


_BULLET_RE = re.compile(r"[ \t]*(?:[-*•>]|\d{1,2}[.)]|[a-z][.)])[ \t]+")


def _sentence(text: str, local: int, base: int, placed: bool, seg: Segment) -> Sentence:
    bullet = _BULLET_RE.match(text)
    lead = bullet.end() if bullet else 0
    lead += len(text[lead:]) - len(text[lead:].lstrip())
    body = text[lead:].strip()
    return Sentence(body, base + local + lead, placed, seg)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in _SPLIT_NAMES_RE.split(text) if n.strip()]
    if not names or any(
        n.split()[0].lower() in _NOT_NAMES or n.lower() in _ROLE_WORDS for n in names
    ):
        return []
    return names


def greeting(email: Email) -> list[tuple[str, int]]:
    """The names the email's new text opens with ("Kay," / "Hi Jeff and Sally -"), with
    their offsets in the body; [] when it opens with none."""
    text = email.new_text.replace("\r\n", "\n")
    body = email.body.replace("\r\n", "\n")
    head = text.lstrip()
    first = head.split("\n", 1)[0]
    m = _GREETING_RE.match(first)
    if m is None:
        m2 = _VOCATIVE_RE.match(first)
        if m2 is None:
            return []
        names_text, local = m2.group("names"), m2.start("names")
    else:
        names_text, local = m.group("names"), m.start("names")
    names = _names(names_text)
    at = body.find(first)
    out = []
    for n in names:
        i = first.find(n, local)
        out.append((n, at + i if at >= 0 and i >= 0 else -1))
    return out


def _address_for(name: str, addresses: Sequence[str]) -> str | None:
    """The one address of ``addresses`` whose local part holds the name's first (or last) word."""
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", name) if len(w) > 1]
    if not words:
        return None
    hits = set()
    for addr in addresses:
        local = addr.split("@")[0].lower()
        parts = re.split(r"[._\-]+", local)
        if words[0] in parts or (len(words) > 1 and words[-1] in parts):
            hits.add(addr)
        elif len(words) == 1 and local.startswith(words[0]) and len(words[0]) >= 3:
            hits.add(addr)
    return hits.pop() if len(hits) == 1 else None


#: a generic offer of help anywhere in a sentence ("Please call me at x3477 if you have any
#: questions"): the guide's "call me with any questions", not an ask
_OFFER_RE = _rx(
    r"\bif (?:you|there)\b[^.?!]{0,40}\b(?:have|need|would like|require|are)\b[^.?!]{0,40}\b"
    r"(?:questions?|information|assistance|help|concerns|comments|clarification|problems?)\b|"
    r"\b(?:any|with|for) (?:further |additional |other )?questions\b|\bshould you have\b|"
    r"^for (?:more |further |additional )?(?:detailed )?information\b|^questions\b[^.!]*\?$|\?{3,}"
)
_ROLE_WORDS = frozenset(("baby", "babe", "honey", "dad", "mom", "sweetie", "hubby", "dude"))


def _cue(sentence: str, mass: bool, few: bool) -> str | None:
    """Which kind of ask a sentence is, or None."""
    text = " ".join(sentence[:MAX_SENTENCE].split())
    if _OFFER_RE.search(text):
        return None
    if _NOT_ASK_RE.search(text) and not re.search(r"\b(?:can|could|would|will) you\b", text, re.I):
        return None
    if mass:
        if _INVITATION_RE.search(text):
            return None
        return "duty" if _DUTY_RE.search(text) else None
    if _REQUEST_RE.search(text):
        if _OWN_COMMITMENT_RE.match(text) and not re.search(
            r"\b(?:can|could|would|will) you\b|\bplease\b|\bneed you\b", text, re.I
        ):
            return None
        return "request"
    if _IMPERATIVE_RE.match(text) and len(re.findall(r"[A-Za-z]{2,}", text)) >= 3:
        return "imperative"
    if (
        few
        and re.search(r"\w[\"')]?\?+$", text.rstrip()) is not None
        and len(text.split()) >= 3
        and not _OWN_COMMITMENT_RE.match(text)
    ):
        return "question"
    return None


def _known_words(recipients: Sequence[str], people: Sequence[Any] | None) -> set[str] | None:
    """Lower-case words a name of this email can be made of: recipients' address parts and
    the people extractor's names; None when no people were given (any name is accepted)."""
    if people is None:
        return None
    words = {p for a in recipients for p in re.split(r"[._\-]+", a.split("@")[0].lower()) if p}
    words |= {w.lower() for f in people for w in re.findall(r"[A-Za-z]+", f.text)}
    return words


def _is_known(name: str, known: set[str] | None) -> bool:
    if known is None:
        return True
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", name) if w.lower() not in _TITLES]
    return bool(words) and any(
        w in known or any(k.startswith(w) and len(w) >= 2 for k in known) for w in words
    )


_TITLES = frozenset(("mr", "ms", "mrs", "dr"))


def _not_prose(text: str) -> bool:
    """A line of a form or an itinerary ("PICK-UP: SAN FRANCISCO"), or a lone "?"."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 6:
        return True
    return sum(c.isupper() for c in letters) > 0.6 * len(letters)


def _strip_vocative(text: str) -> tuple[str, int, list[str]]:
    """A sentence without the name it addresses first ("Kay, please ..."): (rest, offset, names)."""
    m = _VOCATIVE_RE.match(text)
    if m is None:
        return text, 0, []
    names = _names(m.group("names"))
    if not names:
        return text, 0, []
    return text[m.end() :], m.end(), names


def find_asks(
    email: Email, dates: Sequence[Any] = (), people: Sequence[Any] | None = None
) -> list[Ask]:
    """The action items of ``email``; ``dates`` are the date extractor's facts (``Fact``s with
    ``text``, ``start`` and ``end`` in the body) that due dates are taken from; ``people``
    (the people extractor's facts), when given, are the names a sentence may address besides
    the recipients' (so "Effective immediately:" is not read as a name)."""
    subject = email.subject or ""
    recipients = list(dict.fromkeys([*email.to, *email.cc]))
    mass = is_mass(email)
    few = 0 < len(recipients) <= 4
    own = email.new_text or ""
    if _FYI_RE.search(subject) or (_FYI_RE.search(own[:200]) and len(own.split()) <= 40):
        return []
    segments = [s for s in counted_segments(email) if s.part != "signature"]
    text_all = "\n".join(s.text for s in segments)
    if _BULK_RE.search(text_all[:8000]):
        return []
    known = _known_words(recipients, people)
    opening = [(n, at) for n, at in greeting(email) if _is_known(n, known)]
    sentences: list[Sentence] = []
    for seg in segments:
        sentences.extend(_sentences(seg))
    out: list[Ask] = []
    for i, sent in enumerate(sentences):
        if _not_prose(sent.text) or without_offers(sent.text) != sent.text:
            continue  # a shouted line of a form, or an offer of help
        rest, cut, named = _strip_vocative(sent.text)
        if named and not all(_is_known(n, known) for n in named):
            rest, cut, named = sent.text, 0, []
        own_text = sent.segment is None or sent.segment.part == "new_text"
        cue = _cue(rest, mass, few and own_text)  # a forwarded story's questions are rhetorical
        if cue is None:
            continue
        start = sent.start + cut if sent.placed else -1
        ask_text = rest.strip()
        lead = len(rest) - len(rest.lstrip())
        if start >= 0:
            start += lead
        who = _who(sent, rest, named, cut, opening, recipients)
        due = _due(sent, sentences[i + 1] if i + 1 < len(sentences) else None, dates)
        out.append(
            Ask(
                ask_text,
                start,
                start + len(ask_text) if start >= 0 else -1,
                cue,
                who,
                *(due or (None, -1, -1)),
            )
        )
        if len(out) >= MAX_ASKS:
            break
    return _merged(out)


def _who(
    sent: Sentence,
    rest: str,
    named: list[str],
    cut: int,
    opening: list[tuple[str, int]],
    recipients: list[str],
) -> tuple[Who, ...]:
    if named:
        at = [sent.start + sent.text.find(n) if sent.placed else -1 for n in named]
    else:
        m = _TRAILING_VOCATIVE_RE.search(rest)
        if m is not None and _names(m.group("names")):
            named = _names(m.group("names"))
            at = [sent.start + cut + m.start("names") if sent.placed else -1]
        elif opening:
            named = [n for n, _ in opening]
            at = [o for _, o in opening]
        else:
            return ()
    out = []
    for name, start in zip(named, at, strict=False):
        out.append(
            Who(
                name, start, start + len(name) if start >= 0 else -1, _address_for(name, recipients)
            )
        )
    return tuple(out)


def _due(sent: Sentence, nxt: Sentence | None, dates: Sequence[Any]) -> tuple[str, int, int] | None:
    if not sent.placed:
        return None
    end = sent.start + len(sent.text)
    inside = [d for d in dates if d.start >= 0 and sent.start <= d.start < end]
    bounded = [
        d
        for d in inside
        if _BY_RE.search(sent.text[max(0, d.start - sent.start - 30) : d.start - sent.start])
    ]
    if bounded or inside:
        d = (bounded or inside)[0]
        return d.text, d.start, d.end
    if nxt is not None and nxt.placed and _BY_RE.search(nxt.text[:200]):
        nend = nxt.start + len(nxt.text)
        after = [d for d in dates if d.start >= 0 and nxt.start <= d.start < nend]
        if after:
            d = after[0]
            return d.text, d.start, d.end
    return None


def _merged(asks: list[Ask]) -> list[Ask]:
    """Two sentences that ask the same thing are one item (the same text twice)."""
    seen: set[str] = set()
    out = []
    for a in asks:
        key = " ".join(a.text.lower().split())
        if key in seen:
            continue
        seen.add(key)
        out.append(a)
    return out


def is_mass(email: Email) -> bool:
    """No recipients (a list address) or 15 or more: mass mail."""
    recipients = len(set(email.to) | set(email.cc))
    return recipients == 0 or recipients >= MASS_RECIPIENTS


__all__ = ["Ask", "Who", "find_asks", "greeting", "is_mass", "without_offers"]
