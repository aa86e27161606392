"""Shared helpers of the benches: Enron samples, throwaway stores, timed runs, tables.

Every bench imports this module by path (``sys.path`` gets the repository root), so the
benches run from a fresh clone with ``.venv/bin/python bench/NAME.py``.
"""

from __future__ import annotations

import csv
import os
import random
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from emailwb.store.database import Store
from emailwb.store.ingest import ingest

ENRON = Path(os.environ.get("EMAILWB_ENRON_DIR") or REPO.parent / "shared" / "data" / "enron")


@dataclass(frozen=True, slots=True)
class Mail:
    """One message of the Enron dev set (a row of its MANIFEST.tsv)."""

    path: str  # relative to ENRON
    bytes: int
    group: str  # the manifest's content group


def manifest(enron: Path = ENRON) -> list[Mail]:
    """Every message of the dev set, in manifest order."""
    if not (enron / "MANIFEST.tsv").is_file():
        raise SystemExit(f"the Enron dev set is not at {enron}: set EMAILWB_ENRON_DIR")
    with (enron / "MANIFEST.tsv").open(newline="") as fh:
        return [
            Mail(r["path"], int(r["bytes"]), r["content_group"])
            for r in csv.DictReader(fh, delimiter="\t")
        ]


def distinct_sample(
    n: int,
    *,
    seed: int = 4,
    min_bytes: int = 700,
    max_bytes: int = 5000,
    exclude: Iterable[str] = (),
) -> list[Mail]:
    """``n`` messages from ``n`` different content groups (so deduplication has nothing to
    merge), of ordinary size, chosen with a fixed seed; ``exclude``: groups not to use."""
    rows = [m for m in manifest() if min_bytes <= m.bytes <= max_bytes]
    random.Random(seed).shuffle(rows)
    seen = set(exclude)
    out: list[Mail] = []
    for m in rows:
        if m.group not in seen:
            seen.add(m.group)
            out.append(m)
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} distinct messages of {min_bytes}-{max_bytes} bytes")


def balanced_split(mails: Sequence[Mail], parts: int) -> list[list[Mail]]:
    """Deal messages into ``parts`` lists of similar total size (largest first, snake order)."""
    out: list[list[Mail]] = [[] for _ in range(parts)]
    order = sorted(mails, key=lambda m: -m.bytes)
    for i, m in enumerate(order):
        k = i % (2 * parts)
        out[k if k < parts else 2 * parts - 1 - k].append(m)
    return out


def copy_mail(mails: Iterable[Mail], dest: Path) -> Path:
    """Copy messages under ``dest`` (their maildir paths kept); returns ``dest``."""
    for m in mails:
        target = dest / m.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ENRON / m.path, target)
    return dest


def store_with(
    folder: Path,
    name: str,
    mails: Iterable[Mail] | None = None,
    paths: Sequence[Path] | None = None,
) -> Store:
    """A fresh store ``folder/name.sqlite`` holding ``mails`` (copied) or ``paths``."""
    src = paths or [copy_mail(mails or (), folder / f"{name}-mail")]
    store = Store(folder / f"{name}.sqlite")
    ingest(store, list(src), progress=False)
    store.flush()
    return store


def groups_of(store: Store) -> int:
    return int(
        store.scalar("SELECT COUNT(*) FROM content_groups WHERE canonical_email_id IS NOT NULL")
        or 0
    )


def machine_line() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: Sequence[int] = (0,)) -> str:
    """A plain text table; the ``left`` columns left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(r)
            ).rstrip()
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _machine_busy_s() -> float | None:
    """CPU-seconds all processes of the machine spent busy (steal included), from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU-seconds of this process and its reaped children (a stopped llama-server)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class OtherLoad:
    """How many cores the rest of the machine (other users, steal) took during a span.

    Busy time from /proc/stat minus this process and its children, over wall time; read
    ``cores`` after the children of the span were reaped. None where /proc/stat is missing.
    """

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), _machine_busy_s(), _own_cpu_s()

    @property
    def cores(self) -> float | None:
        busy = _machine_busy_s()
        if busy is None or self.busy0 is None:
            return None
        wall = max(time.monotonic() - self.t0, 1e-9)
        return max(0.0, (busy - self.busy0) - (_own_cpu_s() - self.own0)) / wall


class Stopwatch:
    """Wall-clock seconds since creation (for the bench's own budget)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def s(self) -> float:
        return time.monotonic() - self.t0
