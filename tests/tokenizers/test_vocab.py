"""The id layout other modules code against, names, and note-seq's velocity bins."""

from __future__ import annotations

import numpy as np
import pytest

from musicgpt.errors import MusicGPTError
from musicgpt.tokenizers import vocab as V


def test_layout_constants():
    assert (V.NOTE_ON_OFFSET, V.NOTE_OFF_OFFSET, V.TIME_SHIFT_OFFSET, V.VELOCITY_OFFSET) == (0, 128, 256, 356)
    assert (V.NUM_EVENT_IDS, V.EOS_ID, V.PAD_ID, V.BASE_VOCAB_SIZE) == (388, 388, 389, 390)
    assert (V.FIM_SUFFIX_ID, V.FIM_MIDDLE_ID, V.FIM_END_ID, V.VOCAB_SIZE) == (390, 391, 392, 393)
    assert (V.STEPS_PER_SECOND, V.MAX_SHIFT_STEPS, V.NUM_VELOCITY_BINS) == (100, 100, 32)
    assert [r.type for r in V.EVENT_RANGES] == [
        "NOTE_ON",
        "NOTE_OFF",
        "TIME_SHIFT",
        "VELOCITY",
        "EOS",
        "PAD",
        "FIM_SUFFIX",
        "FIM_MIDDLE",
        "FIM_END",
    ]


@pytest.mark.parametrize(
    "i, event, name",
    [
        (0, ("NOTE_ON", 0), "NOTE_ON_0"),
        (60, ("NOTE_ON", 60), "NOTE_ON_60"),
        (127, ("NOTE_ON", 127), "NOTE_ON_127"),
        (128, ("NOTE_OFF", 0), "NOTE_OFF_0"),
        (188, ("NOTE_OFF", 60), "NOTE_OFF_60"),
        (255, ("NOTE_OFF", 127), "NOTE_OFF_127"),
        (256, ("TIME_SHIFT", 1), "TIME_SHIFT_1"),
        (305, ("TIME_SHIFT", 50), "TIME_SHIFT_50"),
        (355, ("TIME_SHIFT", 100), "TIME_SHIFT_100"),
        (356, ("VELOCITY", 1), "VELOCITY_1"),
        (375, ("VELOCITY", 20), "VELOCITY_20"),
        (387, ("VELOCITY", 32), "VELOCITY_32"),
        (388, ("EOS", 0), "EOS"),
        (389, ("PAD", 0), "PAD"),
        (390, ("FIM_SUFFIX", 0), "FIM_SUFFIX"),
        (392, ("FIM_END", 0), "FIM_END"),
    ],
)
def test_known_ids(i, event, name):
    assert V.id_to_event(i) == V.Event(*event)
    assert V.id_to_name(i) == name
    assert V.name_to_id(name) == i
    assert V.event_to_id(*event) == i


def test_every_id_round_trips_through_event_and_name():
    names = [V.id_to_name(i) for i in range(V.VOCAB_SIZE)]
    assert len(set(names)) == V.VOCAB_SIZE
    assert names == list(V.ID_NAMES)
    for i in range(V.VOCAB_SIZE):
        assert V.name_to_id(names[i]) == i
        assert V.event_to_id(*V.id_to_event(i)) == i
    assert V.id_to_event(np.int64(300)) == ("TIME_SHIFT", 45)


@pytest.mark.parametrize("bad", [-1, 393, 1000])
def test_id_outside_vocabulary_is_a_clear_error(bad):
    with pytest.raises(V.TokenIdError, match=f"token id {bad} .*0..392"):
        V.id_to_event(bad)
    with pytest.raises(ValueError):
        V.id_to_name(bad)
    with pytest.raises(MusicGPTError, match=f"token id {bad} at position 2"):
        V.check_ids([1, 2, bad])


def test_non_integer_ids_are_rejected():
    with pytest.raises(V.TokenIdError, match="integer"):
        V.id_to_event(1.5)
    with pytest.raises(V.TokenIdError, match="integers"):
        V.check_ids(np.array([1.5, 2.0]))
    with pytest.raises(V.TokenIdError, match="1-D"):
        V.check_ids(np.zeros((2, 2), np.int64))


