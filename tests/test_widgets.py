"""The notebook panels driven like a user would: values set, buttons clicked.

A real processor run against a real in-process HTTP server (SimServer, Ollama API) on a
real store filled by a real ingest of a small maildir written here; one of its emails
carries a ``<script>`` tag, which must come out escaped wherever it is shown.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from qualitykit import answers, make_mail

from emailwb.quality.watch import QualityConfig
from emailwb.store import runs
from emailwb.testing.servers import SimServer
from emailwb.ui import explore
from emailwb.ui.notebook import ErrorLog, parameterize
from emailwb.ui.panels import LaunchPanel, PrioritiesPanel

pytestmark = pytest.mark.timeout(120)

SCRIPT = "<script>window.__emailwb_pwned = 1</script>"
SUBJECTS = [
    ("Deal 123456 confirm 5,000 MMBtu at $2.50", "Please confirm the gas deal volumes."),
    ("Weekly newsletter", "To unsubscribe from this newsletter click here."),
    ("Meeting agenda for Tuesday", "The conference call agenda is attached, dial-in below."),
    ("Lunch this weekend?", "Want to play golf with the kids this weekend?"),
    ("FERC docket filing", "The regulatory filing for the FERC docket is due."),
    ("Contract amendment redline", "Attached is the redline of the agreement amendment."),
    ("Status update", "FYI the project is on track, status below."),
    ("Can you review this", "Could you please review and approve the numbers?"),
]


def write_maildir(root: Path, n: int = 24) -> Path:
    """``n`` small distinct messages (types cycle) plus one with a script tag in its body."""
    folder = root / "maildir" / "tester" / "inbox"
    folder.mkdir(parents=True)
    for i in range(n):
        subject, text = SUBJECTS[i % len(SUBJECTS)]
        (folder / f"{i + 1}.").write_text(
            f"Message-ID: <m{i}@test>\nDate: Mon, {i % 27 + 1} Jan 2001 10:00:00 -0800\n"
            f"From: trader{i % 5}@enron.com\nTo: desk@enron.com\nSubject: {subject} #{i}\n\n"
            f"{text}\nItem number {i}.\n"
        )
    (folder / f"{n + 1}.").write_text(
        "Message-ID: <xss@test>\nDate: Tue, 2 Jan 2001 10:00:00 -0800\n"
        "From: mallory@evil.example\nTo: desk@enron.com\nSubject: XSS probe <b>bold</b>\n\n"
        f"Hello {SCRIPT} please review the deal <img src=x onerror=alert(1)>\n"
    )
    return root / "maildir"


@pytest.fixture
def mailbox(tmp_path: Path) -> Path:
    return write_maildir(tmp_path)


@pytest.fixture
def filled(store: Any, mailbox: Path) -> Any:
    explore.ingest_mailbox(store, mailbox, progress=False, workers=0)
    return store


async def until(cond: Any, within: float = 20.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


def panel_for(store: Any, srv: SimServer, **kw: Any) -> LaunchPanel:
    return LaunchPanel(
        store,
        backend="ollama",
        urls=srv.url,
        model=srv.model,
        refresh_s=0.1,
        results_every_s=0.2,
        config_overrides={"timeout": 10.0, "backoff_base": 0.01, "backoff_max": 0.1},
        **kw,
    )


async def test_buttons_drive_a_real_run(filled: Any) -> None:
    async with SimServer(kind="ollama", slots=2, service_time=0.25) as srv:
        panel = panel_for(filled, srv, run_name="ui", concurrency=2)
        assert panel.pause_button.disabled and panel.resume_button.disabled
        panel.start_button.click()
        assert panel.start_button.disabled
        await until(lambda: panel.snapshot is not None and panel.snapshot.done >= 2)
        assert panel.state == "running" and not panel.pause_button.disabled

        panel.pause_button.click()
        assert panel.state == "paused" and panel.processor.state == "paused"
        await until(lambda: panel.processor.gate.in_flight == 0)
        asked = len(srv.chat_requests)
        await asyncio.sleep(0.6)
        assert len(srv.chat_requests) == asked  # paused: nothing new is sent
        assert not panel.resume_button.disabled and panel.pause_button.disabled

        panel.resume_button.click()
        assert panel.processor.state == "running"
        await until(lambda: len(srv.chat_requests) > asked)
        points = panel.charts.points
        await asyncio.sleep(0.5)
        assert panel.charts.points > points  # the charts keep gaining points while it runs

        panel.stop_button.click()
        summary = await asyncio.wait_for(panel.wait(), 20)
        assert summary.status == "stopped" and 0 < summary.done < summary.total
        assert panel.state == "stopped" and not panel.start_button.disabled
        assert not panel.errors.errors, panel.errors.text

    done = filled.query(
        "SELECT COUNT(*) FROM results r JOIN runs u ON u.id = r.run_id "
        "WHERE u.name = 'ui' AND r.status = 'done'"
    )[0][0]
    assert done == summary.done
    assert panel.charts.points >= 3
    assert max(v or 0 for v in panel.charts.series("emails_per_min")) > 0
    shown = panel.charts.figure.data[panel.charts._trace["emails_per_min"]]
    assert len(shown.x) == panel.charts.points  # the FigureWidget holds what was drawn
    assert f"data-done='{summary.done}'" in panel.counters.value
    assert panel.progress.value == summary.done
    assert panel.results.frame.height == min(summary.done, 20)


async def test_start_again_resumes_and_finishes(filled: Any) -> None:
    async with SimServer(kind="ollama", slots=4, service_time=0.0) as srv:
        panel = panel_for(filled, srv, run_name="again", limit=5)
        first = await asyncio.wait_for(panel.run(), 20)
        assert first.session_done == 5
        panel.limit.value = 0
        second = await asyncio.wait_for(panel.run(), 20)
        assert second.status == "completed" and second.pending == 0
        assert second.done == second.total == first.total
        assert len(srv.chat_requests) == first.total  # nothing was asked twice


async def test_script_in_an_email_is_shown_as_text(filled: Any) -> None:
    async with SimServer(kind="ollama", slots=4) as srv:
        panel = panel_for(filled, srv, run_name="xss")
        await asyncio.wait_for(panel.run(), 20)
    frame = panel.results.frame
    row = next(r for r in frame.iter_rows(named=True) if "XSS probe" in (r["subject"] or ""))
    labels = dict(
        zip(panel.results.table._options_values, panel.results.table._options_labels, strict=True)
    )
    assert "XSS probe <b>bold</b>" in labels[row["result_id"]]  # a <select> shows text only
    panel.results.table.value = row["result_id"]  # as a click on the row does
    assert panel.results.shown == row["result_id"]
    shown = panel.results.email.value + panel.results.json.value
    assert "&lt;script&gt;window.__emailwb_pwned = 1&lt;/script&gt;" in shown
    assert "<script" not in shown and "<img" not in shown and "<b>bold" not in shown
    assert "<script" not in panel.counters.value


async def test_a_failing_run_and_a_failing_callback_show_in_the_output(filled: Any) -> None:
    panel = LaunchPanel(
        filled, backend="ollama", urls="bogus+http://127.0.0.1:9", run_name="bad", refresh_s=0.1
    )
    panel.start_button.click()
    await asyncio.wait_for(asyncio.shield(panel.task), 10)
    assert panel.state == "failed"
    assert "unknown backend kind 'bogus'" in panel.errors.text
    assert panel.errors.errors and not panel.start_button.disabled
    with pytest.raises(Exception, match="bogus"):
        await panel.wait()

    log = ErrorLog()

    def broken(_button: Any) -> None:
        raise ValueError("this callback is broken")

    import ipywidgets as w

    button = w.Button()
    button.on_click(log.capture(broken))
    button.click()  # no exception escapes into the kernel...
    assert "ValueError: this callback is broken" in log.text  # ...it is in the Output
    assert "Traceback" in log.text

    async def broken_async(_button: Any) -> None:
        await asyncio.sleep(0)
        raise KeyError("async callback")

    button.on_click(log.capture(broken_async), remove=False)
    button.click()
    await until(lambda: "async callback" in log.text, 5)


async def test_changing_a_weight_reorders_the_pending_queue(filled: Any) -> None:
    pp = PrioritiesPanel(filled, profile="ui-profile")
    first = pp.scored.row(0, named=True)
    assert first["email_type"] != "newsletter"
    types = dict(zip(pp.scored["unit_id"], pp.scored["email_type"], strict=True))
    newsletters = [u for u, t in types.items() if t == "newsletter"]
    assert newsletters

    pp.sliders["newsletter"].value = 5.0  # newsletters (base 0.05) go to 0.25
    pp.sliders["deal"].value = 0.0
    pp.sliders["legal"].value = 0.0
    pp.sliders["regulatory"].value = 0.0
    pp.sliders["*"].value = 0.1
    for t in ("request", "meeting", "report", "status_update", "announcement", "personal"):
        pp.sliders[t].value = 0.0
    order = pp.order()
    assert set(order[: len(newsletters)]) == set(newsletters)
    assert [types[u] for u in order[-3:]] != ["newsletter"] * 3
    moved = pp.moves.filter(pp.moves["unit_id"].is_in(newsletters))
    assert (moved["moved"] > 0).all()
    assert pp.charts.moves.x  # the moves chart shows them
    assert len(pp.charts.distribution.y) == pp.scored.height
    assert "<script" not in pp.table.value

    weights = pp.save()
    stored, _ = runs.load_profile(filled, "ui-profile")
    assert stored == weights and stored["newsletter"] == 5.0


async def test_saving_a_profile_mid_run_reorders_the_processor(filled: Any) -> None:
    async with SimServer(kind="ollama", slots=1, service_time=0.2) as srv:
        panel = panel_for(filled, srv, run_name="mid", concurrency=1, profile="mid")
        panel.start()
        await until(lambda: panel.snapshot is not None and panel.snapshot.done >= 1)
        pp = PrioritiesPanel(filled, profile="mid", launch=panel)
        assert 0 < pp.queue.height < 25  # the queue is the run's pending units
        news = set(pp.queue.filter(pp.queue["email_type"] == "newsletter")["unit_id"])
        assert news
        pp.set_weights(
            {"newsletter": 5.0, **{t: 0.0 for t in explore.TYPES if t != "newsletter"}, "*": 0.0}
        )
        done_at_save = panel.processor.metrics.done
        pp.save()
        assert panel.processor.queue.weights["newsletter"] == 5.0
        queued = panel.processor.queue.peek_order(100)
        waiting = [u for u in queued if u in news]
        assert waiting and queued[: len(waiting)] == waiting  # newsletters are next
        await until(lambda: panel.processor.metrics.done >= done_at_save + 1 + len(waiting))
        panel.stop()
        await asyncio.wait_for(panel.wait(), 20)
    rows = [
        r[0]
        for r in filled.query(
            "SELECT r.group_id FROM results r JOIN runs u ON u.id = r.run_id "
            "WHERE u.name = 'mid' ORDER BY r.id"
        )
    ]
    after = rows[done_at_save:]
    # at most one unit was on the wire when the profile was saved; then the newsletters
    assert set(waiting) <= set(after[: len(waiting) + 1])


async def test_form_maps_to_the_run_config_and_the_slider_sets_the_limit(filled: Any) -> None:
    async with SimServer(kind="ollama", slots=4, service_time=0.2) as srv:
        panel = panel_for(filled, srv, run_name="form")
        panel.urls.value = f"{srv.url}\n{srv.url}, "
        panel.concurrency_mode.value = "fixed"
        assert not panel.concurrency.disabled
        panel.concurrency.value = 1
        panel.max_tokens.value = 200
        panel.chain.value = False
        panel.profile.value = "p1"
        cfg = panel.config()
        assert cfg.urls == [srv.url, srv.url] and cfg.concurrency == 1
        assert cfg.options["num_predict"] == 200 and cfg.priority_profile == "p1"
        panel.urls.value = srv.url
        panel.start()
        await until(lambda: panel.processor is not None and panel.snapshot is not None)
        assert panel.processor.gate.in_flight <= 1
        panel.concurrency.value = 3  # mid-run: the fixed limit follows the slider
        assert panel.processor.controller.limit == 3
        await until(lambda: panel.processor.gate.in_flight == 3, 5)
        panel.stop()
        await asyncio.wait_for(panel.wait(), 20)
        assert not panel.errors.errors, panel.errors.text


def test_run_sync_works_inside_a_running_loop() -> None:
    """A kernel's loop is already running; run_sync nests (nest-asyncio), in a subprocess so
    the patched loop stays out of this test session."""
    import subprocess
    import sys

    code = (
        "import asyncio\nfrom emailwb.ui.notebook import run_sync\n"
        "async def inner():\n    await asyncio.sleep(0.01)\n    return 42\n"
        "async def cell():\n    return run_sync(inner())\n"
        "print(asyncio.run(cell()), run_sync(inner()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42", "42"]


def test_parameterize_injects_after_the_parameters_cell(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# t"),
        nbformat.v4.new_code_cell("db = 'x'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(db)"),
    ]
    src = tmp_path / "t.ipynb"
    nbformat.write(nb, str(src))
    out = parameterize(src, {"db": "/tmp/a b.sqlite", "limit": 3}, tmp_path / "o.ipynb")
    assert out.cells[2].metadata["tags"] == ["injected-parameters"]
    injected: dict[str, Any] = {}
    exec(out.cells[2].source, injected)  # the values come back as they were given
    assert injected["db"] == "/tmp/a b.sqlite" and injected["limit"] == 3
    again = parameterize(tmp_path / "o.ipynb", {"db": "y"})
    assert sum("injected-parameters" in c.metadata.get("tags", []) for c in again.cells) == 1


async def test_a_drift_alarm_shows_in_the_panel_and_pauses_the_run(store: Any) -> None:
    make_mail(store, 60)
    quality = QualityConfig(
        sample_every=1000,
        judge=False,
        baseline_size=10,
        window=10,
        threshold=0.3,
        drift_metrics=["grounding"],
        on_drift="pause",
    )
    async with SimServer(kind="ollama", answer=answers(bad_after=15), service_time=0.01) as srv:
        panel = panel_for(
            store, srv, run_name="drifting", concurrency=2, quality=quality, plan="llm"
        )  # drift in what the model writes
        panel.start_button.click()
        await until(lambda: "emailwb-quality" in panel.alerts.value)
        assert "data-alerts='0'" in panel.alerts.value  # scored, no alert yet
        await until(lambda: panel.state == "paused")
        html = panel.alerts.value
        assert "Quality drift alert" in html and "quality drift on grounding" in html
        assert "paused by the drift alarm" in html and not panel.resume_button.disabled
        panel.stop_button.click()
        summary = await asyncio.wait_for(panel.wait(), 20)
        assert summary.done < 60 and not panel.errors.errors, panel.errors.text
    assert "Quality drift alert" in panel.alerts.value  # still shown after the run ended


async def test_a_run_that_mostly_invents_shows_the_grounding_warning_in_the_panel(
    store: Any,
) -> None:
    make_mail(store, 30)
    quality = QualityConfig(
        sample_every=1000,
        judge=False,
        drift_metrics=["grounding"],
        on_drift="alert",
        baseline_size=10,
        window=10,
    )
    async with SimServer(kind="ollama", answer=answers(bad_after=0), service_time=0.0) as srv:
        panel = panel_for(
            store, srv, run_name="inventing", concurrency=2, quality=quality, plan="llm"
        )
        assert panel.plan.value == "llm" and panel.config().plan == "llm"
        panel.start_button.click()
        summary = await asyncio.wait_for(panel.wait(), 30)
    assert summary.done == 30 and summary.grounding is not None and summary.grounding < 0.5
    html = panel.alerts.value
    assert "emailwb-grounding-warning" in html and "--plan default" in html
    assert "quality below the floor on grounding" in html
