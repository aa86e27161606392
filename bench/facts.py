"""The ``facts`` plan over a whole mailbox: time against a bare parse of the same files.

Parses every message of the Enron dev set once with emailwb's parser and nothing else (the
floor any pipeline pays), then, in a fresh store, ingests the same files and runs the
``facts`` plan (no model: spaCy and the rules, spread over the cores, then one result per
content group written by the processor). Prints each stage's time and the ratios to the
bare parse, measured side by side in this run, and what was found.

    python bench/facts.py [--workdir out/facts] [--processes N]

Goal (issue "facts first"): the whole mailbox (6,446 messages) in under 2 minutes on the
2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import time
from pathlib import Path

from _common import ENRON, REPO, machine_line, manifest, table, verdict

from emailwb.engine.batch import run_batch
from emailwb.facts.asks import find_asks
from emailwb.facts.counted import counted_segments
from emailwb.facts.money import find_money
from emailwb.mail.message import parse_email
from emailwb.quality.watch import QualityConfig
from emailwb.settings import RunConfig
from emailwb.store.database import Store
from emailwb.store.ingest import ingest

GOAL_S = 120.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(REPO / "out" / "facts"))
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    files = [ENRON / m.path for m in manifest()]

    t0 = time.perf_counter()
    parsed = [parse_email(path.read_bytes()) for path in files]
    bare = time.perf_counter() - t0

    # the new stages alone, in this process, over the same messages: what they add
    t0 = time.perf_counter()
    for email in parsed:
        find_asks(email)
    asks_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for email in parsed:
        for seg in counted_segments(email):
            find_money(seg.text)
    money_s = time.perf_counter() - t0
    del parsed

    with Store(work / "emailwb.sqlite") as store:
        t0 = time.perf_counter()
        ingest(store, [str(ENRON / "maildir")], progress=False)
        store.flush()
        ingested = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = asyncio.run(
            run_batch(
                store,
                RunConfig.default(plan="facts"),
                run_name="facts",
                quality=QualityConfig(judge=False),
            )
        )
        ran = time.perf_counter() - t0
        stage = summary.config.get("facts_stage") or {}
        counts = {
            name: 0 for name in ("people", "organizations", "amounts", "dates", "action_items")
        }
        for (raw,) in store.query("SELECT data FROM results WHERE run_id = ?", (summary.run_id,)):
            data = json.loads(raw)
            for name in counts:
                counts[name] += len(data.get(name) or [])
    total = ingested + ran
    rows = [
        ["bare parse (emailwb.mail.message.parse_email)", len(files), f"{bare:.1f}", "1.00x"],
        [
            "ingest (parse, clean, dedupe, thread, store)",
            len(files),
            f"{ingested:.1f}",
            f"{ingested / bare:.2f}x",
        ],
        [
            f"facts stage (spaCy + rules, {args.processes} processes)",
            stage.get("emails", 0),
            f"{stage.get('seconds', 0.0):.1f}",
            f"{stage.get('seconds', 0.0) / bare:.2f}x",
        ],
        [
            "facts plan run (facts stage + results)",
            summary.done,
            f"{ran:.1f}",
            f"{ran / bare:.2f}x",
        ],
        ["the whole job: ingest + facts plan", len(files), f"{total:.1f}", f"{total / bare:.2f}x"],
        [
            "  of which action items (asks), 1 process",
            len(files),
            f"{asks_s:.1f}",
            f"{asks_s / bare:.2f}x",
        ],
        [
            "  of which money (mentions, tables, fractions), 1 process",
            len(files),
            f"{money_s:.1f}",
            f"{money_s / bare:.2f}x",
        ],
    ]
    print(table(["stage", "messages or units", "seconds", "vs bare parse"], rows))
    print(
        f"\nfound: {counts['people']} people, {counts['organizations']} organizations, "
        f"{counts['amounts']} distinct amounts, {counts['dates']} dates, "
        f"{counts['action_items']} action items in {summary.done} content "
        f"groups; grounding {summary.grounding:.0%} (every value has its span)"
        if summary.grounding is not None
        else ""
    )
    print(machine_line())
    print(
        f"{verdict(total < GOAL_S)}  the whole mailbox ({len(files)} messages) with the facts "
        f"plan in {total:.0f} s (goal < {GOAL_S:.0f} s)"
    )
    raise SystemExit(0 if total < GOAL_S else 1)


if __name__ == "__main__":
    if not ENRON.exists():
        raise SystemExit(f"the Enron dev set is not at {ENRON}: set EMAILWB_ENRON_DIR")
    main()
