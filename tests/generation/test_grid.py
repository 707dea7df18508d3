"""The onset grid of a sequenced prompt (generation/grid.py) and the sampler's snapping of time to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.generation.grid import (
    RECENT_ONSETS,
    Articulation,
    OnsetGrid,
    articulate,
    detect_grid,
    learn_articulation,
    note_spans,
    onset_clocks,
)
from musicgpt.generation.piano import (
    PIANO_SAMPLING,
    PianoPriors,
    PianoSamplingGrammar,
    continue_piano,
    cut_at_seconds,
)
from musicgpt.generation.sampling import SamplingConfig, SamplingError
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer


def opening(name: str, seconds: float = 10.0) -> np.ndarray:
    return cut_at_seconds(PerformanceTokenizer().encode(PIANO_DIR / name), seconds)


def test_onset_clocks_are_the_distinct_times_of_note_ons():
    ids = np.array(
        [
            V.name_to_id(x)
            for x in (
                "VELOCITY_20",
                "NOTE_ON_60",
                "NOTE_ON_64",
                "TIME_SHIFT_15",
                "NOTE_OFF_60",
                "TIME_SHIFT_30",
                "NOTE_ON_67",
            )
        ]
    )
    assert onset_clocks(ids).tolist() == [0, 45]
    # a piece starts again after EOS
    assert onset_clocks(np.concatenate([ids, [V.EOS_ID], ids[:2]])).tolist() == [0]


@pytest.mark.parametrize(
    "name, spacing",
    [("pineapple-rag.mid", 15.0), ("maple-leaf-rag.mid", 12.5), ("peacherine-rag.mid", 18.75)],
)
def test_a_sequenced_rag_has_its_sixteenth_as_grid(name, spacing):
    grid = detect_grid(onset_clocks(opening(name)))
    assert grid is not None
    assert grid.spacing == pytest.approx(spacing, abs=0.01)
    onsets = onset_clocks(opening(name))
    assert np.array_equal(grid.nearest(onsets), onsets)  # every onset of the opening on it


@pytest.mark.parametrize("name", ["Maestro_1.mid", "Maestro_3.mid", "Maestro_5.mid", "fur-elise.mid"])
def test_a_performance_has_no_grid(name):
    assert detect_grid(onset_clocks(opening(name))) is None
    assert detect_grid(onset_clocks(opening(name, 60.0))) is None


def test_a_grid_of_no_round_number_of_steps_is_found():
    # POP909_022 is sequenced at 70 bpm: its 16th is 21.43 steps, and over 40 s a spacing off by
    # the 0.05 of a coarse search drifts 4 steps from the onsets
    onsets = onset_clocks(opening("POP909_022.mid", 50.0))
    grid = detect_grid(onsets)
    assert grid is not None and grid.spacing == pytest.approx(6000 / 70 / 4, abs=0.01)
    recent = onsets[onsets >= grid.since]
    assert recent.size == RECENT_ONSETS
    assert np.abs(grid.nearest(recent) - recent).max() <= 1


def test_the_grid_is_the_tempo_the_prompt_has_reached():
    slow = np.arange(100) * 25.0
    fast = slow[-1] + 20.0 * np.arange(1, RECENT_ONSETS + 1)
    grid = detect_grid(np.concatenate([slow, fast]))
    assert grid.spacing == pytest.approx(20.0) and grid.since == fast[0]
    # with fewer new onsets than RECENT_ONSETS the two tempi mix, and neither grid holds them
    assert detect_grid(np.concatenate([slow, fast[:20]])) is None


def test_an_onset_off_the_grid_at_the_start_does_not_hide_it():
    onsets = np.concatenate([[3.0], 7.0 + 15.0 * np.arange(40)])  # a grace note, then a 15-step grid
    grid = detect_grid(onsets)
    assert grid.spacing == pytest.approx(15.0) and grid.phase == pytest.approx(7.0)


def test_too_few_onsets_are_no_evidence_of_a_grid():
    assert detect_grid(np.arange(10) * 25) is None  # 10 onsets on a perfect grid: too few
    assert detect_grid(np.arange(16) * 25) == OnsetGrid(spacing=pytest.approx(25.0), phase=pytest.approx(0.0))


def test_subdividing_halves_the_spacing():
    grid = OnsetGrid(spacing=15.0, phase=3.0).subdivided(2)
    # points at 3, 10.5 (written 10: rounded half to even) and 18
    assert grid.nearest(np.array([3, 10, 11, 15, 18])).tolist() == [3, 10, 10, 18, 18]


def snapping_grammar(prompt: np.ndarray, divisions: int = 1) -> PianoSamplingGrammar:
    grammar = PianoSamplingGrammar(PerformanceTokenizer().grammar(1), prompt[None], grid=divisions)
    grammar.start(prompt[None])
    return grammar


def test_each_shift_gives_its_mass_to_the_one_landing_on_the_nearest_grid_point():
    """pineapple-rag's opening ends on a grid point (15 steps apart): the shifts of 8-22 steps go
    to the 15-step shift, 23-37 to 30, ...; those of 1-7 steps (nearest point: now) to ending a
    sounding note now, in the model's proportions; every other logit is as it was."""
    prompt = opening("pineapple-rag.mid")
    grammar = snapping_grammar(prompt)
    clock = int(grammar.grammar.clock[0])
    assert clock % 15 == 0
    logits = torch.randn(1, V.VOCAB_SIZE, generator=torch.Generator().manual_seed(0))
    snapped = grammar.fold_logits(logits)
    shifts = V.shift_id(np.arange(1, V.MAX_SHIFT_STEPS + 1))
    finite = [int(V.STEPS_OF_ID[i]) for i in shifts if torch.isfinite(snapped[0, i])]
    assert finite == [15, 30, 45, 60, 75, 90]
    p = logits[0].exp()
    for target in finite:
        sources = [i for i in shifts if abs(V.STEPS_OF_ID[i] - target) <= 7]
        if target == 90:  # 83-100: 98-100 are nearest the point at 105, which lies beyond 1 s
            sources = [i for i in shifts if V.STEPS_OF_ID[i] >= 83]
        assert snapped[0, V.shift_id(target)].exp().item() == pytest.approx(p[sources].sum().item(), rel=1e-5)
    offs = torch.from_numpy(grammar.allowed()[0] & (V.TYPE_OF_ID == V.EventType.NOTE_OFF))
    assert 0 < int(offs.sum()) < 128  # notes sound at the cut
    short = torch.as_tensor(shifts[:7])
    gain = (p[offs].sum() + p[short].sum()) / p[offs].sum()
    assert torch.allclose(snapped[0, offs], logits[0, offs] + gain.log(), atol=1e-5)
    others = torch.ones(V.VOCAB_SIZE, dtype=torch.bool)
    others[torch.as_tensor(shifts)] = False
    others &= ~offs
    assert torch.equal(snapped[0, others], logits[0, others])


