"""Command line: a thin shell over the library (ingest, stats, run, status, retry-failed, export,
compare, report, audit).

Every command resolves settings as explicit flag > EMAILWB_* environment > config file >
default, prints errors from the emailwb exception tree as one actionable line, and exits
non-zero on them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emailwb.errors import ConfigError, EmailwbError
from emailwb.facts.plans import PLANS
from emailwb.settings import load_settings

if TYPE_CHECKING:
    from emailwb.engine.processor import Processor, RunSummary
    from emailwb.engine.throughput import MetricsSnapshot
    from emailwb.quality.compare import Comparison
    from emailwb.quality.watch import QualityWatch
    from emailwb.settings import Settings

BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "enron-sample"


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="SQLite file (default: emailwb.sqlite, or EMAILWB_DB)")


def _cmd_ingest(args: argparse.Namespace) -> int:
    from emailwb.store.database import Store
    from emailwb.store.ingest import ingest

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        summary = ingest(store, args.paths, progress=not args.quiet)
    print(summary)
    if summary.nothing_ingested:
        print(
            "emailwb: nothing could be ingested from what was given (reasons above)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_errors(args: argparse.Namespace) -> int:
    from emailwb.store.database import Store
    from emailwb.store.ingest import ingest_errors

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        rows = ingest_errors(store, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no ingest errors in {settings.db}")
        return 0
    for r in rows:
        print(f"{r['source']}: {r['reason']}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from emailwb.store.database import Store

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        for key, value in stats.items():
            print(f"{key:>16}: {value}")
    return 0


def _parse_options(pairs: Sequence[str] | None) -> dict[str, object]:
    """``--option k=v`` pairs; values are JSON when they parse as JSON, else strings."""
    out: dict[str, object] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--option needs KEY=VALUE, got {pair!r}", hint="e.g. --option num_ctx=4096"
            )
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _progress_printer(
    quiet: bool,
) -> tuple[Callable[[MetricsSnapshot], None] | None, contextlib.AbstractContextManager[Any]]:
    """A rich progress bar fed by the processor's metric snapshots (or nothing when quiet)."""
    if quiet:
        return None, contextlib.nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "units · {task.fields[rate]:>5.1f} units/min ({task.fields[emails]:,} emails covered)"
        ),
        TextColumn("in flight {task.fields[inflight]:>2}"),
        TextColumn("retries {task.fields[retries]}"),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("ETA {task.fields[eta]}"),
        transient=False,
    )
    task = progress.add_task(
        "processing", total=None, rate=0.0, emails=0, inflight=0, retries=0, failed=0, eta="?"
    )

    def on_progress(snap: MetricsSnapshot) -> None:
        # one unit throughout: the bar, its rate and the ETA count units (an LLM call each,
        # a content group by default); the emails they cover are shown beside
        eta = "?" if snap.eta_s is None else f"{int(snap.eta_s) // 60}m{int(snap.eta_s) % 60:02d}s"
        progress.update(
            task,
            total=snap.total,
            completed=snap.done + snap.failed,
            rate=snap.units_per_min,
            emails=snap.emails_done,
            inflight=snap.in_flight,
            retries=snap.retries,
            failed=snap.failed,
            eta=eta,
        )

    return on_progress, progress


def _add_request_options(p: argparse.ArgumentParser) -> None:
    """What shapes a run's requests: shared by `run` and `batch export`."""
    p.add_argument("--model", help="model name (ollama/openai) or a GGUF path (local)")
    p.add_argument("--run-name", help="resume or start the run with this name")
    p.add_argument(
        "--preset",
        choices=["default", "reference"],
        default="default",
        help="'reference' reproduces the original design (the A/B baseline)",
    )
    p.add_argument(
        "--plan",
        choices=sorted(PLANS),
        help="where each field comes from: 'default' (each field from its best "
        "source on the hand labels), 'facts' (no model at all: a mailbox's "
        "entities in minutes), 'llm' (every field by the model), 'choice' "
        "(the model picks among extracted candidates); see README",
    )
    p.add_argument(
        "--prompt",
        help="the prompt version sent to the model: 'builtin' (default) or one saved in the "
        "store by the prompt lab (`emailwb prompts list`)",
    )
    p.add_argument("--chain", action="store_true", help="send whole threads as one unit")
    p.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="server/model option (repeatable)"
    )
    p.add_argument("--max-tokens", type=int, help="completion tokens per request")


def _request_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings `_add_request_options` gives (None: not on the command line)."""
    return {
        "model": args.model,
        "chain": True if args.chain else None,
        "max_tokens": args.max_tokens,
        "plan": args.plan,
        "prompt": args.prompt,
    }


def _request_config(args: argparse.Namespace, settings: Any) -> Any:
    """The RunConfig of `run` / `batch export`'s options over the settings."""
    from emailwb.settings import RunConfig

    overrides: dict[str, object] = {}
    options = _parse_options(args.option)
    if options:
        overrides["options"] = {**RunConfig.from_settings(settings, args.preset).options, **options}
    return RunConfig.from_settings(settings, args.preset, **overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from emailwb.engine.batch import check_backend, run_batch
    from emailwb.store.database import Store
    from emailwb.store.ingest import ingest

    settings = load_settings(
        db=args.db,
        backend=args.backend,
        urls=args.url or None,
        concurrency=args.concurrency,
        timeout=args.timeout,
        llama_server=args.llama_server,
        slots=args.slots,
        sample_every=args.sample_every,
        json_format=args.json_format,
        **_request_settings(args),
    )
    config = _request_config(args, settings)
    # the server first: a typo in --url must not cost an ingest of the whole mailbox
    asyncio.run(check_backend(config, settings.api_key))
    paths = args.paths
    with Store(settings.db) as store:
        if not paths and store.stats()["messages"] == 0:
            paths = [str(BUNDLED_SAMPLE)]
            print(f"the store is empty: ingesting the bundled sample ({BUNDLED_SAMPLE})")
        if paths:
            print(ingest(store, paths, progress=not args.quiet))
        from emailwb.engine.library import load_prompt, prompt_warning

        load_prompt(store, config.prompt)  # an unknown version fails here, before any request
        warning = prompt_warning(store, config.prompt)
        if warning:
            print(f"warning: prompt {config.prompt!r}: {warning}", file=sys.stderr)
        quality = _quality_watch(args, settings)
        on_progress, bar = _progress_printer(args.quiet)

        async def main() -> tuple[RunSummary, Processor | None, Comparison | None]:
            loop = asyncio.get_running_loop()
            started: list[Processor] = []

            def on_start(proc: Processor) -> None:
                started.append(proc)

                def first_sigint() -> None:
                    print(
                        "\nstopping: finishing the requests in flight (Ctrl-C again to cancel them)",
                        file=sys.stderr,
                    )
                    proc.request_stop(cancel_inflight=False)
                    loop.add_signal_handler(
                        signal.SIGINT, lambda: proc.request_stop(cancel_inflight=True)
                    )

                loop.add_signal_handler(signal.SIGINT, first_sigint)
                loop.add_signal_handler(
                    signal.SIGTERM, lambda: proc.request_stop(cancel_inflight=True)
                )

            if args.canary_of:
                from emailwb.engine.canary import canary

                summary, comparison = await canary(
                    store,
                    args.canary_of,
                    config,
                    sample=args.sample,
                    run_name=args.run_name,
                    quality=quality.config,
                    api_key=settings.api_key,
                    margin=args.margin,
                    on_progress=on_progress,
                    on_start=on_start,
                    limit=args.limit,
                )
                return summary, (started[-1] if started else None), comparison
            summary = await run_batch(
                store,
                config,
                run_name=args.run_name,
                limit=args.limit,
                api_key=settings.api_key,
                on_progress=on_progress,
                on_start=on_start,
                quality=quality,
            )
            return summary, (started[-1] if started else None), None

        with bar:
            s, proc, comparison = asyncio.run(main())
    print(
        f"run {s.name!r} {s.status}: {s.done} done, {s.failed} failed, {s.pending} pending of {s.total} "
        f"units ({s.emails_done} emails covered); this session {s.session_done} units in "
        f"{s.elapsed_s:.1f} s = {s.emails_per_min:.1f} emails/min"
    )
    if s.failed:
        print(
            "failures keep their reason: `emailwb status --json`; re-queue with `emailwb retry-failed`"
        )
    plan = s.config.get("plan", "default")
    stage = s.config.get("facts_stage")
    if stage and stage.get("emails"):
        print(f"facts stage (before the run): {stage['emails']} emails in {stage['seconds']:.1f} s")
    if s.grounding is not None:
        print(
            f"grounding: {s.grounding:.0%} of the extracted strings are in the emails "
            f"(plan {plan!r}); accuracy on hand labels: "
            f"`emailwb score --labels gold/enron-labels.jsonl{_db_flag(settings.db)} --run {s.name}`"
        )
    for warning in s.warnings:
        print(f"WARNING: {warning}")
    if proc is not None and getattr(proc, "quality", None) is not None and proc.quality.alerts:
        for alert in proc.quality.alerts:
            print(f"quality alert: {alert['message']} (on_drift={alert['action']})")
    if comparison is not None:
        print(comparison.text())
    for line in _next_steps(settings.db, s.name, s.pending):
        print(line)
    return 0 if s.status in ("completed", "stopped") else 1


def _db_flag(db: Path) -> str:
    return "" if Path(db) == Path("emailwb.sqlite") else f" --db {db}"


def _next_steps(db: Path, run_name: str, pending: int) -> list[str]:
    """Where a run's results are, how to look at them, and how to go on over the rest."""
    flag = _db_flag(db)
    lines = [
        f"results: in {db} (run {run_name!r}); `emailwb export{flag} --run {run_name} "
        "--out results.parquet` writes every email with its result, `emailwb status"
        f"{flag} --run {run_name}` the counts, `emailwb report{flag} {run_name} --out "
        "report.html` a page to share; notebooks: `.venv/bin/jupyter lab notebooks/`",
    ]
    if pending:
        lines.append(
            f"{pending} units still pending: run the same command again (without "
            "--limit for all of them); it goes on where this stopped and asks nothing "
            "done twice"
        )
    return lines


def _quality_watch(args: argparse.Namespace, settings: Settings) -> QualityWatch:
    """The run's quality watch from the --sample-every/--on-drift/--judge-* flags."""
    from emailwb.quality.watch import QualityConfig, QualityWatch

    config = QualityConfig.from_settings(
        settings,
        on_drift=args.on_drift,
        rollback_to=args.rollback_to,
        judge=False if args.no_judge else None,
        judge_backend=args.judge_backend or ("ollama" if args.judge_url else None),
        judge_urls=args.judge_url or None,
        judge_model=args.judge_model,
    )
    return QualityWatch(config, api_key=getattr(settings, "api_key", None))


def _cmd_status(args: argparse.Namespace) -> int:
    from emailwb.engine.throughput import status_json
    from emailwb.store import batches
    from emailwb.store.database import Store

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        status = status_json(store, args.run)
        status["store"] = store.stats()
        status["batch_out"] = batches.out_counts(store)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True, default=str))
        return 0
    run = status.get("run")
    if not run:
        print(f"no runs yet in {settings.db}; start one with `emailwb run`")
        return 0
    print(
        f"run {run['name']!r} ({run['status']}): {status['done']} done, {status['failed']} failed, "
        f"{status['pending']} pending of {status['total']} units"
    )
    for f in status.get("failures", []):
        print(f"  {f['n']:>5} failed: {f['error']}: {f['example']}")
    out = (status.get("batch_out") or {}).get(run["name"])
    if out:
        print(f"  {out} units out in batch files, not imported yet (`emailwb batch import`)")
    for alert in ((status.get("live") or {}).get("quality") or {}).get("alerts", []):
        print(f"  quality alert: {alert}")
    return 0


def _cmd_retry_failed(args: argparse.Namespace) -> int:
    from emailwb.store.database import Store
    from emailwb.store.runs import retry_failed

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        n = retry_failed(store, args.run)
        store.flush()
    print(
        f"re-queued {n} failed units; run `emailwb run` with the same settings (or --run-name) to process them"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import polars as pl

    from emailwb.facts.records import results_frame
    from emailwb.store.database import Store

    settings = load_settings(db=args.db)
    out = Path(args.out)
    with Store(settings.db) as store:
        df = results_frame(store, args.run)
    fmt = args.format or out.suffix.lstrip(".") or "parquet"
    if fmt == "parquet":
        df.write_parquet(out)
    elif fmt == "csv":  # CSV has no lists: nested columns as JSON text, nulls stay empty
        nested = [c for c, t in zip(df.columns, df.dtypes, strict=True) if t.is_nested()]
        df.with_columns(
            [
                pl.Series(c, [None if v is None else json.dumps(v) for v in df[c].to_list()])
                for c in nested
            ]
        ).write_csv(out)
    else:
        raise ConfigError(
            f"unknown export format {fmt!r}", hint="use --format parquet or --format csv"
        )
    counts = dict(df.group_by("status").len().iter_rows())
    print(
        f"wrote {df.height} emails to {out}: "
        + ", ".join(f"{counts[k]} {k}" for k in ("done", "failed", "pending") if counts.get(k))
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from emailwb.quality.compare import compare_runs
    from emailwb.store.database import Store

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        comp = compare_runs(store, args.run_a, args.run_b, margin=args.margin)
    if args.json:
        print(json.dumps(comp.as_dict(), indent=2, sort_keys=True, default=str))
    else:
        print(comp.text())
        print(
            f"\nstored as comparison {comp.id}; `emailwb report {comp.run_b} --out FILE.html` "
            "shows it with charts"
        )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from emailwb.store.database import Store
    from emailwb.ui.report import write_report

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        path = write_report(
            store, args.run, args.out, compare_with=args.compare_with, margin=args.margin
        )
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained: open it in a browser)"
    )
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    import asyncio

    from emailwb.quality.audit import accuracy, queue_df
    from emailwb.store.database import Store

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        if args.judge:
            from emailwb.llm.router import make_backend
            from emailwb.quality.judge import judge_missing

            if not args.judge_url:
                raise ConfigError(
                    "--judge needs the judge's server",
                    hint="pass --judge-url URL --judge-model MODEL "
                    "(an Ollama or OpenAI-compatible server)",
                )

            async def judge() -> int:
                backend = make_backend(
                    args.judge_backend,
                    args.judge_url,
                    args.judge_model,
                    settings.api_key,
                    {"temperature": 0.0},
                )
                try:
                    return await judge_missing(store, args.run, backend)
                finally:
                    await backend.aclose()

            print(f"judged {asyncio.run(judge())} sampled units")
        queue = queue_df(store, args.run)
        acc = accuracy(store, args.run)
    if args.json:
        print(
            json.dumps(
                {
                    "queued": queue.height,
                    "labelled": int((queue["labelled"] > 0).sum()) if queue.height else 0,
                    "accuracy": acc.to_dicts(),
                },
                indent=2,
                default=str,
            )
        )
        return 0
    labelled = int((queue["labelled"] > 0).sum()) if queue.height else 0
    print(
        f"audit queue: {queue.height} units, {labelled} labelled "
        "(label them in notebooks/04_audit.ipynb)"
    )
    for r in acc.iter_rows(named=True):
        if r["n"]:
            print(
                f"  {r['field']:<16} {r['correct']:>4}/{r['n']:<4} = {r['accuracy']:.2f} "
                f"[{r['low']:.2f}, {r['high']:.2f}]"
            )
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from emailwb.quality.gold import load_labels, score_runs
    from emailwb.store.database import Store

    settings = load_settings(db=args.db)
    labels = load_labels(args.labels, args.split)
    with Store(settings.db) as store:
        report = score_runs(store, labels, args.run or [], split=args.split)
    if report.missing:
        print(
            f"emailwb: {report.missing} of {len(labels)} labeled emails are not in "
            f"{settings.db}; scored the {report.scored} present (ingest the labeled emails "
            "first, e.g. `emailwb ingest ../shared/data/enron/maildir`)",
            file=sys.stderr,
        )
    if args.json:
        print(
            json.dumps(
                {"labels": str(args.labels), **report.as_dict()},
                indent=2,
                sort_keys=True,
                default=str,
            )
        )
        return 0
    print(report.text())
    return 0


def _cmd_batch_export(args: argparse.Namespace) -> int:
    import asyncio

    from emailwb.scale.batchfiles import export_batch
    from emailwb.store.database import Store

    settings = load_settings(db=args.db, **_request_settings(args))
    config = _request_config(args, settings)
    with Store(settings.db) as store:
        man = asyncio.run(
            export_batch(
                store,
                config,
                args.out,
                run_name=args.run_name,
                max_lines=args.max_lines,
                again=args.again,
                progress=not args.quiet,
            )
        )
    if not man.units:
        print(
            f"run {man.run!r}: nothing to export (every pending unit is out in a file already;"
            " --again writes them once more)"
        )
        return 0
    for f in man.files:
        print(f"  {Path(args.out) / f['name']}: {f['lines']:,} lines, {f['bytes'] / 1e6:.1f} MB")
    print(
        f"run {man.run!r}: {man.units:,} units in {len(man.files)} file(s) under {args.out} "
        f"(request hash {man.request_hash}). Send them, e.g. `vllm run-batch -i FILE -o "
        f"OUT.jsonl --model {man.model}`, then `emailwb batch import OUT.jsonl"
        f"{_db_flag(settings.db)}`"
    )
    return 0


def _cmd_batch_import(args: argparse.Namespace) -> int:
    import asyncio

    from emailwb.scale.batchfiles import import_batch
    from emailwb.store.database import Store

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        report = asyncio.run(
            import_batch(
                store,
                args.files,
                run_name=args.run_name,
                engine=args.engine,
                progress=not args.quiet,
            )
        )
    print(report)
    if report.failed:
        print(
            f"  {report.failed} failed: `emailwb status{_db_flag(settings.db)} --run "
            f"{report.run}` lists why; `emailwb retry-failed --run {report.run}` re-queues "
            "them for the next export"
        )
    return 0


def _cmd_batch_ray(args: argparse.Namespace) -> int:
    if args.vllm_model:  # the Ray Data LLM path: Ray starts vLLM engines, no servers
        from emailwb.scale.ray_llm import run_on_vllm

        report = run_on_vllm(
            args.files,
            args.out,
            args.vllm_model,
            address=args.address,
            concurrency=args.actors,
            batch_size=args.batch_size,
            max_model_len=args.max_model_len,
            progress=not args.quiet,
        )
    else:
        from emailwb.scale.ray_runner import run_on_ray

        report = run_on_ray(
            args.files,
            args.out,
            args.url,
            address=args.address,
            actors=args.actors,
            in_flight=args.in_flight,
            batch_size=args.batch_size,
            api_key=load_settings().api_key,
            progress=not args.quiet,
        )
    print(report)
    print(f"next: `emailwb batch import {args.out} --engine ray` (with the run's --db)")
    return 0


def _cmd_prompts(args: argparse.Namespace) -> int:
    from emailwb.engine.library import diff_prompts, list_prompts, load_prompt
    from emailwb.store.database import Store

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        if args.action == "list":
            for v in list_prompts(store):
                based = f"  from {v['based_on']}" if v["based_on"] else ""
                when = f"  {v['created_at']}" if v["created_at"] else ""
                warn = f"  WARNING: {v['warning']}" if v["warning"] else ""
                print(f"{v['name']:<24} {v['hash']}{when}{based}{warn}")
            return 0
        if args.action == "show":
            if len(args.names) != 1:
                raise ConfigError(
                    "prompts show takes one name", hint="e.g. emailwb prompts show builtin"
                )
            print(load_prompt(store, args.names[0]).text(), end="")
            return 0
        if len(args.names) != 2:
            raise ConfigError(
                "prompts diff takes two names", hint="e.g. emailwb prompts diff builtin NAME"
            )
        a, b = (load_prompt(store, n) for n in args.names)
        diff = diff_prompts(a, b)
        print(diff if diff else f"{a.name} and {b.name} have the same content ({a.hash})", end="")
        if not diff:
            print()
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emailwb",
        description="Push mailboxes through local LLMs and get structured business intelligence out.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="parse, clean, deduplicate and thread mail into the store")
    p.add_argument(
        "paths", nargs="+", help="maildir folders, .eml folders, mbox, CSV or Parquet files"
    )
    _add_db(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("errors", help="every input that could not be ingested, with the reason")
    _add_db(p)
    p.add_argument("--limit", type=int, default=None, help="at most this many (newest first)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_errors)

    p = sub.add_parser("stats", help="counts: messages, content groups, threads, ingest errors")
    _add_db(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("run", help="ingest PATHS (if given) and process pending emails with an LLM")
    p.add_argument(
        "paths",
        nargs="*",
        help="mail to ingest first (default: the bundled sample when the store is empty)",
    )
    _add_db(p)
    p.add_argument(
        "--backend",
        choices=["local", "ollama", "openai"],
        help="default: local (embedded llama-server)",
    )
    p.add_argument("--url", action="append", help="server URL; repeat for several endpoints")
    p.add_argument("--concurrency", help="'auto' (default) or a number of requests in flight")
    p.add_argument("--limit", type=int, help="process at most this many units in this session")
    _add_request_options(p)
    p.add_argument("--timeout", type=float, help="seconds per request")
    p.add_argument("--llama-server", help="path to a llama-server binary (local backend)")
    p.add_argument("--slots", type=int, help="parallel slots of the embedded llama-server")
    p.add_argument(
        "--json-format",
        choices=["schema", "compact"],
        help="constrain replies with the JSON schema (default), or with the same "
        "schema as a whitespace-free grammar (llama-server only; faster, see "
        "README 'Compact JSON' for what it did to quality)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--sample-every", type=int, help="deep-check every Nth email (default 100)")
    p.add_argument("--no-judge", action="store_true", help="sample for audits, ask no judge")
    p.add_argument(
        "--judge-backend",
        choices=["same", "ollama", "openai"],
        help="the judge's server kind (default: the run's own backend)",
    )
    p.add_argument("--judge-url", action="append", help="the judge's server URL")
    p.add_argument("--judge-model", help="the judge's model")
    p.add_argument(
        "--on-drift",
        choices=["off", "alert", "pause", "rollback"],
        help="what a quality drift does (default: alert)",
    )
    p.add_argument(
        "--rollback-to",
        metavar="RUN",
        help="the run whose configuration a rollback "
        "returns to (default: the run's first configuration)",
    )
    p.add_argument(
        "--canary-of",
        metavar="RUN_A",
        help="run this configuration on a sample of RUN_A's emails, then compare it with RUN_A",
    )
    p.add_argument("--sample", type=int, default=50, help="emails in the canary (default 50)")
    p.add_argument("--margin", type=float, default=0.05, help="non-inferiority margin (canary)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="the state of a run: counts, failures, throughput, ETA")
    _add_db(p)
    p.add_argument("--run", help="run name or id (default: the latest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("retry-failed", help="re-queue the failed units of a run")
    _add_db(p)
    p.add_argument("--run", help="run name or id (default: the latest)")
    p.set_defaults(func=_cmd_retry_failed)

    p = sub.add_parser("export", help="results joined with their emails, as Parquet or CSV")
    _add_db(p)
    p.add_argument("--run", help="run name or id (default: the latest)")
    p.add_argument("--format", choices=["parquet", "csv"])
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("compare", help="A/B: is run B no worse than run A (non-inferiority)?")
    p.add_argument("run_a", help="the baseline run (name or id)")
    p.add_argument("run_b", help="the candidate run (name or id)")
    _add_db(p)
    p.add_argument(
        "--margin",
        type=float,
        default=0.05,
        help="how much worse B may be on each quality share (default 0.05)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("report", help="a self-contained HTML report of a run")
    p.add_argument("run", nargs="?", help="run name or id (default: the latest)")
    _add_db(p)
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--compare-with", metavar="RUN_A", help="also compare with this baseline run")
    p.add_argument("--margin", type=float, default=0.05)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("audit", help="the audit queue and the audited accuracy per field")
    _add_db(p)
    p.add_argument("--run", help="run name or id (default: the latest)")
    p.add_argument("--judge", action="store_true", help="judge sampled units not judged yet")
    p.add_argument("--judge-backend", choices=["ollama", "openai"], default="ollama")
    p.add_argument("--judge-url", help="the judge's server URL")
    p.add_argument("--judge-model", help="the judge's model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("score", help="score runs against hand labels (accuracy, F1, grounding)")
    p.add_argument("--labels", required=True, help="JSONL file of hand labels")
    p.add_argument("--split", choices=["dev", "test"], help="score only the labels of this split")
    p.add_argument(
        "--run",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="run names or ids, one column each (default: the latest run)",
    )
    _add_db(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("prompts", help="prompt versions: list, show one, diff two")
    p.add_argument("action", choices=["list", "show", "diff"])
    p.add_argument("names", nargs="*", metavar="NAME", help="version names ('builtin' or saved)")
    _add_db(p)
    p.set_defaults(func=_cmd_prompts)

    p = sub.add_parser(
        "batch", help="hand a run to a batch engine (vLLM run-batch, OpenAI Batch API) and back"
    )
    bsub = p.add_subparsers(dest="batch_action", required=True)
    q = bsub.add_parser("export", help="write a run's pending units as OpenAI batch request files")
    _add_db(q)
    _add_request_options(q)
    q.add_argument("--out", required=True, help="folder for the request files and the manifest")
    q.add_argument("--max-lines", type=int, default=50_000, help="lines per file (default 50,000)")
    q.add_argument(
        "--again", action="store_true", help="also write units already out in an earlier file"
    )
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_batch_export)
    q = bsub.add_parser("import", help="store the results in batch output (and error) files")
    _add_db(q)
    q.add_argument("files", nargs="+", metavar="FILE")
    q.add_argument("--run-name", help="the run the files belong to (checked against each line)")
    q.add_argument(
        "--engine",
        choices=["openai-batch", "vllm-run-batch", "ray"],
        default="openai-batch",
        help="what produced the files (recorded in each result's provenance)",
    )
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_batch_import)
    q = bsub.add_parser(
        "ray", help="send exported request files through a Ray cluster to OpenAI-compatible servers"
    )
    q.add_argument("files", nargs="+", metavar="FILE", help="request files of `batch export`")
    q.add_argument("--out", required=True, help="the output file (appended; also the checkpoint)")
    where = q.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", action="append", help="a server's URL; repeatable")
    where.add_argument(
        "--vllm-model",
        metavar="MODEL",
        help="no servers: Ray Data starts vLLM engines for this Hugging Face model (a hub "
        "name or a local folder; needs ray[llm] and GPUs on the cluster)",
    )
    q.add_argument("--address", help="the Ray cluster (default: start a local one)")
    q.add_argument(
        "--actors",
        type=int,
        default=2,
        help="callers in the actor pool, or vLLM engine replicas with --vllm-model (default 2)",
    )
    q.add_argument(
        "--max-model-len", type=int, default=8192, help="with --vllm-model: the context length"
    )
    q.add_argument("--in-flight", type=int, default=8, help="requests in flight per actor")
    q.add_argument("--batch-size", type=int, default=16, help="request lines per Ray task")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_batch_ray)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EmailwbError as exc:
        print(f"emailwb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emailwb: interrupted; everything committed so far is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
