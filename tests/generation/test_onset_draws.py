"""The piece's gaps between onsets deciding when a continuation's next note comes
(generation/piano.py, `PianoPriors.onset_draws`): the gap drawn when a note is struck, no note
before it, time going straight there (stopping only for drawn releases), and a note then."""

from __future__ import annotations

import numpy as np
import pytest

from musicgpt.generation.piano import LENGTH_DRAWS_MIN_NOTES, PianoPriors, PianoSamplingGrammar
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.grammar import IS_ONSET_TOKEN
from musicgpt.tokenizers.performance import PerformanceTokenizer

SHIFTS = slice(V.TIME_SHIFT_OFFSET, V.VELOCITY_OFFSET)


def ids(*names: str) -> np.ndarray:
    return np.array([V.name_to_id(n) for n in names], np.int64)


def phrase(n: int) -> np.ndarray:
    """n notes, one every 10 steps, each lasting 4; then 60 struck as the model takes over."""
    notes = [ids(f"NOTE_ON_{40 + i}", "TIME_SHIFT_4", f"NOTE_OFF_{40 + i}", "TIME_SHIFT_6") for i in range(n)]
    return np.concatenate([ids("VELOCITY_20"), *notes, ids("NOTE_ON_60")])


PROMPT = phrase(20)


def grammar_after(prompt, onsets: float, lengths: float = 0.0, seed: int | None = 0, batch: int = 1):
    rng = None if seed is None else np.random.default_rng(seed)
    grammar = PianoSamplingGrammar(
        PerformanceTokenizer().grammar(batch),
        np.tile(prompt, (batch, 1)),
        PianoPriors(length_draws=lengths, onset_draws=onsets, chord_draws=0.0, longest_share=0.0),
        rng=rng,
    )
    grammar.start(None)
    return grammar


def step(grammar, name: str) -> None:
    grammar.advance(np.full(grammar.grammar.batch_size, V.name_to_id(name)))


def shifts_allowed(grammar) -> list[int]:
    return (np.flatnonzero(grammar.allowed()[0, SHIFTS]) + 1).tolist()


def test_time_goes_straight_to_the_drawn_onset_and_a_note_comes_there():
    """Every gap of the piece was 10 steps: after 60, the only shift is the one to the next
    onset (a chord's notes may still join 60 now), and there no time moves until a note is struck."""
    grammar = grammar_after(PROMPT, onsets=1.0)
    assert shifts_allowed(grammar) == [10]
    assert grammar.allowed()[0, V.NOTE_ON_OFFSET + 64]  # the chord
    step(grammar, "NOTE_ON_64")
    assert shifts_allowed(grammar) == [10]  # (the chord's note drew nothing new)
    step(grammar, "TIME_SHIFT_10")
    allowed = grammar.allowed()[0]
    assert (
        shifts_allowed(grammar) == [] and allowed[V.NOTE_ON_OFFSET + 70] and allowed[V.NOTE_OFF_OFFSET + 60]
    )
    step(grammar, "NOTE_OFF_60")  # a release first is the model's choice; a note must still come
    assert shifts_allowed(grammar) == []
    step(grammar, "NOTE_ON_70")  # struck: the next gap drawn from here
    assert shifts_allowed(grammar) == [10]


def test_drawn_releases_on_the_way_stop_time_but_strike_nothing():
    """Notes lasted 4 steps and came every 10: time stops at 60's drawn release, the release
    comes, then no note is allowed until the drawn onset, and the shift goes on to it."""
    grammar = grammar_after(PROMPT, onsets=1.0, lengths=1.0)
    assert shifts_allowed(grammar) == [4]
    step(grammar, "TIME_SHIFT_4")
    assert np.flatnonzero(grammar.allowed()[0]).tolist() == [V.NOTE_OFF_OFFSET + 60]
    step(grammar, "NOTE_OFF_60")
    allowed = grammar.allowed()[0]
    assert not (allowed & IS_ONSET_TOKEN).any()
    assert shifts_allowed(grammar) == [6]
    step(grammar, "TIME_SHIFT_6")
    assert shifts_allowed(grammar) == [] and grammar.allowed()[0, V.NOTE_ON_OFFSET + 70]


