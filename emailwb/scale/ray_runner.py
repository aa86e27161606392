"""Run exported batch request files on a Ray cluster against OpenAI-compatible endpoints.

``run_on_ray`` reads the request lines (``emailwb batch export``), skips those whose
custom_id is already in the output file (the output file is the checkpoint: a run that
died resumes there), and makes a Ray Dataset of the rest. An actor pool
(``map_batches`` with a callable class) POSTs each line's body to the endpoints, a bounded
number in flight per actor, spread over the endpoints by fewest in flight; Ray restarts a
lost actor and retries its task (Ray Data's defaults for actor pools), so a killed
worker costs the batch it held, not the job. The driver appends each finished line to the
output file in the OpenAI batch output format, which ``emailwb batch import --engine ray``
reads. Ray is the optional extra ``emailwb[scale]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emailwb.errors import ConfigError
from emailwb.llm.openai import openai_base_url

RETRIES = 4  # HTTP attempts per line inside an actor (connection errors, 429, 5xx)


@dataclass
class RayRunReport:
    """What ``run_on_ray`` did."""

    requests: int  # lines in the request files
    already: int  # skipped: their custom_id was in the output file already
    written: int  # lines appended to the output file in this run
    failed: int  # of those, lines whose request failed (written with their error)
    out: Path

    def __str__(self) -> str:
        return (
            f"{self.written:,} lines written to {self.out} ({self.failed:,} with an error), "
            f"{self.already:,} already there, of {self.requests:,} requests"
        )


def response_line(line_id: str, custom_id: Any, body: Any) -> dict[str, Any]:
    """A line of the OpenAI batch output format for a request that got ``body`` back."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": "", "body": body},
        "error": None,
    }


def error_line(
    line_id: str, custom_id: Any, status: int, code: str, message: str
) -> dict[str, Any]:
    """A line of the OpenAI batch output format for a request that failed."""
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": "", "body": {}},
        "error": {"code": code, "message": message},
    }


class LineCaller:
    """A Ray Data actor: POSTs request lines' bodies, returns output lines (one per input)."""

    def __init__(
        self, urls: Sequence[str], in_flight: int, api_key: str | None, timeout: float
    ) -> None:
        self.urls = [openai_base_url(u) + "/chat/completions" for u in urls]
        self.in_flight = max(1, in_flight)
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.busy = [0] * len(self.urls)
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        lines = [str(x) for x in batch["text"]]
        return {"text": asyncio.run(self._all(lines))}

    async def _all(self, lines: list[str]) -> list[str]:
        import aiohttp

        gate = asyncio.Semaphore(self.in_flight)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=self.headers) as session:

            async def one(line: str) -> str:
                async with gate:
                    return json.dumps(await self._one(session, json.loads(line)))

            return list(await asyncio.gather(*(one(x) for x in lines)))

    async def _one(self, session: Any, req: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        cid = req.get("custom_id")
        status: int | None = None
        message = ""
        for attempt in range(RETRIES):
            i = min(range(len(self.urls)), key=lambda k: (self.busy[k], random.random()))
            self.busy[i] += 1
            try:
                async with session.post(self.urls[i], json=req.get("body")) as resp:
                    status = resp.status
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, message = None, f"{type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    return response_line(f"emailwb-ray-{self.pid}", cid, json.loads(text))
                message = text[:500]
                if status not in (408, 429) and status < 500:
                    break  # the request itself is wrong: retrying cannot help
            finally:
                self.busy[i] -= 1
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        return error_line(
            f"emailwb-ray-{self.pid}", cid, status or 0, str(status or "unreachable"), message
        )


def done_ids(out: Path) -> set[str]:
    """custom_ids already in the output file (a half-written last line does not count)."""
    found: set[str] = set()
    if not out.exists():
        return found
    for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("custom_id") and not obj.get("error"):
            found.add(str(obj["custom_id"]))
    return found


def _trim_partial(out: Path) -> None:
    """Cut a half-written last line (the driver died mid-write) so appends stay lines."""
    if not out.exists():
        return
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        out.write_bytes(data[: data.rfind(b"\n") + 1])


def pending_lines(request_files: Sequence[str | Path], out: Path) -> tuple[int, list[str]]:
    """All request lines counted, and those whose custom_id is not yet done in ``out``."""
    _trim_partial(out)
    have = done_ids(out)
    todo: list[str] = []
    total = 0
    for path in request_files:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            total += 1
            if json.loads(line).get("custom_id") not in have:
                todo.append(line)
    return total, todo


def run_on_ray(
    request_files: Sequence[str | Path],
    out: str | Path,
    urls: Sequence[str],
    *,
    address: str | None = None,
    actors: int = 2,
    in_flight: int = 8,
    batch_size: int = 16,
    api_key: str | None = None,
    timeout: float = 300.0,
    progress: bool = False,
    init_kwargs: dict[str, Any] | None = None,
) -> RayRunReport:
    """Send the request lines not yet in ``out`` through a Ray actor pool; append results."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "Ray is not installed", hint="pip install 'emailwb[scale]' (or ray[data])"
        ) from exc
    if not urls:
        raise ConfigError(
            "no endpoint to send the requests to",
            hint="pass --url http://HOST:PORT/v1 once per OpenAI-compatible server",
        )
    out_path = Path(out)
    total, todo = pending_lines(request_files, out_path)
    report = RayRunReport(total, total - len(todo), 0, 0, out_path)
    if not todo:
        return report
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
            **(init_kwargs or {}),
        )
    try:
        blocks = max(actors * 4, -(-len(todo) // max(batch_size, 1)))
        ds = ray.data.from_items([{"text": x} for x in todo], override_num_blocks=blocks)
        results = ds.map_batches(
            LineCaller,
            fn_constructor_kwargs={
                "urls": list(urls),
                "in_flight": in_flight,
                "api_key": api_key,
                "timeout": timeout,
            },
            # an actor pool's actors are restarted when lost, and their batches retried
            # (Ray Data's defaults for actors: max_restarts=-1, max_task_retries=-1)
            compute=ray.data.ActorPoolStrategy(size=max(1, actors)),
            batch_size=batch_size,
            num_cpus=0.25,
        )
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="ray", unit="req", disable=not progress)
        with out_path.open("a", encoding="utf-8") as sink:
            for batch in results.iter_batches(batch_size=None):
                for line in batch["text"]:
                    sink.write(str(line) + "\n")
                    report.written += 1
                    if '"error": null' not in str(line):
                        report.failed += 1
                sink.flush()
                bar.update(len(batch["text"]))
        bar.close()
    finally:
        if started:
            ray.shutdown()
    return report
