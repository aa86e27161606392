"""OpenAI-compatible ``POST {base}/chat/completions`` (vLLM, llama-server, LM Studio, hosted).

Import from ``emailwb.llm.router``. The JSON schema goes in ``response_format``
(``{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``), or, when
the request carries a GBNF grammar, in llama-server's own ``grammar`` field; streaming
uses server-sent events (``data: {...}`` lines, ending with ``data: [DONE]``) with
``stream_options.include_usage`` so the last chunk carries the token counts. Prompt-cache
hits are read from ``usage.prompt_tokens_details.cached_tokens`` (vLLM, OpenAI) or from
llama-server's ``timings.cache_n``.

The base URL comes from the argument or ``$OPENAI_BASE_URL`` (a bare ``http://host:port``
gets ``/v1`` appended); there is deliberately no default, so mail is never sent to a hosted
API by accident. The API key (argument or ``$OPENAI_API_KEY``) is only ever put in the
Authorization header: not in ``repr``, ``info()``, errors or logs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from emailwb.errors import (
    BackendError,
    BackendOverloaded,
    BackendProtocolError,
    BackendServerError,
    ConfigError,
    ModelNotFound,
)
from emailwb.llm.contract import Backend, BackendInfo, CallState, LLMRequest, Reply

SCHEMA_NAME = "email_analysis"


def openai_base_url(url: str | None = None) -> str:
    """The base URL (ending in /v1 when given bare): the argument, else ``$OPENAI_BASE_URL``."""
    raw = (url or os.environ.get("OPENAI_BASE_URL") or "").strip().rstrip("/")
    if not raw:
        raise ConfigError(
            "no OpenAI-compatible server URL given",
            hint="pass --url http://HOST:PORT/v1 or set OPENAI_BASE_URL (emailwb never "
            "defaults to a hosted API)",
        )
    if "://" not in raw:
        raw = f"http://{raw}"
    if urlsplit(raw).path in ("", "/"):
        raw = f"{raw}/v1"
    return raw


def chat_body(model: str, options: Mapping[str, Any], req: LLMRequest) -> dict[str, Any]:
    """The JSON body of a ``/v1/chat/completions`` request for ``req``: what the backend
    POSTs, and what a batch request file's line carries (``emailwb.scale``)."""
    opts = {**options, **req.options}
    if "num_predict" in opts:  # the Ollama spelling, for convenience
        opts.setdefault("max_tokens", opts.pop("num_predict"))
    body: dict[str, Any] = {"model": model, "messages": req.messages}
    if req.grammar is not None:  # llama-server's own field: a GBNF grammar
        body["grammar"] = req.grammar
    else:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": req.schema, "strict": True},
        }
    body.update({"stream": req.stream, **opts})
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _root(base: str) -> str:
    """The server root for llama-server's /props and vLLM's /version (base minus /v1)."""
    return base[: -len("/v1")] if base.endswith("/v1") else base


