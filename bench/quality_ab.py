"""The quality A/B: the `reference` configuration against emailwb's defaults on real Enron mail.

Takes N emails (default 200) of the Enron dev set (``../shared/data/enron``, or
``$EMAILWB_ENRON_DIR``; a deterministic spread over all mailboxes, or the first N with
``--pick first``), ingests them into a fresh store and processes them twice with the
embedded model:

* ``ab-reference``: the original design (raw bodies, one email per request, one request at
  a time, the email before the instructions, a 2 s sleep after each email; ``--no-sleep``
  drops the sleeps, which change the speed, not the quality);
* ``ab-default``: emailwb's defaults (deduplicated content groups, cleaned bodies, shared
  prompt prefix, auto concurrency).

``--a default --b compact`` compares the defaults (``ab-default``) with the defaults under
the whitespace-free grammar (``ab-compact``, ``json_format="compact"``): what compact JSON
does to quality and speed, alone.

Then ``compare`` (B = defaults against A = reference, non-inferiority margin ``--margin``)
and ``report`` (an HTML page), and prints the verdict and the key numbers; everything is
also written to ``WORKDIR/quality_ab.json``.

    python bench/quality_ab.py [--n 200] [--a reference|default] [--b default|compact]
                               [--no-sleep] [--margin 0.05]
                               [--workdir out/quality_ab]
    python bench/quality_ab.py --sim --n 20 --no-sleep   # a quick check, no model needed

``--sim`` replaces the model with an in-process simulated Ollama server whose answers are
built from each email's text (for testing this script; its numbers say nothing about a
model). Without it, the embedded llama-server and model (``scripts/setup.sh``) are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emailwb.engine.batch import run_batch
from emailwb.errors import ConfigError, EmailwbError
from emailwb.quality.compare import compare_runs
from emailwb.quality.watch import QualityConfig
from emailwb.settings import (
    RunConfig,
    load_settings,
)
from emailwb.store.database import Store
from emailwb.store.ingest import ingest
from emailwb.ui.report import write_report

FIELDS = ("grounding_people", "grounding_organizations", "grounding_amounts", "grounding_dates")


def enron_dir() -> Path:
    env = os.environ.get("EMAILWB_ENRON_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "enron"
    if not (path / "MANIFEST.tsv").exists():
        raise ConfigError(
            f"the Enron dev set is not at {path}",
            hint="set EMAILWB_ENRON_DIR or place ../shared beside the repository",
        )
    return path


def pick(src: Path, n: int, how: str) -> list[str]:
    """N message paths from the manifest: the first N, or a deterministic spread."""
    lines = (src / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    paths = [ln.split("\t", 1)[0] for ln in lines if ln.strip()]
    if how == "spread":
        paths.sort(key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    return paths[:n]


def stage(src: Path, paths: list[str], dest: Path) -> Path:
    """Copy the chosen messages into ``dest/mail`` keeping the maildir layout."""
    mail = dest / "mail"
    if mail.exists():
        shutil.rmtree(mail)
    for rel in paths:
        target = mail / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)
    return mail


async def run_both(store: Store, args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    quality = QualityConfig(sample_every=args.sample_every, judge=not args.no_judge)
    # a model A/B (prompt and JSON formats): every field by the model in both arms
    if args.a == "default":
        ref = RunConfig.from_settings(settings, "default", plan="llm")
    else:
        ref = RunConfig.from_settings(
            settings, "reference", **({"sleep_between": 0.0} if args.no_sleep else {})
        )
    extra: dict[str, Any] = {"plan": "llm"}
    if args.b == "compact":
        extra["json_format"] = "compact"
    default = RunConfig.from_settings(settings, "default", **extra)
    timings = {}
    for name, cfg in ((f"ab-{args.a}", ref), (f"ab-{args.b}", default)):
        t0 = time.monotonic()
        print(
            f"[{name}] {cfg.preset}: mode={cfg.mode} layout={cfg.layout} unit={cfg.unit} "
            f"concurrency={cfg.concurrency} sleep={cfg.sleep_between}s "
            f"json={'compact' if cfg.compact_json else 'schema'}",
            flush=True,
        )
        summary = await run_batch(
            store, cfg, run_name=name, quality=quality, api_key=settings.api_key
        )
        timings[name] = time.monotonic() - t0
        print(
            f"[{name}] {summary.status}: {summary.done} done, {summary.failed} failed of "
            f"{summary.total} units ({summary.emails_done} emails) in {timings[name]:.1f} s "
            f"= {summary.emails_per_min:.1f} emails/min",
            flush=True,
        )
    return timings


@contextlib.asynccontextmanager
async def backend_settings(args: argparse.Namespace, db: Path):  # type: ignore[no-untyped-def]
    """Settings for the embedded model, or for a simulated server (``--sim``)."""
    if not args.sim:
        yield load_settings(db=str(db), backend="local")
        return
    from emailwb.testing.servers import SimServer

    kind = "openai" if args.b == "compact" else "ollama"  # Ollama's API takes no grammar
    async with SimServer(kind=kind, slots=4, service_time=0.005) as srv:
        yield load_settings(db=str(db), backend=kind, urls=[srv.url], model=srv.model)


def key_numbers(comp: Any) -> dict[str, Any]:
    m = {d.metric: d for d in comp.metrics}
    sa, sb = comp.speed["a"], comp.speed["b"]
    speedup = (
        sb["emails_per_min"] / sa["emails_per_min"]
        if sa.get("emails_per_min") and sb.get("emails_per_min")
        else None
    )
    lost = [d.metric for d in comp.metrics if d.in_verdict and d.verdict != "non-inferior"]
    fields = {
        f: {
            "reference": m[f].mean_a,
            "default": m[f].mean_b,
            "delta": m[f].delta,
            "ci": [m[f].low, m[f].high],
        }
        for f in FIELDS
        if f in m
    }
    return {
        "verdict": comp.verdict,
        "explanation": comp.explanation,
        "pairs": comp.pairs,
        "emails": comp.emails,
        "speedup": speedup,
        "not_shown_non_inferior": lost,
        "metrics": {
            d.metric: {
                "reference": d.mean_a,
                "default": d.mean_b,
                "delta": d.delta,
                "ci": [d.low, d.high],
                "verdict": d.verdict,
            }
            for d in comp.metrics
        },
        "grounding_by_field": fields,
        "agreement": comp.agreement,
        "speed": {"reference": sa, "default": sb},
    }


def prepare(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """A fresh work folder: (folder, store path, staged mail)."""
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    db = work / "quality_ab.sqlite"
    for p in work.glob("quality_ab.sqlite*"):
        p.unlink()
    src = enron_dir()
    return work, db, stage(src, pick(src, args.n, args.pick), work)


async def process(args: argparse.Namespace, db: Path, mail: Path) -> dict[str, float]:
    """Ingest and run both configurations; wall seconds per run."""
    async with backend_settings(args, db) as settings:
        with Store(db) as store:
            print(await asyncio.to_thread(ingest, store, [mail], progress=False), flush=True)
            return await run_both(store, args, settings)


def finish(args: argparse.Namespace, work: Path, db: Path, timings: dict[str, float]) -> int:
    """Compare, write the reports and the numbers, print the verdict."""
    with Store(db) as store:
        comp = compare_runs(store, f"ab-{args.a}", f"ab-{args.b}", margin=args.margin)
        report = write_report(store, f"ab-{args.b}", work / "quality_ab.html")
        ref_report = write_report(store, f"ab-{args.a}", work / f"quality_ab_{args.a}.html")
    numbers = key_numbers(comp)
    numbers.update(
        {
            "a": args.a,
            "b": args.b,
            "n": args.n,
            "sim": args.sim,
            "no_sleep": args.no_sleep,
            "wall_s": timings,
            "report": str(report),
            "reference_report": str(ref_report),
        }
    )
    (work / "quality_ab.json").write_text(json.dumps(numbers, indent=2, default=str))
    print()
    print(comp.text())
    print()
    if numbers["speedup"]:
        print(
            f"speed-up of the {args.b} run over the {args.a} run: {numbers['speedup']:.2f}x "
            f"(emails/min{'; sleeps dropped' if args.no_sleep else ''})"
        )
    if numbers["not_shown_non_inferior"]:
        print("not shown to be within the margin: " + ", ".join(numbers["not_shown_non_inferior"]))
        for f, v in numbers["grounding_by_field"].items():
            print(
                f"  {f:<26} reference {_f(v['reference'])}  default {_f(v['default'])}  "
                f"delta {_f(v['delta'])}"
            )
    print(f"report: {report}\nnumbers: {work / 'quality_ab.json'}")
    if args.sim:
        print("(--sim: a simulated server answered; these numbers say nothing about a model)")
    return 0


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:+.3f}" if v < 0 else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="emails (default 200)")
    ap.add_argument(
        "--pick",
        choices=["spread", "first"],
        default="spread",
        help="a deterministic spread over all mailboxes, or the first N",
    )
    ap.add_argument(
        "--no-sleep",
        action="store_true",
        help="drop the reference's 2 s sleeps (speed only, not quality)",
    )
    ap.add_argument(
        "--a",
        choices=["reference", "default"],
        default="reference",
        help="the A side: the reference design (default) or emailwb's defaults",
    )
    ap.add_argument(
        "--b",
        choices=["default", "compact"],
        default="default",
        help="the B side: emailwb's defaults (default) or the defaults with "
        "compact JSON (json_format='compact')",
    )
    ap.add_argument("--margin", type=float, default=0.05, help="non-inferiority margin")
    ap.add_argument("--sample-every", type=int, default=100, help="deep-check every Nth email")
    ap.add_argument("--no-judge", action="store_true", help="no judge second opinions")
    ap.add_argument(
        "--workdir",
        default=str(REPO / "out" / "quality_ab"),
        help="where the store, the report and the numbers go",
    )
    ap.add_argument("--sim", action="store_true", help="a simulated server instead of the model")
    args = ap.parse_args(argv)
    if args.a == args.b:
        ap.error("--a and --b name the same configuration")
    try:
        work, db, mail = prepare(args)
        timings = asyncio.run(process(args, db, mail))
        return finish(args, work, db, timings)
    except EmailwbError as exc:
        print(f"quality_ab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
