"""Piano continuations' priors from the prompt (generation/piano.py): its pitches as a prior on which
note is struck (and near an infilled span's end the pitches its suffix holds on), its silences as
the longest a continuation may fall silent, and its repeated figures (one key, two in turn) as the
most a continuation may go round one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.generation.piano import (
    DEAD_AIR_MARGIN_STEPS,
    DEAD_AIR_MIN_STEPS,
    INFILL_PITCH_PRIOR,
    INFILL_PITCH_SECONDS,
    LOOP_MARGIN_CYCLES,
    LOOP_MIN_CYCLES,
    PITCH_PRIOR_FLOOR,
    SUFFIX_PITCH_SECONDS,
    PianoPriors,
    PianoSamplingGrammar,
    continue_piano,
    cut_at_seconds,
    last_seconds,
    longest_loops,
    longest_silence_steps,
    onset_pitches,
    pitch_prior,
    pitches_around,
    trailing_loop,
)
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.infill import fim_prompt, prefix_of
from musicgpt.tokenizers.performance import PerformanceTokenizer


def notes(pitches) -> np.ndarray:
    """One note after another, 10 steps each."""
    out = [V.name_to_id("VELOCITY_20")]
    for p in pitches:
        out += [V.name_to_id(f"NOTE_ON_{p}"), V.name_to_id("TIME_SHIFT_10"), V.name_to_id(f"NOTE_OFF_{p}")]
    return np.array(out, np.int64)


def test_the_prompts_pitches_are_favoured_by_their_share_the_others_share_the_floor():
    bias = pitch_prior(notes([60] * 12 + [64] * 4), strength=0.5)
    floor = PITCH_PRIOR_FLOOR / 88
    at = lambda share: 0.5 * np.log(88 * (share + floor) / (1 + 88 * floor))  # noqa: E731
    assert bias[60] == pytest.approx(at(0.75), rel=1e-6)
    assert bias[64] == pytest.approx(at(0.25), rel=1e-6)
    # counted exactly: a neighbour of a pitch heard twelve times is as unheard as a far one
    unheard = 0.5 * np.log(PITCH_PRIOR_FLOOR / (1 + PITCH_PRIOR_FLOOR))
    assert bias[59] == bias[61] == bias[20] == bias[100] == pytest.approx(unheard, rel=1e-6)
    assert bias[60] > bias[64] > 0 > bias[61]


def test_no_pitch_prior_from_a_sparse_prompt_or_at_strength_zero():
    assert not pitch_prior(notes([60] * 15), strength=0.5).any()  # under PITCH_PRIOR_MIN_NOTES
    assert not pitch_prior(notes([60] * 16), strength=0.0).any()


def test_the_sampler_adds_it_to_the_note_ons_only():
    prompt = notes([48, 52, 55, 60] * 4)
    grammar = PianoSamplingGrammar(PerformanceTokenizer().grammar(2), np.tile(prompt, (2, 1)))
    grammar.start(None)
    bias = grammar.logit_bias()
    expected = pitch_prior(prompt, PianoPriors().pitch)
    assert np.array_equal(bias[:, V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128], np.tile(expected, (2, 1)))
    assert not bias[:, V.NOTE_ON_OFFSET + 128 :].any()  # nothing has ended: no release prior yet either


def test_a_continuation_stays_in_the_prompts_register():
    """A tiny random model strikes pitches all over the keyboard; with the prompt's pitches as a
    prior two in three of its notes (one in three without) fall in the range pineapple-rag's opening plays."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V.VOCAB_SIZE, block_size=128, n_layer=1, n_head=2, n_embd=16)).eval()
    tokenizer = PerformanceTokenizer()
    prompt = cut_at_seconds(tokenizer.encode(PIANO_DIR / "pineapple-rag.mid"), 10.0)
    heard = V.VALUE_OF_ID[prompt[V.TYPE_OF_ID[prompt] == V.EventType.NOTE_ON]]
    low, high = heard.min(), heard.max()

    def in_range(pitch: float) -> float:
        out = continue_piano(
            model,
            tokenizer,
            prompt,
            6.0,
            num_samples=4,
            seed=0,
            priors=PianoPriors(pitch=pitch, length_draws=0.0, length_draws_on_grid=0.0, longest_share=0.0),
        )
        struck = np.concatenate(
            [V.VALUE_OF_ID[s[V.TYPE_OF_ID[s] == V.EventType.NOTE_ON]] for s in out.samples]
        )
        assert struck.size > 20
        return float(np.mean((struck >= low) & (struck <= high)))

    without, with_prior = in_range(0.0), in_range(0.5)
    assert without < 0.4 and with_prior > 0.6  # 0.35 and 0.69 with these seeds


