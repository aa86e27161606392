"""The backend contract and the two things every backend shares: error mapping and the guard.

Import from ``emailwb.llm.router`` (which re-exports this module); this file exists only to
keep each module short. ``Backend.complete`` sends ONE request and either returns a
``Completion`` whose ``data`` passed the schema guard, or raises an ``emailwb.errors``
subclass. Retries, back-off and concurrency belong to the processor, not here.

Two places matter:

* ``Backend._mapped`` is where every network and protocol error of a backend becomes an
  emailwb error (``raise ... from exc``); subclasses supply only ``_status_error`` for
  HTTP status codes, so the mapping is written once per backend;
* ``Backend._guard`` is the fail-closed schema guard: the reply text is parsed and validated
  with ``emailwb.llm.schema.EmailAnalysis``; failure raises ``SchemaViolation`` (raw text and the
  server's ``finish_reason`` kept on the exception) and counts in the endpoint's
  ``schema_violations``.

Each backend's ``_send`` puts the server's own reason for ending the reply on the ``Reply``
(``finish_reason``: OpenAI's ``choices[0].finish_reason``, Ollama's ``done_reason``), so a
reply cut at the token limit is told by ``finish_reason == "length"``, not by any text.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import BaseModel, ValidationError

from emailwb.errors import (
    BackendError,
    BackendOverloaded,
    BackendProtocolError,
    BackendRequestError,
    BackendServerError,
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
    SchemaViolation,
)
from emailwb.llm.schema import EmailAnalysis, output_json_schema, parse_reply

log = logging.getLogger("emailwb.llm.router")

EWMA_ALPHA = 0.2  # weight of the newest latency in the moving average


@dataclass(slots=True)
class LLMRequest:
    """One prompt to send. ``schema`` is the JSON schema the server is asked to follow.

    ``grammar``, when set, is a GBNF grammar (``emailwb.llm.grammar.compact_gbnf``) sent instead
    of the schema, for llama.cpp servers; the reply is still validated against the schema.
    """

    messages: list[dict[str, str]]
    schema: dict[str, Any] = field(default_factory=output_json_schema)
    options: dict[str, Any] = field(default_factory=dict)  # merged over the backend's options
    key: str = ""  # the caller's id for this request (e.g. message id); echoed on Completion
    stream: bool = True
    timeout: float = 120.0  # seconds for the whole request, first byte to last
    grammar: str | None = None  # a GBNF grammar sent instead of the schema (llama-server)
    # the model replies are validated against (``schema.plan_model`` for a plan's fields)
    reply_model: type[BaseModel] = EmailAnalysis


@dataclass(slots=True)
class Completion:
    """A validated reply. ``data`` is ``EmailAnalysis(...).model_dump()``; ``raw`` the text."""

    data: dict[str, Any]
    raw: str
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None  # prompt tokens served from the server's prompt cache
    latency_s: float
    ttft_s: float | None  # time to first content token (streaming only)
    endpoint: str
    model: str
    key: str = ""
    finish_reason: str | None = None
    server_timings: dict[str, Any] = field(default_factory=dict)  # as the server reported


@dataclass(slots=True)
class BackendInfo:
    """Provenance of an endpoint, stored with each result. Never holds an API key."""

    model: str
    digest: str | None
    slots: int | None  # parallel slots, where the server tells
    options: dict[str, Any]
    server_kind: str  # "ollama" | "llama-server" | "vllm" | "openai" | "router"
    version: str | None
    endpoint: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class EndpointStats:
    """Counters for one endpoint (``Backend.stats`` maps endpoint URL -> these)."""

    endpoint: str
    requests: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by exception class name
    schema_violations: int = 0
    in_flight: int = 0
    latency_ewma: float | None = None  # seconds, successful requests
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    healthy: bool = True  # the Router's view; False while the endpoint is rested

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors"] = dict(self.errors)
        return d


@dataclass(slots=True)
class Reply:
    """What a backend's ``_send`` read off the wire, before the schema guard."""

    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    ttft_s: float | None = None
    # why the server ended the reply, as it says ("stop", "length" = cut at the token limit)
    finish_reason: str | None = None
    timings: dict[str, Any] = field(default_factory=dict)


