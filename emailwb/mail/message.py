"""Raw RFC 822 bytes to an ``Email`` record: headers, dates, addresses and decoded body.

CONTRACT (helpers implement the bodies; field names and signatures are fixed):
the body split into new text / quoted / forwarded / signature / disclaimer lives in
``emailwb.mail.cleaning``; this module calls it so every Email carries its parts.

``parse_email`` is built for throughput (faster than a bare ``email`` compat32 parse, body
cleaning included): it finds the header/body separator in the bytes itself, splits and
unfolds the header block in one pass over its lines, decodes only the headers it uses
(RFC 2047 only when ``=?`` is present), and takes a single ASCII text/plain body (the
common case) without any MIME machinery. Other bodies go through ``emailwb.mail.mimebody``;
the low-level helpers live in ``emailwb.mail.rfc822``. Input that is not a message raises
``EmailParseError``; a message with defects (bad date, lying charset, missing blank
line) is parsed and the defects are listed on the record. Decoded text is capped at
2,000,000 characters and attachments are named, never decoded, so huge input stays cheap.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime

from emailwb.errors import EmailParseError, NotAMessage
from emailwb.mail.cleaning import split_body
from emailwb.mail.mimebody import BodyWalker, plain_ascii_body
from emailwb.mail.rfc822 import (
    MAX_BODY_CHARS,
    MAX_HEADER_BYTES,
    addresses,
    collapse,
    decode_header_bytes,
    decode_words,
    display_name,
    find_body_start,
    id_list,
    message_id,
    normalise_newlines,
    parse_addresses,
    parse_date,
    parse_header_block,
)


@dataclass(slots=True)
class Email:
    """One parsed message. Nothing is thrown away: the raw bytes stay in the store."""

    message_id: str  # without <>; synthesised as "sha256:<hex>" when the header is missing
    date: datetime | None  # timezone-aware (UTC) or None
    date_flag: (
        str | None
    )  # None when fine; "missing" | "unparseable" | "placeholder" (1979/1980 epoch dates)
    sender: str  # lower-cased address, "" if none
    sender_name: str  # display name ("" if none); Enron's X-From when From has no name
    to: list[str] = field(default_factory=list)  # lower-cased addresses
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""  # decoded (RFC 2047), whitespace-collapsed
    in_reply_to: str | None = None  # message id without <>
    references: list[str] = field(default_factory=list)  # message ids without <>
    mailbox: str = ""  # e.g. "dean-c" (maildir user, mbox file stem, X-Origin)
    folder: str = ""  # e.g. "inbox" (X-Folder's last part, or the path)
    body: str = ""  # the whole decoded text body (HTML turned into text when no text/plain)
    new_text: str = ""  # the part written by the sender of this message
    quoted: str = ""  # quoted replies, joined
    forwarded: str = ""  # forwarded blocks, joined
    signature: str = ""
    disclaimer: str = ""
    charset: str = ""  # charset actually used to decode the body
    defects: list[str] = field(default_factory=list)  # human-readable notes (bad charset, etc.)
    attachments: list[str] = field(default_factory=list)  # attachment file names (not stored)


#: at least one of these must be present for the input to count as a message
_KNOWN_HEADERS = frozenset(
    (
        "from",
        "to",
        "cc",
        "bcc",
        "date",
        "subject",
        "message-id",
        "received",
        "return-path",
        "mime-version",
        "content-type",
        "sender",
        "reply-to",
        "in-reply-to",
        "references",
        "delivered-to",
        "x-from",
        "x-to",
        "content-transfer-encoding",
        "x-mailer",
        "user-agent",
    )
)
_SUBJECT_PREFIX_RE = re.compile(
    r"\s*(?:(?:re|fwd?|aw|wg|sv|vs|tr|antw|rif)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]|\[[^\]]*\])",
    re.IGNORECASE,
)
#: bytes that occur in text; the rest (NUL and other controls) mark binary data
_TEXT_BYTES = bytes([9, 10, 12, 13, 27, *range(32, 256)])
_BARE_ADDRESS_RE = re.compile(r"\s*[^\s\"'<>(),;:@]+@[^\s\"'<>(),;:@]+\s*$")
_FORWARD_SUBJECT_RE = re.compile(r"\s*(?:fwd?|wg|tr)\s*:", re.IGNORECASE)


def normalize_subject(subject: str) -> str:
    """Subject for threading: reply/forward prefixes and [tags] stripped, lower-case, collapsed.

    ``"RE: Fw: [ext] Gas  Prices"`` -> ``"gas prices"``.
    """
    pos, n = 0, len(subject)
    while pos < n:
        m = _SUBJECT_PREFIX_RE.match(subject, pos)
        if m is None:
            break
        pos = m.end()
    return " ".join(subject[pos:].lower().split())


def _first_bytes(raw: bytes) -> str:
    return repr(raw[:40]) + ("..." if len(raw) > 40 else "")


def _looks_binary(raw: bytes) -> bool:
    """More than 5% NUL and other control bytes in the first 512 bytes."""
    head = raw[:512]
    return len(head.translate(None, _TEXT_BYTES)) * 20 > len(head)


def _binary_error(raw: bytes) -> EmailParseError:
    return NotAMessage(
        "not an RFC 822 message: binary data (NUL and control bytes) where the headers"
        f" should be (first bytes: {_first_bytes(raw)})"
    )


def _folder(value: str | None) -> str:
    if not value:
        return ""
    value = value.strip().rstrip("\\/")
    cut = max(value.rfind("\\"), value.rfind("/"))
    return collapse(value[cut + 1 :]).strip("'\"").strip().lower()


def _headers(raw: bytes) -> tuple[dict[str, str], bytes, list[str]]:
    """Headers, body bytes and defect notes; raises EmailParseError for non-messages."""
    defects: list[str] = []
    hend, bstart = find_body_start(raw)
    block = raw[:MAX_HEADER_BYTES] if hend < 0 else raw[:hend]
    if b"\x00" in block:
        if _looks_binary(raw):
            raise _binary_error(raw)
        block = block.replace(b"\x00", b"")
        defects.append("NUL bytes removed from the headers")
    text, note = decode_header_bytes(block)
    if note:
        defects.append(note)
    h, count, rest = parse_header_block(text)
    if not count or _KNOWN_HEADERS.isdisjoint(h):
        # Junk whose first bytes happen to hold a blank line ends its "header block" early, where
        # no NUL need be: name binary data as the cause whenever the file's head looks binary.
        if _looks_binary(raw):
            raise _binary_error(raw)
    if not count:
        raise NotAMessage(
            f"not an RFC 822 message: no header lines found (first bytes: {_first_bytes(raw)})"
        )
    if _KNOWN_HEADERS.isdisjoint(h):
        raise NotAMessage(
            "not an RFC 822 message: no standard header (From, To, Date, Subject, Message-ID...)"
            f" among {len(h)} header-like lines (first bytes: {_first_bytes(raw)})"
        )
    if hend < 0:
        body = raw[len(block) :]
        if rest.strip() or body:
            defects.append("no blank line after the headers; the rest is read as body")
        else:
            defects.append("headers only: the message has no body (truncated?)")
        body = rest.encode("utf-8", "surrogateescape") + body
    elif rest.strip():
        defects.append("header block has a line that is not a header; the rest is read as body")
        body = rest.encode("utf-8", "surrogateescape") + b"\n" + raw[bstart:]
    else:
        body = raw[bstart:]
    return h, body, defects


def parse_email(raw: bytes, *, source: str = "", mailbox: str = "", folder: str = "") -> Email:
    """Parse one raw message into an ``Email`` (body decoded and split by ``split_body``).

    ``source`` only names the input in error messages; ``mailbox`` and ``folder`` win over
    the message's own X-Origin / X-Folder headers when given.
    Raises ``EmailParseError`` when ``raw`` is not a message at all.
    """
    where = f" in {source}" if source else ""
    if type(raw) is not bytes:
        if not isinstance(raw, (bytearray, memoryview)):
            raise EmailParseError(
                f"expected the raw message as bytes{where}, got {type(raw).__name__}"
            )
        raw = bytes(raw)
    if not raw or raw.isspace():
        raise NotAMessage(f"empty message{where}: the input has no bytes besides whitespace")
    data = raw
    if data.startswith(b"From "):  # mbox envelope line
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else b""
    try:
        h, body_bytes, defects = _headers(data)
    except EmailParseError as exc:
        raise type(exc)(exc.message + where) from None

    date, date_flag = parse_date(h.get("date"))
    if date_flag == "unparseable":
        defects.append(f"unparseable Date header: {collapse(h['date'])[:80]!r}")
    from_value = h.get("from", "")
    sender, sender_name = "", ""
    if _BARE_ADDRESS_RE.match(from_value):  # "pete.davis@enron.com": the common case
        sender = from_value.strip().lower()
    elif "@" in from_value:
        for name, addr in parse_addresses(from_value):
            if "@" in addr:
                sender, sender_name = addr, decode_words(name)
                break
    elif from_value.strip():
        sender_name = decode_words(from_value).strip().strip("'\"")
        defects.append("From header has no address")
    if not sender_name:
        sender_name = display_name(decode_words(h.get("x-from", "")))
    sender_name = collapse(sender_name)
    if "@" in sender_name and " " not in sender_name:
        sender_name = ""

    simple = plain_ascii_body(h, body_bytes)
    if simple is not None:
        body, charset = simple
        attachments: list[str] = []
    else:
        walker = BodyWalker(defects)
        walker.walk(h, body_bytes)
        body, charset, attachments = walker.text(), walker.charset, walker.attachments
        if walker.truncated:
            defects.append(f"body truncated to {MAX_BODY_CHARS:,} characters")
    body = normalise_newlines(body)
    subject = collapse(decode_words(h.get("subject", "")))
    parts = split_body(body, forward=bool(_FORWARD_SUBJECT_RE.match(subject)))
    cc_value, bcc_value = h.get("cc"), h.get("bcc")
    cc = addresses(cc_value)

    return Email(
        message_id=message_id(h.get("message-id")) or "sha256:" + hashlib.sha256(raw).hexdigest(),
        date=date,
        date_flag=date_flag,
        sender=sender,
        sender_name=sender_name,
        to=addresses(h.get("to")),
        cc=cc,
        bcc=list(cc) if bcc_value == cc_value else addresses(bcc_value),  # Enron repeats Cc
        subject=subject,
        in_reply_to=message_id(h.get("in-reply-to")) or None,
        references=id_list(h.get("references")),
        mailbox=mailbox or collapse(h.get("x-origin", "")).lower(),
        folder=folder or _folder(h.get("x-folder")),
        body=body,
        new_text=parts.new_text,
        quoted=parts.quoted,
        forwarded=parts.forwarded,
        signature=parts.signature,
        disclaimer=parts.disclaimer,
        charset=charset,
        defects=defects,
        attachments=attachments,
    )
