"""Static PNGs: written, the right size, and the arcs really in the head colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.text import ByteTokenizer
from musicgpt.viz.attention import AttentionData
from musicgpt.viz.html import head_colors
from musicgpt.viz.png import PANEL, SELECTED, render_arcs_png, render_heads_png

TOK = PerformanceTokenizer()


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("music-tiny", n_head=4)).eval()


@pytest.fixture(scope="module")
def data(model) -> AttentionData:
    ids = TOK.encode(PIANO_DIR / "Maestro_8.mid").astype(np.int64)
    return AttentionData.from_music(model, ids, TOK, start=40.0, seconds=5.0)


def pixels_near(img: np.ndarray, color, alpha: float = 1.0, tol: float = 0.05) -> int:
    """Pixels showing `color` drawn with `alpha` over the panel background."""
    want = alpha * np.array(to_rgb(color)) + (1 - alpha) * np.array(to_rgb(PANEL))
    return int(np.count_nonzero(np.abs(img[..., :3] - want).max(-1) < tol))


def test_arcs_png_draws_every_shown_head(data, tmp_path):
    out = tmp_path / "arcs.png"
    size = render_arcs_png(data, out, layer=1, query=len(data.notes) - 1)
    img = imread(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and size == out.stat().st_size > 30_000
    assert img.shape[:2] == (720, 1680)
    assert pixels_near(img, SELECTED) > 20  # the query note
    for color in head_colors(4):
        assert pixels_near(img, color, alpha=0.8) > 200  # each head's arcs


def test_arcs_png_only_the_chosen_heads(data, tmp_path):
    out = tmp_path / "one.png"
    render_arcs_png(data, out, heads=[2], per_head=3)
    img = imread(out)
    colors = head_colors(4)
    assert pixels_near(img, colors[2], alpha=0.8) > 100
    assert pixels_near(img, colors[0], alpha=0.8) == pixels_near(img, colors[1], alpha=0.8) == 0


def test_heads_png_is_a_grid_of_heatmaps(data, tmp_path):
    out = tmp_path / "heads.png"
    render_heads_png(data, out)
    img = imread(out)
    assert img.shape[:2] == (round((1.9 * 2 + 0.7) * 110), round((1.9 * 4 + 1.6) * 110))  # 2 layers x 4 heads
    assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 200  # heatmaps, not a blank figure


def test_text_arcs_png(model, tmp_path):
    tok = ByteTokenizer()
    data = AttentionData.from_model(model, tok.encode("Elementary, my dear Watson."), tok)
    out = tmp_path / "text.png"
    render_arcs_png(data, out, heads=[0, 3])
    img = imread(out)
    colors = head_colors(4)
    assert pixels_near(img, colors[0], alpha=0.8) > 50 and pixels_near(img, colors[3], alpha=0.8) > 50
    assert pixels_near(img, colors[1], alpha=0.8) == 0
