"""Command line: a thin shell over the library (ingest, stats, run, status, retry-failed, export).

Every command resolves settings as explicit flag > EMAILWB_* environment > config file >
default, prints errors from the emailwb exception tree as one actionable line, and exits
non-zero on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import load_settings
from .errors import EmailwbError

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
