"""What a newcomer meets in the first hour: a closed port, a folder of junk, the numbers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from emailwb import cli


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def test_run_against_a_closed_port_fails_before_ingesting_in_one_line(
    tmp_path: Path, capsys: Any
) -> None:
    db = tmp_path / "w.sqlite"
    sample = Path(__file__).resolve().parents[1] / "data" / "enron-sample"
    rc = cli.main(
        [
            "run",
            str(sample),
            "--db",
            str(db),
            "--backend",
            "ollama",
            "--url",
            f"http://127.0.0.1:{closed_port()}",
            "--model",
            "llama3.2:3b",
            "--quiet",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 2
    assert not db.exists() and "ingested" not in out  # nothing was ingested
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert "cannot reach the server" in line and "nothing was ingested or queued" in line
    assert "ClientConnectorError" not in line and "ConnectionKey" not in line  # no repr
    assert "`ollama serve`" in line and "retries on its own" not in line


def test_a_folder_of_junk_prints_the_reasons_and_exits_non_zero(
    tmp_path: Path, capsys: Any
) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.eml").write_bytes(bytes(range(256)) * 8)  # binary
    (junk / "b.bin").write_bytes(b"\x00\x01\x02" * 500)
    (junk / "c.eml").write_bytes(b"")
    (junk / "d").write_bytes(b"   \n")
    db = tmp_path / "j.sqlite"
    rc = cli.main(["ingest", str(junk), "--db", str(db), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 1 and "nothing could be ingested" in err
    assert "messages read                0" in out  # files that are not mail are not messages
    assert "errors (not stored)          4" in out
    for name in ("a.eml", "b.bin", "c.eml"):
        assert f"{junk / name}: " in out  # the reason, per file
    assert "binary data" in out and "empty file" in out
    assert "`emailwb errors`" in out
    rc = cli.main(["errors", "--db", str(db)])
    listed = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(listed) == 4 and all(": " in ln for ln in listed)


def test_a_folder_with_mail_and_junk_exits_zero(tmp_path: Path, capsys: Any) -> None:
    sample = Path(__file__).resolve().parents[1] / "data" / "enron-sample"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    first = sorted(sample.rglob("*.eml"))[0]
    (mixed / "good.eml").write_bytes(first.read_bytes())
    (mixed / "junk.eml").write_bytes(b"")
    rc = cli.main(["ingest", str(mixed), "--db", str(tmp_path / "m.sqlite"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "ingested 1 new messages" in out and "junk.eml: empty file" in out


async def test_status_json_of_a_stopped_run_is_stable_and_has_no_eta(store: Any) -> None:
    import asyncio
    import json as _json

    from qualitykit import config_for, make_mail, sim_run

    from emailwb.engine.throughput import status_json
    from emailwb.quality.watch import QualityConfig
    from emailwb.testing.servers import SimServer

    make_mail(store, 12)
    async with SimServer(kind="ollama", service_time=0.05) as srv:
        _, summary = await sim_run(
            store,
            srv,
            "stopped-early",
            limit=5,
            quality=QualityConfig(judge=False),
            config=config_for(srv, plan="llm", concurrency=1),
        )
    assert summary.status == "stopped" and summary.pending == 7
    first = status_json(store, "stopped-early")
    await asyncio.sleep(1.2)
    second = status_json(store, "stopped-early")
    for key in ("run", "total", "done", "failed", "pending", "eta_s", "units_last_min", "live"):
        assert _json.dumps(first[key], sort_keys=True, default=str) == _json.dumps(
            second[key], sort_keys=True, default=str
        ), key
    assert first["eta_s"] is None and first["live"]["eta_s"] is None
    assert first["units_last_min"] == 5  # its last minute of work, not the minute before now


def test_the_bar_and_its_rate_count_the_same_unit() -> None:
    """The bar's count, its rate and its ETA are all units (LLM calls); emails beside them."""
    from emailwb.engine.throughput import Metrics

    clock = [0.0]
    m = Metrics(window_s=60.0, clock=lambda: clock[0])
    m.start(total=40)
    for _ in range(20):  # 20 units of 3 emails each (content groups), one every 3 s
        clock[0] += 3.0
        m.attempt(True)
        m.unit_done(emails=3, latency_s=3.0, ttft_s=0.5, prompt_tokens=100, completion_tokens=20)
    snap = m.snapshot()
    on_progress, progress = cli._progress_printer(quiet=False)
    on_progress(snap)
    task = progress.tasks[0]
    assert task.total == 40 and task.completed == 20  # units, not the 60 emails they cover
    assert abs(task.fields["rate"] - 20.0) < 1e-6  # 20 units in 60 s: units/min, not emails/min
    assert task.fields["emails"] == 60
    assert task.fields["eta"] == "1m00s"  # 20 units left at 20 units/min
    columns = " ".join(getattr(c, "text_format", "") for c in progress.columns)
    assert "units/min" in columns and "emails covered" in columns


async def test_export_of_a_partial_run_lists_every_email(
    store: Any, tmp_path: Path, capsys: Any
) -> None:
    import polars as pl
    from qualitykit import config_for, make_mail, sim_run

    from emailwb.quality.watch import QualityConfig
    from emailwb.testing.servers import SimServer

    make_mail(store, 12)
    async with SimServer(kind="ollama", service_time=0.01) as srv:
        _, summary = await sim_run(
            store,
            srv,
            "partial",
            limit=5,
            quality=QualityConfig(judge=False),
            config=config_for(srv, plan="llm", concurrency=1),
        )
    emails = store.query_one("SELECT COUNT(*) FROM emails")[0]
    out = tmp_path / "partial.csv"
    rc = cli.main(["export", "--db", str(store.path), "--run", "partial", "--out", str(out)])
    assert rc == 0
    df = pl.read_csv(out)
    assert df.height == emails  # the whole mailbox, not only the emails with a result
    done = df.filter(pl.col("status") == "done")
    pending = df.filter(pl.col("status") == "pending")
    assert done.height == summary.emails_done and pending.height == emails - done.height > 0
    assert pending["data"].is_null().all() and done["data"].is_not_null().all()
    assert f"wrote {emails} emails" in capsys.readouterr().out


def test_a_run_ends_saying_where_the_results_are_and_how_to_go_on(
    tmp_path: Path, capsys: Any
) -> None:
    db = tmp_path / "demo.sqlite"
    args = ["run", "--db", str(db), "--plan", "facts", "--run-name", "demo", "--quiet"]
    assert cli.main([*args, "--limit", "3"]) == 0  # the bundled sample: the store is empty
    last = capsys.readouterr().out.strip().splitlines()
    assert "run 'demo' stopped: 3 done" in "\n".join(last)
    assert last[-2].startswith(f"results: in {db} (run 'demo')")
    assert "emailwb export" in last[-2] and "jupyter lab notebooks/" in last[-2]
    pending = int(last[-1].split()[0])
    assert pending > 0 and "run the same command again (without --limit" in last[-1]
    assert cli.main(args) == 0  # going on as told finishes the rest, asking nothing twice
    out = capsys.readouterr().out
    assert f"completed: {pending + 3} done" in out and f"this session {pending} units" in out
    assert "still pending" not in out
