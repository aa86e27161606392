"""Ingest: every input format, idempotence, incremental runs, the summary."""

from __future__ import annotations

import mailbox
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from emailwb.errors import InputError
from emailwb.mail.sources import iter_mbox
from emailwb.store.ingest import ingest


def mail(
    n: int,
    *,
    subject: str = "Pipeline capacity",
    sender: str = "alice@example.com",
    to: str = "bob@example.com",
    body: str | None = None,
    headers: str = "",
) -> bytes:
    body = body if body is not None else f"Message number {n}.\nThanks,\nAlice\n"
    return (
        f"Message-ID: <{n}.test@example.com>\n"
        f"Date: Mon, {n % 28 + 1} Jan 2001 10:00:00 -0800\n"
        f"From: {sender}\nTo: {to}\nSubject: {subject}\n{headers}"
        "Content-Type: text/plain; charset=us-ascii\n\n"
        f"{body}"
    ).encode()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def count(store, sql: str, params: tuple = ()) -> int:
    return store.scalar(sql, params)


def test_folder_of_eml_files_is_ingested_with_every_field(store, tmp_path):
    folder = tmp_path / "export"
    write(
        folder / "a.eml",
        mail(1, subject="RE: Pipeline capacity", to="bob@example.com, Carol <carol@example.com>"),
    )
    write(folder / "b.eml", mail(2, subject="Gas prices"))
    summary = ingest(store, [folder], progress=False, workers=0)
    assert (summary.files_seen, summary.messages_new, summary.errors) == (2, 2, 0)
    row = store.query_one("SELECT * FROM emails WHERE message_id = '1.test@example.com'")
    assert row["sender"] == "alice@example.com"
    assert row["to_addrs"] == '["bob@example.com", "carol@example.com"]'
    assert row["norm_subject"] == "pipeline capacity"
    assert row["date"].startswith("2001-01-02T18:00:00")
    assert row["source"] == str(folder / "a.eml")
    assert row["mailbox"] == "export"
    assert row["group_id"] is not None and row["thread_id"] is not None
    raw = store.scalar("SELECT raw FROM raw_messages WHERE id = ?", (row["raw_id"],))
    assert raw == (folder / "a.eml").read_bytes()
    assert count(store, "SELECT COUNT(*) FROM sources WHERE kind = 'eml'") == 2


def test_maildir_tree_reads_numbered_files_and_cur_new_but_not_tmp(store, tmp_path):
    root = tmp_path / "maildir" / "dean-c"
    write(root / "inbox" / "1.", mail(1))
    write(root / "inbox" / "2", mail(2))
    write(root / "archive" / "cur" / "1204.M1P2.host:2,S", mail(3))
    write(root / "archive" / "new" / "1205.M1P3.host", mail(4))
    write(root / "archive" / "tmp" / "1206.M1P4.host", b"half-delivered")
    write(tmp_path / "maildir" / "dean-c" / "tmp" / "5.", mail(5))  # not a maildir's tmp/
    summary = ingest(store, [tmp_path / "maildir"], progress=False, workers=0)
    assert (summary.messages_new, summary.errors) == (5, 0)
    folders = {(r[0], r[1]) for r in store.query("SELECT mailbox, folder FROM emails")}
    assert folders == {("dean-c", "inbox"), ("dean-c", "archive"), ("dean-c", "tmp")}


def test_maildir_plus_plus_dot_folders_are_walked(store, tmp_path):
    box = tmp_path / "Maildir"
    write(box / "cur" / "1.host:2,S", mail(1))
    write(box / ".Sent" / "cur" / "2.host:2,S", mail(2))
    write(box / ".git" / "HEAD", b"ref: refs/heads/main\n")
    summary = ingest(store, [box], progress=False, workers=0)
    assert (summary.messages_new, summary.errors) == (2, 0)
    assert {r[0] for r in store.query("SELECT folder FROM emails")} == {"", "Sent"}