@pytest.mark.parametrize(
    "name", ["NOTE_ON_128", "TIME_SHIFT_0", "VELOCITY_33", "FOO_1", "NOTE_ON", "EOS_0", "PAD_1"]
)
def test_bad_names(name):
    with pytest.raises(V.TokenIdError):
        V.name_to_id(name)


def test_velocity_bins_are_note_seqs():
    # note-seq: bin size ceil(127 / 32) = 4, bin = (v - 1) // 4 + 1, a bin decodes to 1 + 4 * (bin - 1)
    assert [int(V.velocity_to_bin(v)) for v in (1, 4, 5, 8, 9, 64, 124, 125, 127)] == [
        1,
        1,
        2,
        2,
        3,
        16,
        31,
        32,
        32,
    ]
    assert [int(V.bin_to_velocity(b)) for b in (1, 2, 16, 31, 32)] == [1, 5, 61, 121, 125]
    assert int(V.velocity_to_bin(0)) == 1 and int(V.velocity_to_bin(200)) == 32  # clipped
    bins = np.arange(1, 33)
    assert np.array_equal(V.velocity_to_bin(V.bin_to_velocity(bins)), bins)
    assert np.array_equal(np.unique(V.velocity_to_bin(np.arange(1, 128))), bins)


def test_event_types_and_the_per_id_tables():
    assert [t.name for t in V.EventType] == [r.type for r in V.EVENT_RANGES]
    for i in range(V.VOCAB_SIZE):
        event = V.id_to_event(i)
        assert V.EventType(V.TYPE_OF_ID[i]).name == event.type
        assert V.VALUE_OF_ID[i] == event.value
        assert V.STEPS_OF_ID[i] == (event.value if event.type == "TIME_SHIFT" else 0)
    with pytest.raises(ValueError):
        V.STEPS_OF_ID[0] = 1  # the tables are read-only


def test_shift_steps_and_seconds():
    ids = np.array(
        [V.name_to_id(n) for n in ("NOTE_ON_60", "TIME_SHIFT_50", "VELOCITY_3", "TIME_SHIFT_100", "EOS")]
    )
    assert V.shift_steps(ids).tolist() == [0, 50, 0, 100, 0]
    assert V.shift_steps(ids.reshape(1, -1)).shape == (1, 5)  # any shape, e.g. a batch
    assert V.seconds_of(ids) == 1.5 and V.seconds_of([]) == 0.0
    with pytest.raises(V.TokenIdError, match="token id 393"):
        V.shift_steps([1, 393])


@pytest.mark.parametrize(
    "steps, shifts", [(0, []), (1, [1]), (57, [57]), (100, [100]), (101, [100, 1]), (257, [100, 100, 57])]
)
def test_a_gap_is_whole_seconds_then_the_rest(steps, shifts):
    assert V.split_gap(steps).tolist() == [V.shift_id(s) for s in shifts]
    assert V.shift_steps(V.split_gap(steps)).sum() == steps


def test_split_gaps_is_split_gap_for_each_gap():
    gaps = [0, 3, 100, 0, 250, 1]
    ids, counts = V.split_gaps(gaps)
    assert counts.tolist() == [0, 1, 1, 0, 3, 1]
    assert ids.tolist() == [i for g in gaps for i in V.split_gap(g).tolist()]
    assert V.shift_id(np.array([1, 100])).tolist() == [256, 355]
    with pytest.raises(V.TokenIdError):
        V.shift_id(101)
    with pytest.raises(ValueError, match="negative"):
        V.split_gaps([3, -1])


def test_strikes_a_note():
    assert V.strikes_a_note([V.name_to_id("VELOCITY_3"), V.name_to_id("NOTE_ON_0")])
    assert not V.strikes_a_note([V.name_to_id("NOTE_OFF_60"), V.name_to_id("TIME_SHIFT_5"), V.EOS_ID])
    assert not V.strikes_a_note([])
