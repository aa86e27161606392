"""emailwb's own overhead: 5,000 emails through the whole path against an instant server.

An in-process ``SimServer`` (OpenAI protocol, streaming, no service time, a fixed valid
reply) stands in for the LLM, so all the time measured is emailwb's: the work queue, prompt
building, the HTTP request and the streamed reply, parsing and schema validation, the
result written through the store's batched writer, metrics and concurrency control. The
store holds real Enron mail (``../shared/data/enron``, copies with altered subjects added to
reach 5,000 distinct content groups) or, without it, synthetic mail.

    python bench/overhead.py [--units 5000] [--concurrency 16] [--profile]

Prints emails/s; the target is >= 1,000 on a 2-core machine, so emailwb's overhead never
matters next to an LLM call of seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import multiprocessing
import os
import pstats
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emailwb.engine.processor import Processor
from emailwb.llm.router import make_backend
from emailwb.llm.schema import EmailAnalysis
from emailwb.quality.watch import QualityConfig
from emailwb.settings import RunConfig
from emailwb.store.database import Store
from emailwb.store.ingest import ingest
from emailwb.store.runs import detect_missing
from emailwb.testing.servers import SimServer

ENRON = REPO.parent / "shared" / "data" / "enron"
TARGET = 1000.0

REPLY = EmailAnalysis(
    email_type="deal",
    workflow="gas trading",
    priority="high",
    priority_reason="a price is agreed",
    summary="Two desks agree a gas price for March.",
    people=[{"name": "John Arnold", "role": "trader"}],
    organizations=["Enron"],
    amounts=[{"value": 2.5, "currency": "USD", "context": "per MMBtu"}],
    business_value={"level": "high", "evidence": "we agree on 2.50"},
    confidence=0.8,
).model_dump_json()


def _copies(src: Path, dest: Path, needed: int) -> int:
    """Write ``needed`` copies of real messages with a changed subject (so they are distinct)."""
    files = sorted(src.rglob("*.eml"))
    written = 0
    for i in range(needed):
        raw = files[i % len(files)].read_bytes()
        head, sep, body = (
            raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
        )
        head = head.replace(b"Subject: ", f"Subject: [bench copy {i}] ".encode(), 1)
        (dest / f"{i}.eml").write_bytes(head + sep + body + f"\nbench copy {i}\n".encode())
        written += 1
    return written


def _synthetic(dest: Path, n: int) -> None:
    for i in range(n):
        (dest / f"{i}.eml").write_text(
            f"Message-ID: <bench-{i}@example.com>\nDate: Mon, 5 Mar 2001 10:{i % 60:02d}:00 -0800\n"
            f"From: trader{i % 50}@enron.com\nTo: desk@enron.com\nSubject: gas deal {i}\n\n"
            f"Please confirm the purchase of {1000 + i} MMBtu at $2.{i % 100:02d} for March.\n"
            "Let me know by Friday.\n"
        )


def build_store(folder: Path, units: int) -> tuple[Store, str]:
    store = Store(folder / "bench.sqlite")
    extra = folder / "copies"
    extra.mkdir()
    if (ENRON / "maildir").is_dir():
        ingest(store, [ENRON / "maildir"], progress=False)
        have = int(store.scalar("SELECT COUNT(*) FROM content_groups"))
        if have < units:
            _copies(ENRON / "maildir", extra, units - have)
            ingest(store, [extra], progress=False)
        source = f"real Enron mail ({ENRON}) plus altered copies"
    else:
        _synthetic(extra, units)
        ingest(store, [extra], progress=False)
        source = "synthetic mail (../shared/data/enron not found)"
    return store, source


def _instant_reply(body: dict) -> str:
    return REPLY


def _sim() -> SimServer:
    """The instant server: many slots, no service time, the whole reply in one chunk."""
    return SimServer(
        kind="openai", slots=256, service_time=0.0, chunk_chars=1 << 16, answer=_instant_reply
    )


def _serve_in_child(conn: Connection) -> None:
    async def serve() -> None:
        async with _sim() as srv:
            conn.send((srv.url, srv.model))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told

    asyncio.run(serve())


@contextlib.asynccontextmanager
async def server(where: str) -> AsyncIterator[tuple[str, str]]:
    """(url, model) of an instant SimServer in this process or in a child process."""
    if where == "process":
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.get_context("spawn").Process(
            target=_serve_in_child, args=(child,), daemon=True
        )
        proc.start()
        url, model = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
        try:
            yield url, model
        finally:
            parent.send("stop")
            proc.join(10)
        return
    async with _sim() as srv:
        yield srv.url, srv.model


async def measure(
    store: Store,
    units: int,
    concurrency: int | str,
    where: str = "in-process",
    *,
    quality: bool = False,
    run_name: str = "overhead",
) -> tuple[float, dict]:
    async with server(where) as (url, model):
        backend = make_backend("openai", url, model)
        # plan "llm": this measures the dispatch path around a model call (the facts stage
        # before the LLM is measured on its own by bench/facts.py)
        cfg = RunConfig.default(
            backend="openai", urls=[url], model=model, concurrency=concurrency, plan="llm"
        )
        # The timed path is prompt, HTTP, parse, validate, store. Quality scoring (grounding,
        # money detection, deep checks) is a separate stage, measured on its own below.
        watch = QualityConfig(judge=False) if quality else QualityConfig(enabled=False, judge=False)
        proc = Processor(store, cfg, backend, run_name=run_name, limit=units, quality=watch)
        t0, c0 = time.perf_counter(), time.process_time()
        summary = await proc.run_to_end()
        elapsed = time.perf_counter() - t0
        summary = {**summary.as_dict(), "cpu_s": time.process_time() - c0}
        await backend.aclose()
    return elapsed, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=5000)
    ap.add_argument("--concurrency", default="32")
    ap.add_argument("--profile", action="store_true", help="cProfile the run; top 30 by tottime")
    ap.add_argument(
        "--server",
        choices=("in-process", "process"),
        default="in-process",
        help="run the simulated server here (default) or in a child process, so "
        "that only emailwb's side is measured on this process's core",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store, source = build_store(Path(tmp), args.units)
        print(
            f"store: {source}; {store.stats()['content_groups']} content groups "
            f"(built in {time.perf_counter() - t:.1f} s)"
        )
        t = time.perf_counter()
        detected = detect_missing(store)  # once per store, like ingest; not the timed path
        store.flush()
        print(
            f"email types detected for {detected} content groups in "
            f"{time.perf_counter() - t:.1f} s (stored; not part of the timed path)"
        )
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        elapsed, summary = asyncio.run(measure(store, args.units, args.concurrency, args.server))
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        done = summary["done"]
        written = store.scalar("SELECT COUNT(*) FROM results WHERE status = 'done'")
        q_elapsed, q_summary = asyncio.run(
            measure(
                store,
                args.units,
                args.concurrency,
                args.server,
                quality=True,
                run_name="overhead-with-quality",
            )
        )
        store.close()
    rate = done / elapsed
    print(
        json.dumps(
            {
                "units": done,
                "committed": written,
                "failed": summary["failed"],
                "elapsed_s": round(elapsed, 3),
                "cpu_s": round(summary["cpu_s"], 3),
                "emails_per_cpu_s": round(done / summary["cpu_s"]),
                "final_limit": summary["final_limit"],
            }
        )
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average {load} (other processes slow the "
        f"wall-clock rate; emails per CPU-second of this process does not depend on them)"
    )
    print(
        f"emails/s: {rate:,.0f}  (target >= {TARGET:,.0f}: {'PASS' if rate >= TARGET else 'FAIL'})"
    )
    q_rate = q_summary["done"] / q_elapsed
    print(
        f"with per-result quality scoring on (the default; the instant server is no judge): {q_rate:,.0f} "
        f"emails/s, {q_rate / rate:.2f}x of the bare path; scoring costs about "
        f"{max(1 / q_rate - 1 / rate, 0) * 1000:.2f} ms per email, against seconds per LLM call"
    )
    return 0 if rate >= TARGET and written == done == args.units else 1


if __name__ == "__main__":
    raise SystemExit(main())
