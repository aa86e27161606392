"""The notebooks run headless (papermill) against the embedded local backend.

One store for the module, as an analyst would use them: 01 ingests the bundled sample,
02 launches a short run, 03 saves a priority profile and runs a short batch with it, 06 tries
a draft prompt beside the builtin one on two hand-labeled emails. Each notebook gets its
parameters injected after its ``parameters`` cell (and ingests the sample itself when its
store is empty); each run is small (SmolLM2-135M on 2 CPU cores does about 15-20 emails a
minute) and must leave its results in the store. Executed notebooks are kept in the test's folder for inspection.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from emailwb.store import runs
from emailwb.store.database import Store
from emailwb.ui.notebook import execute, outputs_text

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
LIMIT = 3  # units for 02_launch
LIMIT_03 = 2  # units for 03_priorities

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


def params(workdir: Path, **more: Any) -> dict[str, Any]:
    return {
        "db": str(workdir / "emailwb.sqlite"),
        "mailbox": str(REPO / "data" / "enron-sample"),
        "backend": "local",
        "url": "",
        "model": "",
        "limit": LIMIT,
        **more,
    }


def run(name: str, workdir: Path, **more: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    nb = execute(
        NOTEBOOKS / name, params(workdir, **more), out=workdir / name, cwd=NOTEBOOKS, timeout=240
    )
    return nb, time.monotonic() - t0


def test_every_notebook_opens_with_a_parameters_cell() -> None:
    import nbformat

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first.metadata.get("tags", []), path.name
        for key in ("db", "mailbox", "backend", "url", "model", "limit"):
            assert f"\n{key} = " in "\n" + first.source, (path.name, key)
        assert all(not c.get("outputs") for c in nb.cells), f"{path.name}: clear outputs"
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        imports = [ln for ln in code.splitlines() if ln.startswith(("import ", "from "))]
        assert all(" emailwb" in ln for ln in imports), imports  # only calls into emailwb


def test_01_explore_ingests_and_draws(workdir: Path) -> None:
    nb, seconds = run("01_explore.ipynb", workdir)
    text = outputs_text(nb)
    assert "ingested 301 new messages" in text
    figures = [
        o
        for c in nb.cells
        for o in c.get("outputs", [])
        if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]
    assert len(figures) == 7
    with Store(workdir / "emailwb.sqlite") as store:
        assert store.scalar("SELECT COUNT(*) FROM emails") == 301
        assert store.scalar("SELECT COUNT(*) FROM content_groups WHERE email_type IS NULL") == 0
    print(f"01_explore: {seconds:.1f} s")


@pytest.mark.llm
def test_02_launch_runs_and_leaves_results(workdir: Path) -> None:
    nb, seconds = run("02_launch.ipynb", workdir, run_name="ci-launch", autorun=True)
    assert f"{LIMIT} units this session" in outputs_text(nb) or " done, " in outputs_text(nb)
    with Store(workdir / "emailwb.sqlite") as store:
        record = runs.get_run(store, "ci-launch")
        # "stopped" when the limit left units pending (the processor's word for it)
        assert record is not None and record.status in ("completed", "stopped")
        rows = store.query(
            "SELECT status, data, reason FROM results WHERE run_id = ?", (record.id,)
        )
        assert len(rows) == LIMIT
        # SmolLM2-135M does not always keep to the schema: a unit may end failed (with its
        # reason and raw reply kept); every unit has its result either way
        done = [json.loads(r["data"]) for r in rows if r["status"] == "done"]
        assert all(d["email_type"] for d in done)
        assert all(r["reason"] for r in rows if r["status"] == "failed")
    print(f"02_launch: {seconds:.1f} s, {len(done)}/{LIMIT} done")


@pytest.mark.llm
def test_03_priorities_profile_orders_the_run(workdir: Path) -> None:
    weights = {"deal": 5.0, "newsletter": 0.1, "spam": 0.0}
    nb, seconds = run(
        "03_priorities.ipynb",
        workdir,
        run_name="ci-priorities",
        profile="ci-profile",
        weights=weights,
        autorun=True,
        limit=LIMIT_03,
    )
    assert "Traceback" not in outputs_text(nb)
    with Store(workdir / "emailwb.sqlite") as store:
        saved, _ = runs.load_profile(store, "ci-profile")
        assert saved["deal"] == 5.0 and saved["newsletter"] == 0.1
        record = runs.get_run(store, "ci-priorities")
        assert record is not None and record.config["priority_profile"] == "ci-profile"
        got = store.query(
            "SELECT g.email_type FROM results r JOIN content_groups g "
            "ON g.id = r.group_id WHERE r.run_id = ? ORDER BY r.id",
            (record.id,),
        )
        assert len(got) == LIMIT_03
        deals = store.scalar("SELECT COUNT(*) FROM content_groups WHERE email_type = 'deal'")
        # the profile put deals first: the units processed were deals
        assert [r[0] for r in got] == ["deal"] * min(LIMIT_03, deals)
    print(f"03_priorities: {seconds:.1f} s")


def _labeled_in_sample(n: int) -> list[str]:
    """Message-IDs of ``n`` hand-labeled emails that the bundled sample holds (shortest first)."""
    sample = REPO / "data" / "enron-sample"
    found = []
    for line in (REPO / "gold" / "enron-labels.jsonl").read_text().splitlines():
        label = json.loads(line)
        path = sample / label["path"]
        if path.exists():
            found.append((path.stat().st_size, label["message_id"]))
    assert len(found) >= n, "the bundled sample holds too few hand-labeled emails"
    return [mid for _, mid in sorted(found)[:n]]


@pytest.mark.llm
def test_06_prompt_lab_tries_a_draft_beside_the_baseline(workdir: Path) -> None:
    mids = _labeled_in_sample(2)
    nb, seconds = run(
        "06_prompt_lab.ipynb",
        workdir,
        labels=str(REPO / "gold" / "enron-labels.jsonl"),
        sample_size=2,
        message_ids=mids,
        draft_name="ci-lab",
        add_instruction="Keep the summary to one short sentence.",
        autotry=True,
    )
    text = outputs_text(nb)
    assert "Traceback" not in text and "Error" not in text, text[-2000:]
    # one stats line per version, both on the two sampled emails
    assert re.search(r"^builtin: [0-2]/2 valid", text, re.M), text
    assert re.search(r"^ci-lab: [0-2]/2 valid", text, re.M), text
    assert "labeled: 2" in text  # both sampled emails have hand labels: deltas were computed
    assert re.search(r"^  people: draft - baseline [+-]\d\.\d\d \[", text, re.M), text
    with Store(workdir / "emailwb.sqlite") as store:
        rows = store.query("SELECT prompt_hash, email_id FROM lab_replies")
        # the draft differs from the baseline: two prompt hashes, each asked both emails
        assert len({r["prompt_hash"] for r in rows}) == 2
        assert len(rows) == 4
    print(f"06_prompt_lab: {seconds:.1f} s")
