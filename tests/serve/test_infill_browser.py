"""The infill page in headless Chromium (tests/browser.py): drag across the roll to mark a span,
generate, play an alternative in place, download it; the download equals the piece outside the span;
its attention view opens."""

from __future__ import annotations

import time

import pytest
import torch
from browser import BROWSER_MARKS, Browser, served
from conftest import PIANO_DIR

from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.serve.app import create_app
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

pytestmark = BROWSER_MARKS
TOK = PerformanceTokenizer()


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=V.VOCAB_SIZE, block_size=96, n_layer=1, n_head=2, n_embd=32,
        position_encoding="relative", max_relative_distance=64,
    )  # fmt: skip
    app = create_app(GPT(config).eval(), TOK, pieces_dir=PIANO_DIR, about="tiny random FIM model")
    with served(app, join_seconds=30) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("infill-downloads")
    b = Browser(tmp_path_factory.mktemp("infill-profile"), downloads=downloads)
    b.downloads = downloads
    yield b
    b.close()


def notes(path) -> list[tuple]:
    n = TOK.decode_notes(TOK.encode(path))
    return sorted(
        zip(
            n.pitch.tolist(),
            n.start.round(2).tolist(),
            n.end.round(2).tolist(),
            n.velocity.tolist(),
            strict=False,
        )
    )


def test_mark_generate_play_download(browser, server):
    browser.open(server + "/infill")
    browser.wait_for("return document.body.dataset.ready === '1'")
    browser.js("const s = document.getElementById('piece'); s.value = 'fur-elise.mid'; s.onchange();")
    browser.wait_for("return document.querySelectorAll('#roll rect.note').length > 20")
    width = browser.js("return document.getElementById('roll').getBoundingClientRect().width")
    # the roll shows 30 s: from 0.2 to 0.3 of its width is about 6 s to 9 s
    browser.drag("#roll", int(-0.3 * width), int(-0.2 * width))
    start, end = browser.js(
        "return [+document.getElementById('start').value, +document.getElementById('end').value]"
    )
    assert 5.0 < start < 7.0 and 8.0 < end < 10.0
    assert browser.js("return !!document.getElementById('span')")
    browser.type("#num", "2")
    browser.click("#generate")
    browser.wait_for("return document.querySelectorAll('.alt').length === 2", timeout=120)
    status = browser.js("return document.getElementById('status').textContent")
    assert status == f"2 alternatives for {start}-{end} s"
    # each alternative draws its new notes apart from the given ones
    assert browser.js("return document.querySelectorAll('.alt[data-k=\"1\"] rect.note').length") > 0

    browser.click('.alt[data-k="1"] .play')
    played = browser.wait_for(
        "const c = document.querySelector('.alt[data-k=\"1\"]'); return c.dataset.playing === '1' && c.dataset;"
    )
    assert int(played["scheduled"]) > 0  # notes from a second before the span to a second after

    browser.click('.alt[data-k="1"] a.download')
    path = browser.downloads / "fur-elise-infill1.mid"
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), f"no download in {list(browser.downloads.iterdir())}"
    original, new = notes(PIANO_DIR / "fur-elise.mid"), notes(path)
    # outside the span, note for note: the notes that ended by its start, and those struck from its end
    assert {x for x in original if x[2] <= start} <= set(new)
    assert sorted(x for x in new if x[1] >= end) == sorted(x for x in original if x[1] >= end)
    assert sorted((p, t, v) for p, t, _, v in new if t < start) == sorted(
        (p, t, v) for p, t, _, v in original if t < start
    )
    assert [e for e in browser.console() if e["level"] == "SEVERE"] == []

    # the attention view opens on the alternative: its notes on the piano roll, arcs on a click
    attention = browser.js("return document.querySelector('.alt[data-k=\"1\"] a.attention').href")
    browser.open(attention)
    count = browser.wait_for("return document.querySelectorAll('.note-r[data-i]').length")
    assert count >= 2  # the tiny model reads a short window
    browser.click(f'.note-r[data-i="{count - 1}"]')
    assert int(browser.wait_for("return document.body.dataset.arcs")) > 0
    assert [e for e in browser.console() if e["level"] == "SEVERE"] == []
