"""The prompt lab notebook in a real browser: Voila on loopback, headless Chromium via Playwright.

The bundled Enron sample plus the hostile email (``browserkit.HOSTILE``: a ``<script>`` and an
``<img onerror>`` in its body) go into a fresh store; 06_prompt_lab is served by Voila with its
parameters pointing at that store and at a SimServer (Ollama-compatible, in process) whose
answers follow the system prompt: a draft whose instructions say SHOUT gets its summary in
capitals, so the side by side table has a field that differs. In Chromium the test types the
edit into the draft's instructions, pastes three Message-IDs as the sample (one of them
hand-labeled, one as a header writes it, in ``<>``), clicks Try and waits for the stats and
the table of both versions; it opens the hostile email (shown as text: no script or image
element, nothing ran) and a meeting email (its evidence highlighted), with no page error and
an empty error area. The screenshot of the panel goes to the test's folder, and to
``docs/prompt-lab.png`` (the README's picture) with ``EMAILWB_UPDATE_SCREENSHOT=1``. Skipped
like ``test_browser.py`` (whose helpers, in ``browserkit.py``, it shares).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from browserkit import (
    HOSTILE_ID,
    PWNED,
    REPO,
    chromium,
    hostile_mailbox,
    open_page,
    require_browser,
    update_screenshot,
    voila,
    wait_until,
)

from emailwb.quality.gold import load_labels
from emailwb.testing.faults import default_answer
from emailwb.testing.servers import SimServer
from emailwb.ui import explore
from emailwb.ui.notebook import parameterize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LABELS = REPO / "gold" / "enron-labels.jsonl"
EDIT = " SHOUT the summary."
DRAFT = "shout-v1"


def shouts_when_told(body: dict[str, Any]) -> str:
    """The default simulated analysis; its summary in capitals when the system prompt says SHOUT."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    answer = default_answer(body)
    data = json.loads(answer) if isinstance(answer, str) else answer
    if "SHOUT" in system and isinstance(data.get("summary"), str):
        data["summary"] = data["summary"].upper() or "SHOUTED"
    return json.dumps(data)


def _by_label(page: Any, kind: str, label: str) -> Any:
    """The ``<select>`` or ``<textarea>`` of the ipywidget whose description is ``label``."""
    box = page.locator(
        f".widget-{kind}", has=page.locator("label", has_text=re.compile(f"^{re.escape(label)}$"))
    )
    return box.locator("select" if kind == "dropdown" else "textarea")


async def _rows(page: Any) -> int:
    return int(await page.locator(".emailwb-lab-table table tr").count())