class OpenAIBackend(Backend):
    """An OpenAI-compatible chat-completions endpoint."""

    name = "openai"
    server_kind = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        options: Mapping[str, Any] | None = None,
        session: aiohttp.ClientSession | None = None,
        *,
        name: str = "openai",
    ) -> None:
        super().__init__(openai_base_url(base_url), model, options, session)
        self.name = name
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.__key = key or None  # name-mangled; never logged or returned

    def _headers(self) -> dict[str, str]:
        if self.__key:
            return {"Authorization": f"Bearer {self.__key}"}
        return {}

    def _body(self, req: LLMRequest) -> dict[str, Any]:
        return chat_body(self.model or "default", self.options, req)

    def _status_error(self, status: int, body: str, headers: Mapping[str, str]) -> BackendError:
        err = self.default_status_error(status, body, headers)
        if isinstance(err, ModelNotFound):
            err.hint = f"pass --model with a name the server lists at {self.url}/models"
        return err

    async def _send(self, req: LLMRequest, t0: float, state: CallState) -> Reply:
        if not self.model:  # vLLM needs the served name: ask the server once
            await self.info()
        async with self.session().post(
            f"{self.url}/chat/completions",
            json=self._body(req),
            headers=self._headers(),
            timeout=self.client_timeout(req.timeout),
        ) as resp:
            state.got_response = True
            await self.check_status(resp)
            if not req.stream:
                obj = json.loads(await resp.text())
                self._raise_in_body(obj)
                choice = obj["choices"][0]
                text = (choice.get("message") or {}).get("content") or ""
                return self._reply(obj, text, None, choice.get("finish_reason"), obj)
            parts: list[str] = []
            ttft: float | None = None
            finish: str | None = None
            last: dict[str, Any] = {}
            usage_chunk: dict[str, Any] = {}
            done = False
            async for raw in resp.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.startswith("data:"):
                    continue  # blank separators, ": keep-alive" comments, event:/id: fields
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                obj = json.loads(data)
                if not isinstance(obj, dict):
                    raise ValueError(f"event is not an object: {data[:80]!r}")
                self._raise_in_body(obj)
                last = obj
                if obj.get("usage") or obj.get("timings"):
                    usage_chunk = {**usage_chunk, **obj}
                for choice in (obj.get("choices") or [])[:1]:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        parts.append(piece)
                    finish = choice.get("finish_reason") or finish
            if not done and finish is None:
                raise self._err(
                    BackendProtocolError, "the event stream ended before [DONE] or a finish_reason"
                )
            return self._reply(last, "".join(parts), ttft, finish, usage_chunk)

    def _raise_in_body(self, obj: dict[str, Any]) -> None:
        """An error object inside a 200 reply (mid-stream errors of vLLM and llama-server)."""
        err = obj.get("error")
        if not err:
            return
        message = err.get("message") if isinstance(err, dict) else str(err)
        code = err.get("code") if isinstance(err, dict) else None
        if code in (429, 503, "429", "503"):
            raise self._err(BackendOverloaded, f"server busy: {message}")
        raise self._err(BackendServerError, f"error in the reply: {message}")

    def _reply(
        self,
        obj: dict[str, Any],
        text: str,
        ttft: float | None,
        finish: str | None,
        usage_src: dict[str, Any],
    ) -> Reply:
        usage = usage_src.get("usage") or {}
        timings = usage_src.get("timings") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is None and "cache_n" in timings:
            cached = timings["cache_n"]
        return Reply(
            text=text,
            model=obj.get("model") or self.model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            cached_tokens=cached,
            ttft_s=ttft,
            finish_reason=finish,
            timings=dict(timings),
        )

    async def _get_json(self, url: str, limit_s: float = 30.0) -> Any:
        async with self._mapped(url.rsplit("/", 1)[-1], limit_s) as state:
            async with self.session().get(
                url, headers=self._headers(), timeout=self.client_timeout(limit_s)
            ) as resp:
                state.got_response = True
                await self.check_status(resp)
                return json.loads(await resp.text())

    async def info(self) -> BackendInfo:
        listing = await self._get_json(f"{self.url}/models")
        models = [m for m in listing.get("data") or [] if isinstance(m, dict)]
        ids = [str(m.get("id")) for m in models]
        if not self.model:
            self.model = ids[0] if ids else "default"
        kind = "vllm" if any(m.get("owned_by") == "vllm" for m in models) else "openai"
        slots = version = None
        details: dict[str, Any] = {"models": ids[:20]}
        try:
            props = await self._get_json(f"{_root(self.url)}/props", limit_s=10.0)
        except BackendError:
            props = None
        if isinstance(props, dict) and ("total_slots" in props or "model_path" in props):
            kind = "llama-server"
            slots = props.get("total_slots")
            version = props.get("build_info")
            settings = props.get("default_generation_settings") or {}
            details["n_ctx"] = settings.get("n_ctx") or props.get("n_ctx")
            details["model_path"] = props.get("model_path")
        elif kind == "vllm":
            try:
                version = (await self._get_json(f"{_root(self.url)}/version", limit_s=10.0)).get(
                    "version"
                )
            except BackendError:
                pass
        self.server_kind = kind
        return BackendInfo(
            model=self.model,
            digest=None,
            slots=slots,
            options=dict(self.options),
            server_kind=kind,
            version=version,
            endpoint=self.url,
            details=details,
        )

    async def warm(self, limit_s: float = 600.0) -> None:
        """One tiny request (no schema), so the model is loaded before timing starts."""
        body = {
            "model": self.model or "default",
            "max_tokens": 1,
            "stream": False,
            "messages": [{"role": "user", "content": "Reply with OK."}],
        }
        async with self._mapped("warm-up", limit_s) as state:
            async with self.session().post(
                f"{self.url}/chat/completions",
                json=body,
                headers=self._headers(),
                timeout=self.client_timeout(limit_s),
            ) as resp:
                state.got_response = True
                await self.check_status(resp)
                await resp.read()
