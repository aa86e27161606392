"""The launch notebook in a real browser: Voila on loopback, headless Chromium via Playwright.

The test ingests the bundled Enron sample plus one hostile email (a ``<script>`` and an
``<img onerror>`` in its body, HTML in its subject) into a fresh store, writes the launch
notebook with its parameters pointing at that store and at a SimServer (an in-process
Ollama-compatible server: fast and deterministic, so the test measures the panel, not a
model), serves it with Voila (127.0.0.1, a free port, its own Jupyter dirs), clicks Start in
Chromium and checks that the live chart gains points, the counters move, the run completes,
and the hostile email opens as text. The screenshot goes to the test's folder, and to
``docs/launch-panel.png`` (the README's picture) with ``EMAILWB_UPDATE_SCREENSHOT=1``.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``.ci/run``) and the
``playwright`` and ``voila`` packages; Playwright never downloads a browser here. Skipped when
Chromium is missing, unless ``EMAILWB_REQUIRE_BROWSER=1``. The helpers (Voila, Chromium, the
hostile email) are in ``browserkit.py``, shared with ``test_browser_lab.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from browserkit import (
    PWNED,
    REPO,
    chromium,
    hostile_mailbox,
    open_page,
    require_browser,
    update_screenshot,
    voila,
)
from browserkit import wait_until as _wait

from emailwb.testing.servers import SimServer
from emailwb.ui import explore
from emailwb.ui.notebook import parameterize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def _done(page: Any) -> int:
    value = await page.get_attribute(".emailwb-counters-inner", "data-done", timeout=10_000)
    return int(value or 0)


async def _points(page: Any) -> int:
    return int(await page.locator(".emailwb-live-charts path.point").count())


async def test_launch_panel_in_chromium(tmp_path: Path) -> None:
    require_browser()
    mailbox = hostile_mailbox(tmp_path)
    db = tmp_path / "emailwb.sqlite"
    with explore.open_store(db) as store:
        explore.ingest_mailbox(store, mailbox, progress=False, workers=0)
        explore.detect_types(store)
        assert (
            store.scalar(
                "SELECT g.email_type FROM emails e JOIN content_groups g ON "
                "g.id = e.group_id WHERE e.message_id LIKE '%hostile%'"
            )
            == "spam"
        )

    async with SimServer(kind="ollama", slots=4, service_time=0.25) as srv:
        notebook = tmp_path / "launch.ipynb"
        parameterize(
            REPO / "notebooks" / "02_launch.ipynb",
            {
                "db": str(db),
                "mailbox": str(mailbox),
                "backend": "ollama",
                "url": srv.url,
                "model": srv.model,
                "limit": 0,
                "run_name": "browser",
                "autorun": False,
            },
            notebook,
        )
        with voila(notebook, tmp_path) as url:
            async with chromium() as browser:
                page, errors = await open_page(browser, url, "button.emailwb-start:not([disabled])")
                await page.wait_for_selector(".emailwb-live-charts .main-svg", timeout=60_000)
                assert await _done(page) == 0 and await _points(page) == 0

                await page.click("button.emailwb-start")
                await _wait(page, lambda: _done_above(page, 0), 60, "a first unit done")
                first_done, first_points = await _done(page), await _points(page)
                await _wait(
                    page, lambda: _points_above(page, first_points), 20, "the chart gaining points"
                )
                await _wait(page, lambda: _done_above(page, first_done), 20, "the counters moving")
                await _wait(page, lambda: _state_is(page, "completed"), 90, "the run completing")
                assert await _done(page) == 152
                assert await _points(page) >= 3 * 10  # >= 3 points in each of 10 series

                # the hostile email: its subject in the results list, its body as text
                select = page.locator(".emailwb-results select")
                option = select.locator("option", has_text="You have won the lottery")
                await option.wait_for(timeout=20_000)
                label = (await option.inner_text()).replace("\xa0", " ")
                assert "lottery <b>claim now</b>" in label  # a <select> shows text only
                await select.select_option(value=await option.get_attribute("value"))
                body = page.locator(".emailwb-email-body")
                await body.wait_for(timeout=20_000)
                text = await body.inner_text()
                assert f"<script>{PWNED}</script>" in text
                assert '<img src=x onerror="' in text
                assert await page.locator(".emailwb-email script, .emailwb-email img").count() == 0
                assert await page.evaluate("window.__emailwb_pwned") is None
                assert "winner@lottery.example" in await page.locator(".emailwb-email").inner_text()
                assert '"email_type"' in await page.locator(".emailwb-result-json").inner_text()
                assert not await page.locator(".emailwb-errors").inner_text()

                shot = tmp_path / "launch-panel.png"
                panel = page.locator(".emailwb-launch")
                box = await panel.bounding_box()
                assert box is not None
                await page.set_viewport_size(
                    {"width": 1400, "height": min(int(box["height"]) + 300, 4000)}
                )
                await asyncio.sleep(1.0)  # let plotly redraw at the new size
                await panel.screenshot(path=str(shot))
                assert not errors, errors
    assert shot.stat().st_size > 20_000
    update_screenshot(shot, "launch-panel.png")  # with EMAILWB_UPDATE_SCREENSHOT=1


async def _done_above(page: Any, n: int) -> bool:
    return await _done(page) > n


async def _points_above(page: Any, n: int) -> bool:
    return await _points(page) > n


async def _state_is(page: Any, state: str) -> bool:
    return (await page.locator(".emailwb-counter-state").inner_text()).strip() == state
