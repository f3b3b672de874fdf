"""The explorer as a user sees it: JupyterLab on loopback, headless Chromium, run all, move a widget.

Needs Debian's chromium (the Makefile installs it where apt is available) and the playwright
package (dev extras), which drives that browser through its executable path.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kit.paths import ROOT

playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[dev]')")


def _chromium():
    """The system chromium, else the one `python -m playwright install chromium` put in the user's cache."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    try:
        with playwright.sync_playwright() as p:
            path = p.chromium.executable_path
        return path if Path(path).exists() else None
    except Exception:   # noqa: BLE001 (no browser: the test is skipped)
        return None


CHROMIUM = _chromium()
pytestmark = [pytest.mark.slow,      # make test-fast skips it
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium, or without root python -m playwright install chromium")]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab serving a copy of the explorer (outputs never land in the repo's notebook)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "10_explorer.ipynb", work / "10_explorer.ipynb")
    port, token = _free_port(), "kit-browser-test"
    env = {**os.environ, "KIT_OUTPUT_DIR": str(tmp_path / "out"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
                             "--LabApp.news_url=", *(["--allow-root"] if os.geteuid() == 0 else [])],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
    yield url, token, tmp_path
    proc.terminate()
    proc.wait(timeout=30)
    print("JupyterLab's log (pytest shows it when the test failed):")
    print((tmp_path / "lab.log").read_text()[-4000:])


def _wait_idle(url: str, token: str, timeout: float) -> None:
    """Until the server's one kernel exists and is idle (the REST API, not the page's widgets).

    While a kernel is being started, jupyter_server lists it before it has an execution state
    and answers /api/kernels with a 500; that window (seconds on a loaded machine) is retried.
    """
    import json
    end, last = time.time() + timeout, "no answer"
    while time.time() < end:
        try:
            kernels = json.load(urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=5))
        except urllib.error.HTTPError as err:
            kernels, last = [], f"HTTP {err.code}"
        else:
            last = ", ".join(k["execution_state"] for k in kernels) or "no kernel"
            if kernels and all(k["execution_state"] == "idle" for k in kernels):
                return
        time.sleep(1)
    raise AssertionError(f"the kernel was not idle after {timeout} s (last answer: {last})")


def test_explorer_runs_in_jupyterlab_and_its_widgets_update_the_views(lab):
    url, token, folder = lab
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(f"{url}/lab/tree/10_explorer.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        _wait_idle(url, token, 60)
        page.click(".lm-MenuBar-item:has-text('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        status = page.locator(".widget-html:has-text('move a control')")
        status.wait_for(timeout=600_000)            # every run drawn statically first: minutes on a loaded 2-core machine
        assert "every run at its last checkpoint" in status.inner_text()   # the static views above
        _wait_idle(url, token, 480)
        assert page.locator(".jp-OutputArea-output:has-text('Traceback')").count() == 0
        static = page.locator(".jp-OutputArea-output img").first
        static.scroll_into_view_if_needed()
        before_png = static.screenshot(path=str(folder / "explorer_before.png"))
        before_img = static.get_attribute("src")
        area = page.locator(".widget-vbox").first
        area.scroll_into_view_if_needed()

        page.locator(".widget-dropdown select").first.select_option("npo")     # move one widget
        page.wait_for_function("() => [...document.querySelectorAll('.widget-html')].some("
                               "e => e.innerText.includes('showing:') && e.innerText.includes('run=npo step=10 '))", timeout=120_000)
        after_png = area.screenshot(path=str(folder / "explorer_after.png"))
        after_img = area.locator("img").first.get_attribute("src")
        browser.close()
    assert before_img and after_img and before_img != after_img      # the figure was redrawn for the new run
    assert before_png != after_png
    assert (folder / "out" / "runs" / "default" / "results" / "10_explorer.json").exists()   # the last cells ran too
