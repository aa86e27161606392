"""Split a decoded message body into what its sender wrote and everything else.

``split_body`` returns a ``BodyParts``: the new text, quoted replies, forwarded blocks, the
signature and legal disclaimers. Nothing is thrown away: every line of the body lands in
exactly one part (whitespace at the joins aside).

It recognises ``-----Original Message-----`` blocks, Outlook ``From:/Sent:`` header
blocks, Lotus Notes reply headers (``Name <addr> on 12/13/2000 10:37:08 AM``, or a name
line and a date line, then To:/cc:/Subject:), ``... wrote:`` attributions and ``>``
quotes, Enron ``--- Forwarded by ...`` and other forward markers, ``-- `` signatures,
short trailing name/title/phone blocks (conservatively) and confidentiality disclaimers.

Speed: no Python loop over all lines. One regex whose literal newline prefix lets the
engine hop from line to line in C finds candidate marker lines, each checked with
anchored, possessive regexes; only the tail of the new text is split into lines (for the
signature and disclaimer), so the cost is linear in the body size with a small constant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BodyParts", "split_body"]


@dataclass(slots=True)
class BodyParts:
    """A body split into the sender's own text and the rest (all parts stripped)."""

    new_text: str = ""
    quoted: str = ""
    forwarded: str = ""
    signature: str = ""
    disclaimer: str = ""


# Possessive quantifiers: a 100,000-dash line costs one pass, not one per backtrack.
_FORWARD_RE = re.compile(
    r"-{2,}+\s*+Forwarded (?:by|message)\b|Begin forwarded message:", re.IGNORECASE
)
_ORIGINAL_RE = re.compile(r"-{2,}+\s*+Original Message\b", re.IGNORECASE)
_RULE_RE = re.compile(r"[-_=]{8,}+\s*+$")
_FROM_RE = re.compile(r"\*{0,2}From\*{0,2}\s*:", re.IGNORECASE)
_HEADER_FIELD_RE = re.compile(r"\s*\**(Sent|Date|To|Subject|Cc|Sent by)\**\s*:", re.IGNORECASE)
# Searched over the whole body; each starts with a literal so the engine skips in C.
_CANDIDATE_RE = re.compile(
    r"\n[ \t]*(?=[-_=*FBTCftbc])(?:[-_=]{2}|\*|From|FROM|from|Begin|BEGIN|To:|TO:|to:|cc:|CC:|Cc:)"
)
_WROTE_FIND_RE = re.compile(r"wr(?:ote|ites)[ \t]*:[ \t]*$", re.MULTILINE)
_NOTES_ON_RE = re.compile(
    r"\son(?:\s+\d{1,2}/\d{1,2}/\d{2,4}(?:\s+\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp][Mm])?)?)?\s*$"
)
_TIME_RE = re.compile(r"(?:\d{1,2}:\d{2}(?::\d{2})?)?\s*[AaPp][Mm]\s*$")
_NOTES_DATE_RE = re.compile(
    r"\d{1,2}/\d{1,2}/\d{2,4}\s+\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp][Mm])?\s*$"
)
_NOTES_DATE_TAIL_RE = re.compile(
    r"\s\d{1,2}/\d{1,2}/\d{2,4}\s+\d{1,2}:\d{2}(?::\d{2})?\s*[AaPp][Mm]\s*$"
)
_WROTE_RE = re.compile(r"(?:wrote|writes|schrieb)\s*:\s*$", re.IGNORECASE)
_DISCLAIMER_RE = re.compile(
    r"this e-?mail is the property of"
    r"|the information (?:contained )?in this [^.]{0,80}?(?:confidential|privileged)"
    r"|confidentiality notice"
    r"|this (?:e-?mail|message|communication|transmission)[^.]{0,160}?"
    r"(?:confidential|privileged|intended (?:only|solely) for)"
    r"|if you are not the intended recipient"
    r"|intended (?:only|solely) for the (?:use|person|individual|addressee)"
)
_VALEDICTION_RE = re.compile(
    r"(?:thanks(?: again| so much)?|thank you(?: very much)?|many thanks|thx[sz]?|tks|regards?|"
    r"best regards|"
    r"kind regards|warm regards|best wishes|best|cheers|sincerely(?: yours)?|yours(?: truly)?|"
    r"respectfully|take care|all the best|ciao)\s*[,.!-]*\s*$",
    re.IGNORECASE,
)
_NAME_RE = re.compile(r"[A-Z][A-Za-z'.\-]*(?:,? [A-Z][A-Za-z'.\-]*){0,3}\s*$")
_NOT_NAMES = frozenset(
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
        "okay",
        "sure",
        "great",
        "happy",
        "merry",
        "see",
        "talk",
        "call",
        "let",
        "please",
        "good",
        "hi",
        "hello",
        "hey",
        "dear",
        "fyi",
        "congratulations",
        "welcome",
        "agreed",
        "done",
        "fine",
        "sounds",
        "will",
        "also",
        "note",
        "attached",
        "enjoy",
        "have",
        "what",
        "why",
        "how",
        "when",
        "where",
        "who",
        "the",
        "this",
        "that",
        "i",
        "we",
        "you",
        "it",
        "nice",
        "wow",
        "sorry",
        "later",
        "bye",
        "cool",
        "excellent",
        "perfect",
        "approved",
        "confirmed",
        "noted",
    )
)
_CONTACT_RE = re.compile(
    r"\(?\d{3}\)?[-. ]?\d{3}[-.]\d{4}|\b(?:phone|tel|fax|cell|mobile|direct|pager|office)\b"
    r"|\bx\d{4,5}\b|\b\d-\d{4}\b|^\s*\d{5}\s*$|\S+@\S+\.\w|\bwww\.|https?://",
    re.IGNORECASE,
)

