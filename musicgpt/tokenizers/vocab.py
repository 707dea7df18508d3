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
    id  390       FIM_SUFFIX fill in the middle: the prefix ends; the gap (as TIME_SHIFTs), then the suffix
    id  391       FIM_MIDDLE the suffix ends; the middle follows
    id  392       FIM_END    the middle ends (see docs/tokenizer.md, "Infilling")

The three FIM ids came after EOS and PAD, so every older id kept its value: a model trained on
the 390 ids before them still loads and continues exactly as before (`BASE_VOCAB_SIZE`).

Velocity bins are note-seq's (`performance_lib.velocity_to_bin`): MIDI velocities 1-127 in
32 bins of ceil(127 / 32) = 4 values, bin = (velocity - 1) // 4 + 1, so bin 1 holds 1-4 and
bin 32 holds 125-127. A bin decodes to its lowest velocity, 1 + 4 * (bin - 1) (bin 32 -> 125),
again as note-seq does; binning the decoded velocity gives back the same bin.

The clock lives here too: `STEPS_OF_ID` says how far each id moves it (only TIME_SHIFTs do), and
`split_gap` writes a gap as shifts, whole seconds first, then the rest. The encoder, the decoder,
the grammar, augmentation and generation all use these, so none of them does id arithmetic.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np

from musicgpt.errors import MusicGPTError


class TokenIdError(MusicGPTError, ValueError):
    """An id (or token name) that is not in the performance vocabulary."""


class EventType(IntEnum):
    """The event kinds, in the table's order: `TYPE_OF_ID[i]` is one of these."""

    NOTE_ON = 0
    NOTE_OFF = 1
    TIME_SHIFT = 2
    VELOCITY = 3
    EOS = 4
    PAD = 5
    FIM_SUFFIX = 6
    FIM_MIDDLE = 7
    FIM_END = 8


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
    # fill in the middle (Bavarian et al. 2022, PSM order): appended, so no older id moved
    EventRange("FIM_SUFFIX", 0, 0),
    EventRange("FIM_MIDDLE", 0, 0),
    EventRange("FIM_END", 0, 0),
)
SPECIAL_TYPES = ("EOS", "PAD", "FIM_SUFFIX", "FIM_MIDDLE", "FIM_END")


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
FIM_SUFFIX_ID = OFFSETS["FIM_SUFFIX"]
FIM_MIDDLE_ID = OFFSETS["FIM_MIDDLE"]
FIM_END_ID = OFFSETS["FIM_END"]
NUM_EVENT_IDS = EOS_ID  # ids below this are musical events
VOCAB_SIZE = sum(r.size for r in EVENT_RANGES)
# the ids before the FIM tokens: what a model must read to continue (models trained before them read 390)
BASE_VOCAB_SIZE = FIM_SUFFIX_ID

# Other modules code against these numbers; a change to the table that moves them is a bug.
assert (NOTE_ON_OFFSET, NOTE_OFF_OFFSET, TIME_SHIFT_OFFSET, VELOCITY_OFFSET) == (0, 128, 256, 356)
assert (NUM_EVENT_IDS, EOS_ID, PAD_ID, BASE_VOCAB_SIZE) == (388, 388, 389, 390)
assert (FIM_SUFFIX_ID, FIM_MIDDLE_ID, FIM_END_ID, VOCAB_SIZE) == (390, 391, 392, 393)

assert [t.name for t in EventType] == [r.type for r in EVENT_RANGES]

