"""The piece's note lengths deciding a share of a continuation's releases (generation/piano.py,
`PianoPriors.length_draws`): their hazard over each move of time, the notes it ends (only their
NOTE_OFFs allowed) and the notes it keeps (their NOTE_OFFs given no mass) until time moves again."""

from __future__ import annotations

import numpy as np
import pytest

from musicgpt.generation.piano import (
    LENGTH_DRAWS_MIN_NOTES,
    PianoPriors,
    PianoSamplingGrammar,
    release_chances,
)
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

OFFS = slice(V.NOTE_OFF_OFFSET, V.NOTE_OFF_OFFSET + 128)


def ids(*names: str) -> np.ndarray:
    return np.array([V.name_to_id(n) for n in names], np.int64)


def test_release_chances_are_the_pieces_hazard_over_the_move():
    heard = np.zeros(11, np.int64)
    heard[[2, 4, 8]] = [1, 1, 2]  # notes of 2, 4, 8 and 8 steps
    # age 2 from 0: 1 of 4 over; 4 from 2: 1 of the 3 longer than 2; 8 from 6: both left end
    assert release_chances(heard, np.array([2, 4, 8]), 2).tolist() == [0.25, 1 / 3, 1.0]
    assert release_chances(heard, np.array([1, 3]), 1).tolist() == [0.0, 0.0]  # none ends at 1 or 3
    assert release_chances(heard, np.array([10]), 1).tolist() == [1.0]  # older than every note heard


def grammar_after(prompt: np.ndarray, share: float, seed: int | None = 0, batch: int = 1):
    rng = None if seed is None else np.random.default_rng(seed)
    grammar = PianoSamplingGrammar(
        PerformanceTokenizer().grammar(batch),
        np.tile(prompt, (batch, 1)),
        PianoPriors(length_draws=share),
        rng=rng,
    )
    grammar.start(None)
    return grammar


def step(grammar, name: str) -> None:
    grammar.advance(np.full(grammar.grammar.batch_size, V.name_to_id(name)))


# A prompt of notes that all last 10 steps, then one struck: 60, sounding at age 0.
PROMPT = np.concatenate(
    [ids("VELOCITY_20"), *[ids(f"NOTE_ON_{p}", "TIME_SHIFT_10", f"NOTE_OFF_{p}") for p in range(40, 60)],
     ids("NOTE_ON_60")]
)  # fmt: skip


def test_a_note_the_piece_would_keep_has_no_release_until_time_moves():
    grammar = grammar_after(PROMPT, share=1.0)
    step(grammar, "TIME_SHIFT_5")  # age 5: no note of the piece ends before 10
    assert grammar.logit_bias()[0, V.NOTE_OFF_OFFSET + 60] == -np.inf
    assert grammar.allowed()[0, V.NOTE_OFF_OFFSET + 60]  # allowed: a factor of 0, not the mask
    grammar.grammar.release_after_onsets[:] = True  # (a grid's: releases may follow the onsets)
    step(grammar, "NOTE_ON_64")
    assert grammar.allowed()[0, V.NOTE_OFF_OFFSET + 60]
    assert grammar.logit_bias()[0, V.NOTE_OFF_OFFSET + 60] == -np.inf  # kept for the whole step


def test_a_note_the_piece_would_end_is_released_first():
    grammar = grammar_after(PROMPT, share=1.0)
    step(grammar, "TIME_SHIFT_5")
    step(grammar, "NOTE_ON_64")
    step(grammar, "TIME_SHIFT_5")  # 60 at age 10: every note of the piece is over; 64 at age 5
    allowed = grammar.allowed()[0]
    assert np.flatnonzero(allowed).tolist() == [V.NOTE_OFF_OFFSET + 60]
    step(grammar, "NOTE_OFF_60")  # once it has ended, the rest of the step is the model's again
    allowed = grammar.allowed()[0]
    assert allowed[V.NOTE_ON_OFFSET + 70] and allowed[V.name_to_id("TIME_SHIFT_5")]
    assert allowed[V.NOTE_OFF_OFFSET + 64] and grammar.logit_bias()[0, V.NOTE_OFF_OFFSET + 64] == -np.inf


def test_the_share_decides_how_many_notes_the_piece_decides():
    """With share s, each note's release is the piece's with probability s: over many rows, the
    share of notes it kept at age 5 (where its hazard is 0) is about s."""
    batch = 2000
    for share in (0.0, 0.5):
        grammar = grammar_after(PROMPT, share=share, batch=batch)
        step(grammar, "TIME_SHIFT_5")
        kept = grammar.logit_bias()[:, V.NOTE_OFF_OFFSET + 60] == -np.inf
        assert abs(kept.mean() - share) < 0.05


@pytest.mark.parametrize("share, seed", [(0.0, 0), (1.0, None)])
def test_no_draws_at_share_zero_or_without_a_generator(share, seed):
    """Share 0, or no generator (evaluate --copy-gap scores a distribution, it draws nothing): the
    same mask and priors as before, token for token."""
    plain = grammar_after(PROMPT, share=0.0, seed=None)
    other = grammar_after(PROMPT, share=share, seed=seed)
    for name in ("TIME_SHIFT_5", "NOTE_ON_64", "TIME_SHIFT_5", "TIME_SHIFT_20"):
        step(plain, name)
        step(other, name)
        assert (plain.allowed() == other.allowed()).all()
        assert (plain.logit_bias() == other.logit_bias()).all()


def test_too_few_lengths_heard_decide_nothing():
    few = LENGTH_DRAWS_MIN_NOTES - 1
    prompt = np.concatenate(
        [ids("VELOCITY_20"), *[ids(f"NOTE_ON_{40 + i}", "TIME_SHIFT_10", f"NOTE_OFF_{40 + i}") for i in range(few)],
         ids("NOTE_ON_60")]
    )  # fmt: skip
    grammar = grammar_after(prompt, share=1.0)
    step(grammar, "TIME_SHIFT_20")  # older than every note heard, but too few were heard
    assert grammar.allowed()[0, V.NOTE_ON_OFFSET + 70]
    assert np.isfinite(grammar.logit_bias()[0, OFFS]).all()


def test_in_an_infilled_middle_the_notes_the_suffix_ends_are_left_alone():
    """60 and 72 sound from the prefix; the suffix ends 60 (it may sound on into it), not 72. Both
    are older than every note heard: the piece ends 72, and leaves 60 to the model."""
    from musicgpt.tokenizers.infill import fim_prompt

    prefix = np.concatenate([PROMPT[:-1], ids("NOTE_ON_60", "NOTE_ON_72", "TIME_SHIFT_5")])
    suffix = ids("VELOCITY_20", "TIME_SHIFT_20", "NOTE_OFF_60", "NOTE_ON_67")
    grammar = grammar_after(fim_prompt(prefix, 150, suffix), share=1.0)
    step(grammar, "TIME_SHIFT_20")  # both 25 steps old, the piece's notes all 10
    assert np.flatnonzero(grammar.allowed()[0]).tolist() == [V.NOTE_OFF_OFFSET + 72]
    step(grammar, "NOTE_OFF_72")
    assert grammar.allowed()[0, V.NOTE_OFF_OFFSET + 60] and np.isfinite(grammar.logit_bias()[0, OFFS]).all()
