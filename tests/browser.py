"""Headless Chromium for the browser tests, driven over WebDriver by chromedriver.

The client is a few calls of the W3C WebDriver protocol over urllib (no selenium): open a page,
click, press keys, run a script, take a screenshot, read the console. Needs Debian's `chromium`
and `chromium-driver` (installed by .ci/run); a test module marks itself with `BROWSER_MARKS` to
be skipped, with the reason, without them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


@contextlib.contextmanager
def served(app, join_seconds: float = 30):
    """The app on a free loopback port, served by uvicorn (WebSockets included) on a thread;
    yields its base URL and stops the server at the end."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 30 s"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=join_seconds)
        sock.close()


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists(),
        reason="needs headless Chromium: apt-get install chromium chromium-driver (/usr/bin/chromium, chromedriver)",
    ),
]


class Browser:
    """One headless Chromium session behind chromedriver."""

    def __init__(self, profile: Path, downloads: Path | None = None):
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
                # WebAudio starts without a click (the tests press play through scripts too)
                "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={profile}", "--window-size=1400,1000"]  # fmt: skip
        options = {"binary": str(CHROMIUM), "args": args}
        if downloads is not None:  # a link with `download` saves there, without asking
            options["prefs"] = {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False,
            }
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": {"browser": "ALL"},
        }
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

    def wait_for(self, script: str, *args, timeout: float = 15.0):
        """Run `script` every 50 ms until it returns something truthy, and return that (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script, *args)
            if value or time.monotonic() > deadline:
                assert value, f"timed out after {timeout:g} s waiting for: {script}"
                return value
            time.sleep(0.05)

    def element(self, css: str) -> str:
        return next(iter(self.cmd("POST", "/element", {"using": "css selector", "value": css}).values()))

    def click(self, css: str) -> None:
        self.cmd("POST", f"/element/{self.element(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        """Clear an input and type `text` into it."""
        element = self.element(css)
        self.cmd("POST", f"/element/{element}/clear", {})
        self.cmd("POST", f"/element/{element}/value", {"text": text})

    def choose_file(self, css: str, path: Path) -> None:
        """Choose a file in an <input type=file>, as a user picking it would."""
        self.cmd("POST", f"/element/{self.element(css)}/value", {"text": str(path)})

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
