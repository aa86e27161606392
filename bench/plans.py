"""Score extraction plans on the hand labels: each field with its interval, side by side.

Ingests the labeled emails of one split (``gold/enron-labels.jsonl``; ``--split test`` is
the held-out third: score the final plans on it once) into a store under WORKDIR, runs
each plan over them with the embedded model (SmolLM2-135M on llama-server; the ``facts``
plan asks no model), and prints ``emailwb score``'s table with the majority baseline, plus
completion tokens and time per email for each run. Runs resume: a second call with the
same WORKDIR only scores.

    python bench/plans.py [--split test] [--plans llm,reference,facts,default]
                          [--workdir out/plans-test] [--limit N]

Plans: ``llm`` is the former defaults (every field by the model, emailwb's prompt and
deduplication); ``reference`` is the seed's design (its preset); ``facts`` and ``default``
are the extraction plans (``emailwb.facts.plans``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from _common import ENRON, REPO, Mail, copy_mail, machine_line

from emailwb.engine.batch import run_batch
from emailwb.quality.gold import (
    email_texts,
    load_labels,
    majority_baseline,
    predictions_from_run,
    score,
    score_table,
    scores_as_dict,
)
from emailwb.quality.watch import QualityConfig
from emailwb.settings import RunConfig
from emailwb.store.database import Store
from emailwb.store.ingest import ingest
from emailwb.store.runs import get_run

LABELS = REPO / "gold" / "enron-labels.jsonl"


def config_for(plan: str) -> RunConfig:
    if plan == "reference":
        return RunConfig.reference(backend="local")
    return RunConfig.default(backend="local", plan=plan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    ap.add_argument("--plans", default="llm,reference,facts,default")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--limit", type=int, default=None, help="units per run (for a quick look)")
    args = ap.parse_args()
    labels = load_labels(LABELS, split=args.split)
    work = Path(args.workdir or REPO / "out" / f"plans-{args.split}")
    work.mkdir(parents=True, exist_ok=True)
    mails = [Mail(lab["path"], 0, lab["message_id"]) for lab in labels]
    folder = copy_mail(mails, work / "mail")
    timings: dict[str, dict[str, float]] = {}
    with Store(work / "emailwb.sqlite") as store:
        ingest(store, [str(folder)], progress=False)
        for plan in [p.strip() for p in args.plans.split(",") if p.strip()]:
            t0 = time.monotonic()
            summary = asyncio.run(
                run_batch(
                    store,
                    config_for(plan),
                    run_name=plan,
                    limit=args.limit,
                    quality=QualityConfig(judge=False),
                )
            )
            took = time.monotonic() - t0
            row = store.query_one(
                "SELECT SUM(completion_tokens), SUM(emails), COUNT(*) FROM results "
                "WHERE run_id = ? AND status = 'done'",
                (summary.run_id,),
            )
            timings[plan] = {
                "seconds_this_call": round(took, 1),
                "completion_tokens_per_email": round((row[0] or 0) / max(row[1] or 1, 1), 1),
                "done": row[2],
                "failed": summary.failed,
            }
            print(
                f"[{plan}] {summary.done} done, {summary.failed} failed in {took:.0f} s; "
                f"{timings[plan]['completion_tokens_per_email']} completion tokens per email",
                flush=True,
            )
        ids = [lab["message_id"] for lab in labels]
        texts = email_texts(store, ids)
        columns = {}
        for plan in timings:
            record = get_run(store, plan)
            columns[plan] = score(labels, predictions_from_run(store, record, ids), texts)
        columns["majority"] = majority_baseline(labels)
    print(
        f"\n{len(labels)} hand-labeled emails, split {args.split!r} "
        f"(gold/enron-labels.jsonl); 95% bootstrap intervals over emails"
    )
    print(score_table(columns))
    print(
        "\ncompletion tokens per email: "
        + ", ".join(f"{k} {v['completion_tokens_per_email']}" for k, v in timings.items())
    )
    print(machine_line())
    (work / "scores.json").write_text(
        json.dumps(
            {
                "split": args.split,
                "timings": timings,
                "scores": {k: scores_as_dict(v) for k, v in columns.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    if not ENRON.exists():
        raise SystemExit(f"the Enron dev set is not at {ENRON}: set EMAILWB_ENRON_DIR")
    main()
