"""The app's fine-tuning flow in headless Chromium (see tests/browser.py), on a tiny model: choose
three MIDI files, fine-tune, watch the loss curve, use the model, generate with it, and read the
copy report beside the sample."""

from __future__ import annotations

import json
import urllib.request

import pytest
from browser import BROWSER_MARKS, Browser, served
from conftest import PIANO_DIR

from musicgpt.checkpoints import load_checkpoint
from musicgpt.serve.app import create_app

pytestmark = BROWSER_MARKS
QUICK = ["--max-steps", "3", "--steps-per-check", "1", "--batch-size", "2", "--precision", "32-true"]
RAGS = ["maple-leaf-rag.mid", "peacherine-rag.mid", "pineapple-rag.mid"]


@pytest.fixture()
def server(tiny_checkpoint, tmp_path):
    model, tokenizer = load_checkpoint(tiny_checkpoint)
    app = create_app(model, tokenizer, pieces_dir=PIANO_DIR, about="tiny random model",
                     checkpoint=str(tiny_checkpoint), finetune_dir=tmp_path / "runs", finetune_args=QUICK)  # fmt: skip
    with served(app, join_seconds=60) as url:
        yield url, app


@pytest.fixture()
def browser(tmp_path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


def test_finetune_in_the_page_then_generate_with_it(browser, server):
    base, app = server
    browser.open(base + "/")
    browser.wait_for(
        "return document.body.dataset.ready === '1' && !document.getElementById('finetune-form').hidden"
    )
    browser.wait_for("return document.body.dataset.finetune === 'idle'")  # the panel's first poll
    # several files in one <input multiple>: WebDriver takes them one path per line
    browser.choose_file("#ft-files", "\n".join(str(PIANO_DIR / n) for n in RAGS))
    assert browser.js("return document.getElementById('ft-files').files.length") == 3
    browser.type("#ft-minutes", "3")
    browser.click("#ft-start")
    browser.wait_for("return document.body.dataset.finetune === 'done'", timeout=240)
    st = json.loads(urllib.request.urlopen(base + "/api/finetune", timeout=10).read())
    assert [h["step"] for h in st["history"]] == [0, 1, 2, 3]
    # the curve: one point per validation, and the status line names the losses and the model
    assert browser.js("return document.querySelectorAll('#ft-curve circle').length") == 4
    status = browser.js("return document.getElementById('ft-status').textContent")
    assert status.startswith("done (max steps): validation loss ") and st["modelDir"] in status
    assert browser.js("return document.getElementById('ft-use').hidden") is False

    browser.click("#ft-use")
    browser.wait_for("return document.body.dataset.model === 'finetuned'", timeout=60)
    about = browser.js("return document.getElementById('about').textContent")
    assert about.startswith("fine-tuned on 3 file(s)")
    browser.wait_for("return document.getElementById('ft-use').hidden")  # the next poll: in use
    assert browser.js("return document.getElementById('ft-status').textContent").endswith(" · in use")

    # generation with the new model; its copy report stands beside the sample
    browser.js("document.getElementById('piece').value = 'bethena.mid'")
    browser.type('input[name="prompt_seconds"]', "4")
    browser.type('input[name="seconds"]', "2")
    browser.type('input[name="num_samples"]', "1")
    browser.type('input[name="seed"]', "1")
    browser.click("#generate")
    browser.wait_for("return document.body.dataset.state === 'done' && document.querySelectorAll('.sample').length",
                     timeout=120)  # fmt: skip
    copy = browser.js("return document.querySelector('.sample p.copy').textContent")
    assert copy.startswith("copy report: ")
    assert app.state.worker.index is not None and len(app.state.worker.index.names) >= 1
    assert [e for e in browser.console() if e["level"] == "SEVERE"] == []
