"""Ingest: walk mailboxes and put every message parsed, cleaned, deduplicated and threaded
into the store.

Inputs: maildir trees and folders of message files (``<n>.``, ``<n>.eml``, ``cur/``,
``new/``), mbox files, and CSV or Parquet files with a raw RFC 822 column (``message``,
``raw`` or ``email``, or ``column=``; the Kaggle Enron CSV has ``file,message``).

How it scales: files are read once (bytes, hash, parse) by a pool of worker processes that
each return compact row tuples; the main process hands each chunk to the store's single
writer thread, which inserts it with ``executemany`` while the workers parse the next
chunks. Containers are streamed (mbox line by line, CSV/Parquet in batches through polars)
and at most a few chunks are in flight, so memory does not grow with the mailbox.

Idempotent and incremental: ``raw_messages.sha256`` is unique, so a message already stored
is skipped, and the ``sources`` table remembers every file's path, size and mtime, so an
unchanged file is skipped without being read. Bad input never stops the ingest: each case
goes into ``ingest_errors`` with its path (``path#N`` inside containers), a reason the user
can act on and its first 64 KiB; a message that parses with defects (truncated headers, a
lying charset, a body cut at the size limit) is stored and listed there too. Content
groups (``emailwb.mail.dedupe``) are kept up to date chunk by chunk (a copy joins its group as
it is written); threads (``emailwb.mail.threads``) are rebuilt in one pass at the end.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emailwb.errors import InputError
from emailwb.mail.dedupe import add_copies, canonical_rank
from emailwb.mail.sources import (
    CHUNK_BYTES,
    CHUNK_MESSAGES,
    HEAD_BYTES,
    MAX_MESSAGE_BYTES,
    Result,
    Task,
    dir_hints,
    error_record,
    file_kind,
    is_ignored,
    iter_mbox,
    iter_table,
    natural_key,
    process_chunk,
    read_head,
    row_hints,
    too_big,
    worker_init,
)
from emailwb.mail.threads import rebuild_threads

if TYPE_CHECKING:
    from emailwb.store.database import Store

__all__ = ["IngestSummary", "ingest"]

_EMAIL_COLUMNS = (
    "id, raw_id, message_id, date, date_flag, sender, sender_name, to_addrs, cc_addrs,"
    " bcc_addrs, subject, norm_subject, in_reply_to, refs, mailbox, folder, source, body,"
    " new_text, quoted, forwarded, signature, disclaimer, charset, defects, body_chars,"
    " new_chars, group_id, thread_id"
)
_INSERT_EMAIL = f"INSERT INTO emails ({_EMAIL_COLUMNS}) VALUES ({', '.join('?' * 29)})"
_INSERT_RAW = (
    "INSERT INTO raw_messages (id, sha256, raw, size, source, ingested_at) VALUES (?,?,?,?,?,?)"
)
_INSERT_ERROR = (
    "INSERT OR IGNORE INTO ingest_errors (source, reason, detail, size, sha256, raw_head,"
    " created_at) VALUES (?,?,?,?,?,?,?)"
)
_UPSERT_SOURCE = (
    "INSERT INTO sources (path, kind, size, mtime, messages, ingested_at) VALUES (?,?,?,?,?,?)"
    " ON CONFLICT(path) DO UPDATE SET kind = excluded.kind, size = excluded.size,"
    " mtime = excluded.mtime, messages = excluded.messages, ingested_at = excluded.ingested_at"
)
#: chunks handed to the store's writer and not yet applied, at most (backpressure)
_MAX_PENDING_WRITES = 2
#: folders never walked into (tools' metadata next to mail)
_SKIPPED_DIRS = frozenset(
    (
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".ipynb_checkpoints",
        ".venv",
        ".tox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    )
)
#: chunks being parsed (or parsed and not yet handed to the writer) per worker, at most
_MAX_INFLIGHT_PER_WORKER = 2
ERROR_SAMPLES = 5  # reasons printed with the summary


@dataclass
class IngestSummary:
    """What one ``ingest`` call did. ``str()`` gives a readable report."""

    files_seen: int = 0  # files found (message files and containers)
    files_ignored: int = 0  # README, MANIFEST, hidden and database files next to the mail
    sources_skipped: int = 0  # unchanged since the last ingest: not read again
    messages_seen: int = 0  # messages read (good or bad)
    messages_new: int = 0  # stored now
    duplicates_skipped: int = 0  # byte-identical to a message already stored
    errors: int = 0  # bad inputs not stored (each one is in ingest_errors)
    not_mail: int = 0  # of those, whole files: unreadable, empty, binary or without headers
    error_samples: list[tuple[str, str]] = field(default_factory=list)  # first (source, reason)
    warnings: int = 0  # messages stored with defects (also listed in ingest_errors)
    content_groups: int = 0  # distinct messages in the store after the ingest
    threads: int = 0  # conversation chains in the store after the ingest
    messages_total: int = 0  # messages in the store after the ingest
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.messages_seen / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"ingested {self.messages_new:,} new messages in {self.seconds:.1f} s"
            f" ({rate:,.0f} messages/s)",
            f"  files seen          {self.files_seen:>10,}"
            + (
                f"   (+{self.files_ignored:,} non-mail files ignored)" if self.files_ignored else ""
            ),
            f"  unchanged, skipped  {self.sources_skipped:>10,}",
            f"  messages read       {self.messages_seen:>10,}",
            f"  already stored      {self.duplicates_skipped:>10,}",
            f"  errors (not stored) {self.errors:>10,}"
            + (
                f"   ({self.not_mail:,} of them whole files that are not mail or cannot be read)"
                if self.not_mail
                else ""
            ),
            f"  stored with defects {self.warnings:>10,}"
            + ("   (listed in ingest_errors too)" if self.warnings else ""),
            f"store: {self.messages_total:,} messages, {self.content_groups:,} distinct"
            f" (content groups), {self.threads:,} threads",
        ]
        if self.error_samples:
            lines.append("why (the first few):")
            lines += [f"  {src}: {reason}" for src, reason in self.error_samples]
            lines.append("every error with its reason: `emailwb errors` (the ingest_errors table)")
        return "\n".join(lines)

    @property
    def nothing_ingested(self) -> bool:
        """Errors, and not one message stored, already stored or unchanged: nothing usable."""
        return self.errors > 0 and not (
            self.messages_new or self.duplicates_skipped or self.sources_skipped
        )


# --- the writer side (runs on the store's writer thread) -------------------------------------
# --- the writer side (runs on the store's writer thread) -------------------------------------
def _lookup(conn: sqlite3.Connection, sql: str, keys: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for i in range(0, len(keys), 500):
        part = keys[i : i + 500]
        for row in conn.execute(sql.format(",".join("?" * len(part))), part):
            found[row[0]] = row[1:]
    return found


def _write_chunk(
    conn: sqlite3.Connection,
    results: list[Result],
    sources: list[tuple],
    now: str,
    clear_errors: bool,
) -> tuple[int, int]:
    """Insert one chunk: new raw messages, their emails, groups and one-message threads,
    errors and sources rows. Returns (new messages, messages already stored)."""
    oks = [r for r in results if r[0] == "ok"]
    new = dup = 0
    if oks:
        seen = set(
            _lookup(
                conn,
                "SELECT sha256 FROM raw_messages WHERE sha256 IN ({})",
                list({r[1] for r in oks}),
            )
        )
        fresh = []
        for r in oks:
            if r[1] in seen:
                dup += 1
            else:
                seen.add(r[1])
                fresh.append(r)
        if fresh:
            new = len(fresh)
            rid = (conn.execute("SELECT MAX(id) FROM raw_messages").fetchone()[0] or 0) + 1
            eid = (conn.execute("SELECT MAX(id) FROM emails").fetchone()[0] or 0) + 1
            gid = (conn.execute("SELECT MAX(id) FROM content_groups").fetchone()[0] or 0) + 1
            groups = _lookup(
                conn,
                "SELECT content_key, id, (SELECT e.thread_id FROM emails e"
                " WHERE e.group_id = content_groups.id LIMIT 1) FROM content_groups"
                " WHERE content_key IN ({})",
                list({r[5] for r in fresh}),
            )
            new_groups, new_threads, emails = [], [], []
            grown: dict[int, list[tuple[tuple, int]]] = {}
            for i, r in enumerate(fresh):
                ids = groups.get(r[5])
                if ids is None:  # a new message: its own group and one-message thread
                    groups[r[5]] = ids = (gid, gid)
                    row = r[4]
                    date = None if row[2] == "placeholder" else row[1]
                    new_groups.append((gid, r[5], eid + i))
                    new_threads.append((gid, f"g{gid}", row[8], eid + i, date, date))
                    gid += 1
                else:  # one more copy of a known message
                    grown.setdefault(ids[0], []).append((canonical_rank(r[4][13], r[3]), eid + i))
                emails.append((eid + i, rid + i, *r[4], *ids))
            conn.executemany(
                "INSERT INTO content_groups (id, content_key, canonical_email_id,"
                " size) VALUES (?, ?, ?, 1)",
                new_groups,
            )
            conn.executemany(
                "INSERT INTO threads (id, thread_key, subject, root_email_id, size,"
                " first_date, last_date) VALUES (?, ?, ?, ?, 1, ?, ?)",
                new_threads,
            )
            conn.executemany(
                _INSERT_RAW,
                [(rid + i, r[1], r[2], len(r[2]), r[3], now) for i, r in enumerate(fresh)],
            )
            conn.executemany(_INSERT_EMAIL, emails)
            add_copies(conn, grown)
    if clear_errors and oks:  # a message that parses now clears its old error
        conn.executemany("DELETE FROM ingest_errors WHERE source = ?", [(r[3],) for r in oks])
    errs = [(r[1], r[2], r[3], r[4], r[5], r[6], now) for r in results if r[0] == "err"]
    errs += [(r[3], r[6], "", len(r[2]), r[1], r[2][:HEAD_BYTES], now) for r in oks if r[6]]
    if errs:
        conn.executemany(_INSERT_ERROR, errs)
    if sources:
        conn.executemany(_UPSERT_SOURCE, [(*s, now) for s in sources])
    return new, dup


def _finish(conn: sqlite3.Connection, changed: bool) -> tuple[int, int, int]:
    if changed:
        rebuild_threads(conn)
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM content_groups), (SELECT COUNT(*) FROM"
        " threads WHERE size > 0), (SELECT COUNT(*) FROM emails)"
    ).fetchone()
    return row[0], row[1], row[2]


# --- the main process: walk, dispatch, collect ---------------------------------------------
class _Run:
    def __init__(
        self,
        store: Store,
        *,
        progress: bool,
        column: str | None,
        workers: int | None,
        max_bytes: int,
    ) -> None:
        self.store = store
        self.column = column
        self.max_bytes = max_bytes
        if workers is None:
            workers = (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1)
            )
        self.workers = max(0, min(workers, 32))
        self.pool: ProcessPoolExecutor | None = None
        self.summary = IngestSummary()
        self.now = datetime.now(UTC).isoformat(timespec="seconds")
        self.clear_errors = bool(store.scalar("SELECT EXISTS (SELECT 1 FROM ingest_errors)"))
        self.has_sources = bool(store.scalar("SELECT EXISTS (SELECT 1 FROM sources)"))
        self.tasks: list[Task] = []
        self.meta: list[tuple[str, str] | None] = []  # (path, kind) of a file task, else None
        self.inflight: deque[tuple[Future, list[Task], list, list[tuple]]] = deque()
        self.writes: deque[Future] = deque()  # store futures, resolved after each commit
        # chunks handed to the writer and not yet applied; released as each is applied, so
        # waiting never depends on the store's commit interval
        self.slots = threading.BoundedSemaphore(_MAX_PENDING_WRITES)
        self.rerouted: list[str] = []
        self._fed = 0  # messages taken from the container being read
        self.bar = None
        if progress and (sys.stderr.isatty() or "ipykernel" in sys.modules):
            from tqdm.auto import tqdm  # a widget in a notebook, text in a terminal

            self.bar = tqdm(desc="ingest", unit="msg", dynamic_ncols=True, smoothing=0.1)

    # walking ---------------------------------------------------------------------------------
    def known(self, dirpath: str) -> dict[str, tuple[int, float]]:
        """Files of ``dirpath`` ingested before, with their size and mtime then."""
        if not self.has_sources:
            return {}
        prefix = dirpath.rstrip(os.sep) + os.sep
        rows = self.store.query(
            "SELECT path, size, mtime FROM sources WHERE path > ? AND path < ?",
            (prefix, prefix[:-1] + chr(ord(os.sep) + 1)),
        )
        return {r[0]: (r[1], r[2]) for r in rows if os.sep not in r[0][len(prefix) :]}

    def walk(self, root: str) -> None:
        stack = [root]
        while stack:
            d = stack.pop()
            try:
                with os.scandir(d) as it:
                    entries = list(it)
            except OSError as exc:
                self.fail(
                    d,
                    f"cannot list the folder ({exc.strerror or exc}): check its"
                    " permissions, then ingest again",
                    b"",
                )
                continue
            files, dirs = [], []
            names = {e.name for e in entries}
            maildir = "cur" in names or "new" in names
            for e in entries:
                try:
                    is_dir = e.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    # Maildir++ folders are dot-folders; a maildir's tmp/ holds mail in delivery
                    if e.name not in _SKIPPED_DIRS and not (maildir and e.name == "tmp"):
                        dirs.append(e.path)
                elif is_ignored(e.name):
                    self.summary.files_ignored += 1
                else:
                    files.append(e.path)
            if files:
                files.sort(key=lambda p: natural_key(os.path.basename(p)))
                known = self.known(d)
                mailbox, folder = dir_hints(d, root)
                for path in files:
                    self.file(path, known, mailbox, folder)
            dirs.sort(key=lambda p: natural_key(os.path.basename(p)), reverse=True)
            stack.extend(dirs)

    def file(
        self, path: str, known: dict[str, tuple[int, float]], mailbox: str, folder: str
    ) -> None:
        self.summary.files_seen += 1
        if known:  # only then is a stat needed before reading
            try:
                st = os.stat(path)
            except OSError:
                st = None
            if st is not None and known.get(path) == (st.st_size, st.st_mtime):
                self.summary.sources_skipped += 1
                return
        kind = file_kind(os.path.basename(path))
        if kind in ("mbox", "csv", "parquet"):
            stem = os.path.splitext(os.path.basename(path))[0]
            self.container(path, kind, stem if kind == "mbox" else mailbox)
            return
        self.tasks.append((path, path, mailbox, folder))
        self.meta.append((path, kind))
        if len(self.tasks) >= CHUNK_MESSAGES:
            self.dispatch()

    def container(self, path: str, kind: str, mailbox: str) -> None:
        """Stream an mbox, CSV or Parquet file into chunks of messages."""
        self.dispatch()
        count = self._fed = 0
        try:
            st = os.stat(path)
            if kind == "mbox":
                with open(path, "rb") as f:
                    rows: Any = (
                        (n, data, size, mailbox, "")
                        for n, data, size in iter_mbox(f, self.max_bytes)
                    )
                    count = self._feed(path, rows)
            else:
                rows = (
                    (n, raw, None, *row_hints(name, mailbox))
                    for n, raw, name in iter_table(path, kind, self.column)
                )
                count = self._feed(path, rows)
        except InputError as exc:
            self.dispatch()
            self.fail(path, str(exc), read_head(path))
            return
        except Exception as exc:  # OSError, polars' errors on corrupt files
            self.dispatch()
            what = {"mbox": "mbox", "csv": "CSV", "parquet": "Parquet"}[kind]
            where = f" after {self._fed:,} messages (those are kept)" if self._fed else ""
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.fail(
                path,
                f"cannot read this {what} file{where} ({type(exc).__name__}:"
                f" {first[:300]}): check that it is a complete, valid {what} file, then"
                " ingest it again",
                read_head(path),
                detail=repr(exc)[:2000],
            )
            return
        self.dispatch(extra=[(path, kind, st.st_size, st.st_mtime, count)])

    def _feed(self, path: str, rows: Any) -> int:
        self._fed = nbytes = 0
        for n, raw, size, mailbox, folder in rows:
            self._fed = n
            source = f"{path}#{n}"
            if size is not None and size > self.max_bytes:
                self.ready([too_big(source, size, self.max_bytes, raw)])
                continue
            if raw is None or len(raw) == 0:
                self.ready(
                    [
                        error_record(
                            source,
                            f"row {n} has an empty message column: nothing"
                            " to ingest; fix or drop the row",
                            b"",
                            0,
                        )
                    ]
                )
                continue
            data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
            self.tasks.append((source, data, mailbox, folder))
            self.meta.append(None)
            nbytes += len(data)
            if len(self.tasks) >= CHUNK_MESSAGES or nbytes >= CHUNK_BYTES:
                self.dispatch()
                nbytes = 0
        return self._fed

    def fail(self, path: str, reason: str, head: bytes, detail: str = "") -> None:
        """Record a file-level failure (not counted as a message read)."""
        self.ready([error_record(path, reason, head, len(head) or None, detail, True)])

    # dispatching -------------------------------------------------------------------------------
    def ready(self, results: list[Result]) -> None:
        """Queue results computed in this process (errors met while reading containers)."""
        fut: Future = Future()
        fut.set_result([(results, None, None)])
        self.inflight.append((fut, [], [None], []))

    def dispatch(self, extra: list[tuple] | None = None) -> None:
        tasks, meta = self.tasks, self.meta
        if not tasks and not extra:
            return
        self.tasks, self.meta = [], []
        if self.pool is None and self.workers >= 1 and len(tasks) >= CHUNK_MESSAGES // 2:
            ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=worker_init)
        if self.pool is not None and tasks:
            fut = self.pool.submit(process_chunk, tasks, self.max_bytes)
        else:
            fut = Future()
            fut.set_result(process_chunk(tasks, self.max_bytes))
        self.inflight.append((fut, tasks, meta, extra or []))
        while len(self.inflight) > _MAX_INFLIGHT_PER_WORKER * max(1, self.workers):
            self.collect()

    def collect(self) -> None:
        """Take the oldest chunk, wait for its parse, and hand it to the store's writer."""
        fut, tasks, meta, extra = self.inflight.popleft()
        try:
            per_task = fut.result()
        except Exception:  # a worker died (killed, out of memory): redo the chunk here
            per_task = process_chunk(tasks, self.max_bytes)
        results: list[Result] = []
        sources = list(extra)
        for m, (res, size, mtime) in zip(meta, per_task, strict=True):
            if res and res[0][0] == "mbox":  # too big for one message: stream it as an mbox
                self.rerouted.append(res[0][1])
                continue
            results.extend(res)
            if m is not None and size is not None and not (len(res) == 1 and res[0][0] == "err"):
                sources.append(
                    (
                        m[0],
                        "mbox" if len(res) > 1 else m[1],
                        size,
                        mtime,
                        sum(r[0] == "ok" for r in res),
                    )
                )
        s = self.summary
        s.messages_seen += sum(r[0] == "ok" or not r[7] for r in results)
        s.errors += sum(r[0] == "err" for r in results)
        s.not_mail += sum(r[0] == "err" and bool(r[7]) for r in results)
        for r in results:
            if r[0] == "err" and len(s.error_samples) < ERROR_SAMPLES:
                s.error_samples.append((r[1], r[2]))
        s.warnings += sum(r[0] == "ok" and r[6] is not None for r in results)
        while not self.slots.acquire(timeout=0.25):  # the writer is behind: wait for it
            while self.writes and self.writes[0].done():
                self.settle(self.writes.popleft())  # raises if the store failed

        def write(
            conn: sqlite3.Connection, r: list = results, src: list = sources
        ) -> tuple[int, int]:
            try:
                return _write_chunk(conn, r, src, self.now, self.clear_errors)
            finally:
                self.slots.release()

        self.writes.append(self.store.call(write))
        while self.writes and self.writes[0].done():
            self.settle(self.writes.popleft())
        if self.bar is not None:
            self.bar.update(len(results))
            self.bar.set_postfix(
                new=s.messages_new, dup=s.duplicates_skipped, err=s.errors, refresh=False
            )

    def settle(self, fut: Future) -> None:
        new, dup = fut.result()
        self.summary.messages_new += new
        self.summary.duplicates_skipped += dup

    def drain(self) -> None:
        self.dispatch()
        while self.inflight:
            self.collect()
        while self.rerouted:
            path = self.rerouted.pop()
            self.container(path, "mbox", os.path.splitext(os.path.basename(path))[0])
            while self.inflight:
                self.collect()
        while self.writes:
            self.settle(self.writes.popleft())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.bar is not None:
            self.bar.close()


