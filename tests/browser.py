"""Headless Chromium for the browser tests, driven by selenium through Debian's chromedriver.

`Browser` is a thin layer over selenium's `webdriver.Chrome` with the few verbs the tests use:
open a page, click, type, run a script, wait for one, press keys, drag, take a screenshot, read
the console. The driver and browser are the system's (`chromium`, `chromium-driver`, installed
by .ci/run), named explicitly so that Selenium Manager never looks for (or downloads) its own. A
test module marks itself with `BROWSER_MARKS` to be skipped, with the reason, without them.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
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
    """One headless Chromium session behind chromedriver (selenium's Chrome driver)."""

    def __init__(self, profile: Path, downloads: Path | None = None):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    # WebAudio starts without a click (the tests press play through scripts too)
                    "--autoplay-policy=no-user-gesture-required",
                    f"--user-data-dir={profile}", "--window-size=1400,1000"]:  # fmt: skip
            options.add_argument(arg)
        if downloads is not None:  # a link with `download` saves there, without asking
            options.add_experimental_option(
                "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
            )
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console() reads it
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_script_timeout(60)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait_for(self, script: str, *args, timeout: float = 15.0):
        """Run `script` every 50 ms until it returns something truthy, and return that (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script, *args)
            if value or time.monotonic() > deadline:
                assert value, f"timed out after {timeout:g} s waiting for: {script}"
                return value
            time.sleep(0.05)

    def element(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def click(self, css: str) -> None:
        self.element(css).click()

    def type(self, css: str, text: str) -> None:
        """Clear an input and type `text` into it."""
        element = self.element(css)
        element.clear()
        element.send_keys(text)

    def choose_file(self, css: str, path: Path) -> None:
        """Choose a file in an <input type=file>, as a user picking it would."""
        self.element(css).send_keys(str(path))

    def press(self, key: str) -> None:
        """Press and release one key (e.g. selenium's Keys.ARROW_LEFT, "\ue012") on the page."""
        self.keys([key], hold_ms=0, gap_ms=0)

    def keys(self, keys, hold_ms: int = 150, gap_ms: int = 100) -> None:
        """Press and release each key in turn, holding each `hold_ms`: real key events."""
        from selenium.webdriver import ActionChains

        chain = ActionChains(self.driver, duration=0)
        for k in keys:
            chain.key_down(k).pause(hold_ms / 1000).key_up(k).pause(gap_ms / 1000)
        chain.perform()

    def drag(self, css: str, x0: int, x1: int, step: int = 40) -> None:
        """Press at x0 px from the element's centre, move to x1 in steps, release."""
        from selenium.webdriver import ActionChains

        element = self.element(css)
        chain = (
            ActionChains(self.driver, duration=20)
            .move_to_element_with_offset(element, x0, 0)
            .click_and_hold()
        )
        for x in range(x0, x1 + 1, step):
            chain.move_to_element_with_offset(element, x, 0)
        chain.move_to_element_with_offset(element, x1, 0).release().perform()

    def screenshot(self, path: Path) -> bytes:
        png = self.driver.get_screenshot_as_png()
        path.write_bytes(png)
        return png

    def console(self) -> list[dict]:
        return self.driver.get_log("browser")

    def close(self) -> None:
        self.driver.quit()
