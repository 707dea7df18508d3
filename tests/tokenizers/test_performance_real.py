"""Round trips on every real MIDI file the project carries, against an independent reference.

`decode(encode(x))` must give back, note for note, x after the pedal, 10 ms quantization, one
voice per pitch and velocity binning, as `perf_reference` computes them in plain Python from
the file's notes (read by symusic, with times from pretty_midi's own tempo map).
"""

from __future__ import annotations

import bisect
import io

import numpy as np
import pretty_midi
import pytest
import symusic
from conftest import EMPTY_MIDI, MULTITRACK_FILES, PIANO_FILES
from perf_reference import RefNote, decoded_as_tuples, quantize, sustain_notes

from musicgpt.tokenizers.performance import PerformanceTokenizer

TOK = PerformanceTokenizer()
ALL_FILES = PIANO_FILES + MULTITRACK_FILES
MAESTRO_FILES = [p for p in PIANO_FILES if p.name.startswith("Maestro")]


def exact_time(score):
    """Plain-Python tempo map: tick -> integer microseconds x ticks-per-quarter (exact)."""
    changes = sorted((t.time, t.mspq) for t in score.tempos)
    if not changes or changes[0][0] > 0:
        changes.insert(0, (0, 500_000))
    starts, elapsed, mspqs = [], [], []
    for tick, mspq in changes:
        if starts and starts[-1] == tick:  # several changes at one tick: the last holds
            mspqs[-1] = mspq
            continue
        elapsed.append(elapsed[-1] + (tick - starts[-1]) * mspqs[-1] if starts else 0)
        starts.append(tick)
        mspqs.append(mspq)

    def time(tick):
        k = bisect.bisect_right(starts, tick) - 1
        return elapsed[k] + (tick - starts[k]) * mspqs[k]

    return time


def reference_from_file(path, include_drums=False):
    score = symusic.Score(str(path))  # ticks
    time = exact_time(score)
    notes, sustain = [], []
    for k, track in enumerate(score.tracks):
        if track.is_drum and not include_drums:
            continue
        notes += [
            RefNote(n.pitch, n.velocity, time(n.time), time(n.time + n.duration), k) for n in track.notes
        ]
        sustain += [(time(c.time), c.value, k) for c in track.controls if c.number == 64]
    return quantize(sustain_notes(notes, sustain), units_per_second=1_000_000 * score.ticks_per_quarter)


def test_the_corpus_is_there():
    assert len(PIANO_FILES) == 24 and len(MULTITRACK_FILES) == 12 and len(MAESTRO_FILES) == 8


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_round_trip_equals_the_reference_note_for_note(path):
    ids = TOK.encode(path)
    got = decoded_as_tuples(TOK.decode_notes(ids))
    expected = reference_from_file(path)
    assert len(got) == len(expected) > 100
    assert got == expected


@pytest.mark.parametrize("path", MULTITRACK_FILES[:3], ids=lambda p: p.name)
def test_round_trip_with_drums(path):
    tok = PerformanceTokenizer(include_drums=True)
    got = decoded_as_tuples(tok.decode_notes(tok.encode(path)))
    assert got == reference_from_file(path, include_drums=True)
    assert len(got) > len(reference_from_file(path))  # these songs do have drums


@pytest.mark.parametrize("path", MAESTRO_FILES, ids=lambda p: p.name)
def test_the_pedal_matters_on_maestro(path):
    # guards against a reference and an encoder that both forget the pedal
    with_pedal = decoded_as_tuples(TOK.decode_notes(TOK.encode(path)))
    without = decoded_as_tuples(PerformanceTokenizer(sustain_pedal=False).decode_notes(TOK.encode(path)))
    assert with_pedal == without  # decoding does not depend on the setting
    raw = PerformanceTokenizer(sustain_pedal=False)
    assert decoded_as_tuples(raw.decode_notes(raw.encode(path))) != with_pedal


SOME_FILES = [PIANO_FILES[0], MAESTRO_FILES[0], PIANO_FILES[-1], MULTITRACK_FILES[0], MULTITRACK_FILES[-1]]


@pytest.mark.parametrize("path", SOME_FILES, ids=lambda p: p.name)
def test_decoded_midi_file_reencodes_to_the_same_ids(path):
    ids = TOK.encode(path)
    buffer = io.BytesIO()
    TOK.decode(ids).write(buffer)
    assert np.array_equal(TOK.encode(symusic.Score.from_midi(buffer.getvalue())), ids)


@pytest.mark.parametrize(
    "path", MAESTRO_FILES[:1] + PIANO_FILES[-2:] + MULTITRACK_FILES[:1], ids=lambda p: p.name
)
@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature:RuntimeWarning")
def test_pretty_midi_input_encodes_like_the_path(path):
    # (files where both parsers pair overlapping same-pitch note-offs alike; POP909 does not:
    # pretty_midi ends every open note of a pitch at its first note-off, symusic the oldest)
    assert np.array_equal(TOK.encode(pretty_midi.PrettyMIDI(str(path))), TOK.encode(path))


@pytest.mark.parametrize("path", [PIANO_FILES[10], MULTITRACK_FILES[5]], ids=lambda p: p.name)
@pytest.mark.filterwarnings("ignore:Tempo, Key or Time signature:RuntimeWarning")
def test_times_agree_with_pretty_midi_on_files_with_tempo_changes(path):
    from musicgpt.tokenizers.midi_io import parts_from_score

    pm = pretty_midi.PrettyMIDI(str(path))
    assert len(pm.get_tempo_changes()[0]) > 1
    parts = parts_from_score(symusic.Score(str(path)))
    ours = np.sort(np.concatenate([p.start / p.units_per_second for p in parts]))
    theirs = np.sort([n.start for inst in pm.instruments for n in inst.notes])
    assert ours.size == theirs.size and np.abs(ours - theirs).max() < 1e-9


def test_empty_midi_encodes_to_an_empty_sequence():
    ids = TOK.encode(EMPTY_MIDI)
    assert ids.shape == (0,) and ids.dtype == np.int32
    assert TOK.decode(ids).instruments[0].notes == []
