"""A ``SimServer`` in its own process, with a request log on disk (for crash tests and benches).

``emailwb.testing.servers.SimServer`` lives inside an event loop of the process that uses it; a
crash test that kills the client with SIGKILL needs the server to outlive it. This script
runs one until SIGTERM/SIGINT and appends a JSON line per chat request to ``--log``:

    {"event": "start", "n": 17, "t": 1712345678.123, "key": "9f0c...", "pid": 4242}
    {"event": "end", "n": 17, "t": 1712345678.180, "status": 200}

``n`` numbers the chat requests from 0; ``key`` is a SHA-256 prefix of the last user
message (what tells the emails apart); ``t`` is wall-clock time (``time.time()``), comparable
with the client's clocks. The schema-valid reply of request ``n`` carries the marker
``[req n]`` at the start of its ``summary``, so a committed result names the request it came
from. When the server is ready it prints one line, ``READY <url> <model>``, on stdout.

    python bench/simserver.py --kind openai --slots 8 --service-time 0.05 --log req.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emailwb.testing.faults import KINDS, default_answer, last_user
from emailwb.testing.servers import SimServer

_REQUEST_NO: contextvars.ContextVar[int] = contextvars.ContextVar("request_no", default=-1)
MARKER = "[req {n}] "


def prompt_key(text: str) -> str:
    """What the log records per request: a short hash of the last user message."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def marked_answer(body: dict[str, Any]) -> str:
    """``default_answer`` with ``[req n]`` at the start of the summary."""
    data = json.loads(default_answer(body))
    data["summary"] = MARKER.format(n=_REQUEST_NO.get()) + str(data.get("summary") or "")
    return json.dumps(data)


class LoggedSimServer(SimServer):
    """A SimServer that appends every chat request's start and end to a JSON-lines file."""

    def __init__(self, log_path: Path | None, **kwargs: Any) -> None:
        super().__init__(answer=marked_answer, **kwargs)
        self._seq = itertools.count()
        self._fd = (
            os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if log_path is not None
            else None
        )

    def _log(self, record: dict[str, Any]) -> None:
        if self._fd is not None:  # one write() per line on an O_APPEND file: lines never mix
            os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp keeps the body: the parent reads it again
        if not body.get("messages"):
            return await super()._chat(request)
        n = next(self._seq)
        _REQUEST_NO.set(n)
        self._log(
            {
                "event": "start",
                "n": n,
                "t": time.time(),
                "pid": os.getpid(),
                "key": prompt_key(last_user(body)),
            }
        )
        status: int | str = "cut"
        try:
            resp = await super()._chat(request)
            status = resp.status
            return resp
        finally:
            self._log({"event": "end", "n": n, "t": time.time(), "status": status})


def read_log(path: Path) -> list[dict[str, Any]]:
    """The log's records (a half-written last line, if any, is skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


async def serve(args: argparse.Namespace) -> None:
    srv = LoggedSimServer(
        Path(args.log) if args.log else None,
        kind=args.kind,
        slots=args.slots,
        service_time=args.service_time,
        port=args.port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with srv:
        print(f"READY {srv.url} {srv.model}", flush=True)
        await stop.wait()


def spawn(
    folder: Path,
    *,
    kind: str = "openai",
    slots: int = 8,
    service_time: float = 0.05,
    log: Path | None = None,
    new_session: bool = False,
) -> tuple[subprocess.Popen[str], str, str]:
    """Start this script as a child process and wait for it: ``(process, url, model)``.

    Its stderr goes to ``folder/server.err`` (a full pipe would stall the server); a server
    that does not come up is killed and its stderr raised. Stop it with ``terminate()``.
    """
    err = folder / "server.err"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--kind",
        kind,
        "--slots",
        str(slots),
        "--service-time",
        str(service_time),
        *(["--log", str(log)] if log else []),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=err.open("w"), text=True, start_new_session=new_session
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"the simulated server did not start: {line}{err.read_text()[-2000:]}")
    _, url, model = line.split()
    return proc, url, model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=KINDS, default="openai")
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--service-time", type=float, default=0.05, help="seconds per request")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", help="append a JSON line per chat request start and end here")
    asyncio.run(serve(ap.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
