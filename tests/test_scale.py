"""Batch files: export a run as OpenAI batch requests, run them elsewhere, import the output.

A real store filled from the bundled Enron sample; the "engine" here is a loop that POSTs
each request line's body, unchanged, to a SimServer (an in-process OpenAI-compatible
server) and writes the OpenAI batch output format, as vLLM's run-batch does. The request
lines are checked against the OpenAI batch input format as documented, field by field,
not against emailwb's writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from emailwb.errors import ConfigError
from emailwb.llm.openai import openai_base_url
from emailwb.scale.batchfiles import export_batch, import_batch
from emailwb.settings import RunConfig
from emailwb.store import batches, runs
from emailwb.testing.servers import SimServer
from emailwb.ui import explore

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def filled(store: Any, sample_dir: Path) -> Any:
    explore.ingest_mailbox(store, sample_dir, progress=False, workers=0)
    return store


def config(srv: SimServer) -> RunConfig:
    return RunConfig.default(backend="openai", urls=[srv.url], model=srv.model, plan="default")


def request_lines(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in sorted(folder.glob("requests-*.jsonl"))
        for line in f.read_text().splitlines()
    ]


async def engine(srv: SimServer, folder: Path, out: Path, fail: set[str] = frozenset()) -> None:
    """What a batch engine does with the request files: POST each body, write the output."""
    url = openai_base_url(srv.url) + "/chat/completions"
    lines = []
    async with aiohttp.ClientSession() as session:
        for n, req in enumerate(request_lines(folder)):
            if req["custom_id"] in fail:
                lines.append(
                    {
                        "id": f"batch_req_{n}",
                        "custom_id": req["custom_id"],
                        "response": {"status_code": 400, "request_id": f"r{n}", "body": {}},
                        "error": {"code": "invalid_request", "message": "max_tokens too large"},
                    }
                )
                continue
            async with session.post(url, json=req["body"]) as resp:
                body = await resp.json()
            lines.append(
                {
                    "id": f"batch_req_{n}",
                    "custom_id": req["custom_id"],
                    "response": {"status_code": resp.status, "request_id": f"r{n}", "body": body},
                    "error": None,
                }
            )
    await asyncio.to_thread(out.write_text, "".join(json.dumps(x) + "\n" for x in lines))


async def test_export_writes_openai_batch_lines_and_a_manifest(filled: Any, tmp_path: Path) -> None:
    async with SimServer(kind="openai", slots=4) as srv:
        cfg = config(srv)
        man = await export_batch(filled, cfg, tmp_path / "out", run_name="b1", max_lines=40)
    lines = request_lines(tmp_path / "out")
    pending = runs.load_pending(filled, runs.get_run(filled, "b1").id, cfg.unit)
    assert len(lines) == man.units == len(pending) > 40  # sharded at 40 lines
    assert len(man.files) == -(-len(lines) // 40)
    for line in lines:  # the OpenAI batch input format, as its documentation gives it
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert isinstance(line["custom_id"], str) and len(line["custom_id"]) <= 512
        body = line["body"]
        assert body["model"] == srv.model and body["stream"] is False
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert all(isinstance(m["content"], str) and m["content"] for m in body["messages"])
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["type"] == "object"
        assert "grammar" not in body  # llama.cpp's own field: not for a batch engine
    assert len({x["custom_id"] for x in lines}) == len(lines)
    for f in man.files:
        data = (tmp_path / "out" / f["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
    manifest = json.loads(next((tmp_path / "out").glob("*.manifest.json")).read_text())
    assert manifest["run"] == "b1" and manifest["units"] == len(lines)
    assert manifest["request_hash"] in lines[0]["custom_id"]
    # a second export: everything is out in a file already
    again = await export_batch(filled, cfg, tmp_path / "out2", run_name="b1")
    assert again.units == 0 and not list((tmp_path / "out2").glob("*.jsonl"))


async def test_round_trip_imports_once_keeps_failures_and_resumes(
    filled: Any, tmp_path: Path
) -> None:
    async with SimServer(kind="openai", slots=4) as srv:
        cfg = config(srv)
        man = await export_batch(filled, cfg, tmp_path / "out", run_name="rt")
        ids = [x["custom_id"] for x in request_lines(tmp_path / "out")]
        out = tmp_path / "output.jsonl"
        await engine(srv, tmp_path / "out", out, fail={ids[3]})
    text = out.read_text()
    cut = tmp_path / "cut.jsonl"  # the engine died while writing the last line
    rows = text.splitlines()
    bare = json.loads(rows[0])  # a writer that puts the completion straight in "response"
    bare["response"] = bare["response"]["body"]
    rows[0] = json.dumps(bare)
    text = "\n".join(rows) + "\n"
    cut.write_text(text[: len(text) - 40])

    report = await import_batch(filled, [cut], engine="vllm-run-batch")
    assert report.run == "rt" and len(report.incomplete) == 1
    assert report.done == man.units - 2 and report.failed == 1
    record = runs.get_run(filled, "rt")
    rows = filled.query(
        "SELECT status, endpoint, reason FROM results WHERE run_id = ? ORDER BY id", (record.id,)
    )
    assert len(rows) == man.units - 1
    assert all(r["endpoint"].startswith("vllm-run-batch:cut.jsonl#") for r in rows)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "max_tokens too large" in failed[0]["reason"]
    config_now = runs.get_run(filled, "rt").config
    assert config_now["resumes"][-1]["config"]["engine"] == "vllm-run-batch"
    assert batches.out_counts(filled) == {"rt": 1}  # the cut line's unit is still out

    # importing the whole file again changes nothing that is done
    again = await import_batch(filled, [out])
    assert again.already == man.units - 1 and again.done == 1  # the cut line's unit
    assert filled.scalar("SELECT COUNT(*) FROM results WHERE run_id = ?", (record.id,)) == (
        man.units
    )
    assert batches.out_counts(filled) == {}
    # the failure: retry-failed re-queues it, and the next export writes only it
    assert runs.retry_failed(filled, "rt") == 1
    async with SimServer(kind="openai", slots=4) as srv:
        nxt = await export_batch(filled, config(srv), tmp_path / "next", run_name="rt")
    assert nxt.units == 1
    assert request_lines(tmp_path / "next")[0]["custom_id"] == ids[3]


async def test_import_refuses_another_runs_or_another_prompts_output(
    filled: Any, tmp_path: Path
) -> None:
    async with SimServer(kind="openai", slots=4) as srv:
        await export_batch(filled, config(srv), tmp_path / "out", run_name="mine")
        out = tmp_path / "output.jsonl"
        await engine(srv, tmp_path / "out", out)
    lines = out.read_text().splitlines()[:3]
    with pytest.raises(ConfigError, match="from run") as exc:
        await import_batch(filled, [out], run_name="other")
    assert "--run-name" in (exc.value.hint or "")
    changed = tmp_path / "changed.jsonl"
    obj = json.loads(lines[0])
    run, unit, shape = obj["custom_id"].split("|")[1:]
    obj["custom_id"] = f"emailwb|{run}|{unit}|{'0' * len(shape)}"
    changed.write_text(json.dumps(obj) + "\n")
    with pytest.raises(ConfigError, match="request hash") as exc:
        await import_batch(filled, [changed])
    assert "batch export" in (exc.value.hint or "")
    stranger = tmp_path / "stranger.jsonl"
    stranger.write_text(json.dumps({"custom_id": "req-1", "response": {}}) + "\n")
    with pytest.raises(ConfigError, match="not one emailwb wrote"):
        await import_batch(filled, [stranger])
    assert filled.scalar("SELECT COUNT(*) FROM results") == 0  # nothing stored by refusals


async def test_a_request_line_carries_what_a_live_run_sends(filled: Any, tmp_path: Path) -> None:
    from emailwb.engine.batch import run_batch
    from emailwb.testing.faults import default_answer

    seen: list[dict[str, Any]] = []

    def record(body: dict[str, Any]) -> Any:
        seen.append(body)
        return default_answer(body)

    async with SimServer(kind="openai", slots=4, answer=record) as srv:
        cfg = config(srv)
        await run_batch(filled, cfg, run_name="live", limit=3)
        await export_batch(filled, cfg, tmp_path / "out", run_name="exported")
    by_user = {
        x["body"]["messages"][1]["content"]: x["body"] for x in request_lines(tmp_path / "out")
    }
    units = [b for b in seen if b["messages"][-1]["content"] != "Reply with OK."]  # not warm-up
    assert len(units) == 3
    for live in units:
        line = by_user[live["messages"][-1]["content"]]  # the same unit, the same prompt
        assert line["messages"] == live["messages"]
        for key in ("model", "max_tokens", "temperature", "seed"):
            assert line.get(key) == live.get(key), key


async def test_the_cli_exports_shows_what_is_out_and_imports(
    filled: Any, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emailwb.cli import main

    filled.flush()
    db = ["--db", str(db_path)]
    args = ["batch", "export", *db, "--model", "sim-model:1b", "--run-name", "cli"]
    assert await asyncio.to_thread(main, [*args, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "vllm run-batch -i" in said and "emailwb batch import" in said
    assert await asyncio.to_thread(main, ["status", *db, "--run", "cli"]) == 0
    assert "units out in batch files" in capsys.readouterr().out
    async with SimServer(kind="openai", slots=4) as srv:
        await engine(srv, tmp_path / "out", tmp_path / "output.jsonl")
    imp = ["batch", "import", *db, str(tmp_path / "output.jsonl"), "--quiet"]
    assert await asyncio.to_thread(main, imp) == 0
    said = capsys.readouterr().out
    assert "into run 'cli'" in said and " 0 failed" in said
    assert await asyncio.to_thread(main, ["status", *db, "--run", "cli"]) == 0
    said = capsys.readouterr().out
    assert "units out" not in said and " 0 pending" in said
