"""The embedded default end to end: llama-server + SmolLM2 behind the OpenAI backend.

Real server, real model, real Enron mail, the real templates and output schema: replies are
schema-valid, carry token counts and a time to first token, and the shared instruction
prefix is served from the server's prompt cache.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from emailwb.engine.batch import LOCAL_SAMPLING
from emailwb.llm.contract import LLMRequest
from emailwb.llm.grammar import compact_gbnf
from emailwb.llm.localserver import LocalServer
from emailwb.llm.prompts import build_messages
from emailwb.llm.router import make_backend
from emailwb.llm.schema import EmailAnalysis, output_json_schema
from emailwb.mail.message import parse_email

pytestmark = pytest.mark.llm

# Short real messages of different kinds (a request, a schedule note, a deal discussion).
EMAILS = [
    "maildir/dean-c/inbox/34.eml",
    "maildir/delainey-d/sent_items/52.eml",
    "maildir/dean-c/_sent_mail/1.eml",
]


@pytest.fixture(scope="module")
def local_server():
    with LocalServer(slots=2, ctx_per_slot=4096) as server:
        yield server


async def test_real_replies_are_schema_valid_with_tokens_and_ttft(local_server, enron_dir: Path):
    options = {**LOCAL_SAMPLING, "temperature": 0.0, "num_predict": 768}
    async with aiohttp.ClientSession() as session:
        backend = make_backend("local", local_server.url, "local", None, options, session)
        await backend.warm()
        prompts = [build_messages(parse_email((enron_dir / p).read_bytes())) for p in EMAILS]
        first = await backend.complete(
            LLMRequest(prompts[0].messages, output_json_schema(), options)
        )
        rest = await asyncio.gather(
            *(
                backend.complete(LLMRequest(p.messages, output_json_schema(), options))
                for p in prompts[1:]
            )
        )
        info = await backend.info()
    for comp in [first, *rest]:
        EmailAnalysis.model_validate(comp.data)  # the guard already did; this is the contract
        assert comp.prompt_tokens and comp.prompt_tokens > 100
        assert comp.completion_tokens and comp.completion_tokens > 10
        assert comp.ttft_s is not None and 0 < comp.ttft_s < comp.latency_s
    # the static instructions come first and are byte-identical, so later requests reuse them
    assert all((c.cached_tokens or 0) >= 100 for c in rest), [c.cached_tokens for c in rest]
    assert info.slots == 2


def outside_strings(text: str) -> str:
    """``text`` with every JSON string's contents removed (quotes kept)."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)


async def test_compact_grammar_gives_compact_schema_valid_replies(local_server, enron_dir: Path):
    options = {**LOCAL_SAMPLING, "temperature": 0.0, "num_predict": 768}
    async with aiohttp.ClientSession() as session:
        backend = make_backend("local", local_server.url, "local", None, options, session)
        prompts = [build_messages(parse_email((enron_dir / p).read_bytes())) for p in EMAILS]
        comps = await asyncio.gather(
            *(
                backend.complete(LLMRequest(p.messages, grammar=compact_gbnf(), options=options))
                for p in prompts
            )
        )
    for comp in comps:
        EmailAnalysis.model_validate(comp.data)
        skeleton = outside_strings(comp.raw)
        assert not re.search(r"\s", skeleton), comp.raw  # no whitespace outside strings
        assert list(json.loads(comp.raw)) == list(EmailAnalysis.model_fields)
        assert comp.completion_tokens and comp.completion_tokens > 10


def test_emailwb_run_processes_the_bundled_sample_and_shows_progress(tmp_path: Path):
    db = tmp_path / "wb.sqlite"
    cmd = [sys.executable, "-m", "emailwb.cli", "run", "--db", str(db), "--limit", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ingested 301 new messages" in proc.stdout
    assert "emails/min" in proc.stdout
    status = subprocess.run(
        [sys.executable, "-m", "emailwb.cli", "status", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(status.stdout)
    assert data["done"] + data["failed"] == 2
    assert data["done"] >= 1, data["failures"]
