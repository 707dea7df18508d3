"""The piece's note lengths deciding a share of a continuation's releases (generation/piano.py,
`PianoPriors.length_draws`): a note's length drawn from the piece's when it is struck, its
NOTE_OFF held back until then (no mass), then due first, and no time moving past it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicgpt.generation.piano import (
    LENGTH_DRAWS_MIN_NOTES,
    PianoPriors,
    PianoSamplingGrammar,
    draw_length,
    longest_length,
)
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

OFFS = slice(V.NOTE_OFF_OFFSET, V.NOTE_OFF_OFFSET + 128)


def ids(*names: str) -> np.ndarray:
    return np.array([V.name_to_id(n) for n in names], np.int64)


def test_a_drawn_length_is_one_heard_longer_than_the_age_in_proportion():
    heard = np.zeros(11, np.int64)
    heard[[2, 4, 8]] = [1, 1, 2]  # notes of 2, 4, 8 and 8 steps
    rng = np.random.default_rng(0)
    draws = np.array([draw_length(heard, 0, rng) for _ in range(4000)])
    assert set(draws.tolist()) == {2, 4, 8}
    assert np.allclose([(draws == k).mean() for k in (2, 4, 8)], [0.25, 0.25, 0.5], atol=0.03)
    from_3 = np.array([draw_length(heard, 3, rng) for _ in range(3000)])  # 4 or 8: 1 to 2
    assert set(from_3.tolist()) == {4, 8} and abs((from_3 == 8).mean() - 2 / 3) < 0.03
    assert {draw_length(heard, 4, rng) for _ in range(50)} == {8}
    assert draw_length(heard, 8, rng) == 8  # older than every note heard: over now
    assert draw_length(heard, 10, rng) == 10


SIX_SIX = np.zeros(11)
SIX_SIX[6] = 2  # two notes sounding, 6 steps old


def test_notes_still_sounding_count_as_at_least_their_age():
    """Kaplan-Meier: 2 notes ended after 2 steps, 2 sound 6 steps old. Ended lengths alone say 2;
    with the sounding ones, half the notes outlast every ended one: left open (the model's)."""
    heard = np.zeros(11, np.int64)
    heard[2] = 2
    rng = np.random.default_rng(0)
    alone = {draw_length(heard, 0, rng) for _ in range(100)}
    assert alone == {2}
    draws = [draw_length(heard, 0, rng, at_least=SIX_SIX) for _ in range(4000)]
    assert abs(np.mean([d is None for d in draws]) - 0.5) < 0.03
    assert {d for d in draws if d is not None} == {2}
    # a note older than the ended ones but not the sounding: left open
    assert draw_length(heard, 4, rng, at_least=SIX_SIX) is None
    # older than all of them: over now
    assert draw_length(heard, 7, rng, at_least=SIX_SIX) == 7


def grammar_after(
    prompt: np.ndarray, share: float, seed: int | None = 0, batch: int = 1, longest_share: float = 0.0
):
    rng = None if seed is None else np.random.default_rng(seed)
    grammar = PianoSamplingGrammar(
        PerformanceTokenizer().grammar(batch),
        np.tile(prompt, (batch, 1)),
        # the lengths alone
        PianoPriors(length_draws=share, onset_draws=0.0, chord_draws=0.0, longest_share=longest_share),
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


def test_a_note_sounds_for_its_drawn_length_then_ends_first():
    """60 was struck as the model takes over, and every note of the piece lasted 10 steps: its
    NOTE_OFF has no mass for 10 steps (a factor of 0, not the mask), no shift passes its end,
    and then it is all the grammar allows."""
    grammar = grammar_after(PROMPT, share=1.0)
    step(grammar, "TIME_SHIFT_5")
    assert grammar.logit_bias()[0, V.NOTE_OFF_OFFSET + 60] == -np.inf
    assert grammar.allowed()[0, V.NOTE_OFF_OFFSET + 60]
    step(grammar, "NOTE_ON_64")  # struck now: its own length drawn, 10
    shifts = np.flatnonzero(grammar.allowed()[0, V.TIME_SHIFT_OFFSET : V.VELOCITY_OFFSET]) + 1
    assert shifts.max() == 5  # up to 60's release, not past it
    step(grammar, "TIME_SHIFT_5")  # 60 is 10 steps old, 64 5
    assert np.flatnonzero(grammar.allowed()[0]).tolist() == [V.NOTE_OFF_OFFSET + 60]
    step(grammar, "NOTE_OFF_60")  # once it has ended, the rest of the step is the model's again
    allowed = grammar.allowed()[0]
    assert allowed[V.NOTE_ON_OFFSET + 70] and allowed[V.name_to_id("TIME_SHIFT_5")]
    assert not allowed[V.name_to_id("TIME_SHIFT_6")]  # 64 ends in 5
    assert allowed[V.NOTE_OFF_OFFSET + 64] and grammar.logit_bias()[0, V.NOTE_OFF_OFFSET + 64] == -np.inf


def test_a_shift_the_model_meant_past_a_release_stops_at_it():
    """The mass of every shift that would pass the drawn release goes to the one that reaches it
    (the model meant nothing to happen before then), the shorter ones keep theirs."""
    grammar = grammar_after(PROMPT, share=1.0)
    step(grammar, "TIME_SHIFT_3")
    step(grammar, "NOTE_ON_64")  # 7 steps to 60's release
    logits = torch.zeros(1, V.VOCAB_SIZE)
    folded = grammar.fold_logits(logits)[0]
    to_release = V.name_to_id("TIME_SHIFT_7")
    assert folded[to_release].item() == pytest.approx(np.log(V.MAX_SHIFT_STEPS - 6), rel=1e-5)
    assert folded[V.name_to_id("TIME_SHIFT_6")].item() == 0.0


def test_after_the_release_the_rest_of_the_models_shift_follows():
    """The model means to wait 50 steps; 60 and 64 (struck together) end at 10 by the piece's
    lengths: time stops there, both end, then the other 40 steps and nothing else."""
    grammar = grammar_after(PROMPT, share=1.0)
    step(grammar, "NOTE_ON_64")
    logits = torch.full((1, V.VOCAB_SIZE), -30.0)
    logits[0, V.name_to_id("TIME_SHIFT_50")] = 0.0
    folded = grammar.fold_logits(logits)[0]
    assert folded.argmax().item() == V.name_to_id("TIME_SHIFT_10")
    step(grammar, "TIME_SHIFT_10")
    assert np.flatnonzero(grammar.allowed()[0]).tolist() == [V.NOTE_OFF_OFFSET + 60, V.NOTE_OFF_OFFSET + 64]
    step(grammar, "NOTE_OFF_60")
    step(grammar, "NOTE_OFF_64")
    assert np.flatnonzero(grammar.allowed()[0]).tolist() == [V.name_to_id("TIME_SHIFT_40")]
    step(grammar, "TIME_SHIFT_40")
    allowed = grammar.allowed()[0]
    assert allowed[V.NOTE_ON_OFFSET + 70] and allowed[V.name_to_id("VELOCITY_24")]  # the model's again


def test_the_share_decides_how_many_notes_the_piece_decides():
    """With share s, each note's length is the piece's with probability s: over many rows, the
    share of rows holding 60's release back is about s."""
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
    """60 and 72 sound from the prefix, 5 steps old; the suffix ends 60 (it may sound on into
    it), not 72. The piece's notes all lasted 10: 72 ends in 5 steps, 60 is left to the model."""
    from musicgpt.tokenizers.infill import fim_prompt

    prefix = np.concatenate([PROMPT[:-1], ids("NOTE_ON_60", "NOTE_ON_72", "TIME_SHIFT_5")])
    suffix = ids("VELOCITY_20", "TIME_SHIFT_20", "NOTE_OFF_60", "NOTE_ON_67")
    grammar = grammar_after(fim_prompt(prefix, 150, suffix), share=1.0)
    step(grammar, "TIME_SHIFT_5")
    assert np.flatnonzero(grammar.allowed()[0]).tolist() == [V.NOTE_OFF_OFFSET + 72]
    step(grammar, "NOTE_OFF_72")
    assert grammar.allowed()[0, V.NOTE_OFF_OFFSET + 60] and np.isfinite(grammar.logit_bias()[0, OFFS]).all()
    assert grammar.allowed()[0, V.name_to_id("TIME_SHIFT_100")]  # no release ahead: time is free


def test_no_drawn_release_past_an_infilled_middles_end():
    """A note struck 3 steps before the middle's end: the end's own rules decide it."""
    from musicgpt.tokenizers.infill import fim_prompt

    grammar = grammar_after(fim_prompt(PROMPT[:-1], 20, ids("VELOCITY_20", "NOTE_ON_67")), share=1.0)
    step(grammar, "TIME_SHIFT_17")
    step(grammar, "VELOCITY_20")
    step(grammar, "NOTE_ON_64")
    assert grammar.grammar.steps_to_middle_end()[0] == 3
    assert np.isfinite(grammar.logit_bias()[0, OFFS]).all()


def test_the_longest_length_is_where_all_but_the_share_have_ended():
    """Notes of 2, 4, 8 and 8 steps: a quarter outlasts 4 steps... none 8. Sounding notes older
    than every ended one leave it open (half the notes outlast all ended); a share of 0, none."""
    heard = np.zeros(11)
    heard[[2, 4, 8]] = [1, 1, 2]
    assert longest_length(heard, np.zeros(11), 0.01) == 8
    assert longest_length(heard, np.zeros(11), 0.6) == 4  # half outlast 4 steps: under 0.6
    assert longest_length(heard, np.zeros(11), 0.0) is None
    two = np.zeros(11)
    two[2] = 2
    assert longest_length(two, SIX_SIX, 0.01) is None
    assert longest_length(two, SIX_SIX, 0.6) == 2


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_no_note_outlasts_the_pieces_longest(share):
    """Every note of the piece lasted 10 steps: 60, struck as the model takes over, ends by then
    whether its length was drawn (share 1) or is the model's (share 0: its NOTE_OFF keeps its
    mass, and is all there is once 60 is 10 steps old)."""
    grammar = grammar_after(PROMPT, share=share, longest_share=0.01)
    step(grammar, "TIME_SHIFT_5")
    assert (grammar.logit_bias()[0, V.NOTE_OFF_OFFSET + 60] == -np.inf) == (share == 1.0)
    step(grammar, "NOTE_ON_64")  # (a shift follows a shift only after the longest)
    shifts = np.flatnonzero(grammar.allowed()[0, V.TIME_SHIFT_OFFSET : V.VELOCITY_OFFSET]) + 1
    assert shifts.max() == 5  # up to 60's end, not past it
    step(grammar, "TIME_SHIFT_5")
    assert np.flatnonzero(grammar.allowed()[0]).tolist() == [V.NOTE_OFF_OFFSET + 60]
    # greedy decoding and the copy gap (no generator): no end but the model's
    unheld = grammar_after(PROMPT, share=share, seed=None, longest_share=0.01)
    step(unheld, "TIME_SHIFT_5")
    step(unheld, "NOTE_ON_64")
    assert unheld.allowed()[0, V.name_to_id("TIME_SHIFT_20")]
