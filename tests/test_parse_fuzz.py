"""Fuzzing: random bytes and mutated real messages never crash the parser or the cleaner.

The only exception parse_email may raise is EmailParseError; whatever parses satisfies the
Email contract, and split_body never loses characters.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailwb.errors import EmailParseError
from emailwb.mail.cleaning import split_body
from emailwb.mail.message import Email, parse_email

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# A few real messages of different shapes (reply, forward, folded lists, placeholder date).
REAL = [
    "dean-c/_sent_mail/2.eml",
    "dean-c/_sent_mail/7.eml",
    "dean-c/inbox/1.eml",
    "dean-c/inbox/690.eml",
    "delainey-d/all_documents/160.eml",
    "dean-c/deleted_items/275.eml",
]

MIME = (
    b'From: a@b.com\nContent-Type: multipart/mixed; boundary="B"\n\n--B\n'
    b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"Gr=C3=BC=C3=9Fe\n--B\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\n"
    b"PHA+aGk8L3A+\n--B\nContent-Disposition: attachment; filename*=utf-8''a%20b.pdf\n\nxx\n--B--\n"
)


def check_contract(e: Email) -> None:
    assert isinstance(e, Email)
    assert e.message_id
    assert e.date is None or e.date.tzinfo is UTC
    assert e.date_flag in (None, "missing", "unparseable", "placeholder")
    assert e.sender == e.sender.lower()
    assert all(a == a.lower() and "@" in a for a in e.to + e.cc + e.bcc)
    assert "\r" not in e.body
    assert len(e.body) <= 2_000_000


def parse_or_refuse(raw: bytes) -> None:
    try:
        e = parse_email(raw)
    except EmailParseError as exc:
        assert str(exc)
        return
    check_contract(e)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_parse_or_raise_email_parse_error(raw: bytes) -> None:
    parse_or_refuse(raw)


header_line = st.builds(
    lambda name, value: f"{name}:{value}\n",
    st.sampled_from(
        [
            "From",
            "To",
            "Cc",
            "Date",
            "Subject",
            "Message-ID",
            "References",
            "Content-Type",
            "Content-Transfer-Encoding",
            "X-Folder",
            "X-From",
        ]
    ),
    st.text(max_size=80),
)


@FUZZ
@given(st.lists(header_line, max_size=8), st.text(max_size=500), st.booleans())
def test_random_headers_and_text_bodies_parse(headers: list[str], body: str, crlf: bool) -> None:
    raw = ("".join(headers) + "\n" + body).encode("utf-8", "surrogatepass")
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    parse_or_refuse(raw)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A real message with bytes replaced, inserted, deleted, or cut off."""
    raw = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "replace" and raw:
            raw[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\n",
                        b"\r\n",
                        b"\x00",
                        b":",
                        b"=?utf-8?q?",
                        b"--",
                        b">",
                        b"\xff\xfe",
                        b"\n\n",
                    ]
                )
            )
        elif op == "delete":
            del raw[pos : pos + draw(st.integers(1, 200))]
        else:
            del raw[pos:]
    return bytes(raw)


@pytest.fixture(scope="module")
def seeds(enron_dir: Path) -> list[bytes]:
    return [(enron_dir / "maildir" / rel).read_bytes() for rel in REAL] + [MIME]


@FUZZ
@given(data=st.data())
def test_mutated_real_messages_parse_or_raise_email_parse_error(
    seeds: list[bytes], data: st.DataObject
) -> None:
    parse_or_refuse(data.draw(mutated(seeds)))


body_line = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "-----Original Message-----",
            "From: Jane",
            "Sent: Monday",
            "To: Bob",
            "cc:",
            "Subject: x",
            "> quoted",
            "John <j@x.com> on 12/13/2000 10:37:08 AM",
            "12/13/2000 10:37 AM",
            "---------------------- Forwarded by Jane Doe/HOU/ECT on 01/02/2001",
            "-- ",
            "--",
            "Thanks,",
            "Jeff",
            "(713) 853-1234",
            "On Mon, Jan 1, 2001, Bob wrote:",
            "wrote:",
            "",
            "This e-mail is the property of Enron Corp. and may contain confidential material",
            "If you are not the intended recipient, please delete it.",
            "Begin forwarded message:",
        ]
    ),
)


@FUZZ
@given(st.lists(body_line, max_size=40), st.booleans())
def test_split_body_never_loses_characters(lines: list[str], forward: bool) -> None:
    text = "\n".join(lines)
    parts = split_body(text, forward=forward)
    kept_parts = (parts.new_text, parts.quoted, parts.forwarded, parts.signature, parts.disclaimer)
    kept = Counter(c for p in kept_parts for c in p if not c.isspace())
    assert kept == Counter(c for c in text.replace("\r", "\n") if not c.isspace())
