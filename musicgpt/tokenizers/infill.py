"""The fill-in-the-middle format of performances (Bavarian et al. 2022, PSM order).

A piece cut at two times S < E (10 ms steps) is three token runs: the prefix (everything before
S and the NOTE_OFFs at S, lasting exactly S), the middle (from S to E, lasting exactly E - S)
and the suffix (from E on). A TIME_SHIFT that crosses a cut is split there, so every part lasts exactly its time. The
model reads, and is trained on,

    prefix  FIM_SUFFIX  gap  suffix  FIM_MIDDLE  middle  FIM_END

where `gap` is E - S written as TIME_SHIFTs (whole seconds first, as the encoder writes gaps):
the model reads how long the middle must last before it reads the suffix, and the grammar reads
the same number to enforce it (`PerformanceGrammar`: no shift past the end, no end before it).

Notes that sound across a cut stay in one piece: a note struck in the prefix and ended in the
suffix has its NOTE_ON in the prefix and its NOTE_OFF in the suffix. So the suffix says which
notes must sound when the middle ends: the pitches whose first event in the suffix is a
NOTE_OFF. The middle may end the prefix's notes and strike new ones, but when it ends exactly
those pitches sound. The suffix starts with a VELOCITY token, the velocity in force at E: its
notes play as they did whatever the middle's last velocity, and the gap's TIME_SHIFTs end there
(a suffix may itself start with a shift, the rest of one that crossed E). `splice(prefix,
middle, suffix)` is the whole piece again.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.vocab import EventType


class Cut(NamedTuple):
    prefix: np.ndarray  # lasts exactly `start` steps
    middle: np.ndarray  # lasts exactly `end - start` steps
    suffix: np.ndarray  # from `end` on, its velocity stated (when known)


def cut_at(ids: np.ndarray, step: int, offs_before: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(before, after): events before `step` and shifts up to it; events at `step` or later.

    With `offs_before` the NOTE_OFFs at `step` go before (the encoder writes them first at a
    step): a note that ends where a span starts is no part of it. A shift that crosses `step`
    is split there; `before` lasts exactly `step` (shifts are added when the sequence is shorter)."""
    ids = np.asarray(ids, np.int64)
    steps = V.shift_steps(ids)
    clock_after = np.cumsum(steps)
    clock_before = clock_after - steps
    later = np.where(steps > 0, clock_after > step, clock_before >= step)
    if offs_before:
        later &= ~((V.TYPE_OF_ID[ids] == EventType.NOTE_OFF) & (clock_before == step))
    a = int(np.argmax(later)) if later.any() else ids.size
    before, after = ids[:a], ids[a:]
    if a < ids.size and steps[a] > 0 and clock_before[a] < step:  # a shift across the cut
        before = np.append(before, V.shift_id(step - clock_before[a]))
        after = after.copy()
        after[0] = V.shift_id(clock_after[a] - step)
    elif a == ids.size and (total := int(clock_after[-1]) if ids.size else 0) < step:
        before = np.concatenate([before, V.split_gap(step - total)])
    return before, after


def merge_shifts(ids: np.ndarray) -> np.ndarray:
    """`ids` with every run of TIME_SHIFTs written as the encoder writes a gap (whole seconds
    first, then the rest): a cut leaves the parts of a split shift beside whole ones (3, 38 for
    41), which the grammar would not let a model write."""
    ids = np.asarray(ids, np.int64)
    steps = V.shift_steps(ids)
    is_shift = steps > 0
    run_start = is_shift & ~np.concatenate([[False], is_shift[:-1]])
    if not is_shift.any():
        return ids
    keep = np.flatnonzero(~is_shift | run_start)
    run_sums = np.add.reduceat(steps, np.flatnonzero(run_start))  # each run's steps
    shift_ids, n_shift = V.split_gaps(run_sums)
    count = np.ones(keep.size, np.int64)
    count[run_start[keep]] = n_shift
    out = np.repeat(ids[keep], count)
    out[np.repeat(run_start[keep], count)] = shift_ids
    return out


def velocity_before(ids: np.ndarray) -> int | None:
    """The velocity bin the last VELOCITY token of `ids` set, or None when there is none."""
    ids = np.asarray(ids)
    at = np.flatnonzero(V.TYPE_OF_ID[ids] == EventType.VELOCITY)
    return int(V.VALUE_OF_ID[ids[at[-1]]]) if at.size else None


def state_velocity(suffix: np.ndarray, velocity_bin: int) -> np.ndarray:
    """`suffix` led by VELOCITY `velocity_bin` (unless it already starts with a VELOCITY).

    It states the velocity its notes play at, whatever the middle's last one, and it ends the
    gap's TIME_SHIFTs in `fim_prompt` (a suffix may start with a shift: the rest of one across E)."""
    suffix = np.asarray(suffix, np.int64)
    if suffix.size and V.TYPE_OF_ID[suffix[0]] == EventType.VELOCITY:
        return suffix
    return np.concatenate([[V.event_to_id("VELOCITY", velocity_bin)], suffix]).astype(np.int64)