def test_a_note_struck_before_may_end_where_others_were_just_struck():
    """On the grid, after a NOTE_ON the older sounding notes may end at the same step (a pianist
    releases them just after striking the new ones); the notes struck at this step may not (no
    zero-length notes), and without a grid the grammar's own order (NOTE_OFFs first) holds."""
    tokenizer = PerformanceTokenizer()
    prompt = opening("pineapple-rag.mid")  # ends striking a chord: 55, 58 and 63 at its last step
    assert [V.id_to_name(int(t)) for t in prompt[-3:]] == ["NOTE_ON_55", "NOTE_ON_58", "NOTE_ON_63"]
    on_grid = snapping_grammar(prompt)
    plain = PianoSamplingGrammar(tokenizer.grammar(1), prompt[None], grid=0)
    plain.start(None)
    held = np.flatnonzero(on_grid.grammar.sounding[0])
    older = [p for p in held if p not in (55, 58, 63)]
    assert older  # notes struck before the last step still sound

    def off(pitch):
        return V.name_to_id(f"NOTE_OFF_{pitch}")

    assert all(on_grid.allowed()[0, off(p)] for p in older)
    assert not any(on_grid.allowed()[0, off(p)] for p in (55, 58, 63))
    assert not any(plain.allowed()[0, off(p)] for p in held)


