"""The SQLite store: migrations, batched writes with failure isolation, pooled reads."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from emailwb.errors import MigrationError, StoreError
from emailwb.store import migrations
from emailwb.store.database import Store

REPO = Path(__file__).resolve().parents[1]
INSERT = "INSERT INTO sources (path, kind, size, mtime, ingested_at) VALUES (?, 'eml', ?, 0, '')"


def count(path: Path, table: str = "sources") -> int:
    """Count rows through a fresh, independent connection: only committed data is seen."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_migrations_are_applied_once_and_recorded(store: Store) -> None:
    rows = store.query("SELECT name, applied_at FROM schema_migrations ORDER BY name")
    assert [r["name"] for r in rows] == [name for name, _ in migrations.MIGRATIONS]
    assert all(r["applied_at"] for r in rows)
    assert store.stats() == dict.fromkeys(
        ["messages", "raw_messages", "content_groups", "threads", "ingest_errors", "sources"], 0
    )


def test_reopening_applies_no_migration(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    extra = ("9000_probe", lambda conn: calls.append("ran"))
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, extra])
    Store(db_path).close()
    Store(db_path).close()
    assert calls == ["ran"]
    conn = sqlite3.connect(db_path)
    names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == sorted(name for name, _ in migrations.MIGRATIONS)
    conn.close()


def test_failed_migration_leaves_nothing_behind(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.executescript("CREATE TABLE half (x INTEGER); CREATE TABLE oops (;")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, ("0002_bad", broken)])
    with pytest.raises(MigrationError, match="0002_bad"):
        Store(db_path)
    conn = sqlite3.connect(db_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    names = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
    conn.close()
    assert "half" not in tables and "emails" in tables
    assert names == {name for name, _ in migrations.MIGRATIONS} - {"0002_bad"}


def test_unknown_newer_migration_raises_migration_error(db_path: Path) -> None:
    Store(db_path).close()
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', 'x')")
    conn.close()
    with pytest.raises(MigrationError, match="newer emailwb"):
        Store(db_path)


def test_wal_mode_and_foreign_keys_are_on(store: Store) -> None:
    assert store.scalar("PRAGMA journal_mode") == "wal"
    assert store.call(lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]).result() == 1
    assert store.integrity_check() == "ok"


def test_new_files_use_16k_pages_and_existing_files_keep_theirs(tmp_path: Path) -> None:
    with Store(tmp_path / "new.sqlite") as store:
        assert store.scalar("PRAGMA page_size") == 16384
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE t (x)")  # an existing 4 KiB-page file
    conn.close()
    with Store(old) as store:
        assert store.scalar("PRAGMA page_size") == 4096
        assert store.integrity_check() == "ok"


def test_checkpoints_run_off_the_writer_and_keep_the_wal_small(db_path: Path) -> None:
    blob = b"x" * 200_000
    with Store(db_path) as store:
        for i in range(6):  # 12 MB in six commits, under the writer's own 16 MB checkpoint
            store.submit_many(
                "INSERT INTO raw_messages (sha256, raw, size, source, ingested_at)"
                " VALUES (?, ?, 0, '', '')",
                [(f"{i}-{k}", blob) for k in range(10)],
            )
            store.flush()
            time.sleep(0.1)
        deadline = time.monotonic() + 10  # the frames reach the database file meanwhile
        while db_path.stat().st_size < 11_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db_path.stat().st_size > 11_000_000
        assert store._checkpointer.checkpoints >= 2 and store._checkpointer.frames > 600
        assert store.scalar("SELECT COUNT(*) FROM raw_messages") == 60
    assert not Path(f"{db_path}-wal").exists()  # close finished the checkpoint
    assert count(db_path, "raw_messages") == 60


def test_batched_writes_are_visible_to_readers_after_flush(db_path: Path) -> None:
    with Store(db_path, flush_interval=10) as store:
        for i in range(1200):
            store.submit(INSERT, (f"a{i}", i))
        store.submit_many(INSERT, ((f"b{i}", i) for i in range(300)))
        store.flush()
        assert store.scalar("SELECT COUNT(*) FROM sources") == 1500
        assert store.query_one("SELECT size FROM sources WHERE path = ?", ("a7",))["size"] == 7


def test_failing_unit_does_not_lose_the_rest_of_its_batch(db_path: Path) -> None:
    with Store(db_path, flush_interval=10) as store:  # one batch: only flush() commits
        for i in range(5):
            store.submit(INSERT, (f"a{i}", i))
        store.submit(INSERT, ("a2", 99))  # duplicate path: UNIQUE violation
        store.submit_many(INSERT, [("m1", 1), ("a3", 1)])  # fails as a whole
        bad = store.call(lambda c: c.execute("INSERT INTO nowhere VALUES (1)"))
        good = store.call(lambda c: c.execute(INSERT, ("c1", 1)).lastrowid)
        for i in range(5):
            store.submit(INSERT, (f"z{i}", i))
        with pytest.raises(StoreError, match="2 queued write"):
            store.flush()
        assert isinstance(good.result(), int)
        with pytest.raises(StoreError) as info:
            bad.result()
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert len(store.write_errors) == 2
        store.flush()  # errors are reported once
    paths = {r[0] for r in sqlite3.connect(db_path).execute("SELECT path FROM sources")}
    assert paths == {*(f"a{i}" for i in range(5)), *(f"z{i}" for i in range(5)), "c1"}