def test_the_share_decides_how_many_gaps_the_piece_decides():
    batch = 2000
    for share in (0.0, 0.5):
        grammar = grammar_after(PROMPT, onsets=share, batch=batch)
        only_ten = grammar.allowed()[:, SHIFTS].sum(1) == 1
        assert abs(only_ten.mean() - share) < 0.05


@pytest.mark.parametrize("share, seed", [(0.0, 0), (1.0, None)])
def test_no_draws_at_share_zero_or_without_a_generator(share, seed):
    plain = grammar_after(PROMPT, onsets=0.0, seed=None)
    other = grammar_after(PROMPT, onsets=share, seed=seed)
    for name in ("TIME_SHIFT_5", "NOTE_ON_64", "TIME_SHIFT_5", "NOTE_OFF_60", "TIME_SHIFT_20"):
        assert (plain.allowed() == other.allowed()).all()
        step(plain, name)
        step(other, name)


def test_too_few_gaps_heard_decide_nothing():
    grammar = grammar_after(phrase(LENGTH_DRAWS_MIN_NOTES - 2), onsets=1.0)  # 15 onsets with 60
    assert shifts_allowed(grammar) == list(range(1, V.MAX_SHIFT_STEPS + 1))


def test_no_drawn_onset_past_an_infilled_middles_end():
    """A middle of 8 steps after 60: the gap of 10 would land past its end; the middle's own
    rules decide (time is free up to the end)."""
    from musicgpt.tokenizers.infill import fim_prompt

    grammar = grammar_after(fim_prompt(PROMPT, 8, ids("VELOCITY_20", "NOTE_ON_67")), onsets=1.0)
    assert grammar.grammar.steps_to_middle_end()[0] == 8
    assert max(shifts_allowed(grammar)) == 8 and grammar.allowed()[0, V.NOTE_ON_OFFSET + 64]


def chords(n: int) -> np.ndarray:
    """n onsets of two notes, one every 10 steps; then 60 struck as the model takes over."""
    notes = [
        ids(f"NOTE_ON_{40 + i}", f"NOTE_ON_{52 + i}", "TIME_SHIFT_4", f"NOTE_OFF_{40 + i}", f"NOTE_OFF_{52 + i}",
            "TIME_SHIFT_6")
        for i in range(n)
    ]  # fmt: skip
    return np.concatenate([ids("VELOCITY_20"), *notes, ids("NOTE_ON_60")])


def grammar_with_chords(prompt, share: float, seed: int | None = 0):
    grammar = PianoSamplingGrammar(
        PerformanceTokenizer().grammar(1),
        prompt[None],
        PianoPriors(length_draws=0.0, onset_draws=0.0, chord_draws=share, longest_share=0.0),
        rng=None if seed is None else np.random.default_rng(seed),
    )
    grammar.start(None)
    return grammar


def test_a_drawn_chord_has_its_notes_before_time_moves_and_no_more():
    """Every onset of the piece struck two notes: a new onset's first note allows no shift, its
    second no third."""
    grammar = grammar_with_chords(chords(20), share=1.0)
    step(grammar, "TIME_SHIFT_10")
    step(grammar, "NOTE_ON_64")
    assert shifts_allowed(grammar) == [] and grammar.allowed()[0, V.NOTE_ON_OFFSET + 67]
    step(grammar, "NOTE_ON_67")
    allowed = grammar.allowed()[0]
    assert not (allowed & IS_ONSET_TOKEN).any() and shifts_allowed(grammar)


@pytest.mark.parametrize(
    "share, seed, onsets", [(0.0, 0, 20), (1.0, None, 20), (1.0, 0, LENGTH_DRAWS_MIN_NOTES - 2)]
)
def test_no_chord_draws_at_share_zero_without_a_generator_or_from_few_onsets(share, seed, onsets):
    """(n chords and the note struck last: n + 1 onsets heard, too few below LENGTH_DRAWS_MIN_NOTES)"""
    grammar = grammar_with_chords(chords(onsets), share=share, seed=seed)
    step(grammar, "TIME_SHIFT_10")
    step(grammar, "NOTE_ON_64")
    assert shifts_allowed(grammar)  # one note is a chord too
    step(grammar, "NOTE_ON_67")
    assert grammar.allowed()[0, V.NOTE_ON_OFFSET + 70] and shifts_allowed(grammar)


