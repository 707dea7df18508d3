"""Take docs/images/serve.png: the app in headless Chromium after one generation, sample 1 playing.

    python docs/serve_screenshot.py CHECKPOINT [OUT.png]

Runs the app in this process on a free port, drives Chromium with the tests' selenium client
(tests/browser.py; needs Debian's chromium and chromium-driver), and writes the screenshot.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import uvicorn  # noqa: E402
from browser import Browser  # noqa: E402

from musicgpt.checkpoints import load_checkpoint  # noqa: E402
from musicgpt.resources import piano_corpus  # noqa: E402
from musicgpt.serve.app import create_app  # noqa: E402


def main(checkpoint: str, out: str = str(ROOT / "docs/images/serve.png")) -> None:
    model, tokenizer = load_checkpoint(checkpoint)
    c = model.config
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    about = f"{Path(checkpoint).name}: {millions:.1f}M parameters, {c.n_layer} layers, {c.block_size} tokens of context"
    app = create_app(model, tokenizer, pieces_dir=piano_corpus(), about=about)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    browser = Browser(Path(tempfile.mkdtemp(prefix="chromium-")))
    try:
        browser.driver.set_window_size(1280, 900)
        browser.open(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        browser.wait_for("return document.body.dataset.ready === '1'")
        browser.js("document.getElementById('piece').value = 'debussy-arabesque-no1.mid'")
        for name, value in [
            ("prompt_seconds", "8"),
            ("seconds", "12"),
            ("temperature", "0.9"),
            ("seed", "1"),
        ]:
            browser.type(f'input[name="{name}"]', value)
        browser.click("#generate")
        browser.wait_for(
            "return document.body.dataset.state === 'done' && document.querySelectorAll('.sample').length",
            timeout=600,
        )
        browser.click('.sample[data-k="1"] .play')
        browser.wait_for("return +document.querySelector('.sample[data-k=\"1\"]').dataset.playhead > 9.3")
        browser.js("document.activeElement.blur()")
        browser.screenshot(Path(out))
        print(f"wrote {out}")
    finally:
        browser.close()
        server.should_exit = True


if __name__ == "__main__":
    main(*sys.argv[1:])
