"""The self-contained page: every note of the excerpt in it, no URL, data that decodes back."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.text import ByteTokenizer
from musicgpt.viz.attention import AttentionData, compact
from musicgpt.viz.html import (
    NOTE_BUDGET,
    TOKEN_BUDGET,
    attention_page,
    auto_top_k,
    head_colors,
    render_html,
)

TOK = PerformanceTokenizer()
# anything that would make the browser fetch: a scheme, a protocol-relative URL, a linked file
EXTERNAL = re.compile(r"(https?:|ftp:|://|//cdn|<link\b|\bsrc\s*=|\bhref\s*=|url\(|@import)", re.IGNORECASE)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("music-tiny")).eval()


@pytest.fixture(scope="module")
def data(model) -> AttentionData:
    ids = TOK.encode(PIANO_DIR / "Maestro_7.mid").astype(np.int64)
    return AttentionData.from_music(model, ids, TOK, start=12.0, seconds=6.0)


def embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', page, re.DOTALL)
    return json.loads(m.group(1))


def decode(c: dict) -> tuple[np.ndarray, np.ndarray]:
    index = np.frombuffer(base64.b64decode(c["index"]), dtype=f"<u{c['indexBytes']}")
    weight = np.frombuffer(base64.b64decode(c["weight"]), dtype="u1" if c["dtype"] == "uint8" else "<f2")
    return index, weight


def test_page_holds_every_note_of_the_excerpt(data, tmp_path):
    out = tmp_path / "page.html"
    size = render_html(data, out, title="Maestro_7 <excerpt>")
    page = out.read_text(encoding="utf-8")
    assert size == len(page.encode("utf-8"))
    notes = data.notes
    assert len(notes) > 20
    rects = re.findall(r'<rect class="note-r" data-i="(\d+)"[^>]*><title>([^<]*)</title>', page)
    assert [int(i) for i, _ in rects] == list(range(len(notes)))
    for (_, tip), p, s in zip(rects, notes.pitch, notes.start, strict=True):
        assert f"({p}), {s:.2f}-" in tip
    d = embedded(page)
    assert d["notes"]["pitch"] == notes.pitch.tolist()
    assert d["notes"]["onToken"] == notes.on_token.tolist()
    np.testing.assert_allclose(d["notes"]["start"], notes.start, atol=5e-4)
    assert d["tokens"] == data.token_names and d["nTokens"] == data.n_tokens
    assert "Maestro_7 &lt;excerpt&gt;" in page


def test_page_has_no_external_url(data):
    page = attention_page(data, title="x")
    assert EXTERNAL.findall(page) == []
    assert "<style>" in page and "<script>" in page  # styles and scripts inline


def test_page_data_decodes_to_the_compacted_attention(data):
    page = attention_page(data, title="x", top_k=8, layer=0, head=1, query=3)
    d = embedded(page)
    assert d["init"] == {"layer": 0, "heads": [1], "hmHead": 1, "item": 3, "perHead": 6}
    assert d["headColors"] == head_colors(2)
    want = compact(data.attention, 8)
    index, weight = decode(d["tok"])
    np.testing.assert_array_equal(index, want.index.ravel())
    np.testing.assert_array_equal(weight, want.weight.ravel())
    want_notes = compact(data.note_attention(), 8)
    index, weight = decode(d["items"])
    np.testing.assert_array_equal(index, want_notes.index.ravel())
    assert d["items"]["rows"] == len(data.notes)
    share = np.frombuffer(base64.b64decode(d["noteShare"]), dtype="u1").reshape(2, 2, -1)
    np.testing.assert_allclose(share / 255, data.note_share(), atol=1 / 255)


def test_page_float16_weights(data):
    d = embedded(attention_page(data, title="x", precision="float16"))
    _, weight = decode(d["tok"])
    np.testing.assert_array_equal(weight, compact(data.attention, 16, "float16").weight.ravel())


def test_page_rejects_a_layer_or_note_that_does_not_exist(data):
    with pytest.raises(ValueError, match="layer 2"):
        attention_page(data, title="x", layer=2)
    with pytest.raises(ValueError, match="item"):
        attention_page(data, title="x", query=len(data.notes))


def test_text_page_cannot_be_broken_out_of(model, tmp_path):
    tok = ByteTokenizer()
    ids = tok.encode("a </script><script>alert(1)</script> & <!-- b")
    data = AttentionData.from_model(model, ids, tok)
    data.token_names[0] = "</script><b>"  # a token name (as BPE could make) that would close the data
    render_html(data, tmp_path / "t.html", title="t")
    page = (tmp_path / "t.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and page.count("<script") == 2  # only the page's own two
    assert "<!--" not in page
    assert embedded(page)["tokens"][0] == "</script><b>"
    groups = re.findall(r'<g class="tok" data-i="(\d+)"', page)
    assert len(groups) == len(ids) and EXTERNAL.findall(page) == []


def test_text_page_defaults_to_the_last_token(model):
    tok = ByteTokenizer()
    data = AttentionData.from_model(model, tok.encode("hello"), tok)
    d = embedded(attention_page(data, title="t"))
    assert d["mode"] == "text" and d["init"]["item"] == 4 and "items" not in d


def test_a_2048_token_excerpt_page_stays_small(tmp_path):
    torch.manual_seed(0)
    big = GPT(GPTConfig.preset("music-tiny", block_size=2048)).eval()
    ids = TOK.encode(PIANO_DIR / "Maestro_5.mid").astype(np.int64)
    data = AttentionData.from_music(big, ids, TOK, start=0.0)
    assert data.n_tokens == 2048
    size = render_html(data, tmp_path / "long.html", title="long")
    assert size < 1_200_000  # 2 layers x 2 heads, 16 keys per row: 0.86 MB
    d = embedded((tmp_path / "long.html").read_text(encoding="utf-8"))
    assert d["topK"] == d["tok"]["k"] == d["items"]["k"] == 16


def test_top_k_shrinks_to_keep_big_models_pages_small():
    assert auto_top_k(4, 2048, TOKEN_BUDGET) == 16
    assert auto_top_k(48, 2048, TOKEN_BUDGET) == 6  # music-20m: 6 layers x 8 heads
    assert auto_top_k(48, 480, NOTE_BUDGET) == 14
    assert auto_top_k(12 * 12, 2048, TOKEN_BUDGET) == 4  # never fewer
