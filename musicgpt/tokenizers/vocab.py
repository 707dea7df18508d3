"""The performance vocabulary: one declarative table of event ranges (note-seq / Music Transformer).

Every token id is an (event type, value) pair. The table `EVENT_RANGES` lists the ranges in id
order; the encoder, the decoder, the grammar and the readable names all read it, so the layout
lives in one place:

    ids   0-127   NOTE_ON    pitch 0-127
    ids 128-255   NOTE_OFF   pitch 0-127
    ids 256-355   TIME_SHIFT 1-100 steps of 10 ms (id 256 = 10 ms, id 355 = 1 s)
    ids 356-387   VELOCITY   bin 1-32
    id  388       EOS        end of piece (the data builder puts one after every piece)
    id  389       PAD        padding; never a target, never generated

Velocity bins are note-seq's (`performance_lib.velocity_to_bin`): MIDI velocities 1-127 in
32 bins of ceil(127 / 32) = 4 values, bin = (velocity - 1) // 4 + 1, so bin 1 holds 1-4 and
bin 32 holds 125-127. A bin decodes to its lowest velocity, 1 + 4 * (bin - 1) (bin 32 -> 125),
again as note-seq does; binning the decoded velocity gives back the same bin.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from musicgpt.errors import MusicGPTError


class TokenIdError(MusicGPTError, ValueError):
    """An id (or token name) that is not in the performance vocabulary."""


class Event(NamedTuple):
    type: str  # "NOTE_ON", "NOTE_OFF", "TIME_SHIFT", "VELOCITY", "EOS", "PAD"
    value: int  # pitch, steps, velocity bin; 0 for the specials


class EventRange(NamedTuple):
    type: str
    min_value: int
    max_value: int

    @property
    def size(self) -> int:
        return self.max_value - self.min_value + 1


STEPS_PER_SECOND = 100  # one TIME_SHIFT step is 10 ms
MAX_SHIFT_STEPS = 100  # the longest single TIME_SHIFT is 1 s; longer gaps take several
NUM_VELOCITY_BINS = 32
MIN_MIDI_VELOCITY = 1
MAX_MIDI_VELOCITY = 127
VELOCITY_BIN_SIZE = -(-(MAX_MIDI_VELOCITY - MIN_MIDI_VELOCITY + 1) // NUM_VELOCITY_BINS)  # ceil: 4

# The table. Order is the id layout; specials (value 0) come after the 388 event ids.
EVENT_RANGES: tuple[EventRange, ...] = (
    EventRange("NOTE_ON", 0, 127),
    EventRange("NOTE_OFF", 0, 127),
    EventRange("TIME_SHIFT", 1, MAX_SHIFT_STEPS),
    EventRange("VELOCITY", 1, NUM_VELOCITY_BINS),
    EventRange("EOS", 0, 0),
    EventRange("PAD", 0, 0),
)
SPECIAL_TYPES = ("EOS", "PAD")


def _offsets() -> dict[str, int]:
    offsets, start = {}, 0
    for r in EVENT_RANGES:
        offsets[r.type] = start
        start += r.size
    return offsets


OFFSETS: dict[str, int] = _offsets()
RANGES: dict[str, EventRange] = {r.type: r for r in EVENT_RANGES}

NOTE_ON_OFFSET = OFFSETS["NOTE_ON"]
NOTE_OFF_OFFSET = OFFSETS["NOTE_OFF"]
TIME_SHIFT_OFFSET = OFFSETS["TIME_SHIFT"]
VELOCITY_OFFSET = OFFSETS["VELOCITY"]
EOS_ID = OFFSETS["EOS"]
PAD_ID = OFFSETS["PAD"]
NUM_EVENT_IDS = EOS_ID  # ids below this are musical events
VOCAB_SIZE = sum(r.size for r in EVENT_RANGES)

# Other modules code against these numbers; a change to the table that moves them is a bug.
assert (NOTE_ON_OFFSET, NOTE_OFF_OFFSET, TIME_SHIFT_OFFSET, VELOCITY_OFFSET) == (0, 128, 256, 356)
assert (NUM_EVENT_IDS, EOS_ID, PAD_ID, VOCAB_SIZE) == (388, 388, 389, 390)

# id -> (type index into EVENT_RANGES, value), as arrays for vectorized decoding
_TYPE_OF_ID = np.concatenate([np.full(r.size, k, np.int8) for k, r in enumerate(EVENT_RANGES)])
_VALUE_OF_ID = np.concatenate([np.arange(r.min_value, r.max_value + 1) for r in EVENT_RANGES]).astype(
    np.int32
)
_TYPE_NAMES = tuple(r.type for r in EVENT_RANGES)


def _check_id(i: int) -> int:
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise TokenIdError(f"token id must be an integer, got {i!r}")
    if not 0 <= i < VOCAB_SIZE:
        raise TokenIdError(f"token id {int(i)} is outside the performance vocabulary 0..{VOCAB_SIZE - 1}")
    return int(i)


def check_ids(ids) -> np.ndarray:
    """`ids` as a 1-D int64 array; raises TokenIdError naming the first id outside 0..VOCAB_SIZE-1."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise TokenIdError(f"expected a 1-D sequence of token ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise TokenIdError(f"token ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= VOCAB_SIZE)
    if bad.any():
        k = int(np.argmax(bad))
        raise TokenIdError(
            f"token id {int(arr[k])} at position {k} is outside the performance vocabulary 0..{VOCAB_SIZE - 1}"
        )
    return arr


def event_to_id(type: str, value: int = 0) -> int:
    """The id of one event, e.g. `event_to_id("NOTE_ON", 60) == 60`."""
    r = RANGES.get(type)
    if r is None:
        raise TokenIdError(f"unknown event type {type!r}; known: {list(RANGES)}")
    if not r.min_value <= value <= r.max_value:
        raise TokenIdError(f"{type} value {value} is outside {r.min_value}..{r.max_value}")
    return OFFSETS[type] + int(value) - r.min_value


def id_to_event(i: int) -> Event:
    """The event an id stands for, e.g. `id_to_event(300) == Event("TIME_SHIFT", 45)`."""
    i = _check_id(i)
    return Event(_TYPE_NAMES[_TYPE_OF_ID[i]], int(_VALUE_OF_ID[i]))


def id_to_name(i: int) -> str:
    """A readable name: "NOTE_ON_60", "NOTE_OFF_60", "TIME_SHIFT_50", "VELOCITY_20", "EOS", "PAD"."""
    event = id_to_event(i)
    return event.type if event.type in SPECIAL_TYPES else f"{event.type}_{event.value}"


def name_to_id(name: str) -> int:
    """Inverse of `id_to_name`."""
    if name in SPECIAL_TYPES:
        return OFFSETS[name]
    type, _, value = name.rpartition("_")
    if type not in RANGES or type in SPECIAL_TYPES or not value.isdigit():
        raise TokenIdError(f"not a performance token name: {name!r} (e.g. NOTE_ON_60, TIME_SHIFT_50, EOS)")
    return event_to_id(type, int(value))


ID_NAMES: tuple[str, ...] = tuple(id_to_name(i) for i in range(VOCAB_SIZE))


def velocity_to_bin(velocity):
    """MIDI velocity (1-127; 0 and out-of-range values are clipped) -> bin 1-32. Works on arrays."""
    v = np.clip(velocity, MIN_MIDI_VELOCITY, MAX_MIDI_VELOCITY)
    return (v - MIN_MIDI_VELOCITY) // VELOCITY_BIN_SIZE + 1


def bin_to_velocity(velocity_bin):
    """Bin 1-32 -> the lowest MIDI velocity of the bin (1, 5, ..., 125). Works on arrays."""
    return MIN_MIDI_VELOCITY + (velocity_bin - 1) * VELOCITY_BIN_SIZE
