"""Which text of an email counts, as segments located in the body.

The labeling guide (``shared/gold/labeling.md``) counts the sender's new text and signature;
a forwarded message counts when it is the point of the email: the sender adds nothing, or
only a cover note that points at it ("FYI", "please file"). Quoted replies never count.
Header lines inside the body (``From:``/``To:``/``cc:``/``Sent:``/``Subject:``, ``Forwarded
by ...``, ``Name on 01/02/2001 10:00 AM``) are blanked with spaces, so offsets stay those of
the body and nothing in them is extracted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emailwb.mail.message import Email

#: a new text this short (in words) is a cover note when the email also forwards something
COVER_NOTE_WORDS = 40

_HEADER_LINE_RE = re.compile(
    r"^[ \t>]*(?:"
    r"-{2,}\s*(?:Forwarded by|Original Message|Begin forwarded)[^\n]*"
    r"|(?:From|To|cc|bcc|Sent|Date|Subject|Sent by|Importance)[ \t]*:[^\n]*"
    r"|[^\n]{0,120}\bon\s+\d{1,2}/\d{1,2}/\d{2,4}\s+\d{1,2}:\d{2}[^\n]*"
    r"|\d{1,2}/\d{1,2}/\d{2,4}\s+\d{1,2}:\d{2}(?::\d{2})?\s*(?:[AaPp][Mm])?[ \t]*"
    r"|[^\n]*\b[\w.\-]+/(?:HOU|NA|ENRON|Enron|ECT|EES|EPSC|Corp|ENRON_DEVELOPMENT)\b[^\n]*"
    r"|[^\n]*@(?:ECT|ENRON|EES|Enron|enron)\b[^\n]*"
    r"|[^\n]*\bwrote:[ \t]*"
    r")$",
    re.IGNORECASE | re.MULTILINE,
)
_CONTINUATION_RE = re.compile(r"^[ \t]+\S[^\n]*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Segment:
    """A counted piece of text: ``text`` is the body from ``offset`` (header lines blanked)."""

    part: str  # "new_text" | "signature" | "forwarded"
    text: str
    offset: int  # where ``text`` starts in the body; -1 when it could not be located


def blank_headers(text: str) -> str:
    """``text`` with header lines inside the body replaced by spaces (same length)."""
    out = _HEADER_LINE_RE.sub(lambda m: " " * len(m.group(0)), text)
    # continuation lines of a blanked To:/cc: (indented address lists) go too
    lines = out.split("\n")
    src = text.split("\n")
    for i in range(1, len(lines)):
        if (
            not lines[i - 1].strip()
            and src[i - 1].strip()
            and re.match(r"[ \t>]*(?:To|cc|bcc)\s*:", src[i - 1], re.IGNORECASE) is not None
        ):
            j = i
            while (
                j < len(lines)
                and _CONTINUATION_RE.match(src[j])
                and ("@" in src[j] or "," in src[j] or "/" in src[j])
            ):
                lines[j] = " " * len(src[j])
                j += 1
    return "\n".join(lines)


def forward_is_point(email: Email) -> bool:
    """Whether the forwarded text counts: no own text, or a short cover note."""
    if not email.forwarded.strip():
        return False
    words = len(email.new_text.split())
    return words <= COVER_NOTE_WORDS


def _locate(body: str, part: str, start: int) -> int:
    if not part:
        return -1
    at = body.find(part, start)
    if at < 0:
        at = body.find(part)
    return at


def counted_segments(email: Email) -> list[Segment]:
    """The segments of ``email`` that count, in body order, header lines blanked."""
    body = email.body.replace("\r\n", "\n")
    parts = [("new_text", email.new_text), ("signature", email.signature)]
    if forward_is_point(email):
        parts.append(("forwarded", email.forwarded))
    out: list[Segment] = []
    cursor = 0
    for name, text in parts:
        if not text.strip():
            continue
        at = _locate(body, text, cursor)
        if at >= 0:
            cursor = at + len(text)
            out.append(Segment(name, blank_headers(text), at))
            continue
        # not contiguous in the body (quotes were cut out of it): locate paragraph by paragraph
        for para in re.split(r"\n\s*\n", text):
            if not para.strip():
                continue
            pat = _locate(body, para, cursor)
            if pat >= 0:
                cursor = pat + len(para)
            out.append(Segment(name, blank_headers(para), pat))
    return out
