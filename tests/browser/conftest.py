"""Fixtures for the real-browser tests: a JupyterLab server and headless Debian Chromium.

The server runs on 127.0.0.1 with a free port, a random token and a fresh root folder, and is
ended (by its own process id) at the end of the session. Chromium is Debian's ``chromium``
package at ``/usr/bin/chromium`` (override with ``CLEMLAB_CHROMIUM``), driven by Python
Playwright; no browser is ever downloaded. Without a browser (or Playwright) the tests skip,
unless ``CLEMLAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``): then they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CLEMLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _missing(reason: str):
    if os.environ.get("CLEMLAB_REQUIRE_BROWSER", "") not in ("", "0"):
        pytest.fail(f"{reason}; CLEMLAB_REQUIRE_BROWSER=1 demands the browser tests run")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: JupyterLab user settings for the test server (its own folder, never the user's): every
#: cell rendered (no windowing, so screenshots and locators reach outputs far down) and no
#: "news" prompt over the page.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


def _lab_settings(folder: Path) -> Path:
    for rel, value in LAB_SETTINGS.items():
        f = folder / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    return folder


class LabServer:
    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen):
        self.root, self.port, self.token, self.proc = root, port, token, proc

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?token={self.token}"


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _missing("Python Playwright is not installed (pip install playwright)")
    return CHROMIUM


@pytest.fixture(scope="session")
def lab(tmp_path_factory, chromium_path):
    root = tmp_path_factory.mktemp("lab_root")
    port, token = _free_port(), secrets.token_hex(16)
    log = open(root.parent / "jupyterlab.log", "wb")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
           "--ServerApp.port_retries=0", "--LabApp.news_url=None"]
    # the kernel's environment as a user's: no MPLBACKEND (CI's Agg would hide inline figures)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["JUPYTERLAB_SETTINGS_DIR"] = str(_lab_settings(root.parent / "lab_settings"))
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env)
    server = LabServer(root, port, token, proc)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"JupyterLab exited with {proc.returncode}: "
                        f"{(root.parent / 'jupyterlab.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(server.url("api/status"), timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            pytest.fail("JupyterLab did not answer within 90 s")
        time.sleep(0.25)
    yield server
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100}, device_scale_factor=1)
    pg = ctx.new_page()
    yield pg
    ctx.close()
