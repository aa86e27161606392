"""Ray Data over 1, 2 and 4 endpoints of fixed capacity, and Ray's overhead per email.

Real Enron emails (``../shared/data/enron``, distinct content groups) are exported as
OpenAI batch request lines (``emailwb.scale.batchfiles``). Each endpoint is a simulated
OpenAI server in its own process (``bench/simserver.py``) with a fixed capacity: SLOTS
requests at a time, SERVICE seconds each. The same lines go through ``run_on_ray`` over
1, 2 and 4 such endpoints, on one local Ray cluster started once, and emails/min are
compared side by side (targets: 2 endpoints >= 1.8x one, 4 >= 3.4x one). Then the
overhead per email: Ray over one instant endpoint (no service time) next to emailwb's own
processor over the same endpoint.

    python bench/scale_out.py [--emails 160] [--service 0.5] [--slots 2]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from _common import ENRON, copy_mail, distinct_sample, machine_line, table, verdict
from simserver import spawn

from emailwb.engine.batch import run_batch
from emailwb.quality.watch import QualityConfig
from emailwb.scale.batchfiles import export_batch
from emailwb.scale.ray_runner import run_on_ray
from emailwb.settings import RunConfig
from emailwb.store.database import Store
from emailwb.store.ingest import ingest


def servers(folder: Path, n: int, slots: int, service: float) -> tuple[list, list[str], str]:
    procs, urls, model = [], [], ""
    for k in range(n):
        sub = folder / f"srv{k}"
        sub.mkdir(parents=True, exist_ok=True)
        proc, url, model = spawn(sub, slots=slots, service_time=service)
        procs.append(proc)
        urls.append(url)
    return procs, urls, model


def stop(procs: list) -> None:
    for p in procs:
        p.terminate()
        p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--emails", type=int, default=160)
    ap.add_argument("--service", type=float, default=0.5, help="seconds per request")
    ap.add_argument("--slots", type=int, default=2, help="requests at a time per endpoint")
    args = ap.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="emailwb-scale-"))
    print(machine_line())
    try:
        mails = distinct_sample(args.emails)
        copy_mail(mails, work / "mail")
        with Store(work / "emailwb.sqlite") as store:
            ingest(store, [work / "mail"], progress=False)
            cfg = RunConfig.default(backend="openai", urls=["http://x/v1"], model="sim-model:1b")
            man = asyncio.run(export_batch(store, cfg, work / "req", run_name="scale"))
        shards = [work / "req" / f["name"] for f in man.files]
        n = man.units
        print(f"{n} request lines from {args.emails} Enron emails ({ENRON})")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        rows, rate = [], {}
        for eps in (1, 2, 4):
            procs, urls, _ = servers(work / f"e{eps}", eps, args.slots, args.service)
            try:
                out = work / f"out-{eps}.jsonl"
                t0 = time.perf_counter()
                rep = run_on_ray(
                    shards, out, urls, actors=2, in_flight=2 * args.slots * eps, batch_size=8
                )
                took = time.perf_counter() - t0
            finally:
                stop(procs)
            assert rep.written == n and rep.failed == 0, rep
            rate[eps] = n / took * 60
            ideal = eps * args.slots / args.service * 60
            rows.append(
                [
                    eps,
                    f"{took:.1f}",
                    f"{rate[eps]:.0f}",
                    f"{ideal:.0f}",
                    f"{rate[eps] / rate[1]:.2f}x",
                ]
            )
        print(table(["endpoints", "seconds", "emails/min", "capacity/min", "vs one"], rows))
        two, four = rate[2] / rate[1], rate[4] / rate[1]
        print(f"2 endpoints / 1: {two:.2f}x (target >= 1.8x) {verdict(two >= 1.8)}")
        print(f"4 endpoints / 1: {four:.2f}x (target >= 3.4x) {verdict(four >= 3.4)}")

        # overhead per email against one instant endpoint: Ray's path and the processor's
        procs, urls, model = servers(work / "instant", 1, 16, 0.0)
        try:
            t0 = time.perf_counter()
            rep = run_on_ray(shards, work / "instant.jsonl", urls, actors=2, in_flight=16)
            ray_s = (time.perf_counter() - t0) / n
            with Store(work / "emailwb.sqlite") as store:
                live = RunConfig.default(
                    backend="openai", urls=urls, model=model, concurrency="16", stream=False
                )
                t0 = time.perf_counter()
                asyncio.run(
                    run_batch(
                        store,
                        live,
                        run_name="direct",
                        quality=QualityConfig(enabled=False, judge=False),
                    )
                )
                proc_s = (time.perf_counter() - t0) / n
        finally:
            stop(procs)
        print(
            f"overhead per email on one instant endpoint: Ray {ray_s * 1000:.1f} ms, "
            f"processor {proc_s * 1000:.1f} ms ({ray_s / proc_s:.1f}x)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
