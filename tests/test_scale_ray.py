"""Exported shards through a real local Ray cluster, with a worker killed mid-job.

About 200 real Enron emails are exported as OpenAI batch request lines; ``run_on_ray``
sends them through a Ray Data actor pool to two simulated OpenAI servers in their own
processes (``bench/simserver.py``); the test SIGKILLs one of the pool's worker processes
while requests are in flight. Ray brings the actor back and retries its batch; after
``batch import`` every unit is done exactly once, provenance names the engine, and a
second export writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="Ray is the scale extra: pip install 'emailwb[scale]'")

from emailwb.scale.batchfiles import export_batch, import_batch  # noqa: E402
from emailwb.scale.ray_runner import run_on_ray  # noqa: E402
from emailwb.settings import RunConfig  # noqa: E402
from emailwb.store import batches, runs  # noqa: E402
from emailwb.ui import explore  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from simserver import read_log, spawn  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
EMAILS = 200


def enron_subset(enron: Path, dest: Path, n: int) -> Path:
    files = sorted((enron / "maildir" / "dasovich-j").rglob("*"))
    picked = [f for f in files if f.is_file()][:n]
    for i, f in enumerate(picked):
        out = dest / "maildir" / "dasovich-j" / "sub" / f"{i}."
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out)
    return dest


def line_callers() -> list[Any]:
    import psutil

    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if any("LineCaller" in part for part in (p.info["cmdline"] or []))
    ]


async def test_ray_round_trip_survives_a_killed_worker(
    store: Any, enron_dir: Path, tmp_path: Path
) -> None:
    mail = enron_subset(enron_dir, tmp_path / "mail", EMAILS)
    explore.ingest_mailbox(store, mail, progress=False, workers=0)
    procs = []
    try:
        urls = []
        for k in range(2):
            log = tmp_path / f"server{k}.jsonl"
            proc, url, model = spawn(tmp_path, slots=4, service_time=0.15, log=log)
            procs.append((proc, log))
            urls.append(url)
        cfg = RunConfig.default(backend="openai", urls=urls, model=model, plan="default")
        man = await export_batch(store, cfg, tmp_path / "out", run_name="ray", max_lines=80)
        assert man.units >= 100 and len(man.files) >= 2  # 200 messages, fewer content groups
        shards = [tmp_path / "out" / f["name"] for f in man.files]
        out = tmp_path / "ray-output.jsonl"
        killed: list[int] = []

        def killer() -> None:  # one pool worker dies once requests are flowing
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                served = sum(len(read_log(log)) for _, log in procs if log.exists())
                workers = line_callers()
                if served >= 40 and workers:
                    workers[0].send_signal(signal.SIGKILL)
                    killed.append(workers[0].pid)
                time.sleep(0.2)

        watcher = threading.Thread(target=killer, daemon=True)
        watcher.start()
        report = await asyncio.to_thread(
            run_on_ray,
            shards,
            out,
            urls,
            actors=2,
            in_flight=4,
            batch_size=10,
            init_kwargs={"num_cpus": 2},
        )
        watcher.join(5)
        assert killed, "no Ray worker was found to kill"
        assert report.written >= man.units and report.failed == 0
        starts = [r for _, log in procs for r in read_log(log) if r["event"] == "start"]
        assert len(starts) >= man.units  # both servers together saw every request...
        assert all(any(r["event"] == "start" for r in read_log(log)) for _, log in procs)

        imp = await import_batch(store, [out], engine="ray")
        assert imp.done == man.units and imp.failed == 0
        record = runs.get_run(store, "ray")
        per_unit = store.query(
            "SELECT group_id, COUNT(*) AS n, MIN(endpoint) AS e FROM results WHERE run_id = ? "
            "GROUP BY group_id",
            (record.id,),
        )
        assert len(per_unit) == man.units and all(r["n"] == 1 for r in per_unit)
        assert all(r["e"].startswith("ray:ray-output.jsonl#") for r in per_unit)
        assert runs.load_pending(store, record.id, record.unit) == []
        assert batches.out_counts(store) == {}
        again = await export_batch(store, cfg, tmp_path / "again", run_name="ray")
        assert again.units == 0
        # ...and a second Ray run over the same shards sends nothing: the output is its checkpoint
        rerun = await asyncio.to_thread(run_on_ray, shards, out, urls, init_kwargs={"num_cpus": 2})
        assert rerun.written == 0 and rerun.already == rerun.requests
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(10)


@pytest.mark.llm
async def test_ray_round_trip_with_the_embedded_model(
    store: Any, sample_dir: Path, tmp_path: Path
) -> None:
    from emailwb.engine.batch import open_backend, with_local_sampling

    explore.ingest_mailbox(store, sample_dir, progress=False, workers=0)
    cfg = with_local_sampling(RunConfig.default(backend="local", plan="default"))
    exported = cfg.model_copy(update={"model": cfg.model or "local"})
    groups = [r[0] for r in store.query("SELECT id FROM content_groups ORDER BY id LIMIT 4")]
    man = await export_batch(store, exported, tmp_path / "out", run_name="local-ray")
    # a handful: keep the first four units' lines (the rest stay out, as after a partial job)
    shard = tmp_path / "out" / man.files[0]["name"]
    keep = [ln for ln in shard.read_text().splitlines() if int(ln.split("|")[2]) in groups]
    assert len(keep) == 4
    few = tmp_path / "few.jsonl"
    few.write_text("\n".join(keep) + "\n")
    async with open_backend(cfg) as opened:
        url = opened.backend.url
        report = await asyncio.to_thread(
            run_on_ray,
            [few],
            tmp_path / "local-out.jsonl",
            [url],
            actors=1,
            in_flight=2,
            init_kwargs={"num_cpus": 2},
        )
    assert report.written == 4
    imp = await import_batch(store, [tmp_path / "local-out.jsonl"], engine="ray")
    assert imp.done + imp.failed == 4 and imp.done >= 3  # SmolLM2 under the schema
    record = runs.get_run(store, "local-ray")
    rows = store.query("SELECT status, data, endpoint FROM results WHERE run_id = ?", (record.id,))
    assert all(r["endpoint"].startswith("ray:local-out.jsonl#") for r in rows)
    for r in rows:
        if r["status"] == "done":
            data = json.loads(r["data"])
            assert data["email_type"] and "evidence" in data  # composed like a live result


def test_the_batch_ray_command_sends_the_missing_lines_and_says_what_to_import(
    db_path: Path, sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emailwb.cli import main

    proc, url, model = spawn(tmp_path, slots=4, service_time=0.0)
    try:
        db = ["--db", str(db_path)]
        assert main(["ingest", str(sample_dir), *db, "--quiet"]) == 0
        export = ["batch", "export", "--out", str(tmp_path / "req"), "--run-name", "cli-ray"]
        assert main([*export, *db, "--model", model]) == 0
        shards = sorted(str(p) for p in (tmp_path / "req").glob("requests-*.jsonl"))
        units = sum(len(Path(s).read_text().splitlines()) for s in shards)
        out = tmp_path / "out.jsonl"
        ray_cmd = ["batch", "ray", *shards, "--out", str(out), "--url", url, "--actors", "1"]
        capsys.readouterr()
        assert main([*ray_cmd, "--quiet"]) == 0
        said = capsys.readouterr().out
        assert f"{units:,} lines written" in said and "0 with an error" in said
        assert f"emailwb batch import {out} --engine ray" in said
        assert main([*ray_cmd, "--quiet"]) == 0  # the output file is the checkpoint
        assert f"0 lines written to {out}" in capsys.readouterr().out
        assert len(out.read_text().splitlines()) == units
        assert main(["batch", "import", str(out), "--engine", "ray", *db, "--quiet"]) == 0
        assert f"{units:,} done, 0 failed" in capsys.readouterr().out
    finally:
        proc.terminate()
        proc.wait(10)