def ingest(
    store: Store,
    paths: Sequence[str | Path],
    *,
    progress: bool = True,
    column: str | None = None,
    workers: int | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> IngestSummary:
    """Ingest maildirs, folders of .eml files, mbox, CSV and Parquet files into ``store``.

    ``paths`` may mix folders and files. ``column`` names the raw-message column of CSV and
    Parquet files when it is not ``message``, ``raw`` or ``email``. ``workers`` processes
    parse in parallel (default: one per CPU; 0 parses in this process, as does any ingest
    of fewer than a few dozen messages). ``max_message_bytes`` is the largest message
    stored (larger ones go to ``ingest_errors`` with their first 64 KiB). Raises
    ``InputError`` naming the first path that does not exist, before reading anything;
    every other bad input is recorded in ``ingest_errors`` and the ingest goes on.
    """
    t0 = time.perf_counter()
    resolved = [os.path.abspath(os.fspath(p)) for p in paths]
    for p, given in zip(resolved, paths, strict=True):
        if not os.path.exists(p):
            raise InputError(f"no such file or folder: {given}")
    run = _Run(
        store, progress=progress, column=column, workers=workers, max_bytes=max_message_bytes
    )
    try:
        for p in resolved:
            if os.path.isdir(p):
                run.walk(p)
            else:  # a file named explicitly is never ignored by its name
                d = os.path.dirname(p)
                run.file(p, run.known(d), *dir_hints(d, os.path.dirname(d) or d))
        run.drain()
        s = run.summary
        fut = store.call(lambda conn: _finish(conn, s.messages_new > 0))
        store.flush()
        s.content_groups, s.threads, s.messages_total = fut.result()
    finally:
        run.close()
    s.seconds = time.perf_counter() - t0
    return s


def ingest_errors(store: Store, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Every recorded ingest error, newest first: source, reason, size, when."""
    sql = (
        "SELECT source, reason, size, created_at FROM ingest_errors "
        "ORDER BY created_at DESC, id DESC"
    )
    rows = store.query(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
    return [dict(r) for r in rows]
