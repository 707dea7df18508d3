"""The serve app in headless Chromium (see tests/browser.py): upload a real MIDI file, generate,
see the roll, play it, download the MIDI; a random-bytes upload shows its error and the next works."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser import BROWSER_MARKS, Browser, served
from conftest import PIANO_DIR

from musicgpt.checkpoints import load_checkpoint
from musicgpt.serve.app import create_app
from musicgpt.tokenizers.performance import PerformanceTokenizer

pytestmark = BROWSER_MARKS
UPLOAD = PIANO_DIR / "Maestro_4.mid"


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    """The app on a free port, served by uvicorn on a thread; stopped at the end."""
    model, tokenizer = load_checkpoint(tiny_checkpoint)
    app = create_app(model, tokenizer, pieces_dir=PIANO_DIR, about="tiny random model")
    with served(app, join_seconds=30) as url:
        yield url, app


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    b = Browser(tmp_path_factory.mktemp("chromium-profile"), downloads=downloads)
    b.downloads = downloads
    yield b
    b.close()


def generate(browser: Browser, upload: Path, seconds: str = "5", samples: str = "2") -> None:
    browser.choose_file("#midi", upload)
    browser.type('input[name="prompt_seconds"]', "6")
    browser.type('input[name="seconds"]', seconds)
    browser.type('input[name="num_samples"]', samples)
    browser.type('input[name="seed"]', "3")
    browser.click("#generate")


CARD = """const card = document.querySelector('.sample[data-k="1"]');
    return {t: +card.dataset.playhead, playing: card.dataset.playing,
            on: [...card.querySelectorAll('rect.note.on')].map(e => +e.dataset.i).sort((a, b) => a - b)};"""


def test_upload_generate_play_download(browser, server, tmp_path):
    base, app = server
    browser.open(base + "/")
    browser.wait_for("return document.body.dataset.ready === '1'")
    assert browser.js("return document.getElementById('piece').options.length") == 24

    generate(browser, UPLOAD)
    browser.wait_for(
        "return document.body.dataset.state === 'done' && document.querySelectorAll('.sample').length",
        timeout=120,
    )
    (job_id,) = app.state.worker.job_ids()  # random: read from the server, not guessed
    job = json.loads(urllib.request.urlopen(f"{base}/api/jobs/{job_id}", timeout=10).read())
    assert job["label"] == "Maestro_4.mid" and len(job["samples"]) == 2
    for k, sample in enumerate(job["samples"], 1):  # the roll: every note, in the colour of its part
        drawn = browser.js(
            f"""const c = document.querySelector('.sample[data-k="{k}"]');
            return [c.querySelectorAll('rect.note.prompt').length, c.querySelectorAll('rect.note.continuation').length]"""
        )
        assert drawn == [sum(sample["fromPrompt"]), len(sample["fromPrompt"]) - sum(sample["fromPrompt"])]
        assert drawn[1] > 0
    assert browser.js("return document.getElementById('error').hidden") is True
    status = browser.js("return document.getElementById('status').textContent")
    assert status.startswith("2 samples of Maestro_4.mid in ")

    # play: the playhead runs and the lit notes are exactly those sounding at it
    browser.click('.sample[data-k="1"] .play')
    notes = job["samples"][0]["notes"]
    state = browser.wait_for(f"const s = (() => {{ {CARD} }})(); return s.t > 0.5 && s.on.length && s;")
    assert state["playing"] == "1"
    assert state["on"] == [
        i for i in range(len(notes["start"])) if notes["start"][i] <= state["t"] < notes["end"][i]
    ]
    later = browser.wait_for(f"const s = (() => {{ {CARD} }})(); return s.t > {state['t'] + 0.3} && s;")
    assert later["playing"] == "1"
    voices = browser.js("return MusicGPTPlayer.Player.sharedSynth().voices")
    assert voices > 0
    browser.click('.sample[data-k="1"] .play')  # stop
    assert browser.js(f"return (() => {{ {CARD} }})()")["playing"] == "0"

    # the MIDI link downloads a file that decodes to the notes drawn
    browser.click('.sample[data-k="1"] a.download')
    path = browser.downloads / "Maestro_4-sample1.mid"
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), f"no download in {list(browser.downloads.iterdir())}"
    tok = PerformanceTokenizer()
    decoded = tok.decode_notes(tok.encode(path))
    assert sorted(zip(decoded.pitch.tolist(), np.round(decoded.start, 3).tolist(), strict=True)) == sorted(
        zip(notes["pitch"], notes["start"], strict=True)
    )

    # the attention view of the sample opens in a new tab; here, in this one
    href = browser.js("return document.querySelector('.sample[data-k=\"1\"] a.attention').href")
    assert href == f"{base}/api/jobs/{job_id}/samples/1/attention"
    assert browser.js("return document.querySelector('.sample[data-k=\"1\"] a.attention').target") == "_blank"
    browser.open(href)
    assert browser.js("return document.querySelectorAll('.note-r').length") > 0
    assert browser.js("return +document.body.dataset.arcs") > 0
    assert browser.js("return typeof AudioContext") == "function"
    assert [e for e in browser.console() if e["level"] == "SEVERE"] == []


def test_random_bytes_show_the_error_and_the_next_request_works(browser, server, tmp_path):
    base, app = server
    noise = tmp_path / "noise.mid"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    browser.open(base + "/")
    browser.wait_for("return document.body.dataset.ready === '1'")
    generate(browser, noise, seconds="2", samples="1")
    error = browser.wait_for(
        "const e = document.getElementById('error'); return !e.hidden && e.textContent;", timeout=30
    )
    assert error == "noise.mid is not a MIDI file we can read: not a MIDI file (no MThd header)"
    assert browser.js("return document.getElementById('generate').disabled") is False
    assert list(app.state.upload_dir.iterdir()) == []

    generate(browser, UPLOAD, seconds="2", samples="1")  # the same page, the next request
    browser.wait_for(
        "return document.body.dataset.state === 'done' && document.querySelectorAll('.sample').length",
        timeout=120,
    )
    assert browser.js("return document.getElementById('error').hidden") is True
    assert browser.js("return document.querySelectorAll('.sample').length") == 1
    # the only console error is the browser's note of the refused request
    errors = [e["message"] for e in browser.console() if e["level"] == "SEVERE"]
    assert len(errors) == 1 and "/api/jobs" in errors[0] and "400" in errors[0], errors
