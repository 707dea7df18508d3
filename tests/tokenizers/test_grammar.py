"""The generation grammar: one test per rule, then the encoder's real output must satisfy it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MULTITRACK_FILES, PIANO_FILES

from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.base import LogitsMask
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.vocab import ID_NAMES, name_to_id

TOK = PerformanceTokenizer()


def grammar_after(text: str, tok=TOK, batch: int = 1):
    g = tok.grammar(batch)
    ids = np.array([[name_to_id(n) for n in text.split()]] * batch, np.int64).reshape(batch, -1)
    g.start(ids)
    return g


def allowed_names(g, row: int = 0) -> set[str]:
    return {ID_NAMES[i] for i in np.flatnonzero(g.allowed()[row])}


def kinds(g, row: int = 0) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in allowed_names(g, row):
        kind = name.rsplit("_", 1)[0] if name[-1].isdigit() else name
        out[kind] = out.get(kind, 0) + 1
    return out


def test_is_a_logits_mask_with_the_right_shape():
    g = TOK.grammar(3)
    for method in ("start", "allowed", "advance"):
        assert callable(getattr(g, method)) and method in vars(LogitsMask)
    g.start(np.zeros((3, 0), np.int64))
    m = g.allowed()
    assert m.shape == (3, V.VOCAB_SIZE) and m.dtype == bool


def test_at_the_start():
    assert kinds(grammar_after("")) == {"NOTE_ON": 128, "TIME_SHIFT": 100, "VELOCITY": 32, "EOS": 1}


def test_note_off_only_for_sounding_pitches_and_no_second_voice():
    g = grammar_after("NOTE_ON_60 NOTE_ON_64 TIME_SHIFT_10")
    names = allowed_names(g)
    assert {n for n in names if n.startswith("NOTE_OFF")} == {"NOTE_OFF_60", "NOTE_OFF_64"}
    assert "NOTE_ON_60" not in names and "NOTE_ON_61" in names
    g.advance(np.array([name_to_id("NOTE_OFF_60")]))
    assert "NOTE_ON_60" in allowed_names(g) and "NOTE_OFF_60" not in allowed_names(g)


def test_no_note_off_at_the_step_of_a_note_on():
    g = grammar_after("NOTE_ON_60 TIME_SHIFT_10 NOTE_ON_64")
    names = allowed_names(g)
    assert not any(n.startswith("NOTE_OFF") for n in names)
    assert "TIME_SHIFT_1" in names and "NOTE_ON_67" in names


def test_velocity_then_only_note_on_and_never_the_same_bin():
    g = grammar_after("VELOCITY_20")
    assert kinds(g) == {"NOTE_ON": 128}
    g.advance(np.array([name_to_id("NOTE_ON_60")]))
    names = allowed_names(g)
    assert "VELOCITY_20" not in names and "VELOCITY_21" in names and "VELOCITY_1" in names


def test_no_time_shift_after_a_short_one():
    assert kinds(grammar_after("TIME_SHIFT_40")).get("TIME_SHIFT", 0) == 0
    assert kinds(grammar_after("TIME_SHIFT_100"))["TIME_SHIFT"] == 100


def test_notes_end_within_max_note_seconds():
    tok = PerformanceTokenizer(max_note_seconds=0.5)
    g = grammar_after("NOTE_ON_60 TIME_SHIFT_30", tok)
    shifts = sorted(int(n.split("_")[-1]) for n in allowed_names(g) if n.startswith("TIME_SHIFT"))
    assert shifts == []  # right after a short shift
    g = grammar_after("NOTE_ON_60 TIME_SHIFT_30 NOTE_ON_62", tok)
    shifts = sorted(int(n.split("_")[-1]) for n in allowed_names(g) if n.startswith("TIME_SHIFT"))
    assert shifts == list(range(1, 21))  # 60 has 20 steps left
    g.advance(np.array([name_to_id("TIME_SHIFT_20")]))
    assert allowed_names(g) == {"NOTE_OFF_60"}  # overdue: only its NOTE_OFF
    g.advance(np.array([name_to_id("NOTE_OFF_60")]))
    assert "NOTE_OFF_62" in allowed_names(g) and "TIME_SHIFT_30" in allowed_names(g)


def test_polyphony_cap():
    g = grammar_after("NOTE_ON_60 NOTE_ON_62", PerformanceTokenizer(max_polyphony=2))
    assert kinds(g) == {"TIME_SHIFT": 100}  # offs wait for the next step
    g.advance(np.array([name_to_id("TIME_SHIFT_100")]))
    assert kinds(g) == {"NOTE_OFF": 2, "TIME_SHIFT": 100}


def test_eos_only_when_silent_and_it_resets_the_row():
    assert "EOS" not in allowed_names(grammar_after("NOTE_ON_60"))
    assert "EOS" not in allowed_names(grammar_after("VELOCITY_3"))
    g = grammar_after("VELOCITY_20 NOTE_ON_60 TIME_SHIFT_10 NOTE_OFF_60")
    assert "EOS" in allowed_names(g) and "VELOCITY_20" not in allowed_names(g)
    g.advance(np.array([V.EOS_ID]))
    assert kinds(g) == kinds(grammar_after(""))


def test_pad_never():
    g = TOK.grammar(2)
    g.start(np.array([[V.PAD_ID, 60], [61, 62]]))
    assert not g.allowed()[:, V.PAD_ID].any()


def test_rows_are_independent():
    g = TOK.grammar(2)
    g.start(
        np.array(
            [
                [name_to_id("NOTE_ON_60"), name_to_id("TIME_SHIFT_5")],
                [name_to_id("VELOCITY_9"), name_to_id("NOTE_ON_70")],
            ]
        )
    )
    assert "NOTE_OFF_60" in allowed_names(g, 0) and "NOTE_OFF_60" not in allowed_names(g, 1)
    assert "NOTE_OFF_70" not in allowed_names(g, 1)  # same step as its NOTE_ON
    assert "VELOCITY_9" in allowed_names(g, 0) and "VELOCITY_9" not in allowed_names(g, 1)


def test_prompt_with_stray_tokens_is_taken_as_it_comes():
    g = grammar_after("NOTE_OFF_60 NOTE_ON_60 NOTE_ON_60 VELOCITY_4 VELOCITY_4 TIME_SHIFT_3 TIME_SHIFT_3")
    assert g.n_sounding[0] == 1 and g.clock[0] == 6
    assert allowed_names(g) & {"NOTE_OFF_60"}


def test_bad_prompts():
    with pytest.raises(ValueError, match="prompt must be"):
        TOK.grammar(2).start(np.zeros((3, 4), np.int64))
    with pytest.raises(V.TokenIdError, match="token id 393"):
        TOK.grammar(1).start(np.array([[1, 393]]))


@pytest.mark.parametrize(
    "paths",
    [(PIANO_FILES[2], PIANO_FILES[9]), (PIANO_FILES[13], MULTITRACK_FILES[1])],
    ids=lambda ps: ps[0].name,
)
def test_the_encoders_output_is_always_allowed(paths):
    # every real token must be allowed when it comes (grammar limits set beyond the data's)
    tok = PerformanceTokenizer(max_note_seconds=600.0, max_polyphony=127)
    rows = np.stack([tok.encode(p)[:1500] for p in paths]).astype(np.int64)
    g = tok.grammar(2)
    g.start(rows[:, :0])
    for t in range(rows.shape[1]):
        forbidden = ~g.allowed()[[0, 1], rows[:, t]]
        assert not forbidden.any(), f"{[ID_NAMES[i] for i in rows[forbidden, t]]} at {t} forbidden"
        g.advance(rows[:, t])


def test_something_is_always_allowed_under_random_sampling():
    tok = PerformanceTokenizer(max_note_seconds=0.3, max_polyphony=3)
    g = tok.grammar(4)
    g.start(np.zeros((4, 0), np.int64))
    rng = np.random.default_rng(0)
    for _ in range(3000):
        m = g.allowed()
        assert m.any(1).all()
        g.advance((rng.random(m.shape) * m).argmax(1))


def test_spread_points_note_off_mass_at_the_notes_sounding_longest():
    g = grammar_after("VELOCITY_20 NOTE_ON_60 TIME_SHIFT_50 NOTE_ON_64 TIME_SHIFT_10 NOTE_ON_67 NOTE_OFF_67")
    spread = g.spread()
    offs = spread[0, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128]
    assert offs[60] == 61 and offs[64] == 11  # steps since each NOTE_ON, plus one
    assert offs[67] == 0 and np.count_nonzero(offs) == 2  # ended, and never struck: nothing
    others = np.delete(spread[0], np.arange(V.NOTE_OFF_OFFSET, V.NOTE_OFF_OFFSET + 128))
    assert (others == -1).all()  # every other event type: in proportion to the model


def test_release_bias_is_the_odds_that_a_note_of_the_piece_would_be_over():
    # two notes heard, of 20 and 40 steps; then one sounding for 10 steps
    g = grammar_after(
        "VELOCITY_20 NOTE_ON_48 TIME_SHIFT_20 NOTE_OFF_48 NOTE_ON_50 TIME_SHIFT_40 NOTE_OFF_50 "
        "NOTE_ON_60 TIME_SHIFT_10"
    )
    bias = g.release_bias(1.0)[0]
    assert bias[V.NOTE_OFF_OFFSET + 60] == 0  # at 10 steps no heard note was over: the model alone
    assert np.count_nonzero(bias) == 0  # and nothing else has a prior
    g.advance([V.name_to_id("TIME_SHIFT_10")])
    # at 20 steps one of two was over: odds 1 / (2 - 1 + 1)
    assert g.release_bias(2.0)[0, V.NOTE_OFF_OFFSET + 60] == pytest.approx(np.log(1 + 2 * 0.5))
    g.advance([V.name_to_id("TIME_SHIFT_30")])
    # at 50 steps both were: odds 2 / (2 - 2 + 1)
    bias = g.release_bias(1.0)[0]
    assert bias[V.NOTE_OFF_OFFSET + 60] == pytest.approx(np.log(3))
    assert np.count_nonzero(bias) == 1


def test_release_bias_is_zero_before_any_note_has_ended_and_at_strength_zero():
    g = grammar_after("VELOCITY_20 NOTE_ON_60 TIME_SHIFT_50")
    assert (g.release_bias(1.0) == 0).all()
    g.advance([V.name_to_id("NOTE_OFF_60")])
    g.advance([V.name_to_id("NOTE_ON_62")])
    g.advance([V.name_to_id("TIME_SHIFT_60")])  # longer than the one note heard
    assert (g.release_bias(0.0) == 0).all()
    assert g.release_bias(1.0).any()


def _logit(h: float) -> float:
    return float(np.log(h) - np.log1p(-h))


def test_onset_bias_is_the_logit_of_the_piece_hazard_of_striking_now():
    from musicgpt.tokenizers.grammar import MIN_GAPS_HEARD, ONSET_PRIOR_HAZARD, ONSET_PRIOR_WEIGHT

    # a grid: MIN_GAPS_HEARD gaps of exactly 15 steps, chords of two notes (one onset each)
    beats = ["NOTE_ON_60 NOTE_ON_64 TIME_SHIFT_15 NOTE_OFF_60 NOTE_OFF_64"] * (MIN_GAPS_HEARD + 1)
    g = grammar_after("VELOCITY_20 " + " ".join(beats))
    onsets = (V.TYPE_OF_ID == V.EventType.NOTE_ON) | (V.TYPE_OF_ID == V.EventType.VELOCITY)
    n = MIN_GAPS_HEARD
    # 15 steps since the last onset: every gap lies within 14-16, spread over those 3 steps
    bias = g.onset_bias(1.0)[0]
    # against the piece's mean rate: one onset in 15 steps
    on_grid = _logit((n / 3 + ONSET_PRIOR_WEIGHT * ONSET_PRIOR_HAZARD) / (n + ONSET_PRIOR_WEIGHT)) - _logit(
        1 / 15
    )
    assert bias[onsets] == pytest.approx(on_grid) and (bias[~onsets] == 0).all()
    # a note now (0 steps) is part of the chord: no prior; 8 steps in: between the grid's points
    g.advance([V.name_to_id("NOTE_ON_67")])
    assert (g.onset_bias(1.0) == 0).all()
    g.advance([V.name_to_id("TIME_SHIFT_8")])
    off_grid = _logit(ONSET_PRIOR_WEIGHT * ONSET_PRIOR_HAZARD / (n + 1 + ONSET_PRIOR_WEIGHT)) - _logit(1 / 15)
    assert g.onset_bias(2.0)[0, V.name_to_id("NOTE_ON_72")] == pytest.approx(2 * off_grid)
    assert off_grid < -2.5 and on_grid > 1.5  # between the grid's points held back, on them pressed


def test_onset_bias_waits_for_enough_gaps_and_is_zero_at_strength_zero():
    from musicgpt.tokenizers.grammar import MIN_GAPS_HEARD

    g = grammar_after("VELOCITY_20 " + "NOTE_ON_60 TIME_SHIFT_15 NOTE_OFF_60 " * MIN_GAPS_HEARD)
    assert (g.onset_bias(1.0) == 0).all()  # MIN_GAPS_HEARD onsets: one gap too few
    g.advance([V.name_to_id("NOTE_ON_60")])
    g.advance([V.name_to_id("TIME_SHIFT_15")])
    assert g.onset_bias(1.0).any() and not g.onset_bias(0.0).any()
    g.advance([V.EOS_ID])  # a new piece: nothing heard
    assert (g.onset_bias(1.0) == 0).all()
