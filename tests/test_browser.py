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
Chromium is missing, unless ``EMAILWB_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from emailwb.testing.servers import SimServer
from emailwb.ui import explore
from emailwb.ui.notebook import parameterize

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PWNED = "window.__emailwb_pwned = 1"
HOSTILE = (
    "Message-ID: <hostile@example.invalid>\nDate: Fri, 7 Dec 2001 10:00:00 -0800\n"
    "From: winner@lottery.example\nTo: trader@enron.com\n"
    "Subject: You have won the lottery <b>claim now</b>\n\n"
    f'You have won! Act now: <script>{PWNED}</script> <img src=x onerror="{PWNED}">\n'
    "Free offer, limited time offer, click below.\n"
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _require_browser() -> None:
    missing = [
        what
        for what, ok in (
            ("/usr/bin/chromium (apt-get install chromium)", CHROMIUM.exists()),
            ("the playwright package", _importable("playwright")),
            ("the voila package", _importable("voila")),
        )
        if not ok
    ]
    if missing:
        msg = "browser test needs " + ", ".join(missing)
        if os.environ.get("EMAILWB_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def voila(notebook: Path, workdir: Path) -> Iterator[str]:
    """Serve ``notebook`` with Voila on 127.0.0.1; yield its URL; stop it and its kernels."""
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter-runtime"),
        "JUPYTER_DATA_DIR": str(workdir / "jupyter-data"),
        "PYTHONUNBUFFERED": "1",
    }
    log = (workdir / "voila.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voila",
            notebook.name,
            "--no-browser",
            f"--port={port}",
            "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0",
            "--show_tracebacks=True",
        ],
        cwd=notebook.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"voila exited: {(workdir / 'voila.log').read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=2).close()
                break
            if time.monotonic() > deadline:
                raise AssertionError("voila did not answer within 60 s")
            time.sleep(0.3)
        yield url
    finally:
        family = [proc.pid]
        with contextlib.suppress(psutil.Error):
            family += [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # voila shuts its kernels down
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        for pid in family[1:]:  # kernels live in their own sessions: make sure they are gone
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield browser
        finally:
            await browser.close()


async def _done(page: Any) -> int:
    value = await page.get_attribute(".emailwb-counters-inner", "data-done", timeout=10_000)
    return int(value or 0)


async def _points(page: Any) -> int:
    return int(await page.locator(".emailwb-live-charts path.point").count())


async def _wait(page: Any, cond: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"in the browser, {what} did not happen within {within:.0f} s")
        await asyncio.sleep(0.25)


async def test_launch_panel_in_chromium(tmp_path: Path) -> None:
    _require_browser()
    mailbox = tmp_path / "mail"
    shutil.copytree(REPO / "data" / "enron-sample" / "maildir", mailbox / "maildir")
    hostile = mailbox / "maildir" / "zz-hostile" / "inbox"
    hostile.mkdir(parents=True)
    (hostile / "1.eml").write_text(HOSTILE)
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
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(url, timeout=120_000)
                await page.wait_for_selector(
                    "button.emailwb-start:not([disabled])", timeout=120_000
                )
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
    if os.environ.get("EMAILWB_UPDATE_SCREENSHOT") == "1":  # refresh the README's picture
        docs = REPO / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(shot, docs / "launch-panel.png")


async def _done_above(page: Any, n: int) -> bool:
    return await _done(page) > n


async def _points_above(page: Any, n: int) -> bool:
    return await _points(page) > n


async def _state_is(page: Any, state: str) -> bool:
    return (await page.locator(".emailwb-counter-state").inner_text()).strip() == state