# id -> (EventType, value), as read-only arrays for vectorized code: TYPE_OF_ID[ids], VALUE_OF_ID[ids]
TYPE_OF_ID = np.concatenate([np.full(r.size, k, np.int8) for k, r in enumerate(EVENT_RANGES)])
VALUE_OF_ID = np.concatenate([np.arange(r.min_value, r.max_value + 1) for r in EVENT_RANGES]).astype(np.int32)
# id -> the 10 ms steps it moves the clock: its value for a TIME_SHIFT, 0 for everything else
STEPS_OF_ID = np.where(TYPE_OF_ID == EventType.TIME_SHIFT, VALUE_OF_ID, 0).astype(np.int64)
# id -> what the prompt cache (musicgpt/generation/prompt_cache.py) compares to find a passage
# heard before: every VELOCITY alike and TIME_SHIFTs in buckets of a ratio of 1.2 (+-10%), so a
# repeat played a little louder or slower is still a repeat. Notes and specials are themselves.
MATCH_KEY_OF_ID = np.where(
    TYPE_OF_ID == EventType.VELOCITY,
    VELOCITY_OFFSET,
    np.where(
        TYPE_OF_ID == EventType.TIME_SHIFT,
        TIME_SHIFT_OFFSET + np.floor(np.log(np.maximum(STEPS_OF_ID, 1)) / np.log(1.2)).astype(np.int64),
        np.arange(VOCAB_SIZE),
    ),
).astype(np.int64)
for _table in (TYPE_OF_ID, VALUE_OF_ID, STEPS_OF_ID, MATCH_KEY_OF_ID):
    _table.flags.writeable = False


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
    return Event(EventType(TYPE_OF_ID[i]).name, int(VALUE_OF_ID[i]))


def id_to_name(i: int) -> str:
    """A readable name: "NOTE_ON_60", "NOTE_OFF_60", "TIME_SHIFT_50", "VELOCITY_20", "EOS", "PAD",
    "FIM_SUFFIX", "FIM_MIDDLE", "FIM_END"."""
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


# --- the clock -----------------------------------------------------------------------------------


def shift_steps(ids) -> np.ndarray:
    """The 10 ms steps each id moves the clock (`STEPS_OF_ID`), same shape as `ids`, int64.

    Any array of valid ids; raises TokenIdError for one outside 0..VOCAB_SIZE-1.
    """
    arr = np.asarray(ids)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        check_ids(arr.reshape(-1))  # names the first bad id
    return STEPS_OF_ID[arr.astype(np.intp, copy=False)]


def strikes_a_note(ids) -> bool:
    """Whether `ids` hold a NOTE_ON (a prompt without one gives a model nothing to continue)."""
    arr = np.asarray(ids, dtype=np.intp)
    return bool(arr.size) and bool((TYPE_OF_ID[check_ids(arr.reshape(-1))] == EventType.NOTE_ON).any())


def seconds_of(ids) -> float:
    """How far `ids` move the clock, in seconds: the time at the end of the sequence."""
    return float(shift_steps(ids).sum()) / STEPS_PER_SECOND


def shift_id(steps):
    """The id of a TIME_SHIFT of `steps` (1..MAX_SHIFT_STEPS) steps. Works on arrays."""
    s = np.asarray(steps)
    if s.size and (s.min() < 1 or s.max() > MAX_SHIFT_STEPS):
        raise TokenIdError(f"a TIME_SHIFT is 1..{MAX_SHIFT_STEPS} steps, got {s.min()}..{s.max()}")
    return OFFSETS["TIME_SHIFT"] + s - RANGES["TIME_SHIFT"].min_value


def split_gaps(steps) -> tuple[np.ndarray, np.ndarray]:
    """Gaps of `steps` 10 ms steps each (>= 0) as TIME_SHIFTs: whole seconds first, then the rest.

    Returns (ids, counts): the shift ids of all gaps one after another (int64), and how many
    belong to each gap; a gap of 257 steps is [shift 100, shift 100, shift 57], one of 0 is none.
    """
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    if steps.size and steps.min() < 0:
        raise ValueError(f"a gap cannot be negative, got {steps.min()} steps")
    counts = -(-steps // MAX_SHIFT_STEPS)  # ceil
    ids = np.full(int(counts.sum()), shift_id(MAX_SHIFT_STEPS), np.int64)
    some = counts > 0
    rest = steps[some] - MAX_SHIFT_STEPS * (counts[some] - 1)  # 1..MAX_SHIFT_STEPS
    ids[np.cumsum(counts)[some] - 1] = shift_id(rest)  # the last shift of each gap
    return ids, counts


def split_gap(steps: int) -> np.ndarray:
    """One gap as TIME_SHIFT ids (see `split_gaps`): 257 steps -> [shift 100, shift 100, shift 57]."""
    return split_gaps([steps])[0]
