"""The fill-in-the-middle format: cuts that last exactly their time, splices that give the piece
back note for note, and the grammar's infill state, rule by rule and on real middles."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PIANO_DIR

from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.infill import (
    cut_at,
    cut_piece,
    expected_at_end,
    fim_prompt,
    fim_sequence,
    merge_shifts,
    prefix_last,
    splice,
    suffix_of,
)
from musicgpt.tokenizers.performance import PerformanceTokenizer

TOK = PerformanceTokenizer()
# limits beyond the data's, as the grammar test of the encoder's output: MAESTRO holds a few notes over 10 s
ROOMY = PerformanceTokenizer(max_note_seconds=600.0, max_polyphony=127)
PIECES = ["Maestro_3.mid", "6338816_Etude No. 4.mid", "fur-elise.mid"]


def n(*names: str) -> np.ndarray:
    return np.array([V.name_to_id(x) for x in names], np.int64)


def same_notes(a, b) -> bool:
    return (
        np.array_equal(a.pitch, b.pitch)
        and np.array_equal(a.velocity, b.velocity)
        and np.allclose(a.start, b.start)
        and np.allclose(a.end, b.end)
    )


def test_a_cut_splits_the_shift_across_it_and_keeps_offs_at_the_start_before():
    ids = n("NOTE_ON_60", "TIME_SHIFT_50", "NOTE_OFF_60", "NOTE_ON_62", "TIME_SHIFT_100", "NOTE_OFF_62")
    before, after = cut_at(ids, 20)
    assert before.tolist() == n("NOTE_ON_60", "TIME_SHIFT_20").tolist()
    assert (
        after.tolist()
        == n("TIME_SHIFT_30", "NOTE_OFF_60", "NOTE_ON_62", "TIME_SHIFT_100", "NOTE_OFF_62").tolist()
    )
    before, after = cut_at(ids, 50, offs_before=True)
    assert before.tolist() == n("NOTE_ON_60", "TIME_SHIFT_50", "NOTE_OFF_60").tolist()
    before, after = cut_at(ids, 50)
    assert after[0] == V.name_to_id("NOTE_OFF_60")
    padded = [*ids.tolist(), *n("TIME_SHIFT_100", "TIME_SHIFT_100", "TIME_SHIFT_50").tolist()]
    assert cut_at(ids, 400)[0].tolist() == padded  # 150 steps long: 250 more
    assert merge_shifts(
        n("TIME_SHIFT_3", "TIME_SHIFT_38", "NOTE_ON_1", "TIME_SHIFT_70", "TIME_SHIFT_70")
    ).tolist() == (n("TIME_SHIFT_41", "NOTE_ON_1", "TIME_SHIFT_100", "TIME_SHIFT_40").tolist())


def test_the_format_by_hand():
    # 60 held across the span; 64 struck in it and ended in the suffix; 67 struck in the suffix
    ids = n(
        "VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_50",
        "VELOCITY_24", "NOTE_ON_64", "TIME_SHIFT_100",
        "NOTE_OFF_60", "NOTE_OFF_64", "NOTE_ON_67", "TIME_SHIFT_10", "NOTE_OFF_67",
    )  # fmt: skip
    cut = cut_piece(ids, 30, 120)
    assert cut.prefix.tolist() == n("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_30").tolist()
    assert cut.middle.tolist() == n("TIME_SHIFT_20", "VELOCITY_24", "NOTE_ON_64", "TIME_SHIFT_70").tolist()
    # the suffix starts with its velocity, then the rest of the shift that crossed the end
    assert (
        cut.suffix.tolist()
        == n(
            "VELOCITY_24",
            "TIME_SHIFT_30",
            "NOTE_OFF_60",
            "NOTE_OFF_64",
            "NOTE_ON_67",
            "TIME_SHIFT_10",
            "NOTE_OFF_67",
        ).tolist()
    )
    assert np.flatnonzero(expected_at_end(cut.suffix)).tolist() == [60, 64]
    seq = fim_sequence(cut)
    assert seq.tolist() == [
        *cut.prefix.tolist(), V.FIM_SUFFIX_ID, V.name_to_id("TIME_SHIFT_90"), *cut.suffix.tolist(),
        V.FIM_MIDDLE_ID, *cut.middle.tolist(), V.FIM_END_ID,
    ]  # fmt: skip
    assert same_notes(TOK.decode_notes(splice(*cut)), TOK.decode_notes(ids))
    with pytest.raises(ValueError, match="start < end"):
        cut_piece(ids, 50, 50)
    with pytest.raises(ValueError, match="at least one step"):
        fim_prompt(cut.prefix, 0, cut.suffix)
    # a window that sets no velocity before the span's end cannot state the suffix's
    assert cut_piece(ids[1:], 10, 40) is None
    assert cut_piece(ids[1:], 10, 40, default_velocity=16).suffix[0] == V.name_to_id("VELOCITY_16")


def grammar_after(prompt: np.ndarray, tokenizer=TOK):
    g = tokenizer.grammar(1)
    g.start(prompt[None])
    return g


def allowed_names(g) -> set[str]:
    return {V.id_to_name(int(i)) for i in np.flatnonzero(g.allowed()[0])}


def test_the_grammar_ends_the_middle_exactly_with_the_notes_the_suffix_ends():
    # prefix: 60 sounds. Gap 1.5 s. The suffix holds 60 and 64 on for 200 ms, then strikes 67.
    prefix = n("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_10")
    suffix = n("VELOCITY_20", "TIME_SHIFT_20", "NOTE_OFF_60", "NOTE_OFF_64", "NOTE_ON_67")
    g = grammar_after(fim_prompt(prefix, 150, suffix))
    assert g.clock[0] == 10 and g.end_clock[0] == 160
    ok = allowed_names(g)
    assert "TIME_SHIFT_100" in ok and "EOS" not in ok and "FIM_END" not in ok
    assert not ok & {"FIM_SUFFIX", "FIM_MIDDLE", "PAD"}
    g.advance(n("TIME_SHIFT_100"))
    ok = allowed_names(g)
    # 64 is not sounding yet: no shift may reach the end (50 steps away) before it is struck
    assert "TIME_SHIFT_49" in ok and "TIME_SHIFT_50" not in ok and "TIME_SHIFT_51" not in ok
    g.advance(n("NOTE_ON_64"))
    g.advance(n("NOTE_ON_70"))  # a note the suffix does not end
    ok = allowed_names(g)
    assert "TIME_SHIFT_50" in ok and "TIME_SHIFT_51" not in ok
    g.advance(n("TIME_SHIFT_50"))
    ok = allowed_names(g)
    # at the end: only the NOTE_OFF of 70; no NOTE_ON, no shift, no velocity, not yet FIM_END
    assert ok == {"NOTE_OFF_70"}
    g.advance(n("NOTE_OFF_70"))
    assert allowed_names(g) == {"FIM_END"}
    g.advance(n("FIM_END"))
    assert g.fim[0] == 0 and not g.sounding.any()  # the row starts afresh, as after EOS


def test_one_step_before_the_end_a_row_missing_a_held_note_may_strike_only_it():
    # the suffix holds 64 on for 200 ms: a row 10 ms before the end without it must strike 64,
    # not any pitch (each would last 10 ms) and not wait
    prefix = n("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_10")
    suffix = n("VELOCITY_20", "TIME_SHIFT_20", "NOTE_OFF_64", "NOTE_ON_67")
    g = grammar_after(fim_prompt(prefix, 100, suffix))
    g.advance(n("TIME_SHIFT_99"))
    other_velocities = {f"VELOCITY_{b}" for b in range(1, 33) if b != 20}  # then only NOTE_ON_64
    assert allowed_names(g) == {"NOTE_ON_64", "NOTE_OFF_60"} | other_velocities
    g.advance(n("NOTE_ON_64"))
    assert "TIME_SHIFT_1" in allowed_names(g)


def test_a_note_the_suffix_ends_at_once_is_the_middles_choice():
    # the suffix ends 64 and 60 within 100 ms of the span's end: a middle may leave them silent
    # (the suffix's NOTE_OFF then ends nothing) or sounding (the suffix ends them)
    prefix = n("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_10")
    suffix = n("VELOCITY_20", "NOTE_OFF_60", "TIME_SHIFT_5", "NOTE_OFF_64", "NOTE_ON_67")
    g = grammar_after(fim_prompt(prefix, 50, suffix))
    g.advance(n("TIME_SHIFT_50"))  # 60 still sounds, 64 was never struck
    assert allowed_names(g) == {"FIM_END"}  # 60 may not be ended here: the suffix ends it
    silent = grammar_after(fim_prompt(prefix, 50, suffix))
    silent.advance(n("NOTE_OFF_60"))
    silent.advance(n("TIME_SHIFT_50"))
    assert allowed_names(silent) == {"FIM_END"}
    middle = n("NOTE_OFF_60", "TIME_SHIFT_50")
    notes = TOK.decode_notes(splice(prefix, middle, suffix))
    assert notes.pitch.tolist() == [60, 67] and notes.end[0] == pytest.approx(0.1)


def test_outside_an_infill_the_fim_tokens_are_never_allowed():
    g = grammar_after(TOK.encode(PIANO_DIR / "fur-elise.mid")[:200])
    assert not g.allowed()[:, V.PAD_ID :].any()


@pytest.mark.parametrize("name", PIECES)
def test_real_spans_splice_back_note_for_note_and_real_middles_pass_the_grammar(name):
    ids = TOK.encode(PIANO_DIR / name).astype(np.int64)[:8000]
    total = int(V.shift_steps(ids).sum())
    rng = np.random.default_rng(1)
    whole = TOK.decode_notes(ids)
    for _ in range(25):
        start = int(rng.integers(0, total - 10))
        end = min(start + int(rng.integers(1, 1000)), total)
        cut = cut_piece(ids, start, end, default_velocity=16)
        assert V.shift_steps(cut.prefix).sum() == start
        assert V.shift_steps(cut.middle).sum() == end - start
        assert same_notes(TOK.decode_notes(splice(*cut)), whole)
        # the real middle, token by token, is what the grammar allows, and then FIM_END
        g = grammar_after(fim_prompt(cut.prefix, end - start, cut.suffix), ROOMY)
        for token in [*cut.middle, V.FIM_END_ID]:
            assert g.allowed()[0, token], (start, end, V.id_to_name(int(token)))
            g.advance(np.array([token]))


def test_the_prompt_cache_reads_an_infill_prompt_suffix_first_then_the_prefix_it_continues():
    prefix = n("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_10")
    suffix = n("VELOCITY_20", "TIME_SHIFT_5", "NOTE_OFF_60", "NOTE_ON_67")
    prompt = fim_prompt(prefix, 150, suffix)  # the gap: TIME_SHIFT_100, TIME_SHIFT_50
    assert prefix_last(prompt).tolist() == [*suffix.tolist(), V.EOS_ID, *prefix.tolist()]
    # what the middle has written so far comes after the prefix; plain ids stay as they are
    middle = n("NOTE_ON_62")
    heard = prefix_last(np.concatenate([prompt, middle]))
    assert heard.tolist() == [*suffix.tolist(), V.EOS_ID, *prefix.tolist(), *middle.tolist()]
    assert prefix_last(prefix).tolist() == prefix.tolist()


def test_suffix_of_is_what_follows_the_gap():
    prefix = n("VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_10")
    suffix = n("VELOCITY_20", "TIME_SHIFT_5", "NOTE_OFF_60", "NOTE_ON_67")
    prompt = fim_prompt(prefix, 150, suffix)
    assert suffix_of(prompt).tolist() == suffix.tolist()
    assert suffix_of(np.concatenate([prompt, n("NOTE_ON_62")])).tolist() == suffix.tolist()  # a middle begun
    assert suffix_of(prefix).size == 0  # no FIM tokens: no suffix
    assert suffix_of(fim_prompt(prefix, 150, suffix[:0])).size == 0  # the gap's shifts are not a suffix
