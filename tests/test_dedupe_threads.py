"""Deduplication (content groups) and threads, on literal messages and real Enron mail."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from emailwb.mail.dedupe import pairwise_precision_recall
from emailwb.store.ingest import ingest


def mail(
    mid: str, *, subject: str, sender: str, to: str, date: str, body: str, headers: str = ""
) -> bytes:
    return (
        f"Message-ID: <{mid}>\nDate: {date}\nFrom: {sender}\nTo: {to}\n"
        f"Subject: {subject}\n{headers}\n{body}"
    ).encode()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def copy_enron(enron_dir: Path, dest: Path, *paths: str) -> None:
    for rel in paths:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(enron_dir / rel, target)


def group_of(store, path_end: str) -> int:
    return store.scalar("SELECT group_id FROM emails WHERE source LIKE ?", (f"%{path_end}",))


def thread_of(store, path_end: str) -> int:
    return store.scalar("SELECT thread_id FROM emails WHERE source LIKE ?", (f"%{path_end}",))


# --- pairwise precision / recall ------------------------------------------------------------
def test_pairwise_scores_count_pairs_through_group_sizes():
    truth = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 3}
    assert pairwise_precision_recall(truth, truth) == (1.0, 1.0)
    # a,b together (1 right pair), c alone: recall 1/3; d,e wrongly together: precision 1/2
    pred = {"a": "x", "b": "x", "c": "y", "d": "z", "e": "z"}
    assert pairwise_precision_recall(pred, truth) == (0.5, 1 / 3)
    # everything alone claims nothing: precision 1, recall 0; a missing item stands alone
    assert pairwise_precision_recall({}, truth) == (1.0, 0.0)


# --- deduplication ------------------------------------------------------------------------------
DELAINEY_COPIES = [  # one message filed four times (MANIFEST content_group 2500)
    "maildir/delainey-d/all_documents/385.eml",
    "maildir/delainey-d/_sent_mail/354.eml",
    "maildir/delainey-d/discussion_threads/305.eml",
    "maildir/delainey-d/sent/355.eml",
]


def test_copies_across_folders_share_one_group_with_a_non_catch_all_canonical(
    store, enron_dir, tmp_path
):
    copy_enron(enron_dir, tmp_path, *DELAINEY_COPIES)
    summary = ingest(store, [tmp_path / "maildir"], progress=False, workers=0)
    assert (summary.messages_new, summary.content_groups) == (4, 1)
    group = store.query_one(
        "SELECT g.size, e.source FROM content_groups g JOIN emails e ON e.id = g.canonical_email_id"
    )
    assert group["size"] == 4
    assert group["source"].endswith("delainey-d/sent/355.eml")  # not all_documents; shortest


def test_a_new_copy_joins_its_existing_group_on_a_later_ingest(store, enron_dir, tmp_path):
    copy_enron(enron_dir, tmp_path, DELAINEY_COPIES[0])
    ingest(store, [tmp_path / "maildir"], progress=False, workers=0)
    first = group_of(store, "385.eml")
    assert store.scalar("SELECT canonical_email_id FROM content_groups") is not None
    copy_enron(enron_dir, tmp_path, *DELAINEY_COPIES[1:])
    summary = ingest(store, [tmp_path / "maildir"], progress=False, workers=0)
    assert (summary.messages_new, summary.sources_skipped) == (3, 1)
    assert {
        group_of(store, p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1]) for p in DELAINEY_COPIES
    } == {first}
    group = store.query_one(
        "SELECT g.size, e.source FROM content_groups g JOIN emails e ON e.id = g.canonical_email_id"
    )
    assert group["size"] == 4 and group["source"].endswith("sent/355.eml")


def test_same_text_from_another_sender_or_time_is_another_message(store, tmp_path):
    base = {"subject": "Status", "to": "b@x.com", "body": "All good.\n"}
    write(
        tmp_path / "1.eml",
        mail("1@x", sender="a@x.com", date="Mon, 1 Jan 2001 10:00:00 +0000", **base),
    )
    write(
        tmp_path / "2.eml",
        mail(
            "2@x",
            sender="a@x.com",
            date="Mon, 1 Jan 2001 11:00:00 +0100",
            **base | {"body": "All   good.\r\n\n"},
        ),
    )  # same instant
    write(
        tmp_path / "3.eml",
        mail("3@x", sender="c@x.com", date="Mon, 1 Jan 2001 10:00:00 +0000", **base),
    )
    write(
        tmp_path / "4.eml",
        mail("4@x", sender="a@x.com", date="Tue, 2 Jan 2001 10:00:00 +0000", **base),
    )
    ingest(store, [tmp_path], progress=False, workers=0)
    assert group_of(store, "/1.eml") == group_of(store, "/2.eml")
    assert len({group_of(store, f"/{n}.eml") for n in (1, 3, 4)}) == 3


# --- threads ---------------------------------------------------------------------------------------
def test_a_real_enron_reply_is_threaded_with_its_original(store, enron_dir, tmp_path):
    # Erin Williams -> Clint Dean "e-mail address"; his "Re: e-mail address" 3 hours later
    original, reply = "maildir/dean-c/notes_inbox/74.eml", "maildir/dean-c/sent/4.eml"
    unrelated = "maildir/dean-c/notes_inbox/158.eml"
    copy_enron(enron_dir, tmp_path, original, reply, unrelated)
    summary = ingest(store, [tmp_path / "maildir"], progress=False, workers=0)
    assert summary.threads == 2
    assert thread_of(store, "notes_inbox/74.eml") == thread_of(store, "sent/4.eml")
    assert thread_of(store, "notes_inbox/158.eml") != thread_of(store, "sent/4.eml")
    t = store.query_one("SELECT * FROM threads WHERE id = ?", (thread_of(store, "sent/4.eml"),))
    assert (t["subject"], t["size"]) == ("e-mail address", 2)
    assert t["first_date"] < t["last_date"]
    root = store.scalar("SELECT source FROM emails WHERE id = ?", (t["root_email_id"],))
    assert root.endswith("notes_inbox/74.eml")


def test_a_reply_arriving_later_joins_the_existing_thread_and_keeps_its_id(
    store, enron_dir, tmp_path
):
    copy_enron(enron_dir, tmp_path, "maildir/dean-c/notes_inbox/74.eml")
    ingest(store, [tmp_path / "maildir"], progress=False, workers=0)
    before = thread_of(store, "notes_inbox/74.eml")
    copy_enron(enron_dir, tmp_path, "maildir/dean-c/sent/4.eml")
    summary = ingest(store, [tmp_path / "maildir"], progress=False, workers=0)
    assert summary.threads == 1
    assert thread_of(store, "sent/4.eml") == thread_of(store, "notes_inbox/74.eml") == before
    assert store.scalar("SELECT COUNT(*) FROM threads") == 1


def test_references_link_messages_whatever_their_subjects(store, tmp_path):
    day = "Mon, 1 Jan 2001 10:00:00 +0000"
    write(
        tmp_path / "1.eml",
        mail(
            "root@x",
            subject="Q3 numbers",
            sender="a@x.com",
            to="b@x.com",
            date=day,
            body="Numbers attached.\n",
        ),
    )
    write(
        tmp_path / "2.eml",
        mail(
            "child@x",
            subject="something else",
            sender="z@y.com",
            to="q@y.com",
            date="Mon, 1 Oct 2001 10:00:00 +0000",
            body="See below.\n",
            headers="In-Reply-To: <root@x>\n",
        ),
    )
    write(
        tmp_path / "3.eml",
        mail(
            "grandchild@x",
            subject="hi",
            sender="q@y.com",
            to="w@y.com",
            date=day,
            body="ok\n",
            headers="References: <root@x> <child@x>\n",
        ),
    )
    ingest(store, [tmp_path], progress=False, workers=0)
    assert len({thread_of(store, f"/{n}.eml") for n in (1, 2, 3)}) == 1


@pytest.mark.parametrize("case", ["generic subject", "no shared person", "too late", "no Re:"])
def test_subject_alone_does_not_link(store, tmp_path, case):
    subject, to2, date2, subject2 = "Gas storage report", "a@x.com", "Tue, 2 Jan 2001", None
    if case == "generic subject":
        subject = "FYI"
    elif case == "no shared person":
        to2 = "m@y.com"
    elif case == "too late":
        date2 = "Mon, 5 Mar 2001"
    elif case == "no Re:":
        subject2 = subject
    write(
        tmp_path / "1.eml",
        mail(
            "1@x",
            subject=subject,
            sender="a@x.com",
            to="b@x.com",
            date="Mon, 1 Jan 2001 10:00:00 +0000",
            body="first\n",
        ),
    )
    sender2 = "b@x.com" if case != "no shared person" else "k@y.com"
    write(
        tmp_path / "2.eml",
        mail(
            "2@x",
            subject=subject2 or f"Re: {subject}",
            sender=sender2,
            to=to2,
            date=f"{date2} 10:00:00 +0000",
            body="second\n",
        ),
    )
    ingest(store, [tmp_path], progress=False, workers=0)
    assert thread_of(store, "/1.eml") != thread_of(store, "/2.eml")


# --- the whole Enron dev set --------------------------------------------------------------------
@pytest.mark.slow
def test_whole_enron_set_ingests_without_errors_and_groups_like_the_manifest(
    store, enron_dir, capsys
):
    summary = ingest(store, [enron_dir], progress=False)  # README and MANIFEST are ignored
    with open(enron_dir / "MANIFEST.tsv", newline="") as f:
        truth = {row["path"]: row["content_group"] for row in csv.DictReader(f, delimiter="\t")}
    pred = {
        os.path.relpath(r[0], enron_dir): r[1]
        for r in store.query("SELECT source, group_id FROM emails")
    }
    precision, recall = pairwise_precision_recall(pred, truth)
    stats = store.stats()
    with capsys.disabled():
        print(
            f"\nEnron: {stats['messages']:,} messages, {stats['ingest_errors']} errors,"
            f" {stats['content_groups']:,} content groups, pairwise precision"
            f" {precision:.4f} recall {recall:.4f}, {stats['threads']:,} threads"
            f" ({summary.seconds:.1f} s)"
        )
    assert (stats["messages"], stats["ingest_errors"], summary.errors) == (6446, 0, 0)
    assert precision >= 0.99 and recall >= 0.99
    assert 0 < stats["threads"] < stats["content_groups"]
    assert (
        store.scalar("SELECT COUNT(*) FROM emails WHERE group_id IS NULL OR thread_id IS NULL") == 0
    )
    assert store.scalar("SELECT SUM(size) FROM threads") == stats["content_groups"]
    assert store.scalar("SELECT SUM(size) FROM content_groups") == stats["messages"]
    again = ingest(store, [enron_dir], progress=False)
    assert (again.messages_new, again.sources_skipped) == (0, 6446)