#: how far from the end of a region signatures and disclaimers are looked for
_TAIL_LINES = 60
_MAX_CANDIDATES = 500
_DISCLAIMER_MIN_CHARS = 120
_DISCLAIMER_SLACK_CHARS = 400


def _lines_at(text: str, start: int, count: int) -> list[str]:
    """Up to ``count`` lines of ``text`` from offset ``start`` (for look-ahead checks)."""
    return text[start : start + 2000].split("\n", count)[:count]


def _outlook_block(text: str, start: int, *, notes: bool = False) -> bool:
    """The lines from ``start`` on carry Sent:/Date:, or To: and Subject: (a header block).

    ``notes``: the From: line carried its own date (Lotus Notes), so To: or cc: within a
    dozen lines (past Notes' phone/office lines) is enough.
    """
    names = set()
    for line in _lines_at(text, start, 12 if notes else 8):
        m = _HEADER_FIELD_RE.match(line)
        if m:
            names.add(m.group(1).lower())
    if notes and names & {"to", "cc"}:
        return True
    return bool(names & {"sent", "date", "sent by"}) or {"to", "subject"} <= names


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def _notes_header_above(text: str, ls: int) -> int | None:
    """For a To:/cc: line at ``ls``: start of the Notes reply header just above, if any.

    Looks at the first non-blank line above (past the header's own fields) for
    ``Name <addr> on 12/13/2000 10:37:08 AM`` (also wrapped over two lines), or for a
    bare date line under a name line.
    """
    pos = ls
    for _ in range(8):
        if pos == 0:
            return None
        prev = text.rfind("\n", 0, pos - 1) + 1
        line = text[prev : pos - 1].strip()
        pos = prev
        if not line or _HEADER_FIELD_RE.match(line):
            continue  # blank lines and the header's own fields
        if _TIME_RE.match(line):
            continue  # "10:40:57 AM" wrapped to its own line
        if _NOTES_DATE_RE.match(line):  # "Name\n12/13/2000 10:37 AM": take the name lines too
            for _ in range(3):
                if pos == 0:
                    break
                above = text.rfind("\n", 0, pos - 1) + 1
                name = text[above : pos - 1].strip()
                if not name or len(name) > 80:
                    break
                pos = above
            return pos
        if len(line) <= 200 and _NOTES_ON_RE.search(line):
            if line.startswith((">", "-")):
                return None
            if len(line) < 40 and pos:  # "... on" wrapped: the name sits on the line above
                above = text.rfind("\n", 0, pos - 1) + 1
                if text[above : pos - 1].strip():
                    pos = above
            return pos
        return None
    return None


def _marker(text: str, ls: int) -> tuple[int, str] | None:
    """(start, kind) when the line at offset ``ls`` opens a quoted or forwarded block.

    kind is "forward" (a forwarded block) or "reply" (an earlier message quoted);
    start is ``ls`` or, for Notes headers, the name line(s) above.
    """
    end = _line_end(text, ls)
    s = text[ls:end].lstrip()
    c = s[:1]
    if c in "-_=*":
        if _ORIGINAL_RE.match(s):
            return ls, "reply"
        if _FORWARD_RE.match(s):
            return ls, "forward"
        if _RULE_RE.match(s):  # "________" then an Outlook From:/Sent: block
            nxt_end = _line_end(text, end + 1)
            nxt = text[end + 1 : nxt_end].lstrip()
            if _FROM_RE.match(nxt) and _outlook_block(text, nxt_end + 1):
                return ls, "reply"
        elif c == "*" and _FROM_RE.match(s) and _outlook_block(text, end + 1):
            return ls, "reply"
        return None
    if c in "Ff":
        if _FROM_RE.match(s):
            notes = "/" in s and _NOTES_DATE_TAIL_RE.search(s) is not None
            if _outlook_block(text, end + 1, notes=notes):
                return ls, "reply"
        return None
    if c in "Bb":
        return (ls, "forward") if s[:24].lower() == "begin forwarded message:" else None
    if c in "TtCc":
        start = _notes_header_above(text, ls)
        return None if start is None else (start, "reply")
    return None


