"""The attention page in a real browser (headless Chromium, see tests/browser.py): click a note,
read the arcs from the DOM, play the piece, take a screenshot, read the console."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import BROWSER_MARKS, Browser
from conftest import PIANO_DIR

from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.text import ByteTokenizer
from musicgpt.viz.attention import AttentionData
from musicgpt.viz.html import head_colors, render_html

pytestmark = BROWSER_MARKS


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
    render_html(data, path, title="Maestro_3.mid")
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
    render_html(data, tmp_path / "text.html", title="text")
    browser.open((tmp_path / "text.html").as_uri())
    drawn = browser.js("return [+document.body.dataset.arcs, document.querySelectorAll('.tok').length]")
    assert drawn == [12, data.n_tokens]
    browser.click('.tok[data-i="10"]')
    assert browser.js("return document.querySelectorAll('#arcs path.arc').length") == 12
    assert [e for e in browser.console() if e["level"] == "SEVERE"] == []


PLAY_STATE = """const b = document.body.dataset;
    return {t: +b.playhead, playing: b.playing,
            lit: [...document.querySelectorAll('.note-r.playing')].map(e => +e.dataset.i).sort((a, b) => a - b),
            selected: [...document.querySelectorAll('.note-r.selected')].map(e => +e.dataset.i),
            x: +document.getElementById('playhead').getAttribute('x1'), arcs: +b.arcs,
            clock: document.getElementById('clock').textContent};"""


def expected_at(notes, t: float) -> tuple[list[int], int]:
    """What the page must show at time t: the notes sounding, and the one struck last."""
    start, end = np.round(notes.start, 3), np.round(notes.end, 3)  # the page's own numbers
    lit = [i for i in range(len(start)) if start[i] <= t < end[i]]
    struck = [i for i in sorted(range(len(start)), key=lambda i: start[i]) if start[i] <= t]
    return lit, struck[-1]


def test_the_page_plays(browser, music_page):
    path, data = music_page
    page = path.read_text(encoding="utf-8")
    assert "AudioContext" in page and 'id="play"' in page
    browser.open(path.as_uri() + "#note=0")
    t0 = float(browser.js("return document.getElementById('roll').dataset.t0"))
    assert browser.js("return document.body.dataset.playing") == "0"

    clicked = time.monotonic()
    browser.click("#play")
    first = browser.wait_for(
        f"const s = (() => {{ {PLAY_STATE} }})(); return s.t > {t0 + 0.4} && s.lit.length && s;"
    )
    second = browser.wait_for(
        f"const s = (() => {{ {PLAY_STATE} }})(); return s.t > {first['t'] + 0.5} && s.lit.length && s;"
    )
    for s in (first, second):  # exactly the notes sounding at the playhead, and the arcs of the last struck
        lit, struck = expected_at(data.notes, s["t"])
        assert s["playing"] == "1" and s["lit"] == lit and s["selected"] == [struck]
        assert s["arcs"] > 0
    # the lit notes change, the playhead moves
    assert first["lit"] != second["lit"] and second["x"] > first["x"] > 44
    assert second["t"] - t0 <= time.monotonic() - clicked + 0.1  # real time, not a runaway clock

    browser.press(" ")  # the space bar pauses
    paused = browser.wait_for(f"const s = (() => {{ {PLAY_STATE} }})(); return s.playing === '0' && s;")
    time.sleep(0.3)
    assert browser.js(PLAY_STATE)["t"] == paused["t"]
    assert paused["clock"].endswith(" s") and abs(float(paused["clock"][:-2]) - paused["t"]) <= 0.005
    audio = browser.js(
        "const s = MusicGPTPlayer.Player.sharedSynth(); return {state: s.ctx && s.ctx.state, voices: s.voices};"
    )
    assert audio["state"] == "running" and audio["voices"] >= len(second["lit"])  # the synth played them
    browser.press("\ue012")  # ArrowLeft chooses the note before, and the playhead moves to its onset
    before = paused["selected"][0] - 1
    moved = browser.js(PLAY_STATE)
    assert moved["selected"] == [before] and moved["playing"] == "0"
    assert moved["t"] == round(float(data.notes.start[before]), 3)
    assert [e for e in browser.console() if e["level"] == "SEVERE"] == []
