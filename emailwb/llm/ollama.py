"""Ollama's native API: ``POST /api/chat`` with ``format`` = the JSON schema, NDJSON streaming.

Import from ``emailwb.llm.router``. Honours ``OLLAMA_HOST`` the way the ``ollama`` CLI does
("host", "host:port" or a URL; port 11434 when none is given). Token counts and server-side
durations come from the final chunk (``prompt_eval_count``, ``eval_count``,
``*_duration`` in nanoseconds); time to first token is measured at the first content chunk.
Ollama answers 503 when its queue (``OLLAMA_MAX_QUEUE``) is full: that is back-pressure
(``BackendOverloaded``), not a failure.

``check_ollama_options`` warns about options that do nothing on current Ollama and about
options whose change makes Ollama reload the model (which silently ruins an A/B timing).
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
    BackendProtocolError,
    BackendServerError,
    ConfigError,
    ModelNotFound,
)
from emailwb.llm.contract import Backend, BackendInfo, CallState, LLMRequest, Reply, log

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"

#: accepted in the past, removed in 2025: current Ollama only logs them and carries on
OLLAMA_REMOVED_OPTIONS = frozenset({"low_vram", "f16_kv", "use_mlock", "vocab_only", "logits_all"})
#: a value different from the loaded model's makes Ollama unload and reload the model
OLLAMA_RELOAD_OPTIONS = frozenset({"num_ctx", "num_batch", "num_gpu", "num_thread", "use_mmap"})
OLLAMA_SAMPLING_OPTIONS = frozenset(
    {
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "top_p",
        "min_p",
        "typical_p",
        "repeat_last_n",
        "temperature",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "main_gpu",
        "numa",
        "penalize_newline",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "tfs_z",
    }
)


def check_ollama_options(
    options: Mapping[str, Any], previous: Mapping[str, Any] | None = None
) -> list[str]:
    """Warnings for Ollama ``options``: no-ops, typos, and model-reloading settings.

    With ``previous`` (the options of the run being compared against), reload warnings are
    given only for the settings that differ.
    """
    warnings: list[str] = []
    for key in sorted(options):
        if key in OLLAMA_REMOVED_OPTIONS:
            warnings.append(
                f"option {key!r} does nothing on current Ollama (removed in 2025; the server "
                "only logs unknown keys): remove it from the options"
            )
        elif key in OLLAMA_RELOAD_OPTIONS:
            if previous is not None and previous.get(key) == options[key]:
                continue
            warnings.append(
                f"option {key!r}={options[key]!r} makes Ollama reload the model when it differs "
                "from the loaded one: warm up with these exact options before timing, and keep "
                "it the same on both sides of an A/B comparison"
            )
        elif key not in OLLAMA_SAMPLING_OPTIONS:
            warnings.append(
                f"option {key!r} is not a known Ollama option and is ignored (the server only "
                "logs it): check the spelling"
            )
    if previous is not None:
        for key in sorted(OLLAMA_RELOAD_OPTIONS & (set(previous) - set(options))):
            warnings.append(
                f"option {key!r} was set before and is not now: Ollama reloads the model with "
                "its default; set it to the same value on both sides of an A/B comparison"
            )
    return warnings


def ollama_url(url: str | None = None) -> str:
    """The Ollama base URL: the argument, else ``$OLLAMA_HOST``, else 127.0.0.1:11434."""
    raw = (url or os.environ.get("OLLAMA_HOST") or "").strip()
    if not raw:
        return DEFAULT_OLLAMA_URL
    if "://" not in raw:
        host = raw.rstrip("/")
        parts = urlsplit(f"http://{host}")
        if parts.port is None:
            host = f"{host}:11434"
        return f"http://{host}"
    return raw.rstrip("/")


def _tagged(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OllamaBackend(Backend):
    """Ollama's /api/chat. ``model`` is required (e.g. ``llama3.2:3b``)."""

    name = "ollama"
    server_kind = "ollama"

    def __init__(
        self,
        url: str | None = None,
        model: str | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: str | int = "30m",
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(ollama_url(url), model, options, session)
        self.keep_alive = keep_alive
        self.option_warnings = check_ollama_options(self.options)
        for warning in self.option_warnings:
            log.warning("%s: %s", self.url, warning)

    def _body(self, req: LLMRequest, *, stream: bool) -> dict[str, Any]:
        if req.grammar is not None:
            raise ConfigError(
                "Ollama's API takes a JSON schema, not a GBNF grammar",
                hint="use json_format 'schema' with the ollama backend",
            )
        return {
            "model": self.model,
            "messages": req.messages,
            "format": req.schema,
            "options": {**self.options, **req.options},
            "keep_alive": self.keep_alive,
            "stream": stream,
        }

    def _status_error(self, status: int, body: str, headers: Mapping[str, str]) -> BackendError:
        err = self.default_status_error(status, body, headers)
        if isinstance(err, ModelNotFound):
            err.hint = f"run `ollama pull {self.model}` on the server, or pass --model NAME"
        return err

    async def _send(self, req: LLMRequest, t0: float, state: CallState) -> Reply:
        if not self.model:
            raise self._err(
                ModelNotFound,
                "no model given",
                hint="pass --model (see `ollama list` on the server)",
            )
        async with self.session().post(
            f"{self.url}/api/chat",
            json=self._body(req, stream=req.stream),
            timeout=self.client_timeout(req.timeout),
        ) as resp:
            state.got_response = True
            await self.check_status(resp)
            if not req.stream:
                obj = json.loads(await resp.text())
                if isinstance(obj, dict) and "error" in obj:
                    raise self._err(BackendServerError, f"error in the reply: {obj['error']}")
                return self._reply(obj, obj["message"]["content"], None)
            parts: list[str] = []
            ttft: float | None = None
            async for raw in resp.content:
                line = raw.strip()
                if not line:
                    continue
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"stream line is not an object: {line[:80]!r}")
                if "error" in obj:
                    raise self._err(
                        BackendServerError, f"error in the middle of the reply: {obj['error']}"
                    )
                piece = (obj.get("message") or {}).get("content") or ""
                if piece:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    parts.append(piece)
                if obj.get("done"):
                    return self._reply(obj, "".join(parts), ttft)
            raise self._err(BackendProtocolError, "the stream ended without its final (done) chunk")

    def _reply(self, final: dict[str, Any], text: str, ttft: float | None) -> Reply:
        timings: dict[str, Any] = {
            k: final[k]
            for k in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
            if k in final
        }
        if ttft is None and "prompt_eval_duration" in final:
            timings["server_ttft_s"] = (
                final.get("load_duration", 0) + final["prompt_eval_duration"]
            ) / 1e9
        return Reply(
            text=text,
            model=final.get("model") or self.model,
            prompt_tokens=final.get("prompt_eval_count"),
            completion_tokens=final.get("eval_count"),
            cached_tokens=None,  # Ollama does not report prompt-cache hits
            ttft_s=ttft,
            finish_reason=final.get("done_reason"),
            timings=timings,
        )

    async def _get_json(
        self, method: str, path: str, body: dict[str, Any] | None = None, limit_s: float = 30.0
    ) -> Any:
        async with self._mapped(path, limit_s) as state:
            async with self.session().request(
                method, f"{self.url}{path}", json=body, timeout=self.client_timeout(limit_s)
            ) as resp:
                state.got_response = True
                await self.check_status(resp)
                return json.loads(await resp.text())

    async def info(self) -> BackendInfo:
        show = await self._get_json("POST", "/api/show", {"model": self.model})
        digest = None
        for path in ("/api/ps", "/api/tags"):
            try:
                listing = await self._get_json("GET", path)
            except BackendError:
                continue
            for m in listing.get("models") or []:
                if _tagged(m.get("name") or m.get("model") or "") == _tagged(self.model):
                    digest = m.get("digest")
                    break
            if digest:
                break
        version = None
        try:
            version = (await self._get_json("GET", "/api/version")).get("version")
        except BackendError:
            pass
        model_info = show.get("model_info") or {}
        ctx = next((v for k, v in model_info.items() if k.endswith(".context_length")), None)
        return BackendInfo(
            model=self.model,
            digest=digest,
            slots=None,  # OLLAMA_NUM_PARALLEL is not exposed by the API
            options=dict(self.options),
            server_kind=self.server_kind,
            version=version,
            endpoint=self.url,
            details={
                "details": show.get("details") or {},
                "parameters": show.get("parameters") or "",
                "context_length": ctx,
                "keep_alive": self.keep_alive,
                "option_warnings": list(self.option_warnings),
            },
        )

    async def warm(self, limit_s: float = 600.0) -> None:
        """Load the model with these options (an empty chat) and keep it for ``keep_alive``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [],
            "options": self.options,
            "keep_alive": self.keep_alive,
            "stream": False,
        }
        await self._get_json("POST", "/api/chat", body, limit_s=limit_s)
