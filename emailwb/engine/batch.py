"""The entry point: ``run_batch(store, config)`` sets up a backend, runs one RunConfig, tears down.

The CLI and the notebooks call this; ``emailwb.engine.processor.Processor`` is the fine-grained API
underneath (``run_batch`` hands it to ``on_start`` for pause/resume/stop).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emailwb.errors import ProcessingError
from emailwb.facts.plans import get_plan
from emailwb.llm.contract import Backend
from emailwb.settings import RunConfig

if TYPE_CHECKING:
    from emailwb.engine.processor import Processor, RunSummary
    from emailwb.engine.throughput import MetricsSnapshot
    from emailwb.store.database import Store


#: Sampling for the embedded SmolLM2-135M: at temperature 0 a model this small falls into
#: repetition loops (the same person or "0000" until the token limit), which cuts the JSON.
#: llama.cpp's DRY sampler plus a mild repeat penalty ended them: 6 of 6 real Enron emails
#: gave schema-valid replies, against 1 of 4 without (measured while building this; a
#: number, not an assumption: the quality checks compare configurations on it).
LOCAL_SAMPLING: dict[str, Any] = {"dry_multiplier": 0.8, "repeat_penalty": 1.1}


async def run_batch(
    store: Store,
    config: RunConfig,
    *,
    backend: Backend | None = None,
    run_name: str | None = None,
    limit: int | None = None,
    api_key: str | None = None,
    on_progress: Callable[[MetricsSnapshot], Any] | None = None,
    on_start: Callable[[Processor], Any] | None = None,
    quality: Any = None,
    only_units: Collection[int] | None = None,
) -> RunSummary:
    """Process the store's pending units with one configuration; the entry point.

    ``config``: the run's ``RunConfig`` (from user settings: ``RunConfig.from_settings(
    load_settings(), preset)``, the API key then passed as ``api_key``). Without ``backend`` it
    starts what the configuration names: the embedded llama-server (``local``) or clients
    for the Ollama/OpenAI URLs; it warms the model, records the provenance, runs, and tears
    everything down. ``on_start(processor)`` is called once the processor exists (the CLI
    uses it to wire Ctrl-C to ``processor.request_stop``); cancelling the task stops the run
    cleanly. ``quality``: an ``emailwb.quality.watch.QualityConfig`` or ``QualityWatch`` (default:
    metrics per result, deep checks of every 100th email, drift alerts). ``only_units``: process
    only these units of the run (a canary's sample). The API key is used, never stored.
    """
    from emailwb.engine.processor import Processor

    if not isinstance(config, RunConfig):
        raise ProcessingError(
            f"run_batch needs a RunConfig, not {type(config).__name__}",
            hint="pass RunConfig.default(), or RunConfig.from_settings(load_settings())",
        )
    cfg = with_local_sampling(config)  # recorded in the run's provenance like any option
    if not get_plan(cfg.plan).uses_llm and backend is None:
        return await _run_without_model(
            store,
            cfg,
            run_name=run_name,
            limit=limit,
            on_progress=on_progress,
            on_start=on_start,
            quality=quality,
            only_units=only_units,
        )
    async with contextlib.AsyncExitStack() as stack:
        server_pid: int | None = None
        extra: dict[str, Any] = {}
        revive: Callable[[], Awaitable[Any]] | None = None
        if backend is None:
            opened = await stack.enter_async_context(open_backend(cfg, api_key))
            backend, server_pid, revive, extra = (
                opened.backend,
                opened.server_pid,
                opened.revive,
                opened.extra,
            )
        await backend.warm()
        info = await backend.info()
        proc = Processor(
            store,
            cfg,
            backend,
            run_name=run_name,
            limit=limit,
            info=info,
            on_progress=on_progress,
            server_pid=server_pid,
            extra_provenance=extra,
            revive=revive,
            quality=quality,
            only_units=only_units,
        )
        if on_start is not None:
            on_start(proc)
        return await proc.run_to_end()


@dataclass
class OpenBackend:
    """A backend started for a configuration, with what a run records and needs about it."""

    backend: Backend
    server_pid: int | None = None
    revive: Callable[[], Awaitable[Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def open_backend(cfg: RunConfig, api_key: str | None = None) -> AsyncIterator[OpenBackend]:
    """The backend ``cfg`` names, open for the block: the embedded llama-server started
    (``local``, with ``LOCAL_SAMPLING`` in ``cfg.options`` when the caller added it), or
    clients of the Ollama/OpenAI URLs; everything is torn down on exit."""
    import aiohttp

    from emailwb.llm.router import make_backend

    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=cfg.max_concurrency + 8))
        )
        if cfg.backend == "local":
            from emailwb.llm.localserver import LocalServer

            server = LocalServer(
                cfg.model, cfg.llama_server, slots=cfg.slots, ctx_per_slot=cfg.ctx_per_slot
            )
            await stack.enter_async_context(server)
            backend = make_backend("local", server.url, "local", None, cfg.options, session)
            stack.push_async_callback(backend.aclose)
            local = await asyncio.to_thread(server.info)
            yield OpenBackend(
                backend,
                server.pid,
                server.aensure_alive,
                {"local_server": local, "model_digest": local.get("model_sha256")},
            )
            return
        backend = make_backend(
            cfg.backend, cfg.urls or None, cfg.model, api_key, cfg.options, session
        )
        stack.push_async_callback(backend.aclose)
        yield OpenBackend(backend)


def with_local_sampling(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the embedded model's sampling (``LOCAL_SAMPLING``) under its own options."""
    if cfg.backend != "local":
        return cfg
    return cfg.model_copy(update={"options": {**LOCAL_SAMPLING, **cfg.options}})


async def _run_without_model(
    store: Store,
    cfg: RunConfig,
    *,
    run_name: str | None,
    limit: int | None,
    on_progress: Any,
    on_start: Any,
    quality: Any,
    only_units: Collection[int] | None,
) -> RunSummary:
    """A plan that asks no model: facts for every content group first (spaCy on every core),
    then the processor writes each unit's result from them; no server is started."""
    import os
    import time

    from emailwb.engine.processor import Processor
    from emailwb.facts.cache import ensure_facts

    t0 = time.monotonic()
    made = 0
    if cfg.unit == "group":
        made = await asyncio.to_thread(ensure_facts, store, processes=min(os.cpu_count() or 1, 4))
    stage = {"emails": made, "seconds": round(time.monotonic() - t0, 2)}
    proc = Processor(
        store,
        cfg,
        None,
        run_name=run_name,
        limit=limit,
        on_progress=on_progress,
        quality=quality,
        only_units=only_units,
        extra_provenance={"backend_info": {"server_kind": "none"}, "facts_stage": stage},
    )
    if on_start is not None:
        on_start(proc)
    return await proc.run_to_end()


async def check_backend(
    cfg: RunConfig, api_key: str | None = None, *, limit_s: float = 15.0
) -> None:
    """Before any work: does the configured server answer, and does it have the model?

    For the ``ollama`` and ``openai`` backends (the embedded one is started by the run
    itself, and a plan that asks no model needs none). Raises ``BackendUnavailable`` with the
    URL, what was tried and the fix in one line.
    """
    import aiohttp

    from emailwb.errors import BackendError, BackendUnavailable
    from emailwb.llm.router import make_backend

    if cfg.backend == "local" or not get_plan(cfg.plan).uses_llm:
        return
    urls = ", ".join(cfg.urls) or "the default URL"
    async with aiohttp.ClientSession() as session:
        backend = make_backend(
            cfg.backend, cfg.urls or None, cfg.model, api_key, cfg.options, session
        )
        try:
            async with asyncio.timeout(limit_s):
                await backend.info()
        except TimeoutError:
            raise BackendUnavailable(
                f"the {cfg.backend} server at {urls} did not answer within {limit_s:g} s "
                "(asked for its model list and model details); nothing was ingested or queued",
                hint="check that the server is up and reachable, or point --url at one that is",
            ) from None
        except BackendError as exc:
            hint = (
                f"start the server ({'`ollama serve`' if cfg.backend == 'ollama' else 'e.g. `vllm serve MODEL`'}) "
                "or point --url at a running one, then run the same command again"
                if isinstance(exc, BackendUnavailable)
                else exc.hint or None
            )
            raise type(exc)(
                f"the {cfg.backend} server at {urls} is not usable: {exc.message}; nothing was "
                "ingested or queued",
                hint=hint,
            ) from exc
        finally:
            await backend.aclose()
