"""The audit queue, per-field labels, accuracy with Wilson intervals, the panel, notebook 04.

One store for the module, prepared with SimServer runs (``qualitykit.prepared_store``):
A and B grounded, C with every second email's values invented; every 5th content key
is sampled into the audit queue and judged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from qualitykit import prepared_store

from emailwb import cli
from emailwb.errors import ConfigError
from emailwb.quality import audit
from emailwb.quality.measures import deep_check_sample
from emailwb.quality.stats import wilson_interval
from emailwb.store.database import Store
from emailwb.testing.servers import SimServer
from emailwb.ui import audit_panel
from emailwb.ui.notebook import execute, outputs_text

REPO = Path(__file__).resolve().parents[1]
N = 30


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit") / "emailwb.sqlite"

    async def build() -> None:
        with Store(path) as store:
            await prepared_store(store, N)

    asyncio.run(build())
    return path


@pytest.fixture
def st(db: Path):
    with Store(db) as store:
        yield store


SAMPLED = sorted(g for g in range(1, N + 1) if deep_check_sample(f"k{g}", 5))


def test_the_sample_is_queued_and_loads_with_email_json_grounding_and_judge(st):
    q = audit.queue_df(st, "C")
    assert q["unit_id"].to_list() == SAMPLED and set(q["reason"].to_list()) == {"sample"}
    assert q["judge_overall"].to_list() == [4] * len(SAMPLED)
    bad = next(u for u in SAMPLED if u % 2 == 0)  # C invented this one's values
    item = audit.load_item(st, "C", bad)
    assert item.status == "done" and item.subject == f"unit-{bad}: storage deal {bad}"
    assert "> earlier" not in item.emails[0]["new_text"] and "> earlier" in item.emails[0]["body"]
    assert item.grounding is not None and item.grounding.fields["people"].ungrounded
    assert item.judge["verdict"]["people"] == "correct"
    html = audit_panel.json_html(item.data, item.grounding)
    assert "emailwb-ungrounded" in html and "Zaphod Beeblebrox" in html
    good = audit.load_item(st, "A", bad)
    assert "emailwb-ungrounded" not in audit_panel.json_html(good.data, good.grounding)
    assert "emailwb-grounded" in audit_panel.json_html(good.data, good.grounding)


def test_labels_give_accuracy_with_wilson_intervals(st):
    units = SAMPLED[:3]
    for i, u in enumerate(units):
        audit.save_labels(
            st,
            "A",
            u,
            {"people": "correct" if i < 2 else "incorrect", "amounts": "correct"},
            note=f"checked {u}",
            auditor="qa",
        )
    acc = {r["field"]: r for r in audit.accuracy(st, "A").to_dicts()}
    assert acc["people"]["n"] == 3 and acc["people"]["correct"] == 2
    low, high = wilson_interval(2, 3)
    assert acc["people"]["low"] == pytest.approx(low) and acc["people"]["high"] == pytest.approx(
        high
    )
    assert acc["people"]["judge_n"] == 3 and acc["people"]["judge_agrees"] == pytest.approx(2 / 3)
    assert acc["amounts"]["accuracy"] == 1.0 and acc["dates"]["n"] == 0
    item = audit.load_item(st, "A", units[2])
    assert item.labels == {"people": "incorrect", "amounts": "correct"}
    assert item.note == f"checked {units[2]}"
    audit.save_labels(st, "A", units[2], {"people": None})  # clearing a label
    assert audit.load_item(st, "A", units[2]).labels == {"amounts": "correct"}
    with pytest.raises(ConfigError, match="unknown audit fields") as exc:
        audit.save_labels(st, "A", units[0], {"mood": "correct"})
    assert "people" in (exc.value.hint or "")
    with pytest.raises(ConfigError, match="must be 'correct' or 'incorrect'"):
        audit.save_labels(st, "A", units[0], {"people": "meh"})


def test_the_panel_walks_the_queue_and_reports_errors_in_its_output(st):
    panel = audit_panel.AuditPanel(st, "B", auditor="tester")
    assert panel.units == SAMPLED and panel.index == 0
    assert "item 1 of" in panel.header.value
    panel.set_label("people", "correct")
    panel.set_label("amounts", "incorrect")
    panel.note.value = "amount <b>wrong</b>"
    assert panel.save() == 2 and panel.index == 1
    acc = panel.refresh_accuracy()
    assert acc.filter(acc["field"] == "amounts")["correct"].item() == 0
    assert "Accuracy so far" in panel.accuracy.value
    panel.prev()
    assert panel.toggles["people"].value == "correct" and panel.note.value == "amount <b>wrong</b>"
    panel.save_button.click()  # the button does the same as save()
    assert panel.index == 1
    with pytest.raises(ConfigError):
        panel.set_label("nope", "correct")
    # a failing callback lands in the Output widget, not in the void
    panel.units = [10_000_000]
    st_closed = Store(st.path)
    panel.store = st_closed
    st_closed.close()
    panel.next_button.click()
    shown = "".join(o.get("text", "") for o in panel.errors.outputs)
    assert "audit:" in shown and "Error" in shown


def test_email_content_is_escaped(st):
    email = {
        "sender": "x@y.com",
        "sender_name": "<b>Boss</b>",
        "subject": "<script>alert(1)</script>",
        "to_addrs": '["a@b.com"]',
        "new_text": "<img src=x onerror=alert(2)>",
        "body": "</pre>",
    }
    html = audit_panel.email_html([email])
    assert "<script>" not in html and "<img" not in html and "<b>Boss" not in html
    assert "&lt;script&gt;" in html and "&lt;/pre&gt;" in html
    data = {"summary": "<script>x</script>", "people": [{"name": "<i>Eve</i>"}]}
    assert "<script>" not in audit_panel.json_html(
        data
    ) and "&lt;i&gt;Eve" in audit_panel.json_html(data)


def test_audit_cli(db: Path, capsys):
    assert cli.main(["audit", "--run", "A", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"audit queue: {len(SAMPLED)} units" in out


@pytest.mark.timeout(180)
def test_notebook_04_runs_headless(db: Path, tmp_path: Path):
    nb = execute(
        REPO / "notebooks" / "04_audit.ipynb",
        {"db": str(db), "run": "C", "auditor": "ci", "autolabel": True},
        out=tmp_path / "04.ipynb",
        cwd=REPO / "notebooks",
        timeout=120,
    )
    text = outputs_text(nb)
    assert f"{len(SAMPLED)} emails in the audit queue of run 'C'" in text
    assert "saved 7 labels" in text  # every field the judge was sure about
    with Store(db) as store:
        n = store.scalar(
            "SELECT COUNT(*) FROM audits a JOIN runs r ON r.id = a.run_id "
            "WHERE r.name = 'C' AND a.auditor = 'ci' AND a.label IS NOT NULL"
        )
    assert n == 7


async def test_judge_missing_judges_the_sample_later(store):
    from qualitykit import answers, make_mail, sim_run

    from emailwb.llm.router import make_backend
    from emailwb.quality.judge import judge_accuracy, judge_missing
    from emailwb.quality.watch import QualityConfig

    make_mail(store, 12)
    async with SimServer(answer=answers()) as srv:
        await sim_run(store, srv, "late", quality=QualityConfig(sample_every=2, judge=False))
        queued = store.scalar("SELECT COUNT(*) FROM audit_queue")
        assert queued >= 2 and store.scalar("SELECT COUNT(*) FROM judgements") == 0
        backend = make_backend("ollama", srv.url, srv.model)
        try:
            assert await judge_missing(store, "late", backend) == queued
            assert await judge_missing(store, "late", backend) == 0  # nothing left to judge
        finally:
            await backend.aclose()
    acc = {r["field"]: r for r in judge_accuracy(store, "late").to_dicts()}
    assert acc["people"]["n"] == queued and acc["people"]["accuracy"] == 1.0
    assert acc["dates"]["n"] == 0 and acc["dates"]["unsure"] == queued
