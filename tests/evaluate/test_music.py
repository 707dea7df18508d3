"""Music statistics on hand-made notes with known values, and on a real performance against a piano roll."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import PIANO_DIR

from musicgpt.evaluate import music
from musicgpt.tokenizers.performance import PerformanceTokenizer

TOK = PerformanceTokenizer()


def notes(*rows):
    """(pitch, start, end[, velocity]) rows -> Notes, through the tokenizer (times on its 10 ms grid).

    Velocities are the lowest of their tokenizer bin (1, 5, ..., 61, ..., 125) so they come back unchanged.
    """
    rows = [r if len(r) == 4 else (*r, 61) for r in rows]
    pitch, start, end, velocity = (np.array(c) for c in zip(*rows, strict=True)) if rows else ([],) * 4
    return TOK.decode_notes(TOK.encode_notes(pitch, velocity, start, end))


C_MAJOR_SCALE = notes(*[(p, i * 0.5, i * 0.5 + 0.5) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71])])
NOTHING = notes()


def test_polyphony_is_the_mean_count_while_something_sounds():
    # two notes together for 1 s, a gap, one alone for 1 s: 3 note-seconds over 2 sounding seconds
    assert music.polyphony(notes((60, 0, 1), (64, 0, 1), (67, 2, 3))) == 1.5
    # overlapping chain: 2 + 2 note-seconds over the 3 s from 0 to 3
    assert music.polyphony(notes((60, 0, 2), (62, 1, 3))) == 4 / 3
    # a melody, one note at a time, touching end to start
    assert music.polyphony(C_MAJOR_SCALE) == 1.0
    assert music.polyphony(NOTHING) == 0.0


def test_polyphony_equals_muspy_piano_roll_definition_on_a_real_performance():
    performed = TOK.decode_notes(TOK.encode(PIANO_DIR / "Maestro_3.mid"))
    steps_on = np.rint(performed.start * 100).astype(int)
    steps_off = np.rint(performed.end * 100).astype(int)
    roll = np.zeros((steps_off.max(), 128), bool)
    for p, a, b in zip(performed.pitch, steps_on, steps_off, strict=True):
        roll[a:b, p] = True
    by_roll = roll.sum() / roll.any(axis=1).sum()  # MusPy: pitches on per step, over steps with any on
    assert music.polyphony(performed) == pytest.approx(by_roll, rel=1e-12)
    assert 1.0 < by_roll < 10.0


def test_sounding_seconds_is_the_union_of_intervals():
    start, end = np.array([5.0, 0.0, 1.0, 10.0]), np.array([6.0, 2.0, 1.5, 10.5])
    assert music.sounding_seconds(start, end) == 1.0 + 2.0 + 0.5


def test_long_note_share_counts_notes_held_past_the_threshold():
    assert music.long_note_share(np.array([0.5, 5.0, 5.01, 9.0]), 5.0) == 0.5  # 5.0 is not longer
    assert music.long_note_share(np.array([]), 5.0) == 0.0


def test_longest_silence_counts_the_edges_and_the_gaps_between_sounding_notes():
    # sound 1-2 s and 1.5-4 s (overlapping: one block), then 6.5-7 s; 10 s long: gaps 1, 2.5, 3
    assert music.longest_silence(notes((60, 1, 2), (64, 1.5, 4), (67, 6.5, 7)), 10.0) == 3.0
    assert music.longest_silence(notes((60, 0, 2), (62, 2, 10)), 10.0) == 0.0  # touching: no gap
    assert music.longest_silence(notes((60, 4, 5)), 10.0) == 5.0  # after the last note
    assert music.longest_silence(NOTHING, 10.0) == 10.0


def test_note_density_and_count():
    assert music.note_density(C_MAJOR_SCALE, 3.5) == 2.0
    assert music.note_count(C_MAJOR_SCALE) == 7
    assert music.note_density(NOTHING, 20.0) == 0.0
    with pytest.raises(ValueError, match="positive"):
        music.note_density(C_MAJOR_SCALE, 0)


def test_pitch_range():
    assert music.pitch_range(C_MAJOR_SCALE) == 11
    assert music.pitch_range(notes((21, 0, 1), (108, 0, 1))) == 87  # the whole piano
    assert music.pitch_range(NOTHING) == 0


def test_pitch_class_histogram_and_entropy():
    octaves_of_c = notes((48, 0, 1), (60, 0, 1), (72, 1, 2))
    assert music.pitch_class_histogram(octaves_of_c).tolist() == [3] + [0] * 11
    assert music.pitch_class_entropy(octaves_of_c) == 0.0
    assert music.pitch_class_entropy(notes((60, 0, 1), (67, 0, 1))) == 1.0  # two classes, equally often
    assert music.pitch_class_entropy(C_MAJOR_SCALE) == pytest.approx(math.log2(7), abs=1e-12)
    chromatic = notes(*[(60 + k, k, k + 1) for k in range(12)])
    assert music.pitch_class_entropy(chromatic) == pytest.approx(math.log2(12), abs=1e-12)
    assert music.pitch_class_entropy(NOTHING) == 0.0


def test_scale_consistency():
    assert music.scale_consistency(C_MAJOR_SCALE) == 1.0
    a_minor_melody = notes((69, 0, 1), (72, 1, 2), (76, 2, 3), (74, 3, 4))  # A C E D: in A minor = C major
    assert music.scale_consistency(a_minor_melody) == 1.0
    with_f_sharp = notes(*[(p, i, i + 1) for i, p in enumerate([60, 62, 64, 65, 66, 67, 69, 71])])
    assert music.scale_consistency(with_f_sharp) == 7 / 8  # C major or G major: 7 of the 8 notes
    chromatic = notes(*[(60 + k, k, k + 1) for k in range(12)])
    assert music.scale_consistency(chromatic) == 7 / 12
    assert math.isnan(music.scale_consistency(NOTHING))


def test_velocity_mean_std_and_histogram():
    loud_and_soft = notes((60, 0, 1, 61), (64, 0, 1, 101), (67, 1, 2, 101), (72, 1, 2, 61))
    assert music.velocity_mean(loud_and_soft) == 81.0
    assert music.velocity_std(loud_and_soft) == 20.0
    histogram = music.velocity_histogram(loud_and_soft)
    assert histogram.shape == (32,) and histogram[15] == 2 and histogram[25] == 2 and histogram.sum() == 4
    assert math.isnan(music.velocity_mean(NOTHING)) and math.isnan(music.velocity_std(NOTHING))


def test_pitch_histogram():
    histogram = music.pitch_histogram(notes((60, 0, 1), (60, 1, 2), (64, 0, 2)))
    assert histogram.shape == (128,) and histogram[60] == 2 and histogram[64] == 1 and histogram.sum() == 3


def test_log_time_bins_are_half_octaves_from_10_ms():
    assert music.LOG_TIME_CENTERS[0] == 0.01 and music.LOG_TIME_CENTERS[2] == 0.02
    assert music.LOG_TIME_CENTERS[-1] == pytest.approx(40.96)
    # 10 ms, 20 ms, 100 ms (2*log2(10) = 6.64), 1 s (13.29), 10 s (19.93), a minute (past the end)
    seconds = np.array([0.01, 0.02, 0.1, 1.0, 10.0, 60.0, 0.001])
    assert music.log_time_bin(seconds).tolist() == [0, 2, 7, 13, 20, 24, 0]
    # times on the 10 ms grid, computed as differences (float noise), land in the bin of their exact value
    for steps in range(1, 2000):
        noisy = (0.33 + steps / 100) - 0.33
        assert music.log_time_bin(noisy) == music.log_time_bin(steps / 100)


def test_duration_and_inter_onset_histograms():
    melody = notes((60, 0, 0.5), (62, 0.5, 1.0), (64, 1.0, 1.1), (67, 1.0, 2.0))  # a chord at 1.0 s
    assert music.note_durations(melody).tolist() == pytest.approx([0.5, 0.5, 0.1, 1.0])
    durations = music.duration_histogram(melody)
    assert durations[11] == 2 and durations[7] == 1 and durations[13] == 1 and durations.sum() == 4
    # onsets 0, 0.5, 1.0 (the chord counts once): two gaps of 0.5 s
    assert music.inter_onset_intervals(melody).tolist() == [0.5, 0.5]
    assert music.inter_onset_histogram(melody)[11] == 2 and music.inter_onset_histogram(melody).sum() == 2
    assert music.inter_onset_intervals(notes((60, 0, 1))).size == 0


def test_overlapping_area():
    a = np.array([3.0, 1.0, 0.0, 0.0])
    assert music.overlapping_area(a, a) == 1.0
    assert music.overlapping_area(a, 10 * a) == 1.0  # distributions, not counts
    assert music.overlapping_area(a, np.array([0.0, 0.0, 2.0, 5.0])) == 0.0
    assert music.overlapping_area(np.array([1.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0])) == 0.5
    assert music.overlapping_area(np.zeros(4), np.zeros(4)) == 1.0
    assert music.overlapping_area(a, np.zeros(4)) == 0.0
    with pytest.raises(ValueError, match="share their bins"):
        music.overlapping_area(a, np.ones(3))


def test_overlapping_area_of_identical_and_disjoint_note_sets():
    performed = TOK.decode_notes(TOK.encode(PIANO_DIR / "Maestro_3.mid"))
    for histogram in (
        music.pitch_histogram,
        music.velocity_histogram,
        music.duration_histogram,
        music.inter_onset_histogram,
    ):
        same = music.overlapping_area(histogram(performed), histogram(performed))
        assert same == pytest.approx(1.0, abs=1e-12)
    low = notes((40, 0, 0.01, 1), (41, 1, 1.02, 1))
    high = notes((80, 0, 5, 125), (81, 10, 15, 125))
    for histogram in (music.pitch_histogram, music.velocity_histogram, music.duration_histogram):
        assert music.overlapping_area(histogram(low), histogram(high)) == 0.0


def test_pitch_class_similarity():
    performed = TOK.decode_notes(TOK.encode(PIANO_DIR / "Maestro_3.mid"))
    assert music.pitch_class_similarity(performed, performed) == pytest.approx(1.0, abs=1e-12)
    # the same scale an octave up: pitch classes alike, pitches disjoint
    octave_up = notes(*[(p + 12, i * 0.5, i * 0.5 + 0.5) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71])])
    assert music.pitch_class_similarity(C_MAJOR_SCALE, octave_up) == pytest.approx(1.0, abs=1e-12)
    pitches_shared = music.overlapping_area(
        music.pitch_histogram(C_MAJOR_SCALE), music.pitch_histogram(octave_up)
    )
    assert pitches_shared == 0.0
    # C and E against F# and B flat: no pitch class shared
    assert music.pitch_class_similarity(notes((60, 0, 1), (64, 0, 1)), notes((66, 0, 1), (70, 0, 1))) == 0.0
    # C, G against C only: cos 45 degrees
    assert music.pitch_class_similarity(notes((60, 0, 1), (67, 0, 1)), notes((48, 0, 1))) == pytest.approx(
        1 / math.sqrt(2), abs=1e-12
    )
    assert music.pitch_class_similarity(NOTHING, NOTHING) == 1.0
    assert music.pitch_class_similarity(C_MAJOR_SCALE, NOTHING) == 0.0
