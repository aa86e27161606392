"""Bad input at ingest level: each case lands in ingest_errors with its path, an actionable
reason and its first 64 KiB; the ingest never stops and never loses a good message."""

from __future__ import annotations

import base64
import io
import mailbox
import os
import random
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailwb.mail.message import EmailParseError, parse_email
from emailwb.mail.sources import HEAD_BYTES, iter_mbox, parse_message
from emailwb.store.ingest import ingest

GOOD = (
    b"Message-ID: <good-%d@example.com>\nDate: Mon, 1 Jan 2001 10:00:00 +0000\n"
    b"From: alice@example.com\nTo: bob@example.com\nSubject: Good %d\n\nAll fine.\n"
)


def good(n: int) -> bytes:
    return GOOD % (n, n)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def errors(store) -> dict[str, dict]:
    return {Path(r["source"]).name: dict(r) for r in store.query("SELECT * FROM ingest_errors")}


def run(store, tmp_path: Path, bad_name: str, bad: bytes, **kw):
    """Ingest one bad file between two good ones; the good ones must always be stored."""
    write(tmp_path / "box" / "1.eml", good(1))
    path = write(tmp_path / "box" / bad_name, bad)
    write(tmp_path / "box" / "3.eml", good(3))
    summary = ingest(store, [tmp_path / "box"], progress=False, workers=0, **kw)
    stored = {r[0] for r in store.query("SELECT message_id FROM emails")}
    assert {"good-1@example.com", "good-3@example.com"} <= stored
    return summary, path


def test_a_file_that_is_not_an_email(store, tmp_path):
    summary, path = run(store, tmp_path, "notes.txt", b"Shopping list\nmilk\neggs\n")
    err = errors(store)["notes.txt"]
    assert (summary.messages_new, summary.errors) == (2, 1)
    assert err["source"] == str(path)
    assert "not an RFC 822 message" in err["reason"] and "fix or remove" in err["reason"]
    assert err["raw_head"] == b"Shopping list\nmilk\neggs\n"


def test_binary_junk(store, tmp_path):
    junk = os.urandom(4096) + b"\x00" * 16
    summary, _ = run(store, tmp_path, "image.jpg", junk)
    err = errors(store)["image.jpg"]
    assert summary.errors == 1 and "binary data" in err["reason"]
    assert err["raw_head"] == junk and err["size"] == len(junk)


def test_binary_junk_with_an_early_blank_line_is_still_named_binary(store, tmp_path):
    # CI caught this once: random bytes held "\n\n" early, so the "header block" was a few bytes
    # without a NUL and the error blamed missing headers instead of binary data.
    rng = random.Random(7)
    junk = bytes([0x8F, 0x01, 0xC3]) + b"\n\n" + bytes(rng.randrange(256) for _ in range(4096))
    summary, _ = run(store, tmp_path, "image.jpg", junk)
    assert summary.errors == 1 and "binary data" in errors(store)["image.jpg"]["reason"]


def test_random_binary_files_are_always_named_binary():
    rng = random.Random(11)
    for _ in range(300):
        junk = bytes(rng.randrange(256) for _ in range(600))
        cut = rng.randrange(0, 40)
        junk = junk[:cut] + b"\r\n\r\n" + junk[cut:]
        with pytest.raises(EmailParseError, match="binary data"):
            parse_email(junk)


def test_headers_cut_in_the_first_line_are_an_error(store, tmp_path):
    summary, _ = run(store, tmp_path, "cut.eml", b"Mess")
    assert summary.errors == 1 and "no header lines" in errors(store)["cut.eml"]["reason"]


def test_truncated_headers_keep_the_message_and_report_it(store, tmp_path):
    raw = (
        b"Message-ID: <cut@example.com>\nDate: Mon, 1 Jan 2001 10:00:00 +0000\n"
        b"From: carol@example.com\nSubj"
    )
    summary, _ = run(store, tmp_path, "cut.eml", raw)
    assert (summary.messages_new, summary.errors, summary.warnings) == (3, 0, 1)
    assert store.scalar("SELECT sender FROM emails WHERE message_id = 'cut@example.com'") == (
        "carol@example.com"
    )
    reason = errors(store)["cut.eml"]["reason"]
    assert reason.startswith("stored with defects") and "no blank line" in reason


@pytest.mark.parametrize(
    "charset, body, note",
    [
        ("x-klingon", "café".encode("latin-1"), "unknown charset 'x-klingon'"),
        ("us-ascii", "naïve café".encode(), "body is not valid 'us-ascii'"),
    ],
)
def test_unknown_or_lying_charset_keeps_a_decoded_message(store, tmp_path, charset, body, note):
    raw = (
        b"Message-ID: <cs@example.com>\nFrom: dan@example.com\nSubject: menu\n"
        b"Content-Type: text/plain; charset=" + charset.encode() + b"\n\n" + body
    )
    summary, _ = run(store, tmp_path, "cs.eml", raw)
    assert (summary.errors, summary.warnings) == (0, 1)
    text = store.scalar("SELECT body FROM emails WHERE message_id = 'cs@example.com'")
    assert text.startswith(("caf", "na"))
    assert note in errors(store)["cs.eml"]["reason"]