def test_an_infilled_span_hears_the_music_around_it():
    """The prefix's last and the suffix's first INFILL_PITCH_SECONDS, at the infill's weight: a
    piece that opens low and plays high on both sides of the span gives the span the high register."""
    low, high = notes([36, 38, 40, 41] * 10), notes([72, 74, 76, 77] * 40)  # 4 s low, then 16 s high
    prefix = np.concatenate([low, high[1:]])
    prompt = fim_prompt(prefix, 300, notes([79, 77, 76, 74] * 5))  # a 3 s span, then 2 s high
    assert INFILL_PITCH_SECONDS == 16.0
    around = pitches_around(prompt)
    struck = V.VALUE_OF_ID[around[V.TYPE_OF_ID[around] == V.EventType.NOTE_ON]]
    assert sorted(set(struck.tolist())) == [72, 74, 76, 77, 79]  # the low opening lies over 16 s back
    grammar = PianoSamplingGrammar(PerformanceTokenizer().grammar(1), prompt[None])
    grammar.start(None)
    bias = grammar.logit_bias()[0, V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128]
    assert np.array_equal(bias, pitch_prior(around, INFILL_PITCH_PRIOR))
    assert bias[76] > 0 > bias[38]
    # a span among fewer than PITCH_PRIOR_MIN_NOTES notes hears the whole prefix
    sparse = fim_prompt(np.concatenate([low, tokens(*["TIME_SHIFT_100"] * 17)]), 300, notes([79] * 3))
    assert np.array_equal(pitches_around(sparse), prefix_of(sparse))


# --- dead air -------------------------------------------------------------------------------------


def tokens(*names: str) -> np.ndarray:
    return np.array([V.name_to_id(x) for x in names], np.int64)


def test_longest_silence_is_between_notes_and_the_trailing_one_apart():
    ids = tokens(
        "VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_30", "NOTE_ON_64", "NOTE_OFF_60", "TIME_SHIFT_20",
        "NOTE_OFF_64", "TIME_SHIFT_50", "NOTE_ON_62", "TIME_SHIFT_10", "NOTE_OFF_62", "TIME_SHIFT_40",
    )  # fmt: skip
    assert longest_silence_steps(ids) == (50, 40)
    assert longest_silence_steps(tokens("TIME_SHIFT_40")) == (0, 40)


