"""What the real-browser tests share: Voila on loopback, headless Chromium via Playwright.

``voila(notebook, workdir)`` serves a notebook (127.0.0.1, a free port, its own Jupyter
dirs) and stops it and its kernels afterwards; ``chromium()`` launches Debian's
``/usr/bin/chromium`` through Playwright (which never downloads a browser here);
``hostile_mailbox`` is the bundled Enron sample plus one hostile email (a ``<script>`` and an
``<img onerror>`` in its body, HTML in its subject). ``require_browser()`` skips a test when
Chromium, Playwright or Voila is missing, and fails it instead with
``EMAILWB_REQUIRE_BROWSER=1`` (CI).
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
HOSTILE_ID = "hostile@example.invalid"
HOSTILE = (
    f"Message-ID: <{HOSTILE_ID}>\nDate: Fri, 7 Dec 2001 10:00:00 -0800\n"
    "From: winner@lottery.example\nTo: trader@enron.com\n"
    "Subject: You have won the lottery <b>claim now</b>\n\n"
    f'You have won! Act now: <script>{PWNED}</script> <img src=x onerror="{PWNED}">\n'
    "Free offer, limited time offer, click below.\n"
)


def require_browser() -> None:
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


def hostile_mailbox(folder: Path) -> Path:
    """``folder/mail``: the bundled sample's maildir plus the hostile email."""
    mailbox = folder / "mail"
    shutil.copytree(REPO / "data" / "enron-sample" / "maildir", mailbox / "maildir")
    hostile = mailbox / "maildir" / "zz-hostile" / "inbox"
    hostile.mkdir(parents=True)
    (hostile / "1.eml").write_text(HOSTILE)
    return mailbox


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


async def open_page(browser: Any, url: str, ready: str) -> tuple[Any, list[str]]:
    """A page of the served notebook once ``ready`` (a selector) shows, and the list its
    page errors (uncaught JavaScript exceptions) collect in."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(url, timeout=120_000)
    await page.wait_for_selector(ready, timeout=120_000)
    return page, errors


async def wait_until(page: Any, cond: Any, within: float, what: str) -> None:
    """Poll the async ``cond()`` every 0.25 s until it is true; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"in the browser, {what} did not happen within {within:.0f} s")
        await asyncio.sleep(0.25)


def update_screenshot(shot: Path, name: str) -> None:
    """With ``EMAILWB_UPDATE_SCREENSHOT=1``, copy ``shot`` to ``docs/NAME`` (the README's)."""
    if os.environ.get("EMAILWB_UPDATE_SCREENSHOT") == "1":
        docs = REPO / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(shot, docs / name)
