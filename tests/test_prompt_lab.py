"""The prompt lab: versions in the store, Try/Save/Launch driven like a user, evidence shown.

Real stores filled by a real ingest of the bundled Enron sample; the fast tests talk to a
SimServer (an in-process OpenAI-compatible server) whose answers follow the system prompt
where a test needs that (a server that does not enforce the response format, as several
OpenAI-compatible servers do not); the ``llm`` test runs the embedded llama-server with
SmolLM2 end to end: edit, Try, Save, Launch, provenance, Try again without a request.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pytest

from emailwb.cli import main
from emailwb.engine.library import diff_prompts, list_prompts, load_prompt, save_prompt
from emailwb.errors import ConfigError
from emailwb.llm.prompts import BUILTIN, TEMPLATES
from emailwb.settings import RunConfig
from emailwb.testing.faults import default_answer
from emailwb.testing.servers import SimServer
from emailwb.ui import explore
from emailwb.ui.evidence import highlight_html
from emailwb.ui.prompt_lab import LISTED, PromptLab

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def filled(store: Any, sample_dir: Path) -> Any:
    explore.ingest_mailbox(store, sample_dir, progress=False, workers=0)
    return store


def _system(body: dict[str, Any]) -> str:
    return next((m["content"] for m in body["messages"] if m["role"] == "system"), "")


def follows_system(body: dict[str, Any]) -> str | dict[str, Any]:
    """Prose when the system prompt asks for prose, an upper-case summary when it says SHOUT."""
    system = _system(body)
    if "in prose" in system:
        return "Here is what the email says, in a few friendly sentences instead of JSON."
    data = json.loads(answer) if isinstance(answer := default_answer(body), str) else answer
    if "SHOUT" in system and isinstance(data.get("summary"), str):
        data["summary"] = data["summary"].upper() or "SHOUTED"
    return json.dumps(data)


def lab_for(store: Any, srv: SimServer, **kw: Any) -> PromptLab:
    cfg = RunConfig.default(
        backend="openai", urls=[srv.url], model=srv.model, timeout=10.0, schema_retries=0
    )
    return PromptLab(store, config=cfg, sample_size=4, **kw)


def test_builtin_version_sends_the_same_prompts_as_before() -> None:
    for name, tpl in TEMPLATES.items():
        assert BUILTIN.template(name).system == tpl.system
        assert BUILTIN.template(name).hash == tpl.hash
    changed = BUILTIN.with_changes("x", instructions="Read the email.")
    assert changed.hash != BUILTIN.hash
    assert changed.plan_template(["summary"]).system.startswith("Read the email.\n")


def test_versions_are_immutable_and_the_cli_diffs_them(
    store: Any, db_path: Path, capsys: Any
) -> None:
    draft = BUILTIN.with_changes(
        "sharp", fields={"summary": "summary: one sentence, the ask first"}
    )
    save_prompt(store, draft, based_on="builtin")
    save_prompt(store, draft)  # the same content again: nothing changes
    with pytest.raises(ConfigError, match="already exists with other content") as exc:
        save_prompt(store, BUILTIN.with_changes("sharp", instructions="Other."))
    assert "new name" in (exc.value.hint or "")
    assert [v["name"] for v in list_prompts(store)] == ["builtin", "sharp"]
    assert load_prompt(store, "sharp").hash == draft.hash
    with pytest.raises(ConfigError, match="no prompt version named 'nope'"):
        load_prompt(store, "nope")
    store.close()
    assert main(["prompts", "diff", "builtin", "sharp", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert "-summary = summary: one or two sentences" in out
    assert "+summary = summary: one sentence, the ask first" in out
    assert "email_type = " not in out.replace("\n email_type", "")  # unchanged lines: context only
    assert main(["prompts", "list", "--db", str(db_path)]) == 0
    assert "sharp" in capsys.readouterr().out
    assert diff_prompts(draft, draft) == ""


async def test_try_compares_side_by_side_and_asks_each_email_once(filled: Any) -> None:
    async with SimServer(kind="openai", slots=4, answer=follows_system) as srv:
        lab = lab_for(filled, srv, draft_name="shout")
        lab.instructions.value = lab.instructions.value + " SHOUT."
        cmp = await lab.try_draft()
        sent = len(srv.chat_requests)
        asked = [r for r in srv.chat_requests if r.prompt.startswith("Analyse this email")]
        assert len(asked) == 2 * 4  # baseline and draft, four emails each (plus one warm-up)
        assert cmp.b.valid == cmp.b.n == 4
        assert all("summary" in row["differs"] for row in cmp.rows)
        assert "≠" in lab.table.value and "shout (draft)" in lab.table.value
        assert "4 requests" not in lab.status.value and "8 requests sent" in lab.status.value
        again = await lab.try_draft()  # nothing changed: answered from the store
        assert len(srv.chat_requests) == sent
        assert again.b.cached == 4 and "0 requests sent" in lab.status.value
        lab.instructions.value += " Again."  # a new draft: only its replies are asked
        await lab.try_draft()
        assert len(srv.chat_requests) == sent + 4
        await lab.aclose()


async def test_a_draft_that_asks_for_prose_fails_validation_and_warns_before_launch(
    filled: Any,
) -> None:
    async with SimServer(kind="openai", slots=4, answer=follows_system) as srv:
        lab = lab_for(filled, srv, draft_name="prose-v1")
        lab.instructions.value = "Describe the email in prose for a colleague."
        cmp = await lab.try_draft()
        assert cmp.failing == 4 and cmp.a.valid == 4
        assert "failed validation on 4 of 4" in lab.status.value
        assert all(t.error and t.error.startswith("SchemaViolation") for t in lab.draft_trials)
        saved = lab.save()
        assert "with a warning" in lab.status.value
        assert "failed validation on 4 of 4" in (
            next(v for v in list_prompts(filled) if v["name"] == "prose-v1")["warning"] or ""
        )
        panel = lab.launch(show_charts=False)
        assert panel.prompt.value == saved.name
        assert panel.config().prompt == "prose-v1"
        assert "failed validation" in panel.prompt_warning.value
        await lab.aclose()


async def test_errors_of_a_callback_land_in_the_output_area(filled: Any) -> None:
    async with SimServer(kind="openai", slots=4) as srv:
        lab = lab_for(filled, srv)
        lab.fields.value = "not_a_field = something"
        lab.save_button.click()
        assert lab.errors.errors and "not 'name = description'" in lab.errors.text
        await lab.aclose()


async def test_sample_by_message_ids_and_evidence_highlight(filled: Any) -> None:
    mids = [r[0] for r in filled.query("SELECT message_id FROM emails ORDER BY id LIMIT 2")]
    async with SimServer(kind="openai", slots=4) as srv:
        lab = lab_for(filled, srv, message_ids=mids)
        assert lab.sample_by.value == LISTED
        cmp = await lab.try_draft()
        assert [r["message_id"] for r in cmp.rows] == mids
        assert "<mark" in lab.email_view.value or "unsupported" in lab.email_view.value
        await lab.aclose()


def test_highlight_marks_spans_escapes_and_lists_unsupported() -> None:
    text = "Call Jane Smith <script>alert(1)</script> about $5,000 on Friday."
    start = text.index("Jane Smith")
    evidence = {
        "people": [
            {"text": "Jane Smith", "start": start, "end": start + 10, "match": "exact"},
        ],
        "amounts": [{"text": "$5,000", "start": text.index("$"), "end": text.index("$") + 6}],
        "organizations": [{"text": "Acme Corp", "start": -1, "end": -1, "match": "unplaced"}],
    }
    html = highlight_html(text, evidence)
    assert "data-field='people'" in html and ">Jane Smith</mark>" in html
    assert ">$5,000</mark>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "unsupported" in html and "Acme Corp" in html


@pytest.mark.llm
@pytest.mark.slow
async def test_embedded_model_edit_try_save_launch_and_try_again_without_a_request(
    filled: Any, tmp_path: Path
) -> None:
    from emailwb.engine.batch import run_batch

    mids = [
        r[0]
        for r in filled.query(
            "SELECT e.message_id FROM content_groups g JOIN emails e "
            "ON e.id = g.canonical_email_id WHERE e.new_chars BETWEEN 200 AND 1500 "
            "ORDER BY g.id LIMIT 2"
        )
    ]
    cfg = RunConfig.default(options={"temperature": 0.0, "num_predict": 128}, slots=2)
    lab = PromptLab(filled, config=cfg, message_ids=mids, draft_name="short-summary")
    lab.fields.value = lab.fields.value.replace(
        "summary = summary: one or two sentences",
        "summary = summary: one short sentence saying what the sender wants",
    )
    try:
        cmp = await lab.try_draft()
        assert cmp.b.valid == cmp.b.n == 2  # schema-valid replies of the real model
        assert all(isinstance((t.data or {}).get("summary"), str) for t in lab.draft_trials)
        version = lab.save()
        assert "with a warning" not in lab.status.value
        panel = lab.launch(show_charts=False)
        run_cfg = panel.config()
        assert run_cfg.prompt == "short-summary"
    finally:
        await lab.aclose()
    summary = await run_batch(
        filled, run_cfg.model_copy(update={"options": cfg.options, "slots": 2}), limit=2
    )
    row = filled.query_one("SELECT config FROM runs WHERE name = ?", (summary.name,))
    provenance = json.loads(row["config"])
    assert provenance["prompt"] == "short-summary"
    assert provenance["prompt_hash"] == version.hash
    # trying the same draft again: every reply comes from the store, no server is started
    again = PromptLab(filled, config=cfg, message_ids=mids, draft_name="short-summary")
    again.baseline.value = "builtin"
    again.fields.value = lab.fields.value
    cmp2 = await again.try_draft()
    assert cmp2.b.cached == 2 and cmp2.a.cached == 2
    assert not again.backend_started  # nothing was asked, so no server was started
    await again.aclose()


async def test_message_ids_pasted_with_angle_brackets_are_found(filled: Any) -> None:
    mids = [r[0] for r in filled.query("SELECT message_id FROM emails ORDER BY id LIMIT 2")]
    async with SimServer(kind="openai", slots=4) as srv:
        lab = lab_for(filled, srv, message_ids=[f" <{m}> " for m in mids])  # as in a header
        cmp = await lab.try_draft()
        assert [r["message_id"] for r in cmp.rows] == mids
        await lab.aclose()


async def test_results_browser_and_audit_panel_highlight_a_runs_evidence(filled: Any) -> None:
    from emailwb.engine.batch import run_batch
    from emailwb.quality.audit import add_to_queue
    from emailwb.ui.audit_panel import AuditPanel
    from emailwb.ui.charts import ResultsBrowser

    summary = await run_batch(filled, RunConfig.default(plan="facts"), run_name="facts-ev")
    rows = filled.query(
        "SELECT r.id, r.group_id, r.data FROM results r JOIN runs n ON n.id = r.run_id "
        "WHERE n.name = ? AND r.data LIKE '%\"people\":[{%' ORDER BY r.id LIMIT 1",
        (summary.name,),
    )
    assert rows, "the facts plan found people in the bundled sample"
    result_id, group_id, data = rows[0]
    person = json.loads(data)["evidence"]["people"][0]["text"]
    browser = ResultsBrowser(filled)
    browser.refresh()
    browser.open(result_id)
    assert "data-field='people'" in browser.email.value
    assert f">{html.escape(person, quote=True)}</mark>" in browser.email.value

    add_to_queue(filled, summary.name, [group_id])
    panel = AuditPanel(filled, summary.name, auditor="tester")
    panel.show(panel.units.index(group_id))
    assert "emailwb-evidence" in panel.email.value
    assert "data-field='people'" in panel.email.value


def test_an_exact_span_that_does_not_hold_its_value_is_listed_not_marked() -> None:
    text = "Lunch with Bob on Friday."
    wrong = {"people": [{"text": "Alice", "start": 11, "end": 14, "match": "exact"}]}
    html = highlight_html(text, wrong)
    assert "<mark" not in html
    assert "unsupported" in html and "Alice" in html


async def test_the_audit_queue_is_a_sample_and_its_correct_marks_are_labels(filled: Any) -> None:
    from emailwb.engine.batch import run_batch
    from emailwb.engine.lab import audit_queue_emails
    from emailwb.quality.audit import add_to_queue, save_labels
    from emailwb.quality.gold import audit_truth
    from emailwb.ui.prompt_lab import AUDITED

    summary = await run_batch(filled, RunConfig.default(plan="facts"), run_name="audited")
    groups = [r[0] for r in filled.query("SELECT id FROM content_groups ORDER BY id LIMIT 3")]
    add_to_queue(filled, summary.name, groups)
    save_labels(filled, summary.name, groups[0], {"email_type": "correct", "people": "incorrect"})
    truth = audit_truth(filled)
    assert len(truth) == 1 and "email_type" in truth[0] and "people" not in truth[0]
    async with SimServer(kind="openai", slots=4) as srv:
        lab = lab_for(filled, srv)
        lab.sample_by.value = AUDITED
        cmp = await lab.try_draft()
        queued = audit_queue_emails(filled)  # the run's deep-check sample and our three
        assert len(queued) >= 3
        assert [r["email_id"] for r in cmp.rows] == queued[:4] and cmp.labeled == 1
        assert set(cmp.a.accuracy) == {"email_type"}  # only what the auditor vouched for
        assert set(cmp.deltas) == {"email_type"}
        await lab.aclose()