async def test_prompt_lab_in_chromium(tmp_path: Path) -> None:
    require_browser()
    mailbox = hostile_mailbox(tmp_path)
    db = tmp_path / "emailwb.sqlite"
    with explore.open_store(db) as store:
        explore.ingest_mailbox(store, mailbox, progress=False, workers=0)
        explore.detect_types(store)
        ordinary = (
            "SELECT e.message_id FROM content_groups g JOIN emails e ON e.id = "
            "g.canonical_email_id WHERE g.email_type = ? AND e.new_chars BETWEEN 200 AND 1500 "
            "ORDER BY g.id LIMIT 1"
        )
        meeting = store.scalar(ordinary, ("meeting",))
        wanted = [lab["message_id"] for lab in load_labels(LABELS)]
        labeled = store.scalar(
            "SELECT e.message_id FROM content_groups g JOIN emails e ON e.id = "
            f"g.canonical_email_id WHERE e.message_id IN ({','.join('?' * len(wanted))}) "
            "AND e.message_id != ? AND e.new_chars BETWEEN 200 AND 1500 ORDER BY g.id LIMIT 1",
            (*wanted, meeting),
        )
    assert meeting and labeled
    sample = [meeting, labeled, f"<{HOSTILE_ID}>"]  # the last as pasted from its header

    async with SimServer(kind="ollama", slots=4, answer=shouts_when_told) as srv:
        notebook = tmp_path / "lab.ipynb"
        parameterize(
            REPO / "notebooks" / "06_prompt_lab.ipynb",
            {
                "db": str(db),
                "mailbox": str(mailbox),
                "backend": "ollama",
                "url": srv.url,
                "model": srv.model,
                "limit": 0,
                "labels": str(LABELS),
                "sample_size": 6,
                "draft_name": DRAFT,
                "autotry": False,
            },
            notebook,
        )
        with voila(notebook, tmp_path) as url:
            async with chromium() as browser:
                page, errors = await open_page(
                    browser, url, "button.emailwb-lab-try:not([disabled])"
                )
                assert await _rows(page) == 0  # nothing tried yet

                # edit the draft as a person does: click at the end of the text and type
                instructions = page.locator(".emailwb-draft-instructions textarea")
                await instructions.click()
                await page.keyboard.press("Control+End")
                await page.keyboard.type(EDIT)
                await _by_label(page, "dropdown", "sample").select_option(label="these Message-IDs")
                await _by_label(page, "textarea", "Message-IDs").fill("\n".join(sample))
                await page.click("button.emailwb-lab-try")

                await wait_until(page, lambda: _has_rows(page), 30, "the side by side table")
                await wait_until(
                    page,
                    lambda: _contains(page, ".emailwb-lab-status", "requests sent"),
                    30,
                    "the Try finishing",
                )
                status = await page.locator(".emailwb-lab-status").inner_text()
                assert "tried 3 emails: 6 requests sent" in status, status
                stats = await page.locator(".emailwb-lab-stats").inner_text()
                assert "builtin\t3/3" in stats and f"{DRAFT}\t3/3" in stats, stats
                # one sampled email has hand labels: accuracy per field and the paired deltas
                assert "accuracy on 1 labeled emails" in stats and "draft - baseline" in stats
                header = await page.locator(".emailwb-lab-table tr").first.inner_text()
                assert "builtin" in header and f"{DRAFT} (draft)" in header, header
                table = await page.locator(".emailwb-lab-table").inner_text()
                for mid in (meeting, labeled, HOSTILE_ID):
                    assert mid in table
                assert table.count("summary ≠") == 3  # the draft shouted every summary
                assert await _rows(page) > 3 * 5  # a row per field of each email

                # the hostile email: its body as text, nothing in it ran
                pick = _by_label(page, "dropdown", "email")
                await pick.select_option(label=HOSTILE_ID)
                view = page.locator(".emailwb-lab-email")
                await wait_until(
                    page,
                    lambda: _contains(page, ".emailwb-lab-email", "won"),
                    20,
                    "the hostile email shown",
                )
                text = await view.inner_text()
                assert f"<script>{PWNED}</script>" in text
                assert '<img src=x onerror="' in text
                assert (
                    await page.locator(".emailwb-lab-email script, .emailwb-lab-email img").count()
                    == 0
                )
                assert await page.evaluate("window.__emailwb_pwned") is None

                # a meeting email: the draft's evidence highlighted in its text
                await pick.select_option(label=meeting)
                marks = page.locator(".emailwb-lab-email mark.emailwb-ev")
                await marks.first.wait_for(timeout=20_000)
                assert await marks.count() >= 1
                fields = {await m.get_attribute("data-field") for m in await marks.all()}
                assert fields <= {"people", "organizations", "amounts", "dates", "deal_refs"}
                assert not await page.locator(".emailwb-errors").inner_text()

                shot = tmp_path / "prompt-lab.png"
                panel = page.locator(".emailwb-lab")
                box = await panel.bounding_box()
                assert box is not None
                await page.set_viewport_size(
                    {"width": 1400, "height": min(int(box["height"]) + 300, 4000)}
                )
                await asyncio.sleep(0.5)
                await panel.screenshot(path=str(shot))
                assert not errors, errors
    assert shot.stat().st_size > 20_000
    update_screenshot(shot, "prompt-lab.png")  # with EMAILWB_UPDATE_SCREENSHOT=1


async def _has_rows(page: Any) -> bool:
    return await _rows(page) > 0


async def _contains(page: Any, selector: str, text: str) -> bool:
    return text in await page.locator(selector).inner_text()
