"""A/B verdicts on constructed pairs of runs, the canary, the CLI, and the HTML run report.

One store for the module: 60 emails and four SimServer runs: A (grounded answers), B (the
same answers: equal), C (every second email's values invented: clearly worse) and D
(every tenth email gets one invented person beside the real one: worse, within margin).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from qualitykit import ThreadedSim, answers, config_for, make_mail, sim_run

from emailwb import cli
from emailwb.engine.canary import canary
from emailwb.errors import ProcessingError
from emailwb.quality.compare import compare_runs, comparisons_for
from emailwb.store.database import Store
from emailwb.testing.servers import SimServer
from emailwb.ui.report import build_report, write_report

N = 60


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ab") / "emailwb.sqlite"

    async def build() -> None:
        with Store(path) as store:
            make_mail(store, N)
            async with SimServer(answer=answers()) as good:
                await sim_run(store, good, "A")
                await sim_run(store, good, "B")
            async with SimServer(answer=answers(bad_every=2)) as bad:
                await sim_run(store, bad, "C")
            async with SimServer(answer=answers(slight_every=10)) as slight:
                await sim_run(store, slight, "D")
            await store.aflush()

    asyncio.run(build())
    return path


@pytest.fixture
def ab(db: Path):
    with Store(db) as store:
        yield store


def test_compare_gives_the_expected_verdicts(ab):
    equal = compare_runs(ab, "A", "B")
    assert equal.verdict == "non-inferior" and equal.pairs == N
    assert equal.metric("grounding").delta == 0 and equal.metric("grounding").n == N
    assert equal.agreement["email_type"]["mean"] == 1.0
    assert equal.agreement["people"]["mean"] == 1.0

    worse = compare_runs(ab, "A", "C")
    assert worse.verdict == "inferior" and "grounding" in worse.explanation
    g = worse.metric("grounding")
    assert g.verdict == "inferior" and g.delta == pytest.approx(-0.5) and g.high < -0.05
    assert worse.metric("amount_recall").verdict == "inferior"
    assert worse.metric("ok").verdict == "non-inferior"  # no unit failed: only quality dropped

    within = compare_runs(ab, "A", "D", margin=0.05)
    g = within.metric("grounding")
    assert within.verdict == "non-inferior"
    assert -0.05 < g.low < g.delta < 0  # worse, but by less than the margin
    assert within.agreement["people"]["mean"] < 1.0
    strict = compare_runs(ab, "A", "D", margin=0.0)  # no margin: the same drop is not tolerated
    assert strict.verdict in ("inferior", "inconclusive")
    assert strict.metric("grounding").verdict != "non-inferior"

    stored = comparisons_for(ab, "D")
    assert [c["verdict"] for c in stored] == [strict.verdict]  # the latest per pair
    assert stored[0]["margin"] == 0.0


def test_compare_explains_what_to_do_when_it_cannot(ab):
    with pytest.raises(ProcessingError, match="two different runs") as exc:
        compare_runs(ab, "A", "A")
    assert exc.value.hint
    with pytest.raises(ProcessingError, match="no run named") as exc:
        compare_runs(ab, "A", "nope")
    assert "emailwb status" in (exc.value.hint or "")


def test_compare_cli(ab, db: Path, capsys):
    assert cli.main(["compare", "A", "C", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "inferior" and out["pairs"] == N
    assert cli.main(["compare", "A", "B", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "verdict: NON-INFERIOR" in text and "grounding *" in text
    assert cli.main(["compare", "A", "zzz", "--db", str(db)]) == 2
    assert "no run named 'zzz'" in capsys.readouterr().err


def test_report_is_self_contained_and_holds_the_numbers(ab, db: Path, tmp_path: Path, capsys):
    out = write_report(ab, "C", tmp_path / "c.html", compare_with="A")
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not re.search(r"<script[^>]*\bsrc=", html)  # plotly.js inlined: works offline
    assert "Plotly.newPlot" in html and len(html) > 1_000_000
    assert "emailwb run report: C" in html
    assert re.search(r"units done</span><b>60</b>", html)
    row = re.search(r"<td>grounding</td><td>(\d+)</td><td>([\d.]+)</td>", html)
    assert row and row.group(1) == "60" and row.group(2) == "0.500"
    assert "data-verdict='inferior'" in html and "INFERIOR" in html
    assert "Deep checks and audits" in html and "judge" in html
    # the CLI writes the same report
    path = tmp_path / "a.html"
    assert cli.main(["report", "A", "--db", str(db), "--out", str(path)]) == 0
    assert "wrote" in capsys.readouterr().out and path.exists()
    assert cli.main(["report", "A", "--db", str(db), "--out", str(tmp_path / "no" / "x.html")]) == 2


def test_report_escapes_email_and_run_content(store, tmp_path: Path):
    async def go() -> None:
        make_mail(store, 5)
        async with SimServer(answer=answers()) as srv:
            await sim_run(store, srv, "<script>alert(1)</script>")

    asyncio.run(go())
    html = build_report(store, "<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_canary_runs_b_on_a_sample_of_a_and_compares(store):
    make_mail(store, 40)
    async with SimServer(answer=answers()) as a_srv:
        await sim_run(store, a_srv, "A")
    async with SimServer(answer=answers()) as b_srv:
        config_b = config_for(b_srv, concurrency=3)
        summary, comp = await canary(store, "A", config_b, sample=12, run_name="A-canary")
        assert len(b_srv.chat_requests) >= 12
        again, _ = await canary(store, "A", config_b, sample=12, run_name="A-canary-2")
    assert summary.total == 12 and summary.done == 12  # only the sample ran
    assert comp.pairs == 12 and comp.verdict == "non-inferior"
    first = {
        r[0]
        for r in store.query("SELECT group_id FROM results WHERE run_id = ?", (summary.run_id,))
    }
    second = {
        r[0] for r in store.query("SELECT group_id FROM results WHERE run_id = ?", (again.run_id,))
    }
    assert first == second  # a deterministic sample
    assert summary.config["only_units"] == 12  # the provenance says it was a sample


def test_canary_from_the_command_line(db: Path, capsys):
    with ThreadedSim(answer=answers(bad_every=2)) as srv:
        rc = cli.main(
            [
                "run",
                "--db",
                str(db),
                "--backend",
                "ollama",
                "--url",
                srv.url,
                "--model",
                srv.model,
                "--canary-of",
                "A",
                "--sample",
                "10",
                "--quiet",
                "--run-name",
                "cli-canary",
                "--no-judge",
                "--plan",
                "llm",
            ]
        )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "run 'cli-canary' completed: 10 done" in out
    assert "verdict: INFERIOR" in out


@pytest.mark.timeout(180)
def test_notebook_05_runs_headless(db: Path, tmp_path: Path):
    from emailwb.ui.notebook import execute, outputs_text

    repo = Path(__file__).resolve().parents[1]
    nb = execute(
        repo / "notebooks" / "05_compare.ipynb",
        {
            "db": str(db),
            "run_a": "A",
            "run_b": "C",
            "margin": 0.05,
            "labels_file": str(repo / "gold" / "enron-labels.jsonl"),
        },
        out=tmp_path / "05.ipynb",
        cwd=repo / "notebooks",
        timeout=120,
    )
    text = outputs_text(nb)
    assert "verdict: INFERIOR" in text and "grounding *" in text
    # the runs cover the simulated mailbox, not the labeled Enron emails: said, not crashed
    held = len((repo / "gold" / "enron-labels.jsonl").read_text().splitlines())
    assert f"cannot score: none of the {held} labeled emails is in this store" in text
    figures = [
        o
        for c in nb.cells
        for o in c.get("outputs", [])
        if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]
    assert len(figures) == 1


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("a", "b"), [("reference", "default"), ("default", "compact")])
def test_the_quality_ab_bench_runs_with_a_simulated_server(
    enron_dir: Path, tmp_path: Path, a: str, b: str
):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            str(repo / "bench" / "quality_ab.py"),
            "--sim",
            "--n",
            "12",
            "--no-sleep",
            "--a",
            a,
            "--b",
            b,
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, "EMAILWB_ENRON_DIR": str(enron_dir)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"[ab-{a}] completed: 12 done" in proc.stdout
    assert f"[ab-{b}] completed: " in proc.stdout
    assert "verdict: " in proc.stdout and f"speed-up of the {b} run" in proc.stdout
    numbers = json.loads((tmp_path / "quality_ab.json").read_text())
    assert numbers["verdict"] in ("non-inferior", "inferior", "inconclusive")
    assert numbers["pairs"] >= 12 and (tmp_path / "quality_ab.html").stat().st_size > 1_000_000