def cut_piece(ids: np.ndarray, start: int, end: int, default_velocity: int | None = None) -> Cut | None:
    """Cut `ids` at steps `start` < `end` into prefix, middle and suffix (see the module docstring).

    The suffix's velocity is the last one set before `end`; `default_velocity` where none was
    (a whole piece: the decoder's default bin). None when it is unknown (a training window that
    starts mid-piece and sets no velocity before `end`)."""
    if not 0 <= start < end:
        raise ValueError(f"a span needs 0 <= start < end, got {start}..{end} steps")
    prefix, rest = cut_at(ids, start, offs_before=True)
    middle, suffix = cut_at(rest, end - start)
    prefix, middle, suffix = merge_shifts(prefix), merge_shifts(middle), merge_shifts(suffix)
    known = velocity_before(np.concatenate([prefix, middle]))
    velocity = default_velocity if known is None else known
    if velocity is None:
        return None
    return Cut(prefix, middle, state_velocity(suffix, velocity))


def fim_prompt(prefix: np.ndarray, gap_steps: int, suffix: np.ndarray) -> np.ndarray:
    """prefix FIM_SUFFIX gap suffix FIM_MIDDLE: what the model reads before it writes the middle."""
    if gap_steps < 1:
        raise ValueError(f"the gap must last at least one step, got {gap_steps}")
    return np.concatenate(
        [
            np.asarray(prefix, np.int64),
            [V.FIM_SUFFIX_ID],
            V.split_gap(gap_steps),
            np.asarray(suffix, np.int64),
            [V.FIM_MIDDLE_ID],
        ]
    ).astype(np.int64)


def _fim_marks(ids: np.ndarray) -> tuple[int, int] | None:
    """The indices of a fill-in-the-middle prompt's last FIM_SUFFIX and the FIM_MIDDLE after it;
    None for ids without them."""
    suffix_at, middle_at = np.flatnonzero(ids == V.FIM_SUFFIX_ID), np.flatnonzero(ids == V.FIM_MIDDLE_ID)
    if not suffix_at.size or not middle_at.size or middle_at[-1] < suffix_at[-1]:
        return None
    return int(suffix_at[-1]), int(middle_at[-1])


def prefix_last(ids: np.ndarray) -> np.ndarray:
    """A fill-in-the-middle prompt in the order a middle continues it: the suffix, an EOS (a
    break: no repeat is matched across it), then the prefix. The prompt cache reads it so: the
    middle follows the prefix it continues, and may still repeat what the suffix plays. The gap's
    shifts and the FIM tokens are dropped; ids without FIM_SUFFIX ... FIM_MIDDLE come back as they are."""
    ids = np.asarray(ids, np.int64)
    marks = _fim_marks(ids)
    if marks is None:
        return ids
    s, m = marks
    return np.concatenate([suffix_of(ids), [V.EOS_ID], ids[:s], ids[m + 1 :]])


def prefix_of(ids: np.ndarray) -> np.ndarray:
    """What comes before FIM_SUFFIX: a fill-in-the-middle prompt's prefix (the clock a middle
    goes on from); ids without FIM_SUFFIX come back as they are."""
    ids = np.asarray(ids)
    suffix_at = np.flatnonzero(ids == V.FIM_SUFFIX_ID)
    return ids[: suffix_at[-1]] if suffix_at.size else ids


def suffix_of(ids: np.ndarray) -> np.ndarray:
    """What a fill-in-the-middle prompt holds between its gap's shifts and FIM_MIDDLE: the suffix
    (from its opening VELOCITY); empty for ids without FIM_SUFFIX ... FIM_MIDDLE."""
    ids = np.asarray(ids)
    marks = _fim_marks(ids)
    if marks is None:
        return ids[:0]
    gap_and_suffix = ids[marks[0] + 1 : marks[1]]
    events = np.flatnonzero(V.STEPS_OF_ID[gap_and_suffix] == 0)  # the suffix opens with a VELOCITY
    return gap_and_suffix[int(events[0]) :] if events.size else gap_and_suffix[:0]


def fim_sequence(cut: Cut) -> np.ndarray:
    """The training sequence of a cut: its `fim_prompt`, the middle, FIM_END."""
    gap = int(V.shift_steps(cut.middle).sum())
    return np.concatenate([fim_prompt(cut.prefix, gap, cut.suffix), cut.middle, [V.FIM_END_ID]])


def splice(prefix: np.ndarray, middle: np.ndarray, suffix: np.ndarray) -> np.ndarray:
    """The whole piece: prefix, middle, suffix (FIM tokens of a sampled middle dropped)."""
    middle = np.asarray(middle, np.int64)
    middle = middle[middle < V.BASE_VOCAB_SIZE]
    middle = middle[(middle != V.EOS_ID) & (middle != V.PAD_ID)]
    return np.concatenate([np.asarray(prefix, np.int64), middle, np.asarray(suffix, np.int64)])


def expected_at_end(suffix: np.ndarray) -> np.ndarray:
    """(128,) bool: the pitches the suffix ends before it strikes them (its first event of the pitch a
    NOTE_OFF): those sounding at its start in the original."""
    suffix = np.asarray(suffix)
    kind = V.TYPE_OF_ID[suffix]
    notes = kind <= EventType.NOTE_OFF
    pitch, is_off = V.VALUE_OF_ID[suffix[notes]], kind[notes] == EventType.NOTE_OFF
    _, first = np.unique(pitch, return_index=True)
    out = np.zeros(128, bool)
    out[pitch[first]] = is_off[first]
    return out