def test_an_unreadable_file(store, tmp_path):
    write(tmp_path / "box" / "1.eml", good(1))
    (tmp_path / "box" / "2.eml").symlink_to(tmp_path / "gone.eml")  # dangling: cannot be read
    summary = ingest(store, [tmp_path / "box"], progress=False, workers=0)
    err = errors(store)["2.eml"]
    assert (summary.messages_new, summary.errors) == (1, 1)
    assert "cannot read the file" in err["reason"] and "readable" in err["reason"]
    # not remembered as ingested: once readable it is read on the next run
    assert store.scalar("SELECT COUNT(*) FROM sources WHERE path LIKE '%2.eml'") == 0
    again = ingest(store, [tmp_path / "box"], progress=False, workers=0)
    assert again.errors == 1 and store.stats()["ingest_errors"] == 1  # not recorded twice
    write(tmp_path / "gone.eml", good(2))
    ingest(store, [tmp_path / "box"], progress=False, workers=0)
    assert store.stats()["messages"] == 2 and store.stats()["ingest_errors"] == 0


def test_a_50_mb_message_is_refused_with_its_head_kept(store, tmp_path):
    big = good(2) + b"x" * (50 * 1024 * 1024)
    summary, _ = run(store, tmp_path, "huge.eml", big)
    err = errors(store)["huge.eml"]
    assert (summary.messages_new, summary.errors) == (2, 1)
    assert "50.0 MB, over the 25.0 MB limit" in err["reason"]
    assert "max_message_bytes" in err["reason"]
    assert err["size"] == len(big) and err["raw_head"] == big[:HEAD_BYTES]


def test_a_huge_base64_text_part_is_stored_truncated_and_reported(store, tmp_path):
    text = base64.encodebytes(b"meter reading 42\n" * 700_000)  # 12 MB decoded, 16 MB encoded
    raw = (
        b"Message-ID: <b64@example.com>\nFrom: eve@example.com\nSubject: readings\n"
        b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n" + text
    )
    summary, _ = run(store, tmp_path, "b64.eml", raw)
    assert (summary.errors, summary.warnings) == (0, 1)
    row = store.query_one(
        "SELECT e.body_chars, r.size FROM emails e JOIN raw_messages r"
        " ON r.id = e.raw_id WHERE e.message_id = 'b64@example.com'"
    )
    assert row["body_chars"] <= 2_000_000 and row["size"] == len(raw)  # raw kept whole
    assert "truncated" in errors(store)["b64.eml"]["reason"]


def test_a_huge_base64_attachment_is_a_good_message(store, tmp_path):
    blob = base64.encodebytes(os.urandom(9 * 1024 * 1024))
    raw = (
        b"Message-ID: <att@example.com>\nFrom: eve@example.com\nSubject: model\n"
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n--XX\n"
        b"Content-Type: text/plain\n\nModel attached.\n--XX\n"
        b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename=model.xls\n\n" + blob + b"--XX--\n"
    )
    summary, _ = run(store, tmp_path, "att.eml", raw)
    assert (summary.messages_new, summary.errors, summary.warnings) == (3, 0, 0)
    assert store.scalar("SELECT body FROM emails WHERE message_id = 'att@example.com'") == (
        "Model attached."
    )


def test_a_csv_without_a_raw_message_column(store, tmp_path):
    path = tmp_path / "box" / "export.csv"
    path.parent.mkdir()
    pl.DataFrame({"file": ["a/1."], "text": ["hello"]}).write_csv(path)
    summary, _ = run(store, tmp_path, "export.csv", path.read_bytes())
    reason = errors(store)["export.csv"]["reason"]
    assert summary.errors == 1
    assert "no raw message column" in reason and "file, text" in reason and "column=" in reason
    # not remembered: after fixing the call (column=...) the file is read
    summary = ingest(store, [path], progress=False, workers=0, column="text")
    assert summary.sources_skipped == 0 and summary.errors == 1  # "hello" is not an email


def test_a_corrupt_parquet_file(store, tmp_path):
    buf = io.BytesIO()
    pl.DataFrame({"message": [good(n).decode() for n in range(10, 20)]}).write_parquet(buf)
    data = buf.getvalue()
    summary, _ = run(store, tmp_path, "dump.parquet", data[: len(data) // 2] + b"\x00" * 64)
    reason = errors(store)["dump.parquet"]["reason"]
    assert summary.errors == 1
    assert reason.startswith("cannot read this Parquet file") and "valid Parquet" in reason


def test_bad_messages_inside_an_mbox_are_numbered_and_the_rest_kept(store, tmp_path):
    path = tmp_path / "mixed.mbox"
    box = mailbox.mbox(path)
    for msg in (good(1), b"\x00\x01\x02 junk", good(3), good(4) + b"y" * 3000):
        box.add(msg)
    box.flush()
    box.close()
    summary = ingest(store, [path], progress=False, workers=0, max_message_bytes=2000)
    reasons = {r["source"]: r["reason"] for r in store.query("SELECT * FROM ingest_errors")}
    assert (summary.messages_new, summary.errors) == (2, 2)
    assert "binary data" in reasons[f"{path}#2"]
    assert "over the" in reasons[f"{path}#4"]


def test_a_huge_mbox_message_is_streamed_not_loaded():
    raw = b"From x Mon Jan  1 10:00:00 2001\n" + good(1) + b"z" * 5_000_000 + b"\n"
    ((n, head, size),) = list(iter_mbox(io.BytesIO(raw), max_bytes=1_000_000))
    assert n == 1 and size > 5_000_000 and len(head) <= HEAD_BYTES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.tuples(st.integers(0, 200), st.binary(min_size=1, max_size=40)).map(
            lambda m: good(7)[: m[0]] + m[1] + good(7)[m[0] :]
        ),
    )
)
def test_any_bytes_give_a_row_or_an_error_record_never_an_exception(data):
    result = parse_message(data, "fuzz.eml")
    assert result[0] in ("ok", "err")
    if result[0] == "err":
        assert result[1] == "fuzz.eml" and result[2] and len(result[6]) <= HEAD_BYTES