def test_what_the_draws_read_is_the_prompt_faded_by_how_long_ago():
    """60 lasts 10 steps and ends 30 before the end, 62 lasts 20 and ends 10 before, 64 still
    sounds (30 steps old); onsets at 0 (one note) and 10 (two), 40 and 30 steps before the end.
    Half-life 10 steps."""
    from musicgpt.generation.piano import MAX_CHORD, heard_lengths, heard_onsets

    prompt = ids(
        "VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_10", "NOTE_OFF_60", "NOTE_ON_62", "NOTE_ON_64", "TIME_SHIFT_20",
        "NOTE_OFF_62", "TIME_SHIFT_10",
    )  # fmt: skip
    ended, at_least = heard_lengths(prompt, 10.0, 100)
    assert ended.shape == at_least.shape == (101,)
    assert np.flatnonzero(ended).tolist() == [10, 20] and ended[[10, 20]].tolist() == [0.125, 0.5]
    assert np.flatnonzero(at_least).tolist() == [30] and at_least[30] == 1.0
    gaps, chord_counts = heard_onsets(prompt, 10.0)
    assert np.flatnonzero(gaps).tolist() == [10] and gaps[10] == 0.125
    assert chord_counts.shape == (MAX_CHORD + 1,)
    assert np.flatnonzero(chord_counts).tolist() == [1, 2] and chord_counts[[1, 2]].tolist() == [
        0.0625,
        0.125,
    ]
    ended, _ = heard_lengths(prompt, np.inf, 100)  # no fading: each note counts once
    assert ended[[10, 20]].tolist() == [1.0, 1.0]


def test_an_infilled_span_reads_its_suffix_by_how_soon_it_comes():
    """The same music as a suffix (after a NOTE_OFF of a note struck in the span, which counts
    nothing): 60 struck at 0 (weight 1), 62 at 10 (0.5), 64 at 10 still sounding at 30 steps;
    the gap 0 -> 10 counted as its earlier onset. An infill prompt's draws read both sides."""
    from musicgpt.generation.piano import heard_around, heard_lengths, heard_onsets
    from musicgpt.tokenizers.infill import fim_prompt

    suffix = ids(
        "VELOCITY_20", "NOTE_OFF_50", "NOTE_ON_60", "TIME_SHIFT_10", "NOTE_OFF_60", "NOTE_ON_62", "NOTE_ON_64",
        "TIME_SHIFT_20", "NOTE_OFF_62", "TIME_SHIFT_10",
    )  # fmt: skip
    ended, at_least = heard_lengths(suffix, 10.0, 100, ahead=True)
    assert np.flatnonzero(ended).tolist() == [10, 20] and ended[[10, 20]].tolist() == [1.0, 0.5]
    assert np.flatnonzero(at_least).tolist() == [30] and at_least[30] == 0.5
    gaps, chord_counts = heard_onsets(suffix, 10.0, ahead=True)
    assert np.flatnonzero(gaps).tolist() == [10] and gaps[10] == 1.0
    assert np.flatnonzero(chord_counts).tolist() == [1, 2] and chord_counts[[1, 2]].tolist() == [1.0, 0.5]

    prefix = ids("VELOCITY_20", "NOTE_ON_50", "TIME_SHIFT_40", "NOTE_OFF_50", "TIME_SHIFT_10")
    (ended, at_least), (gaps, chord_counts) = heard_around(fim_prompt(prefix, 100, suffix), 10.0, 100)
    assert np.flatnonzero(ended).tolist() == [10, 20, 40] and ended[[10, 20, 40]].tolist() == [1.0, 0.5, 0.5]
    assert (
        at_least[30] == 0.5 and gaps[10] == 1.0 and chord_counts[[1, 2]].tolist() == [1 + 1 / 32, 0.5]
    )  # (the prefix's onset 50 steps back)
    (alone, _), _ = heard_around(prefix, 10.0, 100)  # a continuation's prompt: itself alone
    assert np.flatnonzero(alone).tolist() == [40] and alone[40] == 0.5