class CallState:
    """Tracks whether response headers arrived, to tell 'unreachable' from 'cut stream'."""

    __slots__ = ("got_response", "op", "timeout")

    def __init__(self, op: str, timeout: float) -> None:
        self.op = op
        self.timeout = timeout
        self.got_response = False


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The Retry-After header in seconds (delta-seconds or an HTTP date), or None."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def server_message(body: str) -> str:
    """The error text from a server's error body (Ollama, OpenAI, FastAPI shapes), short."""
    text = body.strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail", obj.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err.get("msg") or json.dumps(err)
        if err is not None:
            return str(err)[:300]
    return text[:300]


def _stale_connection(exc: BaseException, state: CallState) -> bool:
    """True when a request died on a reused connection before any reply byte arrived."""
    cause = exc.__cause__
    if state.got_response or isinstance(cause, aiohttp.ClientConnectorError):
        return False  # a refused connect is a down server, not a stale connection
    # "Can not write request body": the socket was closed under us while sending, which is
    # what a reused connection looks like after the server closed it (llama-server does).
    return isinstance(cause, aiohttp.ClientOSError) and not isinstance(
        cause, aiohttp.ServerDisconnectedError
    )


class Backend(ABC):
    """One LLM endpoint (or a Router over several). See the module docstring for the contract.

    ``session``: the shared ``aiohttp.ClientSession``; when None the backend opens its own
    and closes it in ``aclose()``.
    """

    name: str = "backend"
    server_kind: str = "unknown"

    def __init__(
        self,
        url: str,
        model: str | None,
        options: Mapping[str, Any] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model or ""
        self.options: dict[str, Any] = dict(options or {})
        self._session = session
        self._own_session = session is None
        self._stats = EndpointStats(endpoint=self.url)

    def __repr__(self) -> str:  # never shows credentials
        return f"{type(self).__name__}(url={self.url!r}, model={self.model!r})"

    # --- public interface -------------------------------------------------------------
    @property
    def stats(self) -> dict[str, EndpointStats]:
        """Counters per endpoint URL."""
        return {self.url: self._stats}

    async def complete(self, req: LLMRequest) -> Completion:
        """Send ONE request; return a validated Completion or raise an emailwb BackendError."""
        st = self._stats
        st.requests += 1
        st.in_flight += 1  # before the first await, so a Router sees it at once
        t0 = time.perf_counter()
        try:
            try:
                async with self._mapped("chat", req.timeout) as state:
                    reply = await self._send(req, t0, state)
            except BackendUnavailable as exc:
                # A pooled keep-alive connection the server had already closed fails while
                # the request is written; HTTP clients resend that once on a fresh connection.
                if not _stale_connection(exc, state):
                    raise
                async with self._mapped("chat", req.timeout) as state:
                    reply = await self._send(req, t0, state)
            data = self._guard(reply, req.reply_model)
        except BackendError as exc:
            st.errors[type(exc).__name__] += 1
            raise
        finally:
            st.in_flight -= 1
        latency = time.perf_counter() - t0
        st.ok += 1
        st.latency_ewma = (
            latency
            if st.latency_ewma is None
            else (EWMA_ALPHA * latency + (1 - EWMA_ALPHA) * st.latency_ewma)
        )
        st.prompt_tokens += reply.prompt_tokens or 0
        st.completion_tokens += reply.completion_tokens or 0
        st.cached_tokens += reply.cached_tokens or 0
        return Completion(
            data=data,
            raw=reply.text,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            cached_tokens=reply.cached_tokens,
            latency_s=latency,
            ttft_s=reply.ttft_s,
            endpoint=self.url,
            model=reply.model or self.model,
            key=req.key,
            finish_reason=reply.finish_reason,
            server_timings=reply.timings,
        )

    @abstractmethod
    async def info(self) -> BackendInfo:
        """Model, digest, slots, options, server kind and version, as far as the server tells."""

    @abstractmethod
    async def warm(self) -> None:
        """Load the model before timing starts (raises BackendError like ``complete``)."""

    async def aclose(self) -> None:
        """Close the session if this backend opened it."""
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._own_session else self._session

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- for subclasses ---------------------------------------------------------------
    @abstractmethod
    async def _send(self, req: LLMRequest, t0: float, state: CallState) -> Reply:
        """POST the request and read the reply; runs inside ``_mapped`` (set
        ``state.got_response`` once the headers are in)."""

    @abstractmethod
    def _status_error(self, status: int, body: str, headers: Mapping[str, str]) -> BackendError:
        """The emailwb error for an HTTP error status (this backend's protocol)."""

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise BackendUnavailable(
                    f"{self.url}: the shared HTTP session is closed",
                    hint="create backends after opening the session and close it last",
                    endpoint=self.url,
                )
            self._session = aiohttp.ClientSession()
        return self._session

    def client_timeout(self, timeout: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 30.0))

    async def check_status(self, resp: aiohttp.ClientResponse) -> None:
        """Raise the mapped error for an HTTP error status (call right after the headers)."""
        if resp.status >= 400:
            body = await resp.text(errors="replace")
            raise self._status_error(resp.status, body, resp.headers)

    def _err(self, cls: type[BackendError], message: str, **kw: Any) -> BackendError:
        return cls(f"{self.name} {self.url}: {message}", endpoint=self.url, **kw)

    def default_status_error(
        self, status: int, body: str, headers: Mapping[str, str]
    ) -> BackendError:
        """The mapping shared by Ollama and OpenAI-compatible servers."""
        msg = server_message(body) or "(empty body)"
        retry = retry_after_seconds(headers)
        if status in (429, 503):
            return self._err(
                BackendOverloaded,
                f"HTTP {status}, server busy: {msg}",
                status=status,
                retry_after=retry,
            )
        if status == 404 and "model" in msg.lower():
            text = msg if self.model and self.model in msg else f"model {self.model!r}: {msg}"
            return self._err(ModelNotFound, text, status=status)
        if status == 404:
            return self._err(
                BackendRequestError,
                f"HTTP 404 for this path: {msg}",
                status=status,
                hint="check the URL: Ollama wants http://host:11434, "
                "OpenAI-compatible servers want http://host:port/v1",
            )
        if status in (401, 403):
            return self._err(
                BackendRequestError,
                f"HTTP {status}, not authorised: {msg}",
                status=status,
                hint="set the right key in OPENAI_API_KEY (or --api-key)",
            )
        if status >= 500:
            return self._err(
                BackendServerError, f"HTTP {status}: {msg}", status=status, retry_after=retry
            )
        return self._err(
            BackendRequestError, f"HTTP {status}, request refused: {msg}", status=status
        )

    @asynccontextmanager
    async def _mapped(self, op: str, limit_s: float) -> AsyncIterator[CallState]:
        """THE place where network and protocol errors become emailwb errors."""
        state = CallState(op, limit_s)
        try:
            yield state
        except BackendError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise self._err(BackendUnavailable, f"{op}: could not connect ({exc!r})") from exc
        except TimeoutError as exc:  # includes aiohttp's socket and total timeouts
            raise self._err(
                BackendTimeout, f"{op}: no complete reply within {limit_s:g} s"
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise self._err(
                BackendProtocolError, f"{op}: the reply stream was cut ({exc})"
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise self._err(
                BackendRequestError,
                f"invalid URL ({exc})",
                hint="fix the backend URL, e.g. http://127.0.0.1:11434",
            ) from exc
        except (aiohttp.ClientConnectionError, ConnectionError, OSError) as exc:
            if state.got_response:
                raise self._err(
                    BackendProtocolError,
                    f"{op}: connection lost in the middle of the reply ({_why(exc)})",
                ) from exc
            raise self._err(
                BackendUnavailable, f"{op}: cannot reach the server ({_why(exc)})"
            ) from exc
        except (
            aiohttp.ClientError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            UnicodeDecodeError,
        ) as exc:
            raise self._err(
                BackendProtocolError, f"{op}: the reply is not valid {self.name} protocol ({exc!r})"
            ) from exc

    def _guard(self, reply: Reply, model: type[BaseModel] = EmailAnalysis) -> dict[str, Any]:
        """The fail-closed schema guard: validated data, or SchemaViolation (and a count)."""
        try:
            return parse_reply(reply.text, model).model_dump()
        except ValueError as exc:  # json.JSONDecodeError and pydantic.ValidationError
            self._stats.schema_violations += 1
            reason = _reason(exc)
            hint = None
            if reply.finish_reason == "length":
                reason = f"reply cut at the token limit; {reason}"
                hint = "raise num_predict / max_tokens, or shorten the prompt (--token-budget)"
            raise SchemaViolation(
                f"{self.name} {self.url}: the reply does not match the output schema: {reason}",
                hint=hint,
                endpoint=self.url,
                raw=reply.text,
                finish_reason=reply.finish_reason,
            ) from exc


def _why(exc: BaseException) -> str:
    """A connection error in words (the library's message, never its repr)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _reason(exc: ValueError) -> str:
    """A one-line reason: the first validation errors with their field paths."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in exc.errors()[:3]]
        more = exc.error_count() - len(parts)
        return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