def test_readme_manifest_and_databases_next_to_mail_are_ignored_not_errors(store, tmp_path):
    # tmp_path also holds the store's emailwb.sqlite, -wal and -shm files
    write(tmp_path / "README.md", b"# my export\n")
    write(tmp_path / "MANIFEST.tsv", b"path\tsha\n")
    write(tmp_path / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(tmp_path / "mail" / "1.eml", mail(1))
    summary = ingest(store, [tmp_path], progress=False, workers=0)
    assert (summary.messages_new, summary.errors) == (1, 0)
    assert summary.files_ignored >= 4


def test_mbox_file_is_split_into_messages_with_numbered_sources(store, tmp_path):
    path = tmp_path / "archive.mbox"
    box = mailbox.mbox(path)
    for n in range(1, 4):
        box.add(mail(n, body=f"Body {n}\nFrom here on it is fine.\n"))
    box.flush()
    box.close()
    summary = ingest(store, [path], progress=False, workers=0)
    assert (summary.messages_new, summary.errors) == (3, 0)
    rows = store.query("SELECT source, body, mailbox FROM emails ORDER BY id")
    assert [r["source"] for r in rows] == [f"{path}#{n}" for n in (1, 2, 3)]
    assert rows[0]["body"].startswith("Body 1\nFrom here on it is fine.")  # >From unescaped
    assert rows[0]["mailbox"] == "archive"
    assert store.query_one("SELECT kind, messages FROM sources")[:] == ("mbox", 3)


def test_mbox_splitter_streams_and_keeps_bytes_exact():
    import io

    one, two = mail(1).replace(b"\n", b"\r\n"), mail(2)
    data = (
        b"From a@b Mon Jan  1 10:00:00 2001\r\n"
        + one
        + b"\r\n"
        + (b"From b@c Mon Jan  1 10:00:00 2001\n" + two + b"\n")
    )
    out = list(iter_mbox(io.BytesIO(data)))
    assert [(n, raw) for n, raw, _ in out] == [(1, one), (2, two)]


def test_kaggle_style_csv_with_file_and_message_columns(store, tmp_path):
    path = tmp_path / "emails.csv"
    pl.DataFrame(
        {
            "file": ["allen-p/_sent_mail/1.", "allen-p/inbox/7."],
            "message": [mail(1).decode(), mail(2, body='She said "hi", then left.\n').decode()],
        }
    ).write_csv(path)
    summary = ingest(store, [path], progress=False, workers=0)
    assert (summary.messages_new, summary.errors) == (2, 0)
    rows = store.query("SELECT source, mailbox, folder, body FROM emails ORDER BY id")
    assert [r["source"] for r in rows] == [f"{path}#1", f"{path}#2"]
    assert [(r["mailbox"], r["folder"]) for r in rows] == [
        ("allen-p", "_sent_mail"),
        ("allen-p", "inbox"),
    ]
    assert rows[1]["body"].startswith('She said "hi", then left.')


def test_csv_raw_column_can_be_named_explicitly(store, tmp_path):
    path = tmp_path / "dump.csv"
    pl.DataFrame({"id": [1], "rfc": [mail(1).decode()]}).write_csv(path)
    summary = ingest(store, [path], progress=False, workers=0, column="rfc")
    assert (summary.messages_new, summary.errors) == (1, 0)


def test_parquet_with_a_raw_column_of_bytes(store, tmp_path):
    path = tmp_path / "dump.parquet"
    pl.DataFrame({"raw": [mail(n) for n in range(1, 6)]}).write_parquet(path, row_group_size=2)
    summary = ingest(store, [path], progress=False, workers=0)
    assert (summary.messages_new, summary.errors) == (5, 0)
    assert count(store, "SELECT COUNT(*) FROM sources WHERE kind = 'parquet'") == 1


def test_ingesting_the_same_mailbox_twice_adds_nothing(store, tmp_path):
    for n in range(1, 4):
        write(tmp_path / "box" / f"{n}.eml", mail(n))
    first = ingest(store, [tmp_path / "box"], progress=False, workers=0)
    before = store.stats()
    second = ingest(store, [tmp_path / "box"], progress=False, workers=0)
    assert first.messages_new == 3
    assert (second.messages_new, second.sources_skipped, second.messages_seen) == (0, 3, 0)
    assert store.stats() == before


def test_touched_or_copied_files_are_read_again_but_add_nothing(store, tmp_path):
    box = tmp_path / "box"
    for n in range(1, 4):
        write(box / f"{n}.eml", mail(n))
    ingest(store, [box], progress=False, workers=0)
    os.utime(box / "1.eml", (1, 1))
    shutil.copytree(box, tmp_path / "moved")
    again = ingest(store, [box, tmp_path / "moved"], progress=False, workers=0)
    assert (again.messages_new, again.duplicates_skipped, again.sources_skipped) == (0, 4, 2)
    assert store.stats()["messages"] == 3


def test_new_files_only_are_read_on_the_next_ingest(store, tmp_path):
    box = tmp_path / "box"
    write(box / "1.eml", mail(1))
    ingest(store, [box], progress=False, workers=0)
    write(box / "2.eml", mail(2))
    summary = ingest(store, [box], progress=False, workers=0)
    assert (summary.messages_new, summary.sources_skipped, summary.messages_seen) == (1, 1, 1)
    assert store.stats()["messages"] == 2


def test_missing_path_raises_input_error_naming_it_before_reading_anything(store, tmp_path):
    write(tmp_path / "ok" / "1.eml", mail(1))
    missing = tmp_path / "no-such-box"
    with pytest.raises(InputError, match="no-such-box"):
        ingest(store, [tmp_path / "ok", missing], progress=False, workers=0)
    assert store.stats()["messages"] == 0


def test_summary_reads_as_a_report(store, tmp_path):
    write(tmp_path / "1.eml", mail(1))
    write(tmp_path / "junk.eml", b"\x00\x01garbage")
    text = str(ingest(store, [tmp_path], progress=False, workers=0))
    assert "ingested 1 new messages" in text
    assert "errors (not stored)          1" in text
    assert "1 distinct (content groups), 1 threads" in text


def test_parallel_ingest_gives_the_same_store_as_inline(sample_dir, tmp_path):
    from emailwb.store.database import Store

    answers = []
    for workers in (0, 2):
        with Store(tmp_path / f"w{workers}.sqlite") as store:
            summary = ingest(store, [sample_dir], progress=False, workers=workers)
            rows = store.query(
                "SELECT e.source, e.new_text, g.content_key, e.thread_id"
                " FROM emails e JOIN content_groups g ON g.id = e.group_id"
                " ORDER BY e.id"
            )
            answers.append((summary.messages_new, summary.errors, [tuple(r) for r in rows]))
    assert answers[0] == answers[1]
    assert answers[0][0] >= 300 and answers[0][1] == 0