def test_a_performance_prompt_is_not_snapped():
    prompt = opening("Maestro_3.mid")
    grammar = snapping_grammar(prompt)
    logits = torch.randn(1, V.VOCAB_SIZE)
    assert grammar.fold_logits(logits) is logits


def test_every_sampled_onset_falls_on_the_prompts_grid():
    """A model that knows nothing of grids (a tiny random one) continues pineapple-rag: with
    snapping, every note it strikes lands on the rag's 15-step grid; without, most do not. (The
    onset draws off: the rag's own gaps, all 15 or 30 steps, would put its notes on the grid
    without snapping.)"""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V.VOCAB_SIZE, block_size=128, n_layer=1, n_head=2, n_embd=16)).eval()
    tokenizer = PerformanceTokenizer()
    prompt = opening("pineapple-rag.mid")
    no_onset_draws = PianoPriors(onset_draws=0.0)
    for divisions, expect_all in ((1, True), (0, False)):
        sampling = SamplingConfig.build(PIANO_SAMPLING, grid=divisions)
        out = continue_piano(
            model,
            tokenizer,
            prompt,
            seconds=8.0,
            num_samples=4,
            seed=0,
            sampling=sampling,
            priors=no_onset_draws,
        )
        new = np.concatenate([onset_clocks(seq) for seq in out.sequences()])
        new = new[new > onset_clocks(prompt)[-1]]
        assert new.size > 20
        on_grid = np.mean(new % 15 == 0)
        assert on_grid == 1.0 if expect_all else on_grid < 0.5


@pytest.mark.parametrize("bad", [-1, 5, 1.0, True, "1"])
def test_grid_must_be_a_small_whole_number(bad):
    with pytest.raises(SamplingError, match="grid must be a whole number from 0"):
        SamplingConfig(grid=bad)


def test_a_continuation_never_ends_the_piece():
    """Where the performance grammar allows EOS (nothing sounds), piano sampling does not: a
    continuation lasts the seconds asked for (a sample that drew EOS used to stop there)."""
    tokenizer = PerformanceTokenizer()
    silent = np.array(
        [V.name_to_id(x) for x in ("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_20", "NOTE_OFF_60")]
    )
    inner = tokenizer.grammar(2)
    inner.start(np.tile(silent, (2, 1)))
    assert inner.allowed()[:, V.EOS_ID].all()
    grammar = PianoSamplingGrammar(tokenizer.grammar(2), np.tile(silent, (2, 1)))
    grammar.start(None)
    assert not grammar.allowed()[:, V.EOS_ID].any()
    assert (grammar.allowed() == (inner.allowed() & (np.arange(V.VOCAB_SIZE) != V.EOS_ID))).all()


# --- articulation ---------------------------------------------------------------------------------


def tokens(*names: str) -> np.ndarray:
    return np.array([V.name_to_id(x) for x in names], np.int64)


EIGHTHS_EARLY = Articulation(OnsetGrid(15.0, 0.0), {2: (np.array([-4]), np.array([1]))})


def test_note_spans_pair_each_release_with_its_onset():
    ids = tokens(
        "VELOCITY_20",
        "NOTE_ON_60",
        "TIME_SHIFT_15",
        "NOTE_ON_64",
        "TIME_SHIFT_15",
        "NOTE_OFF_60",
        "NOTE_OFF_64",
    )
    pitch, onset, end, off = note_spans(ids)
    assert (pitch.tolist(), onset.tolist(), end.tolist(), off.tolist()) == (
        [60, 64],
        [0, 15],
        [30, 30],
        [5, 6],
    )


