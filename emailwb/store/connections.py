"""SQLite connections of the store: the writer's connection class and the WAL checkpointer.

The writer's connection (:class:`WriteConnection`) runs ``Store.call`` functions' scripts
inside the open batch and refuses their commits and rollbacks: the store commits batches.

WAL checkpoints run off the writer thread. In WAL mode every commit appends pages to
``FILE-wal``; a *checkpoint* copies them into the database file and syncs it. SQLite's default
runs that checkpoint inside the commit that crosses 1,000 pages, on the committing thread:
during a bulk ingest that was about a third of the single writer's time (measured on the
Enron set), all of it on the critical path. Here the writer only appends (its automatic
checkpoint is raised to a safety net) and a :class:`Checkpointer` thread with its own
connection runs ``PRAGMA wal_checkpoint(PASSIVE)`` after commits, at most every
``min_interval`` seconds. A passive checkpoint never blocks the writer or the readers; SQLite
releases the GIL while it copies and syncs, so it overlaps the writer's next batch. If this
thread falls behind, the writer's own automatic checkpoint (``FALLBACK_PAGES``) still bounds
the WAL.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

from emailwb.errors import StoreError

log = logging.getLogger(__name__)

#: the writer's own automatic checkpoint, kept as a safety net (pages: 16 MiB at 16 KiB, which also bounds the WAL file)
FALLBACK_PAGES = 1024


def _statements(script: str) -> Iterator[str]:
    """Split an SQL script into complete statements (SQLite judges comments, triggers)."""
    start, i = 0, script.find(";")
    while i >= 0:
        if sqlite3.complete_statement(script[start : i + 1]):
            yield script[start : i + 1]
            start = i + 1
        i = script.find(";", i + 1)
    if script[start:].strip():
        yield script[start:]


class WriteConnection(sqlite3.Connection):
    """The writer's connection: scripts run inside the open transaction; commits are ours."""

    def executescript(self, sql_script: str) -> sqlite3.Cursor:
        if not self.in_transaction:  # Python 3.11 would COMMIT the open transaction first
            return super().executescript(sql_script)
        cur = self.cursor()
        for stmt in _statements(sql_script):
            cur.execute(stmt)
        return cur

    def commit(self) -> None:
        raise StoreError("a Store.call() function must not commit: the store commits batches")

    def rollback(self) -> None:
        raise StoreError("a Store.call() function must not roll back: raise an exception instead")


class Checkpointer:
    """A background thread that checkpoints a WAL database after the writer's commits."""

    def __init__(
        self, path: Path, *, min_interval: float = 0.05, busy_timeout_s: float = 30.0
    ) -> None:
        self.path, self.min_interval = path, min_interval
        self.checkpoints = 0  # checkpoints run (for tests and diagnostics)
        self.frames = 0  # WAL frames copied into the database by them
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
        )
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._main, name="emailwb-store-checkpoint", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        """The writer committed: checkpoint soon."""
        self._wake.set()

    def _main(self) -> None:
        last = 0.0
        while True:
            self._wake.wait()
            if self._stopping:
                return
            pause = last + self.min_interval - time.monotonic()
            if pause > 0:  # gather several commits into one checkpoint
                time.sleep(pause)
            self._wake.clear()
            if self._stopping:
                return
            try:
                _busy, _log, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
                self.frames += max(done, 0)
            except sqlite3.Error as exc:  # the writer's automatic checkpoint still runs
                log.warning(
                    "background checkpoint of %s failed (%s); the writer's own "
                    "checkpoint takes over",
                    self.path,
                    exc,
                )
            last = time.monotonic()

    def close(self) -> None:
        """Stop the thread and close its connection (the last connection's close finishes the
        checkpoint)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        with suppress(sqlite3.Error):
            self._conn.close()
