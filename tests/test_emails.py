"""parse_email and normalize_subject: headers, dates, addresses, bodies, MIME, bad input."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from emailwb.errors import EmailParseError
from emailwb.mail.message import Email, normalize_subject, parse_email


def msg(headers: str, body: str | bytes = "Hello.\n", *, crlf: bool = False) -> bytes:
    """A raw message from literal headers (one per line) and a body."""
    raw_body = body.encode("latin-1") if isinstance(body, str) else body
    raw = headers.strip("\n").encode("utf-8") + b"\n\n" + raw_body
    return raw.replace(b"\n", b"\r\n") if crlf else raw


BASIC = """\
Message-ID: <123.456.JavaMail.evans@thyme>
Date: Tue, 12 Dec 2000 04:58:00 -0800 (PST)
From: clint.dean@enron.com
To: lgasparini@simpletel.com
Subject: RE: This weekend"""


# --- real Enron messages -------------------------------------------------------------------
def enron(enron_dir: Path, rel: str) -> Email:
    path = enron_dir / "maildir" / rel
    return parse_email(path.read_bytes(), source=str(path))


def test_enron_notes_reply_is_parsed_with_headers_and_split_body(enron_dir: Path) -> None:
    e = enron(enron_dir, "dean-c/_sent_mail/2.eml")
    assert e.message_id == "27430012.1075857359489.JavaMail.evans@thyme"
    assert e.date == datetime(2000, 12, 12, 12, 58, tzinfo=UTC)
    assert e.date_flag is None
    assert (e.sender, e.sender_name) == ("clint.dean@enron.com", "Clint Dean")  # name from X-From
    assert e.to == ["lgasparini@simpletel.com"]
    assert e.subject == "RE: This weekend"
    assert (e.mailbox, e.folder) == ("dean-c", "sent mail")
    assert e.charset == "us-ascii"
    assert "\r" not in e.body
    assert e.new_text == "Yes, yes.  Sorry for not replying.  I'm good for two."
    assert e.quoted.startswith('"Luis Gasparini" <lgasparini@simpletel.com> on 12/12/2000')
    assert e.defects == []


def test_enron_forward_without_a_note_has_empty_new_text(enron_dir: Path) -> None:
    e = enron(enron_dir, "dean-c/_sent_mail/7.eml")
    assert e.new_text == ""
    assert e.forwarded.startswith("---------------------- Forwarded by Clint Dean/Corp/Enron")
    assert "Version 2.0 of the ClickAtHome Portal" in e.forwarded


def test_enron_folded_cc_and_bcc_lists_become_address_lists(enron_dir: Path) -> None:
    e = enron(enron_dir, "dean-c/inbox/1.eml")
    folded = [
        "albert.meyers@enron.com",
        "bill.williams@enron.com",
        "craig.dean@enron.com",
        "geir.solberg@enron.com",
        "john.anderson@enron.com",
        "mark.guzman@enron.com",
        "michael.mier@enron.com",
        "pete.davis@enron.com",
        "ryan.slinger@enron.com",
    ]
    assert e.to == ["pete.davis@enron.com"]
    assert e.cc == folded
    assert e.bcc == folded
    assert e.sender_name == "Davis, Pete"


def test_enron_epoch_dates_are_kept_but_flagged_placeholder(enron_dir: Path) -> None:
    e = enron(enron_dir, "delainey-d/all_documents/160.eml")  # Mon, 31 Dec 1979 16:00:00 -0800
    assert e.date == datetime(1980, 1, 1, tzinfo=UTC)
    assert e.date_flag == "placeholder"


def test_every_enron_message_parses_without_error(enron_dir: Path) -> None:
    paths = sorted((enron_dir / "maildir").rglob("*.eml"))
    assert len(paths) == 6446
    empty_sender = 0
    for path in paths:
        e = parse_email(path.read_bytes(), source=str(path))
        assert e.message_id and e.mailbox and e.folder
        assert e.date is None or e.date.tzinfo is UTC
        empty_sender += not e.sender
    assert empty_sender == 0


# --- headers ---------------------------------------------------------------------------------
def test_message_id_loses_its_angle_brackets() -> None:
    assert parse_email(msg(BASIC)).message_id == "123.456.JavaMail.evans@thyme"


def test_missing_message_id_is_synthesised_from_the_raw_bytes() -> None:
    raw = msg("From: a@b.com\nSubject: x")
    e = parse_email(raw)
    assert e.message_id.startswith("sha256:") and len(e.message_id) == 7 + 64
    assert parse_email(raw).message_id == e.message_id


def test_date_is_converted_to_aware_utc() -> None:
    e = parse_email(msg(BASIC))
    assert e.date == datetime(2000, 12, 12, 12, 58, tzinfo=UTC)
    assert e.date_flag is None


@pytest.mark.parametrize(
    ("date_line", "flag"),
    [
        ("", "missing"),
        ("Date: \n", "missing"),
        ("Date: next Tuesday-ish\n", "unparseable"),
        ("Date: Mon, 31 Dec 1979 16:00:00 -0800\n", "placeholder"),
    ],
)
def test_bad_dates_are_flagged_not_fatal(date_line: str, flag: str) -> None:
    e = parse_email(msg(date_line + "From: a@b.com\nSubject: s"))
    assert e.date_flag == flag
    assert (e.date is None) == (flag != "placeholder")
    if flag == "unparseable":
        assert any("Date" in d for d in e.defects)


def test_dates_in_other_formats_fall_back_to_the_stdlib_parser() -> None:
    e = parse_email(msg("Date: 1 Jun 2001 10:00:00 EDT\nFrom: a@b.com"))
    assert e.date == datetime(2001, 6, 1, 14, 0, tzinfo=UTC)
    e = parse_email(msg("Date: Fri, 01 Jun 2001 10:00:00 -0000\nFrom: a@b.com"))
    assert e.date == datetime(2001, 6, 1, 10, 0, tzinfo=UTC)


def test_sender_address_is_lower_cased_and_display_name_decoded() -> None:
    e = parse_email(msg('From: "=?utf-8?q?J=C3=B6rg_M=C3=BCller?=" <Joerg.Mueller@Example.COM>'))
    assert (e.sender, e.sender_name) == ("joerg.mueller@example.com", "Jörg Müller")


def test_sender_name_falls_back_to_enron_x_from() -> None:
    e = parse_email(msg(BASIC + "\nX-From: Davis, Pete </O=ENRON/OU=NA/CN=RECIPIENTS/CN=PDAVIS1>"))
    assert e.sender_name == "Davis, Pete"


def test_from_without_an_address_keeps_the_name_and_notes_it() -> None:
    e = parse_email(msg("From: Dean, Clint\nSubject: s"))
    assert (e.sender, e.sender_name) == ("", "Dean, Clint")
    assert "From header has no address" in e.defects


def test_recipient_lists_handle_enron_and_outlook_forms() -> None:
    e = parse_email(
        msg(
            "From: a@b.com\n"
            'To: e-mail <.john@enron.com>, "Doe, Jane" <Jane.Doe@X.com>,\n'
            "\t'quoted@y.com', undisclosed-recipients:;\n"
            "Cc: o'brien@z.com, Plain@Z.com, \n"
            "\tsecond.line@z.com\n"
            "Bcc: Name Only"
        )
    )
    assert e.to == [".john@enron.com", "jane.doe@x.com", "quoted@y.com"]
    assert e.cc == ["o'brien@z.com", "plain@z.com", "second.line@z.com"]
    assert e.bcc == []


def test_missing_recipient_headers_give_empty_lists() -> None:
    e = parse_email(msg("From: a@b.com\nSubject: s"))
    assert (e.to, e.cc, e.bcc) == ([], [], [])


def test_subject_is_decoded_and_whitespace_collapsed() -> None:
    e = parse_email(msg("From: a@b.com\nSubject: =?iso-8859-1?q?Caf=E9?=   au\n\tlait  "))
    assert e.subject == "Café au lait"


def test_reply_ids_lose_angle_brackets() -> None:
    e = parse_email(msg("From: a@b.com\nIn-Reply-To: <p2@x>\nReferences: <r1@x>\n <p2@x>"))
    assert e.in_reply_to == "p2@x"
    assert e.references == ["r1@x", "p2@x"]


def test_mailbox_and_folder_come_from_arguments_before_x_headers() -> None:
    raw = msg(BASIC + "\nX-Folder: \\ExMerge - Dean, Craig\\Inbox\nX-Origin: DEAN-C")
    assert (parse_email(raw).mailbox, parse_email(raw).folder) == ("dean-c", "inbox")
    e = parse_email(raw, mailbox="me", folder="archive/2001")
    assert (e.mailbox, e.folder) == ("me", "archive/2001")


def test_crlf_messages_parse_like_lf_messages() -> None:
    e = parse_email(msg(BASIC, "line one\nline two\n", crlf=True))
    assert e.subject == "RE: This weekend"
    assert e.body == "line one\nline two\n"


def test_header_block_without_blank_line_reads_the_rest_as_body() -> None:
    e = parse_email(b"From: a@b.com\nSubject: s\nthis is the body\nmore")
    assert e.body == "this is the body\nmore"
    assert any("not a header" in d or "blank line" in d for d in e.defects)


def test_mbox_envelope_line_is_skipped() -> None:
    e = parse_email(b"From a@b.com Mon Jan  1 00:00:00 2001\n" + msg(BASIC))
    assert e.sender == "clint.dean@enron.com"


# --- bodies ---------------------------------------------------------------------------------
def test_quoted_printable_body_is_decoded() -> None:
    e = parse_email(
        msg(
            "From: a@b.com\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: quoted-printable",
            b"Gr=C3=BC=C3=9Fe, soft=\nbreak =3D done\n",
        )
    )
    assert e.body == "Grüße, softbreak = done\n"
    assert e.charset == "utf-8"


def test_base64_body_is_decoded() -> None:
    e = parse_email(
        msg(
            "From: a@b.com\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64",
            base64.encodebytes("Héllo\r\nwörld".encode()),
        )
    )
    assert e.body == "Héllo\nwörld"


def test_lying_charset_falls_back_to_cp1252_and_notes_it() -> None:
    e = parse_email(
        msg(
            "From: a@b.com\nContent-Type: text/plain; charset=us-ascii",
            b"caf\xe9 \x93quoted\x94",
        )
    )
    assert e.body == "café “quoted”"
    assert e.charset == "cp1252"
    assert any("cp1252" in d for d in e.defects)


def test_unknown_charset_is_noted_and_body_still_decoded() -> None:
    e = parse_email(msg("From: a@b.com\nContent-Type: text/plain; charset=x-klingon", b"qapla\xe9"))
    assert e.body.startswith("qapla")
    assert any("x-klingon" in d for d in e.defects)


MULTIPART = b"""\
From: a@b.com
Subject: report
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

