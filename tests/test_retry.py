"""The retry policy's decisions: outcomes, backoff with jitter and Retry-After, and more room
for a reply cut at the token limit, told by the server's finish_reason (``"length"``) and
tested end to end against a simulated server that really cuts the reply."""

from __future__ import annotations

import json
import random
from typing import Any

import aiohttp
import pytest
from qualitykit import config_for, make_mail

from emailwb.engine.processor import Processor, RunSummary
from emailwb.engine.retry import backoff_delay, cut_by_token_limit, outcome, roomier
from emailwb.errors import BackendOverloaded, BackendTimeout, BackendUnavailable, SchemaViolation
from emailwb.llm.contract import LLMRequest
from emailwb.llm.ollama import OllamaBackend
from emailwb.llm.openai import OpenAIBackend
from emailwb.llm.router import make_backend
from emailwb.llm.schema import output_json_schema
from emailwb.settings import RunConfig
from emailwb.testing.faults import FaultPlan, cut_at_token_limit
from emailwb.testing.servers import SimServer

MESSAGES = [
    {"role": "system", "content": "Reply with JSON."},
    {
        "role": "user",
        "content": "From: Jeff <jeff@enron.com>\nSubject: Deal 123456\n\n"
        "We sold 10,000 MMBtu to Dynegy at $4.25. Can you confirm by Friday?",
    },
]


def test_errors_map_to_the_controllers_outcomes():
    assert outcome(BackendOverloaded("503")) == "overload"
    assert outcome(BackendTimeout("slow")) == "timeout"
    assert outcome(SchemaViolation("bad")) == "invalid"
    assert outcome(BackendUnavailable("down")) == "error"


def test_backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after():
    rng = random.Random(1)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (8, 5.0)]:
        d = backoff_delay(attempt, BackendUnavailable("down"), base=0.5, cap=5.0, rng=rng)
        assert full / 2 <= d <= full
    err = BackendOverloaded("busy", retry_after=7.0)
    assert 7.0 <= backoff_delay(1, err, base=0.5, cap=5.0, rng=rng) <= 7.7


def test_roomier_doubles_the_request_limit_else_the_default_else_768():
    assert roomier({}, {"num_predict": 768}) == {"num_predict": 1536}
    assert roomier({"num_predict": 1536, "temperature": 0}, {"num_predict": 768}) == {
        "num_predict": 3072,
        "temperature": 0,
    }
    assert roomier({}, {}) == {"num_predict": 1536}


def test_token_limit_is_read_from_finish_reason_never_from_the_message():
    assert cut_by_token_limit(SchemaViolation("bad enum", finish_reason="length"))
    # the words alone do not count: the server said it stopped on its own
    worded = SchemaViolation(
        "reply cut at the token limit; Unterminated string", finish_reason="stop"
    )
    assert not cut_by_token_limit(worded)
    assert not cut_by_token_limit(SchemaViolation("reply cut at the token limit"))
    # only a schema violation is retried with more room, whatever the reason says
    assert not cut_by_token_limit(BackendTimeout("slow"))


def test_simulated_token_limit_keeps_limit_times_four_chars_and_at_most_half():
    text = "x" * 1000
    assert cut_at_token_limit(text, {"options": {"num_predict": 10}}) == "x" * 40
    assert cut_at_token_limit(text, {"max_tokens": 25}) == "x" * 100
    assert cut_at_token_limit(text, {"max_completion_tokens": 30}) == "x" * 120
    assert cut_at_token_limit(text, {"max_tokens": 5000}) == "x" * 500
    assert cut_at_token_limit(text, {}) == "x" * 500


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("kind", ["ollama", "openai", "llama-server"])
async def test_a_reply_cut_by_the_server_raises_schema_violation_with_finish_reason_length(
    session, kind, stream
):
    async with SimServer(kind=kind) as srv:
        backend = (
            OllamaBackend(srv.url, model=srv.model, session=session)
            if kind == "ollama"
            else OpenAIBackend(srv.url, model=srv.model, session=session)
        )
        whole = await backend.complete(
            LLMRequest(MESSAGES, output_json_schema(), {"num_predict": 768}, stream=stream)
        )
        srv.inject("token_limit")
        with pytest.raises(SchemaViolation) as info:
            await backend.complete(
                LLMRequest(MESSAGES, output_json_schema(), {"num_predict": 8}, stream=stream)
            )
        srv.inject("schema_violation")
        with pytest.raises(SchemaViolation) as other:
            await backend.complete(LLMRequest(MESSAGES, output_json_schema(), stream=stream))
    err = info.value
    assert whole.finish_reason == "stop"
    assert err.finish_reason == "length" and cut_by_token_limit(err)
    assert err.raw == whole.raw[:32]  # 8 tokens of 4 characters: the JSON really is cut
    assert "cut at the token limit" in str(err) and " -> raise num_predict" in str(err)
    assert other.value.finish_reason == "stop" and not cut_by_token_limit(other.value)
    sent = srv.chat_requests[1].body
    assert (sent["options"]["num_predict"] if kind == "ollama" else sent["max_tokens"]) == 8


def _limit(body: dict[str, Any]) -> int:
    """The token limit a request asked for, in its protocol's own field."""
    return body["options"]["num_predict"] if "options" in body else body["max_tokens"]


async def _run(store: Any, srv: SimServer, name: str, **kw: Any) -> RunSummary:
    """One run against ``srv`` with the backend built as ``emailwb run`` builds it: the
    configuration's options (num_predict 300 here) are the backend's own."""
    cfg: RunConfig = config_for(
        srv, concurrency=1, options={"temperature": 0.0, "num_predict": 300}, **kw
    )
    backend = make_backend(cfg.backend, srv.url, srv.model, None, cfg.options)
    try:
        return await Processor(
            store, cfg, backend, run_name=name, seed=1, quality=None
        ).run_to_end()
    finally:
        await backend.aclose()


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_a_run_retries_a_reply_cut_at_the_token_limit_with_twice_the_max_tokens(
    store, kind, stream
):
    make_mail(store, 1)
    async with SimServer(kind=kind, faults=FaultPlan()) as srv:
        srv.inject("token_limit")
        summary = await _run(store, srv, "cut", stream=stream)
    first, retry = srv.chat_requests
    assert first.fault == "token_limit" and retry.fault is None
    assert retry.prompt == first.prompt  # the same unit, asked again
    assert _limit(first.body) == 300 and _limit(retry.body) == 600
    assert summary.done == 1 and summary.failed == 0 and summary.retries == 1
    [(status, attempts, raw)] = store.query("SELECT status, attempts, raw FROM results")
    assert status == "done" and attempts == 2 and json.loads(raw)["email_type"]


async def test_a_schema_violation_the_server_did_not_cut_is_retried_with_the_same_room(store):
    make_mail(store, 1)
    async with SimServer(kind="openai") as srv:
        srv.inject("schema_violation")
        summary = await _run(store, srv, "bad")
    first, retry = srv.chat_requests
    assert first.fault == "schema_violation"
    assert _limit(first.body) == _limit(retry.body) == 300
    assert summary.done == 1
