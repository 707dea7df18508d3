"""Infilling with a model: every sample lasts the span exactly, and the rest of the piece stays.

A random-weights tiny model writes the middles: the grammar, not the model, guarantees the time
and the notes at the edges, so a model that knows nothing is the hardest case for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.cli import main
from musicgpt.errors import MusicGPTError
from musicgpt.generation.infill import infill_piano
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

TOK = PerformanceTokenizer()
PIECE = PIANO_DIR / "fur-elise.mid"
FIM_TINY = dict(
    vocab_size=V.VOCAB_SIZE, block_size=96, n_layer=1, n_head=2, n_embd=32,
    position_encoding="relative", max_relative_distance=64,
)  # fmt: skip


@pytest.fixture(scope="module")
def fim_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(**FIM_TINY)).eval()


@pytest.fixture(scope="module")
def fim_dir(tmp_path_factory, fim_model) -> Path:
    directory = tmp_path_factory.mktemp("fim-model")
    fim_model.save_pretrained(directory)
    TOK.save(directory / "tokenizer.json")
    return directory


def notes(ids) -> list[tuple]:
    n = TOK.decode_notes(ids)
    return sorted(
        zip(
            n.pitch.tolist(),
            n.start.round(2).tolist(),
            n.end.round(2).tolist(),
            n.velocity.tolist(),
            strict=False,
        )
    )


def check_infilled(
    original: list[tuple], piece: np.ndarray, middle: np.ndarray, start: int, end: int
) -> None:
    """The middle lasts the span; the rest is the original; no pitch sounds twice at once."""
    assert V.shift_steps(middle).sum() == end - start
    s, e = start / 100, end / 100
    new = notes(piece)
    # notes that ended by the span's start, and notes struck from its end on: exactly as they were
    assert {x for x in original if x[2] <= s} <= set(new)
    assert sorted(x for x in new if x[1] >= e) == sorted(x for x in original if x[1] >= e)
    # notes struck before the span keep their pitch, onset and velocity (the middle may end them sooner or later)
    assert sorted((p, t, v) for p, t, _, v in new if t < s) == sorted(
        (p, t, v) for p, t, _, v in original if t < s
    )
    # no note struck twice: one pitch never sounds twice at once (the suffix's NOTE_OFFs find one note each)
    for pitch in {x[0] for x in new}:
        mine = sorted((t0, t1) for p, t0, t1, _ in new if p == pitch)
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(mine, mine[1:], strict=False)), pitch


def held_under_pedal(path: Path, ids: np.ndarray, count: int, rng) -> list[float]:
    """Times inside a note held longer than 1 s while the sustain pedal is down."""
    pm = pretty_midi.PrettyMIDI(str(path))
    pedal = sorted(
        (c.time, c.value >= 64) for i in pm.instruments for c in i.control_changes if c.number == 64
    )
    downs = [(t, pedal[k + 1][0] if k + 1 < len(pedal) else t + 1) for k, (t, d) in enumerate(pedal) if d]
    n = TOK.decode_notes(ids)
    times = []
    for i in rng.permutation(len(n)):
        mid = float(n.start[i] + n.end[i]) / 2
        if n.end[i] - n.start[i] > 1.0 and any(a < mid < b for a, b in downs) and mid < V.seconds_of(ids) - 1:
            times.append(round(mid, 2))
        if len(times) == count:
            break
    assert len(times) == count  # the piece has such notes: the test is not vacuous
    return times


def spans_of(path: Path, n_random: int, n_held: int, seed: int):
    ids = TOK.encode(path).astype(np.int64)[:1500]
    total = V.seconds_of(ids)
    rng = np.random.default_rng(seed)
    starts = [round(float(rng.uniform(0, total - 0.5)), 2) for _ in range(n_random)]
    starts += held_under_pedal(path, ids, n_held, rng) if n_held else []
    spans = [(s, round(min(s + float(rng.uniform(0.01, 10.0)), total), 2)) for s in starts]
    return ids, [(s, e) for s, e in spans if e > s]


@pytest.mark.parametrize(("name", "n_random", "n_held"), [("fur-elise.mid", 3, 0), ("Maestro_1.mid", 1, 3)])
def test_infilled_samples_last_the_span_exactly(fim_model, name, n_random, n_held):
    ids, spans = spans_of(PIANO_DIR / name, n_random, n_held, seed=0)
    original = notes(ids)
    for k, (s, e) in enumerate(spans):
        result = infill_piano(fim_model, TOK, ids, s, e, num_samples=2, seed=k)
        assert all(result.finished) and not result.interrupted
        for piece, middle in zip(result.pieces(), result.samples, strict=True):
            check_infilled(original, piece, middle, result.start, result.end)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "n_random", "n_held"),
    [
        ("Maestro_1.mid", 40, 30),
        ("Maestro_2.mid", 40, 30),
        ("POP909_008.mid", 40, 0),
        ("fur-elise.mid", 40, 0),
        ("pineapple-rag.mid", 40, 0),  # sequenced: the middle's time snapped to its grid
    ],
)
def test_hundreds_of_spans_last_exactly_the_gap(fim_model, name, n_random, n_held):
    """320 spans over five real pieces, 60 of them starting inside notes held under the pedal."""
    ids, spans = spans_of(PIANO_DIR / name, n_random, n_held, seed=1)
    original = notes(ids)
    assert len(spans) >= n_random + n_held - 2
    for k, (s, e) in enumerate(spans):
        result = infill_piano(fim_model, TOK, ids, s, e, num_samples=2, seed=k)
        for piece, middle in zip(result.pieces(), result.samples, strict=True):
            check_infilled(original, piece, middle, result.start, result.end)


def test_a_model_without_the_fim_tokens_and_bad_spans_are_one_line_errors(fim_model):
    ids = TOK.encode(PIECE)
    old = GPT(GPTConfig(**{**FIM_TINY, "vocab_size": 390}))
    with pytest.raises(MusicGPTError, match="reads 390 token ids, without the fill-in-the-middle tokens"):
        infill_piano(old, TOK, ids, 1.0, 2.0)
    with pytest.raises(MusicGPTError, match="empty"):
        infill_piano(fim_model, TOK, ids, 2.0, 2.0)
    with pytest.raises(MusicGPTError, match="reversed"):
        infill_piano(fim_model, TOK, ids, 3.0, 2.0)
    with pytest.raises(MusicGPTError, match=r"lies outside the piece, which lasts \d+\.\d\d s"):
        infill_piano(fim_model, TOK, ids, 1.0, 10_000.0)


def test_the_command_writes_the_whole_piece_with_the_span_replaced(fim_dir, tmp_path, capsys):
    out = tmp_path / "out.mid"
    code = main(
        ["infill", str(PIECE), "--start", "4", "--end", "6.5", "--out", str(out), "--num-samples", "2",
         "--checkpoint", str(fim_dir), "--seed", "3", "--png", str(tmp_path / "roll.png")]
    )  # fmt: skip
    assert code == 0
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / "out-1.mid"), str(tmp_path / "out-2.mid"), str(tmp_path / "roll.png")]
    original = notes(TOK.encode(PIECE))
    for path in written[:2]:
        ids = TOK.encode(path)
        new = notes(ids)
        assert {x for x in original if x[2] <= 4.0} <= set(new)
        assert sorted(x for x in new if x[1] >= 6.5) == sorted(x for x in original if x[1] >= 6.5)
    assert (tmp_path / "roll.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "5", "--end", "5"], "the span 5-5 s is empty"),
        (["--start", "6", "--end", "5"], "the span 6-5 s is reversed"),
        (["--start", "5", "--end", "9999"], "fur-elise.mid: the span 5-9999 s lies outside the piece"),
        (["--start", "-1", "--end", "5"], "must be at least 0 seconds"),
    ],
)
def test_bad_spans_exit_2_with_one_line_and_write_nothing(fim_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out.mid"
    code = main(["infill", str(PIECE), *args, "--out", str(out), "--checkpoint", str(fim_dir)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_model_without_fim_tokens_is_refused_by_the_command(tiny_checkpoint, tmp_path, capsys):
    code = main(["infill", str(PIECE), "--start", "1", "--end", "2", "--out", str(tmp_path / "o.mid"),
                 "--checkpoint", str(tiny_checkpoint)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "reads 390 token ids, without the fill-in-the-middle tokens" in err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("start", "end"), [(10.0, 14.0), (3.33, 5.07), (20.05, 21.0)])
def test_an_infilled_middle_of_a_sequenced_piece_strikes_on_its_grid(fim_model, start, end):
    """pineapple-rag's onsets lie on a grid of 15 steps: the middle's do too (`SamplingConfig.grid`,
    on by default), from a span that starts and ends off the grid, and it still lasts the span."""
    ids = TOK.encode(PIANO_DIR / "pineapple-rag.mid").astype(np.int64)
    original = notes(ids)
    result = infill_piano(fim_model, TOK, ids, start, end, num_samples=4, seed=0)
    struck = 0
    for piece, middle in zip(result.pieces(), result.samples, strict=True):
        check_infilled(original, piece, middle, result.start, result.end)
        clock = result.start + np.cumsum(V.shift_steps(middle)) - V.shift_steps(middle)
        onsets = clock[V.TYPE_OF_ID[middle] == V.EventType.NOTE_ON]
        # on the grid, but for the notes the suffix holds that the middle must strike after the
        # last grid point before the end (the grammar's last steps)
        inside = onsets <= result.end // 15 * 15
        assert np.all(onsets[inside] % 15 == 0), onsets
        struck += int(inside.sum())
    assert struck >= 4  # not vacuous