This is a multi-part message in MIME format.
--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain; charset=utf-8

Plain wins.
--inner
Content-Type: text/html

<p>HTML loses</p>
--inner--
--outer
Content-Type: application/pdf; name="ignored.pdf"
Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--outer
Content-Type: image/png
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--outer--
"""


def test_multipart_prefers_text_plain_and_lists_attachments() -> None:
    e = parse_email(MULTIPART)
    assert e.body == "Plain wins."
    assert e.attachments == ["résumé.pdf", "(unnamed image/png)"]
    assert e.defects == []


def test_html_only_mail_becomes_readable_text() -> None:
    e = parse_email(
        msg(
            "From: a@b.com\nContent-Type: text/html; charset=iso-8859-1",
            b"<html><head><style>p {color: red}</style></head><body><p>Hi&nbsp;there &amp; you</p>"
            b"<script>alert('x')</script><div>Caf\xe9</div>line<br>break</body></html>",
        )
    )
    assert e.body == "Hi there & you\n\nCafé\nline\nbreak"


@pytest.mark.parametrize(
    "html",
    [b"<?" * 1_000_000, b"</" * 1_000_000, b"<![x>" * 300_000, b"<!--" * 500_000, b"<" * 3_000_000],
    ids=["pi", "endtag", "marked-section", "comments", "lt"],
)
def test_hostile_html_is_converted_in_bounded_time(html: bytes) -> None:
    start = time.perf_counter()
    e = parse_email(msg("From: a@b.com\nContent-Type: text/html", html))
    assert time.perf_counter() - start < 5
    assert any("HTML body over" in d for d in e.defects)


def test_forwarded_message_attachment_is_inlined_as_forwarded_text() -> None:
    raw = (
        b"From: a@b.com\nSubject: Fwd: hi\nContent-Type: multipart/mixed; boundary=B\n\n"
        b"--B\nContent-Type: text/plain\n\nsee below\n"
        b"--B\nContent-Type: message/rfc822\n\nFrom: c@d.com\nSubject: hi\n\ninner text\n--B--\n"
    )
    e = parse_email(raw)
    assert e.new_text == "see below"
    assert "From: c@d.com" in e.forwarded and "inner text" in e.forwarded


def test_huge_plain_body_is_truncated_quickly_with_a_defect() -> None:
    raw = msg(BASIC, b"x" * 79 + b"\n") + (b"y" * 79 + b"\n") * (50 * 1024 * 1024 // 80)
    start = time.perf_counter()
    e = parse_email(raw)
    assert time.perf_counter() - start < 5
    assert len(e.body) == 2_000_000
    assert any("truncated" in d for d in e.defects)


def test_huge_base64_attachment_is_skipped_not_decoded() -> None:
    blob = base64.encodebytes(b"\x00" * (30 * 1024 * 1024))
    raw = (
        b"From: a@b.com\nContent-Type: multipart/mixed; boundary=B\n\n--B\n"
        b"Content-Type: text/plain\n\nsee attached\n--B\n"
        b"Content-Type: application/octet-stream; name=big.bin\n"
        b"Content-Transfer-Encoding: base64\n\n" + blob + b"\n--B--\n"
    )
    start = time.perf_counter()
    e = parse_email(raw)
    assert time.perf_counter() - start < 5
    assert (e.body, e.attachments) == ("see attached", ["big.bin"])


# --- not a message --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty message"),
        (b"  \r\n\r\n ", "empty message"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
        (b"just some text\nwith lines\n", "no header lines found"),
        (b"\n\nFrom: a@b.com\n", "no header lines found"),
        (b"note: remember the milk\n\nand eggs", "no standard header"),
        (b"xx", "no header lines found"),
    ],
)
def test_non_messages_raise_email_parse_error_saying_why(raw: bytes, why: str) -> None:
    with pytest.raises(EmailParseError) as info:
        parse_email(raw, source="box/1.eml")
    assert why in str(info.value)
    assert "box/1.eml" in str(info.value)


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(EmailParseError, match="bytes"):
        parse_email("From: a@b.com\n\nhi")  # type: ignore[arg-type]


def test_truncated_header_only_message_still_parses() -> None:
    e = parse_email(b"From: a@b.com\nSubject: cut off mid-wa")
    assert e.subject == "cut off mid-wa"
    assert e.body == ""
    assert any("no body" in d for d in e.defects)


# --- normalize_subject ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("RE: Fw: FWD: re:Gas  Prices", "gas prices"),
        ("AW: WG: Angebot", "angebot"),
        ("[enron-list] Re: [EXT] Deal  \t ticket", "deal ticket"),
        ("Re[2]: Budget", "budget"),
        ("Start Date: 2/7/02; HourAhead hour: 5;", "start date: 2/7/02; hourahead hour: 5;"),
        ("Recap of today", "recap of today"),
        ("", ""),
    ],
)
def test_normalize_subject_strips_reply_prefixes_and_tags(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected
