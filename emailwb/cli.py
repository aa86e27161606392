"""Command line: a thin shell over the library (ingest, stats, run, status, retry-failed, export).

Every command resolves settings as explicit flag > EMAILWB_* environment > config file >
default, prints errors from the emailwb exception tree as one actionable line, and exits
non-zero on them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import load_settings
from .errors import ConfigError, EmailwbError

BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "enron-sample"


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="SQLite file (default: emailwb.sqlite, or EMAILWB_DB)")


def _cmd_ingest(args: argparse.Namespace) -> int:
    from .ingest import ingest
    from .store import Store

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        summary = ingest(store, args.paths, progress=not args.quiet)
    print(summary)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from .store import Store

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
            raise ConfigError(f"--option needs KEY=VALUE, got {pair!r}", hint="e.g. --option num_ctx=4096")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _progress_printer(quiet: bool):  # type: ignore[no-untyped-def]
    """A rich progress bar fed by the processor's metric snapshots (or nothing when quiet)."""
    if quiet:
        return None, contextlib.nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>6.1f} emails/min"),
        TextColumn("in flight {task.fields[inflight]:>3}"),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("ETA {task.fields[eta]}"),
        transient=False,
    )
    task = progress.add_task("processing", total=None, rate=0.0, inflight=0, failed=0, eta="?")

    def on_progress(snap) -> None:  # type: ignore[no-untyped-def]
        eta = "?" if snap.eta_s is None else f"{int(snap.eta_s) // 60}m{int(snap.eta_s) % 60:02d}s"
        progress.update(
            task, total=snap.total, completed=snap.done + snap.failed, rate=snap.emails_per_min,
            inflight=snap.in_flight, failed=snap.failed, eta=eta,
        )

    return on_progress, progress


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from .batch import run_batch
    from .ingest import ingest
    from .store import Store

    settings = load_settings(
        db=args.db, backend=args.backend, urls=args.url or None, model=args.model,
        concurrency=args.concurrency, timeout=args.timeout, llama_server=args.llama_server,
        slots=args.slots, chain=True if args.chain else None, max_tokens=args.max_tokens,
    )
    paths = args.paths
    with Store(settings.db) as store:
        if not paths and store.stats()["messages"] == 0:
            paths = [str(BUNDLED_SAMPLE)]
            print(f"the store is empty: ingesting the bundled sample ({BUNDLED_SAMPLE})")
        if paths:
            print(ingest(store, paths, progress=not args.quiet))
        from .runs import RunConfig

        overrides: dict[str, object] = {}
        options = _parse_options(args.option)
        if options:
            overrides["options"] = {**RunConfig.from_settings(settings, args.preset).options, **options}
        config = RunConfig.from_settings(settings, args.preset, **overrides)
        on_progress, bar = _progress_printer(args.quiet)

        async def main() -> object:
            loop = asyncio.get_running_loop()
            holder: dict[str, object] = {}

            def on_start(proc) -> None:  # type: ignore[no-untyped-def]
                holder["proc"] = proc

                def first_sigint() -> None:
                    print("\nstopping: finishing the requests in flight (Ctrl-C again to cancel them)",
                          file=sys.stderr)
                    proc.request_stop(cancel_inflight=False)
                    loop.add_signal_handler(signal.SIGINT, lambda: proc.request_stop(cancel_inflight=True))

                loop.add_signal_handler(signal.SIGINT, first_sigint)
                loop.add_signal_handler(signal.SIGTERM, lambda: proc.request_stop(cancel_inflight=True))

            return await run_batch(
                store, config, run_name=args.run_name, limit=args.limit, api_key=settings.api_key,
                on_progress=on_progress, on_start=on_start,
            )

        with bar:
            summary = asyncio.run(main())
    s = summary  # type: ignore[assignment]
    print(
        f"run {s.name!r} {s.status}: {s.done} done, {s.failed} failed, {s.pending} pending of {s.total} "
        f"units ({s.emails_done} emails covered); this session {s.session_done} units in "
        f"{s.elapsed_s:.1f} s = {s.emails_per_min:.1f} emails/min"
    )
    if s.failed:
        print("failures keep their reason: `emailwb status --json`; re-queue with `emailwb retry-failed`")
    return 0 if s.status in ("completed", "stopped") else 1


def _cmd_status(args: argparse.Namespace) -> int:
    from .metrics import status_json
    from .store import Store

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        status = status_json(store, args.run)
        status["store"] = store.stats()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True, default=str))
        return 0
    run = status.get("run")
    if not run:
        print(f"no runs yet in {settings.db}; start one with `emailwb run`")
        return 0
    print(f"run {run['name']!r} ({run['status']}): {status['done']} done, {status['failed']} failed, "
          f"{status['pending']} pending of {status['total']} units")
    for f in status.get("failures", []):
        print(f"  {f['n']:>5} failed: {f['error']}: {f['example']}")
    return 0


def _cmd_retry_failed(args: argparse.Namespace) -> int:
    from .runs import retry_failed
    from .store import Store

    settings = load_settings(db=args.db)
    with Store(settings.db) as store:
        n = retry_failed(store, args.run)
        store.flush()
    print(f"re-queued {n} failed units; run `emailwb run` with the same settings (or --run-name) to process them")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .runs import results_df
    from .store import Store

    settings = load_settings(db=args.db)
    out = Path(args.out)
    with Store(settings.db) as store:
        df = results_df(store, args.run)
    fmt = args.format or out.suffix.lstrip(".") or "parquet"
    if fmt == "parquet":
        df.write_parquet(out)
    elif fmt == "csv":
        nested = [c for c, t in zip(df.columns, df.dtypes, strict=True) if t.is_nested()]
        df.with_columns([df[c].cast(str) for c in nested] if nested else []).write_csv(out)
    else:
        raise ConfigError(f"unknown export format {fmt!r}", hint="use --format parquet or --format csv")
    print(f"wrote {df.height} rows to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emailwb",
        description="Push mailboxes through local LLMs and get structured business intelligence out.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="parse, clean, deduplicate and thread mail into the store")
    p.add_argument("paths", nargs="+", help="maildir folders, .eml folders, mbox, CSV or Parquet files")
    _add_db(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("stats", help="counts: messages, content groups, threads, ingest errors")
    _add_db(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("run", help="ingest PATHS (if given) and process pending emails with an LLM")
    p.add_argument("paths", nargs="*", help="mail to ingest first (default: the bundled sample when the store is empty)")
    _add_db(p)
    p.add_argument("--backend", choices=["local", "ollama", "openai"], help="default: local (embedded llama-server)")
    p.add_argument("--url", action="append", help="server URL; repeat for several endpoints")
    p.add_argument("--model", help="model name (ollama/openai) or a GGUF path (local)")
    p.add_argument("--concurrency", help="'auto' (default) or a number of requests in flight")
    p.add_argument("--limit", type=int, help="process at most this many units in this session")
    p.add_argument("--run-name", help="resume or start the run with this name")
    p.add_argument("--preset", choices=["default", "reference"], default="default",
                   help="'reference' reproduces the original design (the A/B baseline)")
    p.add_argument("--chain", action="store_true", help="send whole threads as one unit")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="server/model option (repeatable)")
    p.add_argument("--timeout", type=float, help="seconds per request")
    p.add_argument("--max-tokens", type=int, help="completion tokens per request")
    p.add_argument("--llama-server", help="path to a llama-server binary (local backend)")
    p.add_argument("--slots", type=int, help="parallel slots of the embedded llama-server")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
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
