"""`musicgpt generate --png`: a piano roll of prompt and continuations, one panel per sample."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PIANO_DIR
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from musicgpt.cli import main
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.viz.pianoroll import CUT_COLOR, GENERATED_COLOR, PROMPT_COLOR, render_continuations_png
from musicgpt.viz.png import PANEL

TOK = PerformanceTokenizer()
PROMPT = PIANO_DIR / "fur-elise.mid"


@pytest.fixture
def model_dir(tiny_checkpoint):
    return tiny_checkpoint  # conftest's random music-tiny checkpoint (seed 0)


VELOCITY_ALPHAS = np.linspace(0.35, 1.0, 27)  # the opacities notes are drawn with, velocity 0 to 127


def pixels_near(img: np.ndarray, color, alphas=VELOCITY_ALPHAS, tol: float = 0.025) -> int:
    """Pixels showing `color` drawn over the panel with one of `alphas` (notes are translucent by velocity)."""
    rgb, panel = np.array(to_rgb(color)), np.array(to_rgb(PANEL))
    near = np.zeros(img.shape[:2], bool)
    for alpha in np.atleast_1d(alphas):
        near |= np.abs(img[..., :3] - (alpha * rgb + (1 - alpha) * panel)).max(-1) < tol
    return int(near.sum())


def test_generate_png_draws_every_sample(model_dir, tmp_path):
    png = tmp_path / "figures" / "roll.png"  # a folder that does not exist yet is made
    argv = [
        "generate", "--checkpoint", str(model_dir), "--prompt", str(PROMPT), "--prompt-seconds", "3",
        "--seconds", "3", "--num-samples", "3", "--seed", "0", "--out", str(tmp_path / "c.mid"), "--png", str(png),
    ]  # fmt: skip
    assert main(argv) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(png)
    assert img.shape[:2] == (int(110 * (0.9 + 2.3 * 3)), 13 * 110)  # three panels
    assert pixels_near(img, PROMPT_COLOR) > 300
    assert pixels_near(img, GENERATED_COLOR) > 300
    # the dashed cut line, in each panel (thin: mostly antialiased pixels)
    assert pixels_near(img, CUT_COLOR, alphas=np.linspace(0.5, 1, 11), tol=0.04) > 3 * 60


def test_prompt_notes_keep_their_colour_past_the_cut(tmp_path):
    # one prompt note held across the cut, one generated note after it
    ids = TOK.encode_notes([60, 72], [101, 101], [0.0, 2.0], [4.0, 3.0])
    notes = TOK.decode_notes(ids)
    prompt_tokens = int(np.flatnonzero(ids == 72)[0])  # everything before the NOTE_ON of C5
    only_prompt, only_new = tmp_path / "a.png", tmp_path / "b.png"
    render_continuations_png([notes], only_prompt, prompt_tokens=prompt_tokens + 1, cut_seconds=2.0)
    render_continuations_png([notes], only_new, prompt_tokens=0, cut_seconds=2.0)
    below_legend = int(0.55 * 110)  # the legend shows both colours whatever is drawn
    a, b = imread(only_prompt)[below_legend:], imread(only_new)[below_legend:]
    alpha = 0.35 + 0.65 * 101 / 127  # the opacity of both notes (velocity 101)
    assert pixels_near(a, GENERATED_COLOR, alpha) == 0 and pixels_near(a, PROMPT_COLOR, alpha) > 500
    assert pixels_near(b, PROMPT_COLOR, alpha) == 0 and pixels_near(b, GENERATED_COLOR, alpha) > 500


def test_png_of_silence_and_bad_input(tmp_path):
    silence = TOK.decode_notes([])
    render_continuations_png([silence, silence], tmp_path / "s.png", prompt_tokens=0, cut_seconds=0.0)
    assert (tmp_path / "s.png").exists()
    with pytest.raises(ValueError, match="at least one sample"):
        render_continuations_png([], tmp_path / "x.png", prompt_tokens=0, cut_seconds=1.0)


def test_unwritable_png_fails_before_generating(model_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = [
        "generate", "--checkpoint", str(model_dir), "--prompt", str(PROMPT), "--seconds", "2",
        "--out", str(tmp_path / "c.mid"), "--png", str(blocker / "roll.png"),
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"musicgpt generate: error: argument --png: {blocker / 'roll.png'}: {blocker} is a file, not a folder "
        "(see musicgpt generate --help)\n"
    )
    assert not (tmp_path / "c.mid").exists()  # nothing was generated