def _first_cut(text: str) -> tuple[int, str, bool]:
    """Offset of the line where the first quoted/forwarded block starts, and its kind.

    The flag says whether a "wrote:" / "writes:" attribution may sit above the cut.
    """
    best, kind = len(text), ""
    for n, m in enumerate(_CANDIDATE_RE.finditer("\n" + text)):
        if n >= _MAX_CANDIDATES:  # pathological input (thousands of "--" lines): stop looking
            break
        found = _marker(text, m.start())  # m.start() is the line start in ``text``
        if found is not None:
            best, kind = found
            break
    if text.find("wrote:", 0, best) < 0 and text.find("writes:", 0, best) < 0:
        return best, kind, False
    for m in _WROTE_FIND_RE.finditer(text, 0, best):
        ls = text.rfind("\n", 0, m.start()) + 1
        s = text[ls : m.end()].lstrip()
        if m.end() - ls > 300 or s.startswith(">"):
            continue
        following = [x.lstrip() for x in _lines_at(text, m.end(), 6)[1:]]
        if next((x for x in following if x), "").startswith(">"):
            continue  # a ">" quote follows: handled line by line with the new text
        if ls and not s.startswith("On "):
            prev = text.rfind("\n", 0, ls - 1) + 1
            if text[prev:ls].lstrip().startswith("On "):
                ls = prev
        return ls, "reply", True
    return best, kind, True


