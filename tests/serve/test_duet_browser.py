"""The duet page in headless Chromium (see tests/browser.py): a phrase typed on the computer
keyboard is answered and played, playing interrupts an answer, and the downloaded MIDI holds
both parts in time order."""

from __future__ import annotations

import io
import math
import time

import pretty_midi
import pytest
from browser import BROWSER_MARKS, Browser, served
from conftest import PIANO_DIR

from musicgpt.checkpoints import load_checkpoint
from musicgpt.serve.app import create_app

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    """The app on a free port, served by uvicorn (with its WebSocket support) on a thread."""
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


def play(browser: Browser, keys: str, hold_ms: int = 150, gap_ms: int = 100) -> None:
    """Press and release each key in turn: real key events, as the page gets them from a person."""
    browser.keys(keys, hold_ms=hold_ms, gap_ms=gap_ms)


def set_field(browser: Browser, css: str, value: str) -> None:
    browser.type(css, value)
    browser.js("document.activeElement.blur()")  # the page takes keys as notes outside inputs


def test_call_answer_interrupt_and_download(browser, server):
    base, app = server
    browser.open(base + "/")
    browser.wait_for("return document.body.dataset.ready === '1'")
    browser.click("a.duet-link")
    browser.wait_for("return document.body.dataset.ready === '1' && window.duet && window.duet.session")
    assert browser.js("return document.querySelectorAll('#keyboard .key').length") == 29
    set_field(browser, "#pause", "500")
    set_field(browser, "#seconds", "2")

    # a phrase on the lower row (z x c: C3 D3 E3), then the pause: the answer comes and plays
    play(browser, "zxc")
    lit = browser.wait_for(
        "return [...document.querySelectorAll('.key.down')].length === 0 && duet.voices.player"
    )
    assert lit == 3
    first = browser.wait_for(
        "const a = duet.answers[1]; return a && a.seconds !== undefined && a", timeout=30
    )
    assert first["notes"] >= 1 and first["seconds"] == 2 and 0 < first["latency"] < 2000
    assert browser.js("return duet.voices.model") == first["notes"]
    shown = browser.js("return document.querySelector('#answers li[data-k=\"1\"]').textContent")
    # the page rounds as JavaScript does (Math.round: halves up), not as Python's round (to even)
    assert shown.startswith(f"{first['notes']} notes, first after {math.floor(first['latency'] + 0.5)} ms")
    browser.wait_for("return document.getElementById('state').textContent === 'your turn'", timeout=10)

    # a long answer, interrupted by playing: it falls silent and the server cuts it there
    set_field(browser, "#seconds", "20")
    play(browser, "q")  # C4
    browser.wait_for("const a = duet.answers[2]; return a && a.notes >= 1", timeout=30)
    time.sleep(0.3)
    play(browser, "w", hold_ms=100)  # D4
    cut = browser.wait_for("return duet.messages.find(m => m.type === 'cut' && m.answer === 2)", timeout=10)
    assert 0 <= cut["t"] < 20
    assert browser.js("return duet.answers[2].interrupted") is True
    time.sleep(0.2)
    assert browser.js("return document.querySelectorAll('.key.model').length") == 0
    assert "interrupted" in browser.js(
        "return document.querySelector('#answers li[data-k=\"2\"]').textContent"
    )

    # the download: both parts on their tracks, in the order they were played
    browser.click("#download")
    path = browser.downloads / "duet.mid"
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), f"no download in {list(browser.downloads.iterdir())}"
    player, model = pretty_midi.PrettyMIDI(io.BytesIO(path.read_bytes())).instruments
    assert (player.name, model.name) == ("player", "musicgpt")
    assert [n.pitch for n in player.notes] == [48, 50, 52, 60, 62]
    starts = [n.start for n in player.notes]
    assert starts == sorted(starts) and starts[0] == 0.0
    phrase_end, q, w = player.notes[2].end, player.notes[3], player.notes[4]
    answer1 = [n for n in model.notes if n.start < q.start]
    answer2 = [n for n in model.notes if n.start >= q.end]
    assert len(answer1) == first["notes"] and len(answer1) + len(answer2) == len(model.notes)
    # answer 1: after the pause, within its 2 s, before the next phrase
    assert min(n.start for n in answer1) == pytest.approx(phrase_end + 0.5, abs=0.011)
    assert max(n.end for n in answer1) <= min(n.start for n in answer1) + 2 + 1e-6 <= q.start + 1e-6
    # answer 2: after the pause that followed q, cut where w came in
    assert answer2 and min(n.start for n in answer2) == pytest.approx(q.end + 0.5, abs=0.011)
    assert max(n.end for n in answer2) <= w.start + 1e-6

    # the attention view of the duet
    href = browser.js("return document.getElementById('attention').href")
    browser.open(href)
    assert browser.js("return document.title").startswith("duet, attention")
    assert browser.js("return document.querySelectorAll('.note-r').length") > 0
    assert [e for e in browser.console() if e["level"] == "SEVERE"] == []
