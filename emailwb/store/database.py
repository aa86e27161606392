"""The SQLite store: one writer thread, a pool of read-only connections, schema migrations.

Everything emailwb knows lives in one SQLite file in WAL mode. Many async workers write at
once, so no caller writes directly: work units are queued to a single writer thread that
owns the only write connection and commits them in batches (``batch_size`` units or
``flush_interval`` seconds, whichever comes first; no fsync per unit). A failing unit never
costs the others of its batch: a run of identical statements goes through one
``executemany`` under a SAVEPOINT and, only if that fails, is redone unit by unit. Reads use
a small pool of reused read-only connections, which WAL lets run alongside the writer.
WAL checkpoints run on their own thread (``emailwb.store.connections.Checkpointer``), not inside
the writer's commits; new files use 16 KiB pages.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from emailwb.errors import ConfigError, MigrationError, StoreError
from emailwb.store import migrations
from emailwb.store.connections import FALLBACK_PAGES, Checkpointer, WriteConnection

log = logging.getLogger(__name__)
T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]
Unit = tuple[int, Any, Any, "Future[Any] | None"]  # (kind, sql or fn, params or rows, future)

_SUBMIT, _MANY, _CALL, _FLUSH, _STOP = range(5)
_BUSY_TIMEOUT_S = 30.0
#: page size of new database files: big rows (raw messages, bodies) take fewer pages, and each
#: commit writes fewer, larger WAL frames (the writer's Enron inserts ran ~30% faster than with
#: 4 KiB in one measurement)
PAGE_SIZE = 16384
_UNIT_HINT = "the other writes of its batch were kept; fix the statement or its data"
_COUNTS = {
    "messages": "emails",
    "raw_messages": "raw_messages",
    "content_groups": "content_groups",
    "threads": "threads",
    "ingest_errors": "ingest_errors",
    "sources": "sources",
}
_STATS_SQL = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t}) AS {k}" for k, t in _COUNTS.items())
_AFFINITY: list[tuple[tuple[str, ...], type[pl.DataType]]] = [  # SQLite's rules, in order
    (("INT",), pl.Int64),
    (("CHAR", "CLOB", "TEXT"), pl.Utf8),
    (("BLOB",), pl.Binary),
    (("REAL", "FLOA", "DOUB"), pl.Float64),
]


class Store:
    """One SQLite database: batched writes through one writer thread, pooled reads."""

    def __init__(
        self,
        path: str | Path,
        *,
        readers: int = 4,
        batch_size: int = 500,
        flush_interval: float = 0.05,
    ) -> None:
        if readers < 1 or batch_size < 1 or flush_interval <= 0:
            raise ConfigError("Store needs readers >= 1, batch_size >= 1 and flush_interval > 0")
        self.path, self.batch_size, self.flush_interval = Path(path), batch_size, flush_interval
        self.write_errors: list[StoreError] = []  # fire-and-forget failures, oldest first
        self._errors_reported = 0
        self._queue: queue.SimpleQueue[Unit] = queue.SimpleQueue()
        self._broken: str | None = None  # why writes are refused (closed, writer died)
        self._cause: BaseException | None = None
        self._writer_gone = self._closed = self._replaying = False
        self._close_lock = threading.Lock()
        self._done: list[Unit] = []  # units applied in the open transaction
        self._results: list[tuple[Future[Any], Any]] = []  # call() results awaiting COMMIT
        self._batch: list[Unit] = []  # every unit of the open batch, for a dying writer
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        conn: sqlite3.Connection | None = None
        checkpointer: Checkpointer | None = None
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=_BUSY_TIMEOUT_S,
                factory=WriteConnection,
            )
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new file
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite refused WAL mode for {self.path} (got {mode!r})",
                    hint="put the database on a local disk, not a network share",
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
            self._migrate(conn)
            uri = self.path.resolve().as_uri() + "?mode=ro"
            for _ in range(readers):
                reader = sqlite3.connect(
                    uri,
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=_BUSY_TIMEOUT_S,
                )
                reader.row_factory = sqlite3.Row
                self._readers.append(reader)
                self._pool.put(reader)
            checkpointer = Checkpointer(self.path, busy_timeout_s=_BUSY_TIMEOUT_S)
        except BaseException as exc:
            for c in [*self._readers, conn]:
                if c is not None:
                    c.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
            raise
        self._wconn = conn
        self._checkpointer = checkpointer
        self._thread = threading.Thread(
            target=self._writer_main, name="emailwb-store-writer", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply pending migrations in order, each in its own transaction."""
        known = migrations.MIGRATIONS
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        unknown = sorted(applied - {name for name, _ in known})
        if unknown:
            raise MigrationError(
                f"database {self.path} was written by a newer emailwb "
                f"(unknown migrations: {', '.join(unknown)})"
            )
        for name, migrate in known:
            if name in applied:
                continue
            try:
                conn.execute("BEGIN IMMEDIATE")
                # another process may have applied it while we were looking
                if not conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE name = ?", (name,)
                ).fetchone():
                    migrate(conn)
                    conn.execute(
                        "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                        (name, datetime.now(UTC).isoformat(timespec="seconds")),
                    )
                conn.execute("COMMIT")
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise MigrationError(f"migration {name} failed on {self.path}: {exc}") from exc
            log.info("applied migration %s to %s", name, self.path)

    # --- writing (any thread) ---------------------------------------------------------------
    def _put(self, unit: Unit) -> None:
        if self._broken is not None:
            raise StoreError(self._broken) from self._cause
        self._queue.put(unit)
        if self._writer_gone:  # the writer exited after our check: nobody will take it
            self._lose()

    def submit(self, sql: str, params: Params = ()) -> None:
        """Queue one statement (fire and forget); it is committed with the next batch."""
        self._put((_SUBMIT, sql, params, None))

    def submit_many(self, sql: str, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> None:
        """Queue one unit running ``executemany(sql, rows)``: all rows or, on error, none."""
        self._put((_MANY, sql, list(rows), None))  # copied: callers often reuse their buffer

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Run ``fn(conn)`` in the writer's current batch; the Future resolves after COMMIT.

        ``fn`` must not commit; it runs again if a later unit rolls the batch back whole.
        """
        fut: Future[T] = Future()
        self._put((_CALL, fn, None, fut))
        return fut

    async def acall(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``call`` for asyncio: await the committed result without blocking the loop."""
        return await asyncio.wrap_future(self.call(fn))

    def _flush_future(self) -> Future[None]:
        if threading.current_thread() is self._thread:
            raise StoreError("flush() called inside a Store.call() function would deadlock")
        fut: Future[None] = Future()
        self._put((_FLUSH, None, None, fut))
        return fut

    def flush(self) -> None:
        """Block until everything submitted so far is committed; raise if queued writes failed."""
        self._flush_future().result()
        self._raise_write_errors()

    async def aflush(self) -> None:
        """``flush`` for asyncio callers."""
        await asyncio.wrap_future(self._flush_future())
        self._raise_write_errors()

    def _raise_write_errors(self) -> None:
        n = len(self.write_errors)
        new, self._errors_reported = self.write_errors[self._errors_reported : n], n
        if new:
            raise StoreError(
                f"{len(new)} queued write(s) failed since the last flush; first: {new[0].message}",
                hint=_UNIT_HINT,
            ) from new[0]

    # --- the writer thread --------------------------------------------------------------------
    def _writer_main(self) -> None:
        try:
            self._writer_loop()
        except BaseException as exc:
            self._cause = exc
            self._broken = f"the store's writer thread died ({type(exc).__name__}: {exc})"
            log.critical("%s; its open batch is lost", self._broken, exc_info=exc)
            with suppress(sqlite3.Error):
                if self._wconn.in_transaction:
                    self._wconn.execute("ROLLBACK")
            self._lose(self._batch)
        finally:
            self._writer_gone = True
            self._lose()

    def _writer_loop(self) -> None:
        q, size = self._queue, self.batch_size
        while True:
            chunk = [q.get()]
            deadline = time.monotonic() + self.flush_interval
            batch: list[Unit] = []
            self._batch = batch
            control: Unit | None = None  # a flush or stop marker ends the batch at once
            while True:
                while chunk[-1][0] < _FLUSH and len(batch) + len(chunk) < size:
                    try:  # take what is queued already, up to the batch size
                        chunk.append(q.get_nowait())
                    except queue.Empty:
                        break
                if chunk[-1][0] >= _FLUSH:
                    control = chunk.pop()
                    batch.append(control)  # failed too if the writer dies
                batch.extend(chunk)
                self._apply(
                    [u for u in chunk if u[3] is None or u[3].set_running_or_notify_cancel()]
                )
                timeout = deadline - time.monotonic()
                if control or len(batch) >= size or timeout <= 0:
                    break
                try:
                    chunk = [q.get(timeout=timeout)]
                except queue.Empty:
                    break
            self._commit()
            if control and control[3] and control[3].set_running_or_notify_cancel():
                control[3].set_result(None)
            self._batch = []
            if control and control[0] == _STOP:
                return

    def _apply(self, chunk: list[Unit]) -> None:
        """Run a chunk; consecutive submits of the same SQL go through one executemany."""
        i, n = 0, len(chunk)
        while i < n:
            kind, sql = chunk[i][0], chunk[i][1]
            j = i + 1
            if kind == _SUBMIT:
                while j < n and chunk[j][0] == _SUBMIT and chunk[j][1] == sql:
                    j += 1
            if j - i < 2 or not self._run_group(sql, chunk[i:j]):
                for unit in chunk[i:j]:
                    self._run_one(unit)
            i = j

    def _atomic(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` under a SAVEPOINT in the open transaction: all of it or none of it."""
        conn = self._wconn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        conn.execute("SAVEPOINT unit")
        try:
            result = fn(conn)
            conn.execute("RELEASE unit")
            return result
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
            else:  # the whole transaction went (ON CONFLICT ROLLBACK, disk full)
                self._replay()
            raise

    def _run_group(self, sql: str, units: list[Unit]) -> bool:
        try:
            self._atomic(lambda c: c.executemany(sql, [u[2] for u in units]))
        except Exception:
            return False  # the caller redoes them one by one to find the bad one
        self._done.extend(units)
        return True

    def _run_one(self, unit: Unit) -> None:
        kind, target, params, fut = unit
        conn, result = self._wconn, None
        try:
            if kind == _SUBMIT:  # one statement is atomic by itself: no savepoint needed
                if not conn.in_transaction:
                    conn.execute("BEGIN IMMEDIATE")
                conn.execute(target, params)
            else:
                result = self._atomic(
                    target if kind == _CALL else lambda c: c.executemany(target, params)
                )
        except Exception as exc:
            if not conn.in_transaction:
                self._replay()
            self._fail(unit, exc)
            return
        self._done.append(unit)
        if fut is not None:
            self._results.append((fut, result))

    def _replay(self) -> None:
        """The whole transaction was rolled back (ON CONFLICT ROLLBACK, disk full): redo it."""
        units, self._done, self._results = self._done, [], []
        if not units:
            return
        if self._replaying:  # lost again while replaying: give the batch up
            for unit in units:
                self._fail(unit, StoreError("the transaction was rolled back twice"))
            return
        log.warning("the write transaction was rolled back; replaying %d units", len(units))
        self._replaying = True
        try:
            for unit in units:
                self._run_one(unit)
        finally:
            self._replaying = False

    def _fail(self, unit: Unit, exc: BaseException) -> None:
        what = "call()" if unit[0] == _CALL else " ".join(str(unit[1]).split())[:120]
        err = StoreError(f"write failed ({type(exc).__name__}: {exc}) in {what}", hint=_UNIT_HINT)
        err.__cause__ = exc
        if unit[3] is not None:
            with suppress(InvalidStateError):
                unit[3].set_exception(err)
        else:
            log.error("%s", err)
            self.write_errors.append(err)

    def _commit(self) -> None:
        conn, done, results = self._wconn, self._done, self._results
        self._done, self._results = [], []
        if conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                for unit in done:
                    self._fail(unit, exc)
                return
            self._checkpointer.poke()
        for fut, result in results:
            fut.set_result(result)

    def _lose(self, units: Iterable[Unit] | None = None) -> None:
        """Fail units that will never run (default: all still queued); futures get the reason."""
        if units is None:
            units = []
            with suppress(queue.Empty):
                while True:
                    units.append(self._queue.get_nowait())
        lost = 0
        for unit in units:
            if unit[3] is not None:
                with suppress(InvalidStateError):  # cancelled or already failed
                    unit[3].set_exception(StoreError(self._broken or "the store is closed"))
            elif unit[0] < _FLUSH:
                lost += 1
        if lost:
            err = StoreError(f"{lost} queued write(s) were lost: {self._broken}")
            err.__cause__ = self._cause
            log.error("%s", err)
            self.write_errors.append(err)

    # --- reading (any thread, pooled connections) ---------------------------------------------
    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        conn = self._pool.get()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    @staticmethod
    def _execute(conn: sqlite3.Connection, sql: str, params: Params) -> sqlite3.Cursor:
        try:
            return conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(
                f"query failed ({exc}): {' '.join(sql.split())[:200]}",
                hint="check the SQL against the schema in emailwb/migrations.py",
            ) from exc

    def query(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """All rows of a read-only query."""
        with self._reader() as conn:
            return self._execute(conn, sql, params).fetchall()

    def query_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row of a read-only query, or None."""
        with self._reader() as conn:
            cur = self._execute(conn, sql, params)
            try:
                return cur.fetchone()
            finally:
                cur.close()  # ends the read transaction

    def scalar(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None."""
        row = self.query_one(sql, params)
        return None if row is None else row[0]

    async def aquery(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """``query`` in a worker thread: never blocks the event loop."""
        return await asyncio.to_thread(self.query, sql, params)

    def query_df(self, sql: str, params: Params = ()) -> pl.DataFrame:
        """A query as a polars DataFrame; empty or all-NULL columns take their declared type."""
        with self._reader() as conn:
            cur = self._execute(conn, sql, params)
            rows = cur.fetchall()
            names: list[str] = []
            for d in cur.description or ():
                name, k = d[0], 1
                while name in names:  # polars wants unique names: id, id_1, ...
                    name, k = f"{d[0]}_{k}", k + 1
                names.append(name)
            columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
            series = [
                pl.Series(n, list(v), strict=False) for n, v in zip(names, columns, strict=True)
            ]
            if not params and any(s.dtype == pl.Null for s in series):
                decl = self._declared_types(conn, sql)
                if len(decl) == len(series):
                    series = [
                        s.cast(t) if s.dtype == pl.Null and t else s
                        for s, t in zip(series, decl, strict=True)
                    ]
        return pl.DataFrame(series)

    @staticmethod
    def _declared_types(conn: sqlite3.Connection, sql: str) -> list[type[pl.DataType] | None]:
        """Columns' declared types, read through a TEMP VIEW (the sqlite3 module hides them)."""
        try:
            conn.execute(f"CREATE TEMP VIEW emailwb_df AS {sql.strip().rstrip(';')}")
        except sqlite3.Error:
            return []  # not a plain SELECT
        try:
            decls = [str(r[2]).upper() for r in conn.execute("PRAGMA temp.table_info(emailwb_df)")]
        finally:
            conn.execute("DROP VIEW temp.emailwb_df")
        return [
            next((t for keys, t in _AFFINITY if any(k in d for k in keys)), None) for d in decls
        ]

    def stats(self) -> dict[str, int]:
        """Row counts: messages, raw_messages, content_groups, threads, ingest_errors, sources."""
        row = self.query_one(_STATS_SQL)
        return dict(zip(row.keys(), row, strict=True)) if row else {}

    def integrity_check(self) -> str:
        """SQLite's PRAGMA integrity_check: "ok" when the file is sound."""
        return "\n".join(str(r[0]) for r in self.query("PRAGMA integrity_check"))

    # --- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Commit everything queued, stop the writer, close every connection. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._broken = self._broken or f"the store {self.path} is closed"
        if self._thread.is_alive():
            self._queue.put((_STOP, None, None, None))
            self._thread.join()
        self._lose()
        for _ in self._readers:
            try:
                self._pool.get(timeout=_BUSY_TIMEOUT_S).close()
            except queue.Empty:
                log.warning("a reader of %s was still busy at close", self.path)
        self._checkpointer.close()
        with suppress(sqlite3.Error):
            self._wconn.execute("PRAGMA optimize")
        self._wconn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
