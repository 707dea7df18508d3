"""One hand-made case per encoding / decoding rule, checked token for token."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest

from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.vocab import ID_NAMES, name_to_id

TOK = PerformanceTokenizer()


def midi(*instruments) -> pretty_midi.PrettyMIDI:
    """instruments: (program, is_drum, [(pitch, velocity, start, end)], [(time, cc64 value)])."""
    pm = pretty_midi.PrettyMIDI()
    for program, is_drum, notes, pedal in instruments:
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
        inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for p, v, s, e in notes]
        inst.control_changes = [pretty_midi.ControlChange(64, value, time) for time, value in pedal]
        pm.instruments.append(inst)
    return pm


def piano(notes, pedal=()):
    return midi((0, False, notes, pedal))


def names(ids) -> str:
    return " ".join(ID_NAMES[i] for i in ids)


def ids_of(text: str) -> np.ndarray:
    return np.array([name_to_id(n) for n in text.split()], np.int64)


def notes_of(decoded) -> list[tuple]:
    """(pitch, velocity, start_step, end_step) in NOTE_ON order."""
    return [
        (int(p), int(v), round(s * 100), round(e * 100))
        for p, v, s, e in zip(decoded.pitch, decoded.velocity, decoded.start, decoded.end, strict=True)
    ]


def round_trip(pm, tok=TOK):
    return notes_of(tok.decode_notes(tok.encode(pm)))


def test_one_note():
    ids = TOK.encode(piano([(60, 80, 0.5, 1.0)]))
    assert ids.dtype == np.int32
    assert names(ids) == "TIME_SHIFT_50 VELOCITY_20 NOTE_ON_60 TIME_SHIFT_50 NOTE_OFF_60"
    assert round_trip(piano([(60, 80, 0.5, 1.0)])) == [(60, 77, 50, 100)]  # bin 20 decodes to 77


def test_sustain_pedal_defers_note_off_to_pedal_release():
    pm = piano([(60, 80, 0.0, 0.5), (64, 80, 0.1, 2.5)], pedal=[(0.2, 127), (1.0, 100), (2.0, 0)])
    # 60 is released under the pedal -> until the pedal-up at 2.0; 64 is released after it -> unchanged
    assert round_trip(pm) == [(60, 77, 0, 200), (64, 77, 10, 250)]
    assert round_trip(pm, PerformanceTokenizer(sustain_pedal=False)) == [(60, 77, 0, 50), (64, 77, 10, 250)]


def test_pedal_events_at_one_instant_come_before_the_notes():
    # pedal down at the very instant of the note-off: sustained (pedal events are processed first)
    assert round_trip(piano([(60, 80, 0.0, 0.5)], pedal=[(0.5, 127), (1.5, 0)])) == [(60, 77, 0, 150)]
    # pedal up at the note-off: a normal release; down and up at one instant: up wins
    assert round_trip(piano([(60, 80, 0.0, 0.5)], pedal=[(0.1, 127), (0.5, 0)])) == [(60, 77, 0, 50)]
    assert round_trip(piano([(60, 80, 0.0, 0.5)], pedal=[(0.1, 127), (0.5, 0), (0.5, 127), (1.0, 0)])) == [
        (60, 77, 0, 50)
    ]


def test_pedal_never_released_holds_to_the_last_event():
    pm = piano([(60, 80, 0.0, 0.5), (62, 80, 1.0, 1.2)], pedal=[(0.1, 127), (3.0, 90)])
    assert round_trip(pm) == [(60, 77, 0, 300), (62, 77, 100, 300)]


def test_restrike_under_pedal_ends_the_earlier_note_at_the_new_onset():
    pedal = [(0.0, 127), (3.0, 0)]
    # released and sustained, then struck again
    assert round_trip(piano([(60, 80, 0.0, 0.5), (60, 90, 1.0, 1.2)], pedal)) == [
        (60, 77, 0, 100),
        (60, 89, 100, 300),
    ]
    # still held by the finger when struck again
    assert round_trip(piano([(60, 80, 0.0, 2.0), (60, 90, 1.0, 1.2)], pedal)) == [
        (60, 77, 0, 100),
        (60, 89, 100, 300),
    ]
    # struck twice at one instant: note-seq drops the first (file order), whatever its length
    assert round_trip(piano([(60, 100, 1.0, 2.5), (60, 40, 1.0, 1.2)], pedal)) == [(60, 37, 100, 300)]


def test_restrike_in_another_instrument_does_not_cut_across_the_pedal():
    pm = midi((0, False, [(60, 80, 0.0, 0.5)], [(0.0, 127), (3.0, 0)]), (0, False, [(72, 80, 1.0, 1.5)], []))
    assert round_trip(pm) == [(60, 77, 0, 300), (72, 77, 100, 150)]


def test_one_voice_per_pitch_without_pedal():
    # overlapping notes of one pitch (two tracks doubling): the later onset ends the earlier note
    pm = midi((0, False, [(60, 80, 0.0, 2.0)], []), (0, False, [(60, 90, 1.0, 1.5)], []))
    assert round_trip(pm) == [(60, 77, 0, 100), (60, 89, 100, 150)]
    # same pitch, same onset: the longest is kept
    pm = midi((0, False, [(60, 80, 0.0, 1.0)], []), (0, False, [(60, 90, 0.0, 2.0)], []))
    assert round_trip(pm) == [(60, 89, 0, 200)]


def test_long_gaps_become_several_time_shifts():
    assert names(TOK.encode(piano([(60, 80, 2.57, 3.57)]))) == (
        "TIME_SHIFT_100 TIME_SHIFT_100 TIME_SHIFT_57 VELOCITY_20 NOTE_ON_60 TIME_SHIFT_100 NOTE_OFF_60"
    )
    assert names(TOK.encode(piano([(60, 80, 0.0, 2.0)]))) == (
        "VELOCITY_20 NOTE_ON_60 TIME_SHIFT_100 TIME_SHIFT_100 NOTE_OFF_60"
    )
    assert round_trip(piano([(60, 80, 0.0, 12.34)])) == [(60, 77, 0, 1234)]


def test_simultaneous_notes_offs_before_ons_each_by_pitch():
    pm = piano([(64, 80, 0.0, 1.0), (60, 80, 0.0, 1.0), (60, 80, 1.0, 1.5), (55, 80, 1.0, 1.5)])
    assert names(TOK.encode(pm)) == (
        "VELOCITY_20 NOTE_ON_60 NOTE_ON_64 TIME_SHIFT_100 NOTE_OFF_60 NOTE_OFF_64 NOTE_ON_55 NOTE_ON_60 "
        "TIME_SHIFT_50 NOTE_OFF_55 NOTE_OFF_60"
    )
    assert sorted(round_trip(pm)) == [
        (55, 77, 100, 150),
        (60, 77, 0, 100),
        (60, 77, 100, 150),
        (64, 77, 0, 100),
    ]


def test_zero_length_notes_last_one_step():
    assert (
        names(TOK.encode(piano([(60, 80, 0.5, 0.5)])))
        == "TIME_SHIFT_50 VELOCITY_20 NOTE_ON_60 TIME_SHIFT_1 NOTE_OFF_60"
    )
    # 0.501 and 0.504 both round to step 50
    assert round_trip(piano([(60, 80, 0.501, 0.504)])) == [(60, 77, 50, 51)]


def test_times_round_half_up():
    # 0.125 s = 12.5 steps -> 13; 0.625 s = 62.5 -> 63 (banker's rounding would give 12 and 62)
    assert round_trip(piano([(60, 80, 0.125, 0.625)])) == [(60, 77, 13, 63)]
    assert round_trip(piano([(60, 80, 0.124, 0.6349)])) == [(60, 77, 12, 63)]


def test_velocity_event_only_when_the_bin_changes():
    pm = piano([(60, 80, 0.0, 0.1), (62, 77, 0.1, 0.2), (64, 90, 0.2, 0.3), (65, 91, 0.3, 0.4)])
    assert names(TOK.encode(pm)) == (
        "VELOCITY_20 NOTE_ON_60 TIME_SHIFT_10 NOTE_OFF_60 NOTE_ON_62 TIME_SHIFT_10 NOTE_OFF_62 "
        "VELOCITY_23 NOTE_ON_64 TIME_SHIFT_10 NOTE_OFF_64 NOTE_ON_65 TIME_SHIFT_10 NOTE_OFF_65"
    )


def test_drums_left_out_unless_asked():
    pm = midi((0, False, [(60, 80, 0.0, 0.5)], []), (0, True, [(36, 100, 0.0, 0.1)], []))
    assert round_trip(pm) == [(60, 77, 0, 50)]
    assert sorted(round_trip(pm, PerformanceTokenizer(include_drums=True))) == [
        (36, 97, 0, 10),
        (60, 77, 0, 50),
    ]


def test_instruments_merge_into_one_piano_or_are_picked_by_program():
    pm = midi(
        (0, False, [(60, 80, 0.0, 0.5)], []),
        (40, False, [(76, 60, 0.25, 1.0)], []),
        (33, False, [(40, 100, 0.0, 1.0)], []),
    )
    assert sorted(round_trip(pm)) == [(40, 97, 0, 100), (60, 77, 0, 50), (76, 57, 25, 100)]
    assert round_trip(pm, PerformanceTokenizer(programs=[40])) == [(76, 57, 25, 100)]
    assert sorted(round_trip(pm, PerformanceTokenizer(programs=[0, 33]))) == [
        (40, 97, 0, 100),
        (60, 77, 0, 50),
    ]
    out = TOK.decode(TOK.encode(pm))
    assert len(out.instruments) == 1 and out.instruments[0].program == 0 and not out.instruments[0].is_drum


def test_no_notes_encode_to_an_empty_array():
    ids = TOK.encode(pretty_midi.PrettyMIDI())
    assert ids.shape == (0,) and ids.dtype == np.int32
    assert len(TOK.decode_notes(ids)) == 0
    assert TOK.decode(ids).instruments[0].notes == []


# --- decoding odd sequences ----------------------------------------------------------------------


def test_unmatched_note_offs_are_ignored():
    d = TOK.decode_notes(
        ids_of("NOTE_OFF_60 VELOCITY_20 NOTE_ON_60 TIME_SHIFT_10 NOTE_OFF_60 NOTE_OFF_60 NOTE_OFF_61")
    )
    assert notes_of(d) == [(60, 77, 0, 10)]
    assert d.on_token.tolist() == [2] and d.off_token.tolist() == [4]


def test_open_notes_of_one_pitch_close_first_in_first_out():
    d = TOK.decode_notes(
        ids_of("NOTE_ON_60 TIME_SHIFT_10 NOTE_ON_60 TIME_SHIFT_10 NOTE_OFF_60 TIME_SHIFT_10 NOTE_OFF_60")
    )
    assert notes_of(d) == [(60, 61, 0, 20), (60, 61, 10, 30)]  # no VELOCITY yet: bin 16 = velocity 61
    assert d.off_token.tolist() == [4, 6]


def test_notes_open_at_the_end_close_at_the_final_time_within_max_note_seconds():
    d = TOK.decode_notes(ids_of("VELOCITY_32 NOTE_ON_60 TIME_SHIFT_50 NOTE_ON_62 TIME_SHIFT_20"))
    assert notes_of(d) == [(60, 125, 0, 70), (62, 125, 50, 70)]
    assert d.off_token.tolist() == [-1, -1]
    assert notes_of(TOK.decode_notes(ids_of("NOTE_ON_60"))) == [(60, 61, 0, 1)]  # at least one step
    long = ids_of("NOTE_ON_60 " + "TIME_SHIFT_100 " * 15)
    assert notes_of(TOK.decode_notes(long)) == [(60, 61, 0, 1000)]  # max_note_seconds = 10
    assert notes_of(PerformanceTokenizer(max_note_seconds=2.5).decode_notes(long)) == [(60, 61, 0, 250)]


def test_note_closed_at_its_onset_step_lasts_one_step():
    assert notes_of(TOK.decode_notes(ids_of("NOTE_ON_60 NOTE_OFF_60"))) == [(60, 61, 0, 1)]


def test_eos_and_pad_are_skipped():
    plain = ids_of("NOTE_ON_60 TIME_SHIFT_10 NOTE_OFF_60 NOTE_ON_61 TIME_SHIFT_5")
    padded = ids_of("PAD NOTE_ON_60 TIME_SHIFT_10 EOS NOTE_OFF_60 NOTE_ON_61 PAD TIME_SHIFT_5 EOS")
    assert (
        notes_of(TOK.decode_notes(padded))
        == notes_of(TOK.decode_notes(plain))
        == [(60, 61, 0, 10), (61, 61, 10, 15)]
    )


def test_token_times_are_the_clock_before_each_token():
    ids = ids_of(
        "VELOCITY_20 NOTE_ON_60 TIME_SHIFT_50 NOTE_OFF_60 TIME_SHIFT_100 TIME_SHIFT_7 NOTE_ON_61 EOS"
    )
    assert TOK.token_times(ids).tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 1.5, 1.57, 1.57]


def test_decode_returns_a_piano_pretty_midi_that_reencodes_identically(tmp_path):
    ids = TOK.encode(piano([(60, 80, 0.013, 0.5), (67, 30, 0.25, 1.77)], pedal=[(0.3, 127), (1.0, 0)]))
    pm = TOK.decode(ids)
    path = tmp_path / "out.mid"
    pm.write(str(path))
    assert np.array_equal(TOK.encode(path), ids)
    assert np.array_equal(TOK.encode(pretty_midi.PrettyMIDI(str(path))), ids)


def test_symusic_scores_are_accepted(tmp_path):
    import symusic

    pm = piano([(60, 80, 0.5, 1.0)], pedal=[(0.7, 127), (1.5, 0)])
    path = tmp_path / "x.mid"
    pm.write(str(path))
    expected = TOK.encode(path)
    assert names(expected) == "TIME_SHIFT_50 VELOCITY_20 NOTE_ON_60 TIME_SHIFT_100 NOTE_OFF_60"
    for ttype in ("tick", "quarter", "second"):
        assert np.array_equal(TOK.encode(symusic.Score(str(path), ttype=ttype)), expected)
    with pytest.raises(TypeError, match="expected a MIDI path"):
        TOK.encode(b"MThd")


def test_settings_save_and_load(tmp_path):
    from musicgpt.tokenizers import load_tokenizer

    tok = PerformanceTokenizer(
        include_drums=True, programs=[0, 40], max_note_seconds=4.0, sustain_pedal=False
    )
    d = tok.to_dict()
    assert d == {
        "name": "performance",
        "include_drums": True,
        "programs": [0, 40],
        "max_note_seconds": 4.0,
        "sustain_pedal": False,
        "max_polyphony": 64,
        "max_piece_seconds": 7200.0,
        "max_silence_seconds": 300.0,
    }
    assert PerformanceTokenizer.from_dict(d) == tok
    tok.save(tmp_path / "tok.json")
    assert PerformanceTokenizer.load(tmp_path / "tok.json") == tok
    assert load_tokenizer(tmp_path / "tok.json") == tok
    assert load_tokenizer("performance") == PerformanceTokenizer()
    assert (tok.vocab_size, tok.eos_id, tok.pad_id, tok.name) == (393, 388, 389, "performance")
    assert tok.base_vocab_size == 390  # the ids of models trained before the FIM tokens
    assert tok.id_to_token(60) == "NOTE_ON_60" and tok.id_to_event(300) == ("TIME_SHIFT", 45)


def test_bad_settings_are_config_errors():
    from musicgpt.errors import ConfigError

    with pytest.raises(ConfigError, match="programs"):
        PerformanceTokenizer(programs=[128])
    with pytest.raises(ConfigError, match="max_note_seconds"):
        PerformanceTokenizer(max_note_seconds=0)
    for bad in (0, -1, float("nan"), float("inf"), "long", True):
        with pytest.raises(ConfigError, match="max_piece_seconds"):
            PerformanceTokenizer(max_piece_seconds=bad)
        with pytest.raises(ConfigError, match="max_silence_seconds"):
            PerformanceTokenizer(max_silence_seconds=bad)
    with pytest.raises(ConfigError, match="unknown performance tokenizer settings"):
        PerformanceTokenizer.from_dict({"name": "performance", "bogus": 1})