def test_a_unit_that_rolls_back_the_whole_transaction_costs_only_itself(db_path: Path) -> None:
    with Store(db_path, flush_interval=10) as store:
        store.submit_many(INSERT, [("a", 1), ("b", 2)])
        ids = store.call(lambda c: c.execute(INSERT, ("c", 3)).lastrowid)
        store.submit(INSERT.replace("INSERT", "INSERT OR ROLLBACK"), ("a", 9))  # kills the tx
        store.submit(INSERT, ("d", 4))
        committer = store.call(lambda c: c.commit())
        with pytest.raises(StoreError, match="1 queued write"):
            store.flush()
        assert ids.result() == 3
        with pytest.raises(StoreError, match="must not commit"):
            committer.result()
        assert [r[0] for r in store.query("SELECT path FROM sources ORDER BY path")] == list("abcd")


def test_call_result_arrives_after_commit(db_path: Path) -> None:
    seen: list[int] = []
    with Store(db_path, flush_interval=0.2) as store:
        fut = store.call(lambda c: c.execute(INSERT, ("x", 1)).lastrowid)
        # the callback runs the moment the result is set: the row must be committed by then
        fut.add_done_callback(lambda _: seen.append(count(db_path)))
        assert fut.result(timeout=10) == 1
    assert seen == [1]


def test_dead_writer_makes_every_later_call_raise(store: Store) -> None:
    class Boom(BaseException):
        pass

    def explode(conn: sqlite3.Connection) -> None:
        raise Boom("disk on fire")

    with pytest.raises(StoreError, match="Boom"):
        store.call(explode).result(timeout=10)
    with pytest.raises(StoreError, match=r"writer thread died.*disk on fire"):
        store.submit(INSERT, ("x", 1))
    with pytest.raises(StoreError, match="writer thread died"):
        store.flush()


async def test_asyncio_readers_and_writer_do_not_block_the_event_loop(db_path: Path) -> None:
    ticks: list[float] = []

    async def heartbeat() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    with Store(db_path) as store:
        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.02)
        for i in range(10_000):
            store.submit(INSERT, (f"p{i}", i))
        store.call(lambda c: time.sleep(0.5))  # a slow disk: the batch takes a while
        slow_read = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) SELECT COUNT(*) FROM n"
        start = time.monotonic()
        results = await asyncio.gather(store.aflush(), *(store.aquery(slow_read) for _ in range(4)))
        during = [t for t in ticks if t > start]
        beat.cancel()
        assert all(r[0][0] == 300000 for r in results[1:])
        assert (
            await store.acall(lambda c: c.execute("SELECT COUNT(*) FROM sources").fetchone()[0])
            == 10_000
        )
    assert time.monotonic() - start >= 0.5
    assert len(during) >= 10  # ~50 expected; a blocked loop gives 0 or 1


def test_query_df_returns_a_typed_polars_dataframe(store: Store) -> None:
    store.submit_many(INSERT, [("a", 1), ("b", 2)])
    store.flush()
    df = store.query_df("SELECT path, size, messages, kind AS k FROM sources ORDER BY path")
    assert isinstance(df, pl.DataFrame)
    assert df["path"].to_list() == ["a", "b"] and df["size"].dtype == pl.Int64
    empty = store.query_df(
        "SELECT e.id, subject, body_chars, raw FROM emails e JOIN raw_messages r ON r.id = raw_id"
    )
    assert empty.height == 0
    assert dict(empty.schema) == {
        "id": pl.Int64,
        "subject": pl.Utf8,
        "body_chars": pl.Int64,
        "raw": pl.Binary,
    }


def test_pooled_readers_serve_many_threads(store: Store) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                assert store.scalar("SELECT COUNT(*) FROM sources") == 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_close_flushes_pending_writes_and_is_idempotent(db_path: Path) -> None:
    store = Store(db_path, flush_interval=60)
    store.submit_many(INSERT, [(f"p{i}", i) for i in range(1000)])
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.submit(INSERT, ("late", 0))
    with Store(db_path) as again:
        assert again.stats()["sources"] == 1000


CHILD = """
import sys, time
from emailwb.store.database import Store
store = Store(sys.argv[1])
sql = "INSERT INTO sources (path, kind, size, mtime, ingested_at) VALUES (?, 'eml', ?, 0, '')"
for k in range(10):
    store.submit_many(sql, [(f"p{k}-{i}", i) for i in range(200)])
    store.flush()
for i in range(5000):  # never flushed: may or may not survive, must not corrupt
    store.submit(sql, (f"late{i}", i))
print("flushed", flush=True)
time.sleep(60)
"""


def test_flushed_rows_survive_sigkill(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "flushed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stdout.close()  # type: ignore[union-attr]
    assert child.returncode == -signal.SIGKILL
    with Store(db_path) as store:
        assert store.integrity_check() == "ok"
        assert store.scalar("SELECT COUNT(*) FROM sources WHERE path LIKE 'p%'") == 2000