def test_pineapple_ends_its_eighths_four_steps_before_the_point():
    """pineapple-rag's opening: notes lasting two grid steps (15 each) end 4 steps early, its
    sixteenths on the point or 2 early; counted per length."""
    prompt = opening("pineapple-rag.mid")
    articulation = learn_articulation(prompt, detect_grid(onset_clocks(prompt)))
    got = {k: (v.tolist(), c.tolist()) for k, (v, c) in articulation.by_length.items()}
    assert got == {1: ([-2, 0], [22, 31]), 2: ([-4, -2, 0], [44, 1, 4]), 4: ([-4], [2]), 5: ([-7], [2])}
    assert articulation.offsets_for(3)[0].tolist() == [-4, -2, 0]  # the nearest length, the shorter on a tie


@pytest.mark.parametrize("name", ["maple-leaf-rag.mid", "peacherine-rag.mid", "bethena.mid"])
def test_a_rag_that_ends_its_notes_on_the_points_has_no_articulation(name):
    prompt = opening(name)
    assert learn_articulation(prompt, detect_grid(onset_clocks(prompt))) is None


def test_a_release_on_a_point_moves_into_the_silence_before_it():
    ids = tokens(
        "VELOCITY_20",
        "NOTE_ON_60",
        "TIME_SHIFT_30",
        "NOTE_OFF_60",
        "NOTE_ON_62",
        "TIME_SHIFT_30",
        "NOTE_OFF_62",
    )
    out = articulate(ids, 0, EIGHTHS_EARLY, np.random.default_rng(0))
    assert [V.id_to_name(i) for i in out] == [
        "VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_26", "NOTE_OFF_60", "TIME_SHIFT_4",
        "NOTE_ON_62", "TIME_SHIFT_26", "NOTE_OFF_62", "TIME_SHIFT_4",
    ]  # fmt: skip
    assert V.shift_steps(out).sum() == V.shift_steps(ids).sum()  # the same total time


def test_a_release_never_moves_before_an_event_or_the_prompt():
    # a note struck at 28 stands between the release's point (30) and where it would move (26)
    crowded = tokens(
        "VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_28", "NOTE_ON_64", "TIME_SHIFT_2", "NOTE_OFF_60"
    )
    assert articulate(crowded, 0, EIGHTHS_EARLY, np.random.default_rng(0)) is crowded
    # the prompt (the first 3 tokens) ends at 28: its time is not rewritten
    prompt_ends_late = tokens("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_28", "TIME_SHIFT_2", "NOTE_OFF_60")
    assert articulate(prompt_ends_late, 3, EIGHTHS_EARLY, np.random.default_rng(0)) is prompt_ends_late
    # from the prompt's end (at 20) on, the release may move
    prompt_ends_early = tokens("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_20", "TIME_SHIFT_10", "NOTE_OFF_60")
    out = articulate(prompt_ends_early, 3, EIGHTHS_EARLY, np.random.default_rng(0))
    assert [V.id_to_name(i) for i in out[3:]] == ["TIME_SHIFT_6", "NOTE_OFF_60", "TIME_SHIFT_4"]


def test_a_continuation_of_pineapple_ends_its_notes_as_the_rag_does():
    """A tiny random model on pineapple-rag's grid: every onset on the grid, every release on a
    point or where the rag ends its notes before one (the piece's drawn lengths end a note there,
    and the model may end others with it), some of them before the point, and the samples last
    exactly the seconds asked for."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V.VOCAB_SIZE, block_size=128, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = opening("pineapple-rag.mid")
    articulation = learn_articulation(prompt, detect_grid(onset_clocks(prompt)))
    out = continue_piano(model, PerformanceTokenizer(), prompt, seconds=8.0, num_samples=4, seed=0)
    offsets = set(np.concatenate([values for values, _ in articulation.by_length.values()]).tolist())
    moved = 0
    for sample, whole in zip(out.samples, out.sequences(), strict=True):
        assert V.shift_steps(sample).sum() == 800
        _, onset, end, off = note_spans(whole)
        new = off >= len(prompt)
        assert np.all(onset[new] % 15 == 0)
        offset = end[new] - np.rint(end[new] / 15).astype(int) * 15
        assert set(offset.tolist()) <= offsets | {0}
        moved += int((offset < 0).sum())
    assert moved > 10
