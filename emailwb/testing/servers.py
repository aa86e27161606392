"""Simulated LLM servers: real aiohttp servers on 127.0.0.1 that speak Ollama's and OpenAI's APIs.

For tests and benchmarks (an "instant server" measures emailwb's own overhead). Nothing
is mocked below the HTTP layer: the backends talk to these servers over real sockets,
streaming included, so fault handling is exercised exactly as against a real server.

    async with SimServer(kind="ollama", slots=4, service_time=0.01,
                         faults=FaultPlan(per_request={3: "http503"})) as srv:
        backend = OllamaBackend(srv.url, model=srv.model)
        ...
        srv.chat_requests  # every chat request, in arrival order (for "never asked twice")

Kinds: ``"ollama"`` (/api/chat, /api/show, /api/ps, /api/tags, /api/version), ``"openai"``
(vLLM-like: /v1/chat/completions, /v1/models, /version, ``usage.prompt_tokens_details``) and
``"llama-server"`` (OpenAI API plus /props with ``total_slots``, /health, ``timings.cache_n``).
``K`` parallel slots are an ``asyncio.Semaphore``; ``service_time`` (seconds, or a callable
of the request body) is spent holding a slot before the reply streams out. Prompt-cache
hits are simulated as the common prefix with the previous prompt.

Faults (``FAULTS``), chosen per request index, by substring of the prompt, by rate, or
queued with ``srv.inject(kind, times)``: ``http500``, ``http503`` and ``http429`` (with
Retry-After), ``http404`` (model not found), ``hang`` (never answers), ``drop`` (connection
closed mid-reply), ``reset`` (closed before any reply), ``broken_json`` (protocol-level
garbage), ``stream_error`` (an error object in the middle of a 200 stream), ``garbage`` (reply text that is not JSON), ``schema_violation`` (JSON that breaks
the schema), ``token_limit`` (the reply cut at the request's token limit, or at half its
length, and ended with ``finish_reason: "length"`` / Ollama's ``done_reason: "length"``, as a
server does when generation runs out of tokens), ``restart`` (the server stops and comes back
on the same port after ``FaultPlan.restart_delay``). The fault plan, the request records and
the default answer live in ``emailwb.testing.faults`` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from emailwb.testing.faults import (
    CHARS_PER_TOKEN,
    FAULTS,
    KINDS,
    VIOLATION,
    AnswerFn,
    FaultPlan,
    RequestRecord,
    ServiceTime,
    cut_at_token_limit,
    default_answer,
    last_user,
)


class SimServer:
    """A real HTTP server on 127.0.0.1 speaking one LLM API, with slots and fault injection."""

    def __init__(
        self,
        kind: str = "ollama",
        *,
        slots: int = 4,
        service_time: ServiceTime = 0.0,
        faults: FaultPlan | None = None,
        answer: AnswerFn | None = None,
        model: str = "sim-model:1b",
        chunk_chars: int = 24,
        token_delay: float = 0.0,
        max_queue: int | None = None,
        api_key: str | None = None,
        port: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown server kind {kind!r}; use one of {', '.join(KINDS)}")
        self.kind = kind
        self.slots = slots
        self.service_time = service_time
        self.faults = faults or FaultPlan()
        self.answer = answer or default_answer
        self.model = model
        self.chunk_chars = max(chunk_chars, 1)
        self.token_delay = token_delay
        self.max_queue = max_queue
        self.api_key = api_key
        self.port = port
        self.requests: list[RequestRecord] = []
        self._injected: deque[str] = deque()
        self._sem = asyncio.Semaphore(slots)
        self._waiting = 0
        self._chat_count = 0
        self._last_prompt = ""
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.restarts = 0

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """What to give a backend: the root for Ollama, ``.../v1`` for OpenAI kinds."""
        return self.root_url if self.kind == "ollama" else f"{self.root_url}/v1"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        if self.kind == "ollama":
            app.router.add_post("/api/chat", self._chat)
            app.router.add_post("/api/show", self._show)
            app.router.add_get("/api/ps", self._ps)
            app.router.add_get("/api/tags", self._ps)
            app.router.add_get("/api/version", self._version)
            app.router.add_get("/", self._hello)
        else:
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            if self.kind == "llama-server":
                app.router.add_get("/props", self._props)
                app.router.add_get("/health", self._health)
            else:
                app.router.add_get("/version", self._version)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        addresses = runner.addresses  # the bound sockets' names: (host, port, ...)
        assert addresses
        self.port = addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening; requests in flight are cut off (hung ones included)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def restart(self, delay: float = 0.5) -> None:
        """Stop, stay down for ``delay`` seconds, start again on the same port."""
        await self.stop()
        await asyncio.sleep(delay)
        await self.start()
        self.restarts += 1

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.stop()

    # --- inspection and control ---------------------------------------------------------
    def inject(self, fault: str, times: int = 1) -> None:
        """Make the next ``times`` chat requests fail with ``fault`` (before any plan)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; use one of {', '.join(FAULTS)}")
        self._injected.extend([fault] * times)

    @property
    def chat_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.index >= 0]

    def asked(self, needle: str) -> int:
        """How many chat requests had ``needle`` in their last user message."""
        return sum(needle in r.prompt for r in self.chat_requests)

    # --- the chat endpoint ----------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        rec = RequestRecord(
            index=-1, path=request.path, body=body, prompt=last_user(body), t_start=time.monotonic()
        )
        self.requests.append(rec)
        try:
            return await self._chat_inner(request, body, rec)
        finally:
            rec.t_end = time.monotonic()

    async def _chat_inner(
        self, request: web.Request, body: dict[str, Any], rec: RequestRecord
    ) -> web.StreamResponse:
        if (
            self.api_key is not None
            and request.headers.get("Authorization") != f"Bearer {self.api_key}"
        ):
            return self._error(rec, 401, "invalid API key")
        if self.kind == "ollama" and not body.get("messages"):  # Ollama's "load the model"
            return web.json_response(
                {
                    "model": self.model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load",
                    "done": True,
                }
            )
        rec.index = self._chat_count
        self._chat_count += 1
        fault = (
            self._injected.popleft() if self._injected else self.faults.pick(rec.index, rec.prompt)
        )
        rec.fault = fault
        if body.get("model") != self.model and self.kind != "llama-server":
            fault = "http404"
        if fault in ("http500", "http503", "http429", "http404"):
            status = int(fault[4:])
            message = {
                500: "simulated internal error",
                404: f"model {body.get('model')!r} not found, try pulling it first",
                503: "server busy, please try again.  maximum pending requests exceeded",
                429: "too many requests",
            }[status]
            return self._error(rec, status, message)
        if fault == "hang":
            await asyncio.sleep(self.faults.hang_s)
        if fault in ("reset", "restart"):
            if fault == "restart":
                task = asyncio.create_task(self.restart(self.faults.restart_delay))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return self._abort(request, rec)
        if self.max_queue is not None and self._waiting >= self.max_queue + self.slots:
            return self._error(
                rec, 503, "server busy, please try again.  maximum pending requests exceeded"
            )
        self._waiting += 1
        try:
            async with self._sem:
                delay = (
                    self.service_time(body) if callable(self.service_time) else self.service_time
                )
                if delay > 0:
                    await asyncio.sleep(delay)
                return await self._reply(request, body, rec, fault)
        finally:
            self._waiting -= 1

    def _error(self, rec: RequestRecord, status: int, message: str) -> web.Response:
        rec.status = status
        headers = {}
        if status in (429, 503) and self.faults.retry_after is not None:
            headers["Retry-After"] = f"{self.faults.retry_after:g}"
        if self.kind == "ollama":
            payload: dict[str, Any] = {"error": message}
        else:
            payload = {"error": {"message": message, "type": "server_error", "code": status}}
        return web.json_response(payload, status=status, headers=headers)

    def _abort(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        rec.status = 0
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp treats this as "client gone": no log noise

    async def _reply(
        self, request: web.Request, body: dict[str, Any], rec: RequestRecord, fault: str | None
    ) -> web.StreamResponse:
        if fault == "garbage":
            content = "Sure! Here is a summary of the email: it is about a meeting."
        elif fault == "schema_violation":
            content = VIOLATION
        else:
            produced = self.answer(body)
            content = produced if isinstance(produced, str) else json.dumps(produced)
            if fault == "token_limit":
                content = cut_at_token_limit(content, body)
        prompt_text = "".join(str(m.get("content") or "") for m in body.get("messages") or [])
        cached = _common_prefix(prompt_text, self._last_prompt)
        self._last_prompt = prompt_text
        usage = {
            "prompt": max(len(prompt_text) // CHARS_PER_TOKEN, 1),
            "completion": max(len(content) // CHARS_PER_TOKEN, 1),
            "cached": cached // CHARS_PER_TOKEN,
        }
        chunks = [
            content[i : i + self.chunk_chars] for i in range(0, len(content), self.chunk_chars)
        ] or [""]
        if self.kind == "ollama":
            return await self._ollama_reply(request, body, rec, fault, content, chunks, usage)
        return await self._openai_reply(request, body, rec, fault, content, chunks, usage)

    async def _ollama_reply(
        self,
        request: web.Request,
        body: dict[str, Any],
        rec: RequestRecord,
        fault: str | None,
        content: str,
        chunks: list[str],
        usage: dict[str, int],
    ) -> web.StreamResponse:
        final: dict[str, Any] = {
            "model": self.model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": _finish_reason(fault),
            "total_duration": 2_000_000,
            "load_duration": 100_000,
            "prompt_eval_count": usage["prompt"],
            "prompt_eval_duration": 500_000,
            "eval_count": usage["completion"],
            "eval_duration": 1_000_000,
        }
        if not body.get("stream", True):
            final["message"]["content"] = content
            text = (
                '{"model": "broken'
                if fault == "broken_json"
                else json.dumps(
                    {"error": "simulated runner crash"} if fault == "stream_error" else final
                )
            )
            return await self._send_whole(request, rec, fault, text, "application/json")
        lines = [
            json.dumps(
                {
                    "model": self.model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": c},
                    "done": False,
                }
            )
            for c in chunks
        ]
        if fault == "broken_json":
            lines.insert(1, '{"message": {"content": "cut')
        if fault == "stream_error":
            lines.insert(1, json.dumps({"error": "simulated runner crash"}))
        lines.append(json.dumps(final))
        return await self._stream(
            request, rec, fault, [line + "\n" for line in lines], "application/x-ndjson"
        )

    async def _openai_reply(
        self,
        request: web.Request,
        body: dict[str, Any],
        rec: RequestRecord,
        fault: str | None,
        content: str,
        chunks: list[str],
        usage: dict[str, int],
    ) -> web.StreamResponse:
        base = {
            "id": f"chatcmpl-sim{rec.index}",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
        }
        u: dict[str, Any] = {
            "prompt_tokens": usage["prompt"],
            "completion_tokens": usage["completion"],
            "total_tokens": usage["prompt"] + usage["completion"],
        }
        extra: dict[str, Any] = {}
        if self.kind == "llama-server":
            extra["timings"] = {
                "cache_n": usage["cached"],
                "prompt_n": usage["prompt"] - usage["cached"],
                "prompt_ms": 1.0,
                "predicted_n": usage["completion"],
                "predicted_ms": 2.0,
            }
        else:
            u["prompt_tokens_details"] = {"cached_tokens": usage["cached"]}
        if not body.get("stream"):
            whole = {
                **base,
                "object": "chat.completion",
                "usage": u,
                **extra,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": _finish_reason(fault),
                        "message": {"role": "assistant", "content": content},
                    }
                ],
            }
            if fault == "stream_error":
                whole = {"error": {"message": "simulated crash", "code": 500}}
            text = '{"choices": [' if fault == "broken_json" else json.dumps(whole)
            return await self._send_whole(request, rec, fault, text, "application/json")

        def event(choices: list[dict[str, Any]], **more: Any) -> str:
            obj = {**base, "object": "chat.completion.chunk", "choices": choices, **more}
            return f"data: {json.dumps(obj)}\n\n"

        events = [
            event(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
        ]
        events += [
            event([{"index": 0, "delta": {"content": c}, "finish_reason": None}]) for c in chunks
        ]
        if fault == "broken_json":
            events.insert(2, 'data: {"choices": [{"delta": \n\n')
        if fault == "stream_error":
            events.insert(
                2,
                "data: "
                + json.dumps({"error": {"message": "simulated crash", "code": 500}})
                + "\n\n",
            )
        events.append(event([{"index": 0, "delta": {}, "finish_reason": _finish_reason(fault)}]))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(event([], usage=u, **extra))
        events.append("data: [DONE]\n\n")
        return await self._stream(request, rec, fault, events, "text/event-stream")

    async def _stream(
        self,
        request: web.Request,
        rec: RequestRecord,
        fault: str | None,
        pieces: list[str],
        content_type: str,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        for i, piece in enumerate(pieces):
            if fault == "drop" and i >= self.faults.drop_after_chunks:
                return self._abort(request, rec)
            await resp.write(piece.encode())
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
        await resp.write_eof()
        return resp

    async def _send_whole(
        self,
        request: web.Request,
        rec: RequestRecord,
        fault: str | None,
        text: str,
        content_type: str,
    ) -> web.StreamResponse:
        data = text.encode()
        if fault != "drop":
            return web.Response(body=data, content_type=content_type)
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        return self._abort(request, rec)

    # --- the other endpoints ----------------------------------------------------------
    def _record(self, request: web.Request) -> None:
        self.requests.append(
            RequestRecord(
                index=-1,
                path=request.path,
                body={},
                t_start=time.monotonic(),
                t_end=time.monotonic(),
            )
        )

    async def _show(self, request: web.Request) -> web.Response:
        self._record(request)
        body = await request.json()
        if body.get("model") != self.model:
            return web.json_response(
                {"error": f"model '{body.get('model')}' not found"}, status=404
            )
        return web.json_response(
            {
                "modelfile": "# simulated",
                "parameters": "temperature 0",
                "template": "{{ .Prompt }}",
                "details": {
                    "family": "sim",
                    "parameter_size": "1B",
                    "quantization_level": "Q4_K_M",
                },
                "model_info": {"sim.context_length": 8192},
                "capabilities": ["completion"],
            }
        )

    async def _ps(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(
            {
                "models": [
                    {
                        "name": self.model,
                        "model": self.model,
                        "digest": "sha256:" + "5" * 64,
                        "size": 1,
                    }
                ]
            }
        )

    async def _version(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"version": "0.0.0-sim"})

    async def _hello(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request)
        if (
            self.api_key is not None
            and request.headers.get("Authorization") != f"Bearer {self.api_key}"
        ):
            return web.json_response(
                {"error": {"message": "invalid API key", "code": 401}}, status=401
            )
        owner = "llamacpp" if self.kind == "llama-server" else "vllm"
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": owner}]}
        )

    async def _props(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(
            {
                "total_slots": self.slots,
                "model_path": f"/sim/{self.model}",
                "build_info": "b0-sim",
                "default_generation_settings": {"n_ctx": 4096},
            }
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def _finish_reason(fault: str | None) -> str:
    """Why a reply ended, in both protocols' words: "length" when cut at the token limit."""
    return "length" if fault == "token_limit" else "stop"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _common_prefix(a: str, b: str) -> int:
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # binary search on slice equality: fast in C
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