def _paragraphs(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) of the last paragraphs of ``lines``, last first."""
    out: list[tuple[int, int]] = []
    j = len(lines)
    while j > 0 and len(out) < 10:
        while j > 0 and not lines[j - 1].strip():
            j -= 1
        end = j
        while j > 0 and lines[j - 1].strip():
            j -= 1
        if end > j:
            out.append((j, end))
    return out


def _has_disclaimer_hint(text: str) -> bool:
    """Cheap pre-check (substring scans) before any disclaimer analysis."""
    return "onfidential" in text or "ONFIDENTIAL" in text or "ntended recipient" in text


def _disclaimer_start(lines: list[str]) -> int | None:
    """Index where a trailing legal disclaimer starts in ``lines``, or None."""
    start = None
    slack = 0
    disc_chars = 0
    for a, b in _paragraphs(lines):
        text = " ".join(x.strip() for x in lines[a:b])
        if len(text) < 4000 and _DISCLAIMER_RE.search(text.lower()):
            start, disc_chars = a, disc_chars + len(text)
        elif any(ch.isalnum() for ch in text):
            slack += len(text)
            if slack > _DISCLAIMER_SLACK_CHARS:
                break
    if start is None or disc_chars < _DISCLAIMER_MIN_CHARS:
        return None
    return start


def _split_disclaimer(text: str) -> tuple[str, str]:
    """(text without its trailing disclaimer, the disclaimer)."""
    lines = text.rsplit("\n", _TAIL_LINES)
    d = _disclaimer_start(lines)
    if d is None or (d == 0 and len(lines) > _TAIL_LINES):
        return text, ""
    return "\n".join(lines[:d]), "\n".join(lines[d:])


def _is_name(line: str) -> bool:
    if len(line) > 40 or not _NAME_RE.match(line):
        return False
    return line.split(None, 1)[0].strip(",.").lower() not in _NOT_NAMES


def _signs_off(line: str) -> bool:
    """A line that can follow "Thanks," as a sign-off: a name, not the start of a sentence."""
    words = line.split()
    if not words or len(line) > 40 or len(words) > 6 or line.endswith(("?", "!", ":")):
        return False
    if line.endswith(".") and len(words) > 3:  # "Tom." signs; "I will send it." does not
        return False
    return words[0].strip(",.-").lower() not in _NOT_NAMES


def _signature_start(lines: list[str]) -> int | None:
    """Index where the signature starts in ``lines`` (the last ones of a text), or None.

    ``lines[0]`` may hold many lines (the untouched start of the text); it never becomes
    signature. The text must end in a non-blank line.
    """
    hi = len(lines)
    if hi < 2:
        return None
    first_text = 0
    while first_text < hi and not lines[first_text].strip():
        first_text += 1
    # 1. the "-- " delimiter near the end
    if "--" in lines or "-- " in lines:
        for j in range(hi - 1, max(first_text, hi - 15), -1):
            if lines[j] == "--" or lines[j] == "-- ":
                if all(len(x) <= 80 for x in lines[j + 1 :]):
                    return j
                break
    # 2. the lines after a closing ("Thanks,", "Regards") near the end
    for j in range(hi - 2, max(first_text, hi - 8) - 1, -1):
        line = lines[j]
        if len(line) < 40 and _VALEDICTION_RE.match(line.strip()):
            block = lines[j + 1 :]
            first = next((x.strip() for x in block if x.strip()), "")
            if (_signs_off(first) or _CONTACT_RE.search(first)) and all(
                len(x) <= 70 and not x.rstrip().endswith("?") for x in block
            ):
                return j + 1
            return None
    # 3. a short last paragraph: a name alone, or a name with title and contact lines
    a = hi - 1
    while a > first_text and lines[a - 1].strip() and hi - a <= 8:
        a -= 1
    if a <= first_text or hi - a > 8:
        return None
    block = [x.strip() for x in lines[a:]]
    if any(len(x) > 70 or x.endswith(("?", ":")) for x in block):
        return None
    if len(block) > 1 and _RULE_RE.match(block[0]):  # "________" above the name
        block = block[1:]
    if _is_name(block[0]) and (len(block) == 1 or any(_CONTACT_RE.search(x) for x in block)):
        return a
    return None


def _split_signature(text: str) -> tuple[str, str]:
    """(text without its signature, the signature); ``text`` ends in a non-blank line."""
    if len(text) - text.rfind("\n") > 81:  # a long last line: no signature block ends here
        return text, ""
    lines = text.rsplit("\n", 16)
    g = _signature_start(lines)
    if g is None:
        return text, ""
    return "\n".join(lines[:g]), "\n".join(lines[g:])


def _separate_quotes(head: str, quoted: list[str]) -> str:
    """Move ``>`` lines and their "... wrote:" attributions from ``head`` to ``quoted``.

    Up to two unquoted lines between quoted ones are lines that wrapped without their
    ``>`` (common in old clients) and go with the quote.
    """
    lines = head.split("\n")
    n = len(lines)
    flags = [False] * n
    for i, line in enumerate(lines):
        s = line.lstrip()
        if s[:1] == ">":
            flags[i] = True
        elif s[-1:] == ":" and len(s) < 300 and _WROTE_RE.search(s):
            flags[i] = True
            if i and not flags[i - 1] and lines[i - 1].lstrip().startswith("On "):
                flags[i - 1] = not s.startswith("On ")  # "On <date>, <name>" wrapped before it
    for i in range(1, n - 1):
        if flags[i - 1] and not flags[i] and lines[i].strip():
            j = i
            while j < n and j - i < 2 and not flags[j] and lines[j].strip():
                j += 1
            if j < n and flags[j]:
                flags[i:j] = [True] * (j - i)
    quoted.extend(line for line, q in zip(lines, flags, strict=True) if q)
    return "\n".join(line for line, q in zip(lines, flags, strict=True) if not q)


def split_body(text: str, *, forward: bool = False) -> BodyParts:
    """Split a decoded body (LF line ends) into new text, quoted, forwarded, signature, disclaimer.

    ``forward=True`` (the subject says Fw:/Fwd:) files an ``Original Message`` block as
    forwarded rather than quoted; so does a reply block with no new text above it, because
    such a message only passes the earlier one on.
    """
    if not text:
        return BodyParts()
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    cut, kind, attribution = _first_cut(text)
    head = text[:cut]
    rest = text[cut:].strip()
    quoted: list[str] = []
    if attribution or (">" in head and ("\n>" in head or head[:1] == ">")):
        head = _separate_quotes(head, quoted)
    head = head.rstrip()
    disclaimer = ""
    if _has_disclaimer_hint(text):
        if rest:
            rest, disclaimer = _split_disclaimer(rest)
            rest = rest.rstrip()
        head, own_disclaimer = _split_disclaimer(head)
        if own_disclaimer:
            head = head.rstrip()
            disclaimer = f"{own_disclaimer}\n\n{disclaimer}" if disclaimer else own_disclaimer
    head, signature = _split_signature(head) if head else (head, "")
    new_text = head.strip()
    forwarded = ""
    if rest:
        if kind == "forward" or (kind == "reply" and (forward or not new_text)):
            forwarded = rest
        else:
            quoted.append(rest)
    return BodyParts(
        new_text=new_text,
        quoted="\n".join(quoted).strip() if quoted else "",
        forwarded=forwarded,
        signature=signature.strip(),
        disclaimer=disclaimer.strip(),
    )
