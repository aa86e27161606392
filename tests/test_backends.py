"""Backends against real in-process HTTP servers (emailwb.testing.servers) that inject faults."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest

from emailwb.errors import (
    BackendError,
    BackendOverloaded,
    BackendProtocolError,
    BackendRequestError,
    BackendServerError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ModelNotFound,
    SchemaViolation,
)
from emailwb.llm.contract import LLMRequest
from emailwb.llm.ollama import OllamaBackend, check_ollama_options, ollama_url
from emailwb.llm.openai import OpenAIBackend, openai_base_url
from emailwb.llm.router import Router, make_backend
from emailwb.llm.schema import output_json_schema
from emailwb.testing.faults import FaultPlan
from emailwb.testing.servers import SimServer

SECRET = "sk-test-DO-NOT-LEAK-1234"
MESSAGES = [
    {"role": "system", "content": "You read one business email."},
    {
        "role": "user",
        "content": "From: Jeff <jeff@enron.com>\nSubject: Deal 123456\n\n"
        "We sold 10,000 MMBtu to Dynegy at $4.25. Can you confirm by Friday?",
    },
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def ollama_server():
    async with SimServer(kind="ollama", slots=4, faults=FaultPlan(retry_after=2.5)) as srv:
        yield srv


@pytest.fixture
async def openai_server():
    async with SimServer(kind="llama-server", slots=4, faults=FaultPlan(retry_after=2.5)) as srv:
        yield srv


def backend_for(srv: SimServer, session, **kw):
    if srv.kind == "ollama":
        return OllamaBackend(srv.url, model=srv.model, session=session, **kw)
    return OpenAIBackend(srv.url, model=srv.model, session=session, **kw)


@pytest.fixture(params=["ollama", "openai"])
def kind(request):
    return request.param


@pytest.fixture
def server(kind, request):
    return request.getfixturevalue(f"{kind}_server")


def req(stream: bool = True, timeout: float = 5.0, key: str = "m1") -> LLMRequest:
    return LLMRequest(
        MESSAGES, output_json_schema(), {"temperature": 0}, key=key, stream=stream, timeout=timeout
    )


# --- the happy path -----------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
async def test_complete_reads_data_tokens_and_ttft(server, session, stream):
    backend = backend_for(server, session)
    c = await backend.complete(req(stream))
    assert c.data["email_type"] == "deal" and c.data["amounts"][0]["value"] == 4.25
    assert json.loads(c.raw)["email_type"] == "deal"
    assert c.prompt_tokens and c.prompt_tokens > 10 and c.completion_tokens > 10
    assert c.endpoint == backend.url and c.model == server.model and c.key == "m1"
    assert c.latency_s > 0 and c.finish_reason == "stop"
    if stream:
        assert c.ttft_s is not None and 0 < c.ttft_s <= c.latency_s
    else:
        assert c.ttft_s is None
    st = backend.stats[backend.url]
    assert (st.requests, st.ok, st.in_flight, st.schema_violations) == (1, 1, 0, 0)
    assert st.latency_ewma is not None


async def test_ollama_request_body(ollama_server, session):
    backend = OllamaBackend(
        ollama_server.url,
        model=ollama_server.model,
        session=session,
        options={"num_ctx": 4096},
        keep_alive="1h",
    )
    await backend.complete(req())
    body = ollama_server.chat_requests[-1].body
    assert body["format"] == output_json_schema()
    assert body["options"] == {"num_ctx": 4096, "temperature": 0}
    assert body["keep_alive"] == "1h" and body["stream"] is True
    assert ollama_server.chat_requests[-1].status == 200


async def test_openai_request_body(openai_server, session):
    backend = OpenAIBackend(
        openai_server.url, model=openai_server.model, session=session, options={"num_predict": 300}
    )
    await backend.complete(req())
    body = openai_server.chat_requests[-1].body
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"] == output_json_schema()
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 300 and "num_predict" not in body


@pytest.mark.parametrize("sim_kind", ["openai", "llama-server"])
async def test_cached_tokens_from_usage_or_timings(session, sim_kind):
    # vLLM reports usage.prompt_tokens_details.cached_tokens, llama-server timings.cache_n
    async with SimServer(kind=sim_kind) as srv:
        backend = backend_for(srv, session)
        first = await backend.complete(req())
        second = await backend.complete(req())
        assert first.cached_tokens == 0
        assert second.cached_tokens == second.prompt_tokens
        if sim_kind == "llama-server":
            assert second.server_timings["cache_n"] == second.cached_tokens


# --- faults: each surfaces as the right exception -----------------------------------------
FAULT_ERRORS = {
    "http500": BackendServerError,
    "http503": BackendOverloaded,
    "http429": BackendOverloaded,
    "http404": ModelNotFound,
    "hang": BackendTimeout,
    "drop": BackendProtocolError,
    "reset": BackendUnavailable,
    "broken_json": BackendProtocolError,
    "stream_error": BackendServerError,
    "garbage": SchemaViolation,
    "schema_violation": SchemaViolation,
}


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("fault", list(FAULT_ERRORS))
async def test_fault_maps_to_the_right_exception(server, session, fault, stream):
    backend = backend_for(server, session)
    server.inject(fault)
    with pytest.raises(FAULT_ERRORS[fault]) as info:
        await backend.complete(req(stream, timeout=0.5))
    err = info.value
    assert err.endpoint == backend.url
    assert " -> " in str(err)  # every message names the next action
    assert not isinstance(err.__cause__, BackendError)  # mapped once, from the raw error
    if fault in ("http503", "http429"):
        assert err.retry_after == 2.5 and err.status == int(fault[4:])
    st = backend.stats[backend.url]
    assert st.errors[type(err).__name__] == 1 and st.in_flight == 0
    # the endpoint still works afterwards
    assert (await backend.complete(req(stream))).data["email_type"] == "deal"


async def test_schema_guard_counts_and_keeps_the_raw_reply(server, session):
    backend = backend_for(server, session)
    server.inject("schema_violation", times=2)
    server.inject("garbage")
    raws = []
    for _ in range(3):
        with pytest.raises(SchemaViolation) as info:
            await backend.complete(req())
        raws.append(info.value.raw)
    assert "made_up_key" in raws[0] and raws[2].startswith("Sure!")
    assert "email_type" in str(info.value) or "Expecting value" in str(info.value)
    ok = await backend.complete(req())
    st = backend.stats[backend.url]
    assert st.schema_violations == 3 and st.ok == 1 and ok.data


async def test_retry_after_as_http_date(session):
    from email.utils import formatdate

    async def app_503(request):
        return aiohttp.web.json_response(
            {"error": "busy"},
            status=503,
            headers={"Retry-After": formatdate(timeval=None, usegmt=True)},
        )

    app = aiohttp.web.Application()
    app.router.add_post("/api/chat", app_503)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        backend = OllamaBackend(f"http://127.0.0.1:{port}", model="m", session=session)
        with pytest.raises(BackendOverloaded) as info:
            await backend.complete(req())
        assert info.value.retry_after is not None and 0 <= info.value.retry_after <= 1
    finally:
        await runner.cleanup()


async def test_server_restart_unavailable_during_the_gap_then_success(server, session):
    server.faults.restart_delay = 0.4
    backend = backend_for(server, session)
    server.inject("restart")
    with pytest.raises(BackendUnavailable):
        await backend.complete(req())
    gap_errors = 0
    for _ in range(100):
        try:
            c = await backend.complete(req(timeout=2))
            break
        except BackendUnavailable as exc:
            assert "cannot reach the server" in str(exc)
            gap_errors += 1
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the server never came back")
    assert gap_errors >= 1 and c.data and server.restarts == 1


async def test_connection_refused_is_unavailable(session):
    async with SimServer() as srv:
        url = srv.url
    backend = OllamaBackend(url, model="m", session=session)
    with pytest.raises(BackendUnavailable, match="cannot reach the server"):
        await backend.complete(req())


async def test_unknown_model_and_no_model(ollama_server, session):
    with pytest.raises(ModelNotFound, match="ollama pull nope"):
        await OllamaBackend(ollama_server.url, model="nope", session=session).complete(req())
    with pytest.raises(ModelNotFound, match="--model"):
        await OllamaBackend(ollama_server.url, session=session).complete(req())


# --- info, warm-up, environment, secrets --------------------------------------------------
async def test_ollama_info_and_warm(ollama_server, session):
    backend = OllamaBackend(
        ollama_server.url, model=ollama_server.model, session=session, options={"num_ctx": 2048}
    )
    info = await backend.info()
    assert info.digest == "sha256:" + "5" * 64 and info.server_kind == "ollama"
    assert info.version == "0.0.0-sim" and info.options == {"num_ctx": 2048}
    assert info.details["context_length"] == 8192
    await backend.warm()
    load = [r for r in ollama_server.requests if r.path == "/api/chat" and r.index < 0][-1]
    assert load.body["messages"] == [] and load.body["options"] == {"num_ctx": 2048}
    assert load.body["keep_alive"] == "30m"
    with pytest.raises(ModelNotFound):
        await OllamaBackend(ollama_server.url, model="nope", session=session).info()


async def test_openai_info_slots_kind_and_no_key(session, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    async with SimServer(kind="llama-server", slots=3, api_key=SECRET) as srv:
        backend = OpenAIBackend(srv.url, session=session)  # key from the environment
        info = await backend.info()
        assert info.server_kind == "llama-server" and info.slots == 3
        assert info.model == srv.model and info.version == "b0-sim"
        c = await backend.complete(req())
        await backend.warm()
        everything = " ".join(
            [
                repr(info),
                json.dumps(info.as_dict()),
                repr(backend),
                repr(c),
                json.dumps({u: s.as_dict() for u, s in backend.stats.items()}),
            ]
        )
        assert SECRET not in everything
        wrong = OpenAIBackend(srv.url, api_key="sk-wrong", model=srv.model, session=session)
        with pytest.raises(BackendRequestError, match="not authorised") as info_err:
            await wrong.complete(req())
        assert "sk-wrong" not in str(info_err.value) and SECRET not in str(info_err.value)
        assert not isinstance(info_err.value, ModelNotFound)
    async with SimServer(kind="openai") as vllm:
        info = await OpenAIBackend(vllm.url, session=session).info()
        assert info.server_kind == "vllm" and info.slots is None


async def test_environment_urls(ollama_server, session, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{ollama_server.port}")
    backend = OllamaBackend(model=ollama_server.model, session=session)
    assert backend.url == ollama_server.url
    assert (await backend.complete(req())).data
    assert ollama_url("gpu1") == "http://gpu1:11434"
    assert ollama_url("https://ollama.example.com/") == "https://ollama.example.com"
    monkeypatch.delenv("OLLAMA_HOST")
    assert ollama_url() == "http://127.0.0.1:11434"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://gpu2:8000")
    assert OpenAIBackend(session=session).url == "http://gpu2:8000/v1"
    assert openai_base_url("localhost:8080/") == "http://localhost:8080/v1"
    assert openai_base_url("https://x.example/openai/v1") == "https://x.example/openai/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        OpenAIBackend()


def test_check_ollama_options():
    warns = check_ollama_options(
        {"low_vram": True, "f16_kv": True, "num_ctx": 8192, "temperature": 0.1, "tempreature": 1}
    )
    text = "\n".join(warns)
    assert len(warns) == 4
    assert "'low_vram' does nothing" in text and "'f16_kv' does nothing" in text
    assert "'num_ctx'=8192 makes Ollama reload the model" in text
    assert "'tempreature' is not a known Ollama option" in text
    assert check_ollama_options({"temperature": 0, "seed": 1, "num_predict": 100}) == []
    same = check_ollama_options({"num_ctx": 8192}, previous={"num_ctx": 8192})
    assert same == []
    changed = check_ollama_options({"num_batch": 256}, previous={"num_ctx": 8192})
    assert len(changed) == 2 and "'num_ctx' was set before" in changed[1]
    assert OllamaBackend("http://x:1", model="m", options={"use_mlock": 1}).option_warnings


async def test_shared_session_is_not_closed_by_backends(ollama_server, session):
    backend = backend_for(ollama_server, session)
    await backend.complete(req())
    await backend.aclose()
    assert not session.closed
    own = OllamaBackend(ollama_server.url, model=ollama_server.model)
    async with own:
        assert (await own.complete(req())).data
    assert own._session is None


# --- factory and router -------------------------------------------------------------------
def test_make_backend_kinds(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert isinstance(make_backend("ollama", None, model="m"), OllamaBackend)
    assert isinstance(make_backend("openai", "http://h:8000/v1"), OpenAIBackend)
    local = make_backend("local", "http://127.0.0.1:5000")
    assert isinstance(local, OpenAIBackend) and local.name == "local"
    assert local._headers() == {}  # the user's hosted-API key never goes to the local server
    mixed = make_backend("ollama", "ollama+http://a:11434,openai+http://b:8000/v1", model="m")
    assert isinstance(mixed, Router)
    assert [type(b) for b in mixed.backends] == [OllamaBackend, OpenAIBackend]
    with pytest.raises(ConfigError, match="local backend needs the URL"):
        make_backend("local", None)
    with pytest.raises(ConfigError, match="unknown backend kind"):
        make_backend("gemini", "http://x")
    with pytest.raises(ConfigError, match="listed twice"):
        make_backend("ollama", ["http://a:1", "http://a:1"], model="m")


async def test_router_work_follows_speed_and_survives_a_death(session):
    total, workers = 240, 10
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(SimServer("ollama", slots=2, service_time=t))
            for t in (0.01, 0.03, 0.09)
        ]
        fast, medium, _slow = servers
        router = make_backend(
            "ollama", [s.url for s in servers], model=fast.model, session=session, cooldown=60
        )
        todo = iter(range(total))
        done = 0
        before: list[int] = []

        async def worker() -> None:
            nonlocal done, before
            for i in todo:
                r = LLMRequest(
                    [{"role": "user", "content": f"Subject: n{i}\n\nmail {i}"}],
                    key=str(i),
                    timeout=10,
                )
                c = await router.complete(r)  # failover hides the death: no errors here
                assert c.key == str(i)
                done += 1
                if done == total // 2:
                    before = [len(s.chat_requests) for s in servers]
                    await medium.stop()

        await asyncio.gather(*(worker() for _ in range(workers)))
        after = [len(s.chat_requests) - b for s, b in zip(servers, before, strict=True)]
        # before the death: work in proportion to speed (9:3:1 ideally; asserted loosely)
        assert before[0] > 1.3 * before[1], before
        assert before[1] > 1.3 * before[2] > 0, before
        # after: nothing more reached the dead one; the live ones split by speed
        assert after[1] <= 1, after
        assert after[0] > 2 * after[2] > 0, after
        health = router.health()
        assert not health[medium.url]["up"] and health[fast.url]["up"]
        assert router.stats[medium.url].healthy is False
        assert router.stats[medium.url].errors["BackendUnavailable"] >= 1
        # every request answered exactly once by a live server (never asked twice)
        keys = [r.prompt for s in servers for r in s.chat_requests if r.status == 200]
        assert len(keys) - len(set(keys)) <= workers  # only in-flight ones at the death
        assert sum(len(s.chat_requests) for s in servers) >= total


async def test_router_all_down_then_probe_brings_it_back(session):
    srv = SimServer("openai")
    await srv.start()
    router = Router([backend_for(srv, session)], cooldown=0.2)
    assert (await router.complete(req())).data
    await srv.stop()
    with pytest.raises(BackendUnavailable, match="all 1 endpoints are down") as info:
        await router.complete(req())
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 0.2
    with pytest.raises(BackendUnavailable, match="next try in"):
        await router.complete(req())  # resting: not even tried
    await srv.start()  # same port
    await asyncio.sleep(0.25)
    assert (await router.complete(req())).data  # the probe succeeds
    assert router.health()[srv.url]["up"]
    await srv.stop()


async def test_router_passes_other_errors_through(session):
    async with SimServer("ollama") as a, SimServer("ollama") as b:
        router = Router([backend_for(a, session), backend_for(b, session)])
        a.inject("http500")
        b.inject("http500")
        with pytest.raises(BackendServerError):
            await router.complete(req())
        assert sum(len(s.chat_requests) for s in (a, b)) == 1  # no failover for a 500
        assert all(h["up"] for h in router.health().values())
        info = await router.info()
        assert info.server_kind == "router" and len(info.details["endpoints"]) == 2
        await router.warm()


async def test_router_avoids_an_overloaded_endpoint_while_retry_after_runs(session):
    async with SimServer("ollama", faults=FaultPlan(retry_after=30)) as a, SimServer("ollama") as b:
        router = Router([backend_for(a, session), backend_for(b, session)])
        a.inject("http503")
        with pytest.raises(BackendOverloaded):
            await router.complete(req())
        for _ in range(5):
            await router.complete(req())
        assert len(a.chat_requests) == 1 and len(b.chat_requests) == 5
        assert router.health()[a.url]["up"]  # busy is not down


async def test_one_breaker_rests_an_endpoint_for_the_router_and_the_processor(session):
    from emailwb.llm.breaker import EndpointBreaker
    from emailwb.llm.router import guard_backend

    breaker = EndpointBreaker(threshold=2, cooldown=30.0)  # the processor's policy
    async with SimServer("ollama") as a, SimServer("ollama") as b:
        router = Router([backend_for(a, session), backend_for(b, session)])
        guarded = guard_backend(router, breaker)
        assert isinstance(guarded, Router) and guarded.breaker is breaker  # no second layer
        await a.stop()
        for _ in range(10):
            assert (await guarded.complete(req())).data  # failover hides the dead endpoint
        assert breaker.failures(a.url) == 2  # tried until the threshold, then rested
        assert breaker.state(a.url) == "open" and breaker.retry_in(a.url) > 20
        assert guarded.health()[a.url]["up"] is False and guarded.health()[b.url]["up"]
        assert len(b.chat_requests) == 10
