"""Raw RFC 822 bytes to an ``Email`` record: headers, dates, addresses and decoded body.

CONTRACT (helpers implement the bodies; field names and signatures are fixed):
the body split into new text / quoted / forwarded / signature / disclaimer lives in
``emailwb.cleaning``; this module calls it so every Email carries its parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class Email:
    """One parsed message. Nothing is thrown away: the raw bytes stay in the store."""

    message_id: str  # without <>; synthesised as "sha256:<hex>" when the header is missing
    date: datetime | None  # timezone-aware (UTC) or None
    date_flag: str | None  # None when fine; "missing" | "unparseable" | "placeholder" (1979/1980 epoch dates)
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
