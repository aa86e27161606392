"""Units out in batch request files: written by ``emailwb batch export``, cleared when
``emailwb batch import`` brings their line back (done or failed)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from emailwb.store.runs import now_iso

if TYPE_CHECKING:
    from emailwb.store.database import Store


def record_out(store: Store, run_id: int, rows: Iterable[tuple[int, str, str, int]]) -> None:
    """(unit_id, custom_id, file, line) of units just written to a request file."""
    now = now_iso()
    store.submit_many(
        "INSERT OR REPLACE INTO batch_out (run_id, unit_id, custom_id, file, line, exported_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(run_id, u, c, f, n, now) for u, c, f, n in rows],
    )
    store.flush()


def out_units(store: Store, run_id: int) -> dict[int, str]:
    """unit_id -> the file it is out in, for a run's units not back yet."""
    return {
        int(r["unit_id"]): str(r["file"])
        for r in store.query("SELECT unit_id, file FROM batch_out WHERE run_id = ?", (run_id,))
    }


def came_back(store: Store, run_id: int, unit_ids: Iterable[int]) -> None:
    """These units' lines were imported: they are no longer out."""
    store.submit_many(
        "DELETE FROM batch_out WHERE run_id = ? AND unit_id = ?",
        [(run_id, int(u)) for u in unit_ids],
    )
    store.flush()


def out_counts(store: Store) -> dict[str, int]:
    """Per run name, how many units are out in batch files."""
    return {
        str(r["name"]): int(r["n"])
        for r in store.query(
            "SELECT n.name, COUNT(*) AS n FROM batch_out b JOIN runs n ON n.id = b.run_id "
            "GROUP BY n.name"
        )
    }
