"""The page in a real browser: headless Chromium, driven over WebDriver by chromedriver.

The client is a few calls of the W3C WebDriver protocol over urllib (no selenium): open the
page, click a note, read the arcs from the DOM, take a screenshot, read the console.
Needs Debian's `chromium` and `chromium-driver` (installed by .ci/run); skipped without them.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.text import ByteTokenizer
from musicgpt.viz.attention import AttentionData
from musicgpt.viz.html import head_colors, render_music_html, render_text_html

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists(),
        reason="needs headless Chromium: apt-get install chromium chromium-driver (/usr/bin/chromium, chromedriver)",
    ),
]


class Browser:
    """One headless Chromium session behind chromedriver."""

    def __init__(self, profile: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(100):
            try:
                self._call("GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1400,1000"]  # fmt: skip
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": str(CHROMIUM), "args": args},
                "goog:loggingPrefs": {"browser": "ALL"}}  # fmt: skip
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:  # WebDriver errors come back as JSON bodies
            raise AssertionError(f"WebDriver {method} {path}: {e.read().decode()[:500]}") from None

    def cmd(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def click(self, css: str) -> None:
        element = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        self.cmd("POST", f"/element/{next(iter(element.values()))}/click", {})

    def press(self, key: str) -> None:
        """Press and release one key (WebDriver key codes, e.g. "\ue012" is ArrowLeft) on the page."""
        keys = [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        self.cmd("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": keys}]})

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self.cmd("GET", "/screenshot"))
        path.write_bytes(png)
        return png

    def console(self) -> list[dict]:
        return self.cmd("POST", "/se/log", {"type": "browser"})

    def close(self) -> None:
        try:
            self.cmd("DELETE", "")
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("music-tiny")).eval()


@pytest.fixture(scope="module")
def music_page(model, tmp_path_factory) -> tuple[Path, AttentionData]:
    tok = PerformanceTokenizer()
    data = AttentionData.from_music(
        model, tok.encode(PIANO_DIR / "Maestro_3.mid").astype(np.int64), tok, 30.0, 8.0
    )
    path = tmp_path_factory.mktemp("page") / "page.html"
    render_music_html(data, path, title="Maestro_3.mid")
    return path, data


def arcs_drawn(browser: Browser) -> dict:
    return browser.js(
        """const arcs = [...document.querySelectorAll('#arcs path.arc')];
        return {count: +document.body.dataset.arcs, paths: arcs.length,
                colors: [...new Set(arcs.map(a => a.getAttribute('stroke')))],
                selected: [...document.querySelectorAll('.note-r.selected')].map(e => +e.dataset.i),
                notes: document.querySelectorAll('.note-r').length, hash: location.hash};"""
    )


def test_choosing_a_note_draws_arcs(browser, music_page, tmp_path):
    path, data = music_page
    n = len(data.notes)
    browser.open(path.as_uri() + "#note=0")  # the first note: nothing earlier to attend to
    state = arcs_drawn(browser)
    assert state["notes"] == n and state["selected"] == [0]
    assert state["count"] == 0 and state["paths"] == 0

    browser.click(f'.note-r[data-i="{n // 2}"]')  # a real click on the piano roll
    state = arcs_drawn(browser)
    assert state["selected"] == [n // 2] and f"note={n // 2}" in state["hash"]
    assert state["paths"] == state["count"] == 2 * 6  # 2 heads x 6 arcs each (random weights: none zero)
    assert sorted(state["colors"]) == sorted(head_colors(2))
    title = browser.js("return document.getElementById('sel-title').textContent")
    assert title.startswith(f"note {n // 2}:")

    png = browser.screenshot(tmp_path / "page.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 1000) or width > 800

    errors = [e for e in browser.console() if e["level"] == "SEVERE"]
    assert errors == []


def test_hash_chooses_layer_and_heads(browser, music_page):
    path, data = music_page
    browser.open(path.as_uri() + "#note=20&layer=0&heads=1&k=3")
    state = arcs_drawn(browser)
    assert state["count"] == 3 and state["colors"] == [head_colors(2)[1]]
    assert browser.js("return document.getElementById('layer').value") == "0"
    browser.click('#heads input[data-head="0"]')  # show head 0 as well
    assert arcs_drawn(browser)["count"] == 6
    browser.click('.note-r[data-i="20"]')  # takes the focus off the checkbox, keeps note 20
    browser.press("\ue012")  # ArrowLeft: the note before
    state = arcs_drawn(browser)
    assert state["selected"] == [19] and "note=19" in state["hash"]
    browser.open(path.as_uri() + "#note=20&t=0.9")  # a threshold no random weight reaches
    assert arcs_drawn(browser)["count"] == 0
    assert browser.js("return document.getElementById('threshold-out').textContent") == "0.90"
    render_ms = int(browser.js("return document.body.dataset.renderMs"))
    assert 0 <= render_ms < 5000
    assert [e for e in browser.console() if e["level"] == "SEVERE"] == []


def test_text_page_in_the_browser(browser, model, tmp_path):
    tok = ByteTokenizer()
    data = AttentionData.from_model(
        model, tok.encode("It was a dark and stormy night; </script> the rain fell"), tok
    )
    render_text_html(data, tmp_path / "text.html", title="text")
    browser.open((tmp_path / "text.html").as_uri())
    drawn = browser.js("return [+document.body.dataset.arcs, document.querySelectorAll('.tok').length]")
    assert drawn == [12, data.n_tokens]
    browser.click('.tok[data-i="10"]')
    assert browser.js("return document.querySelectorAll('#arcs path.arc').length") == 12
    assert [e for e in browser.console() if e["level"] == "SEVERE"] == []