@pytest.mark.parametrize("rest, trailing", [(0, 0), (0, 1), (2, 1)])
def test_a_continuation_falls_silent_no_longer_than_its_prompt_did(rest, trailing):
    """Silent for the prompt's longest silence plus a margin (at least DEAD_AIR_MIN_STEPS), a row
    may no longer move time: it must strike. The prompt's own trailing silence counts. (Seconds
    of 1 s shifts, which may follow each other.)"""
    limit = max(DEAD_AIR_MIN_STEPS, 100 * rest + DEAD_AIR_MARGIN_STEPS)
    prompt = tokens("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_20", "NOTE_OFF_60", *["TIME_SHIFT_100"] * rest,
                    "NOTE_ON_62", "TIME_SHIFT_20", "NOTE_OFF_62", *["TIME_SHIFT_100"] * trailing)  # fmt: skip
    grammar = PianoSamplingGrammar(PerformanceTokenizer().grammar(1), prompt[None])
    grammar.start(None)
    shifts = slice(V.TIME_SHIFT_OFFSET, V.VELOCITY_OFFSET)
    for _ in range(limit // 100 - trailing):
        assert grammar.allowed()[0, shifts].all()
        grammar.advance(np.array([V.name_to_id("TIME_SHIFT_100")]))
    allowed = grammar.allowed()[0]  # silent for exactly `limit` steps
    assert not allowed[shifts].any() and allowed[V.NOTE_ON_OFFSET + 60]
    grammar.advance(np.array([V.name_to_id("NOTE_ON_60")]))
    assert grammar.allowed()[0, shifts].any()  # a note sounds: time may move again


# --- a stuck loop ---------------------------------------------------------------------------------


def test_loops_are_counted_in_notes_per_period():
    # releases, shifts and velocities are not notes; another key breaks a run of one
    ids = tokens(
        "VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_10", "NOTE_OFF_60", "NOTE_ON_60", "TIME_SHIFT_10",
        "NOTE_OFF_60", "VELOCITY_21", "NOTE_ON_60", "NOTE_ON_64", "TIME_SHIFT_10", "NOTE_OFF_60",
        "NOTE_OFF_64", "NOTE_ON_64", "TIME_SHIFT_10", "NOTE_OFF_64",
    )  # fmt: skip
    pitches = onset_pitches(ids)
    assert pitches.tolist() == [60, 60, 60, 64, 64]
    assert longest_loops(pitches).tolist() == [3, 3, 0, 0]  # one key repeats at every period
    trill = np.array([50, 60, 62, 60, 62, 60, 62, 71])  # 60 62 in turn: 6 notes of period 2 (and 4)
    assert longest_loops(trill).tolist() == [0, 6, 0, 6]
    assert longest_loops(np.array([], np.int64)).tolist() == [0, 0, 0, 0]
    assert [trailing_loop(trill[:-1].tolist(), d, 100) for d in (1, 2, 3)] == [0, 6, 0]
    assert trailing_loop([60] * 20, 1, 8) == 9  # counted up to the limit, then no further


@pytest.mark.parametrize("figure, prompt_cycles", [(["60"], 1), (["60"], 10), (["60", "64"], 3)])
def test_a_continuation_goes_round_a_figure_no_more_often_than_its_prompt_did(figure, prompt_cycles):
    """A figure of d notes comes round at most LOOP_MIN_CYCLES times in a row, or the prompt's
    longest run of it plus LOOP_MARGIN_CYCLES; the run the prompt ends on counts. Then the note
    that would go round again is forbidden, and only that one, until the figure is broken."""
    cycles = max(LOOP_MIN_CYCLES, prompt_cycles + LOOP_MARGIN_CYCLES)

    def strike(pitch: str) -> list[str]:
        return [f"NOTE_ON_{pitch}", "TIME_SHIFT_10", f"NOTE_OFF_{pitch}"]

    prompt = tokens(
        "VELOCITY_20", *strike("62"), *[t for _ in range(prompt_cycles) for p in figure for t in strike(p)]
    )
    grammar = PianoSamplingGrammar(PerformanceTokenizer().grammar(1), prompt[None])
    grammar.start(None)
    for _ in range(cycles - prompt_cycles):
        for pitch in figure:
            assert grammar.allowed()[0, V.name_to_id(f"NOTE_ON_{pitch}")]
            for name in strike(pitch):
                grammar.advance(np.array([V.name_to_id(name)]))
    allowed = grammar.allowed()[0]  # the figure came round `cycles` times in a row
    again = V.name_to_id(f"NOTE_ON_{figure[0]}")
    assert not allowed[again] and allowed[V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128].sum() == 127
    grammar.advance(np.array([V.name_to_id("NOTE_ON_62")]))
    assert grammar.allowed()[0, again]  # broken: the figure's note may be struck again


def test_last_seconds_are_the_events_from_that_time_on():
    ids = tokens("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_100", "NOTE_OFF_60", "NOTE_ON_62", "TIME_SHIFT_50")
    assert last_seconds(ids, 0.5).tolist() == tokens("NOTE_OFF_60", "NOTE_ON_62", "TIME_SHIFT_50").tolist()
    assert last_seconds(ids, 1.5).tolist() == ids.tolist()
    assert last_seconds(ids[:0], 1.0).size == 0


def test_near_a_spans_end_the_pitches_its_suffix_holds_on_are_favoured_until_struck():
    """The suffix holds 67 on for 0.5 s (it must sound when the span ends) and ends 72 at once (the
    middle's choice): in the span's last SUFFIX_PITCH_SECONDS only 67's NOTE_ON gains the factor,
    and once struck it no longer does."""
    suffix = tokens(
        "VELOCITY_20", "NOTE_OFF_72", "TIME_SHIFT_50", "NOTE_OFF_67", "NOTE_ON_60", "TIME_SHIFT_10"
    )
    prefix = notes([60] * 16)

    def bias_at_start(gap_steps: int, strength: float) -> tuple[PianoSamplingGrammar, np.ndarray]:
        grammar = PianoSamplingGrammar(
            PerformanceTokenizer().grammar(1),
            fim_prompt(prefix, gap_steps, suffix)[None],
            PianoPriors(suffix_pitches=strength),
        )
        grammar.start(None)
        return grammar, grammar.logit_bias()[0, V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128]

    assert SUFFIX_PITCH_SECONDS == 1.0
    _, without = bias_at_start(100, 0.0)
    grammar, late = bias_at_start(100, 2.0)  # the span is its last second
    assert late[67] == pytest.approx(without[67] + 2.0)
    assert np.array_equal(np.delete(late, 67), np.delete(without, 67))  # 72 and the rest unchanged
    _, early = bias_at_start(101, 2.0)  # a step longer: not yet
    assert np.array_equal(early, bias_at_start(101, 0.0)[1])
    grammar.advance(tokens("NOTE_ON_67"))
    assert np.array_equal(grammar.logit_bias()[0, V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128], without)
