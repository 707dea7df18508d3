"""Music Transformer's data augmentation, applied to token windows on the fly.

Working on tokens (not on MIDI) keeps one copy of the shards on disk and costs microseconds:
- transposition shifts every NOTE_ON / NOTE_OFF id by the same number of semitones;
- a time stretch rescales every run of TIME_SHIFT tokens, re-quantized on the cumulative time
  so that rounding errors do not add up over a window.
"""

from __future__ import annotations

import numpy as np

from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.vocab import EventType

# Music Transformer (Huang et al. 2018, section 5.1): transpositions of up to 3 semitones and
# stretches of +-2.5% and +-5%.
MAX_TRANSPOSE = 3
STRETCH_FACTORS = (0.95, 0.975, 1.0, 1.025, 1.05)


def _note_mask(tokens: np.ndarray) -> np.ndarray:
    return V.TYPE_OF_ID[tokens] <= EventType.NOTE_OFF  # NOTE_ON and NOTE_OFF


def pitch_range(tokens: np.ndarray) -> tuple[int, int] | None:
    """Lowest and highest pitch of the NOTE_ON/NOTE_OFF tokens, None when there are none."""
    pitches = V.VALUE_OF_ID[tokens[_note_mask(tokens)]]
    if pitches.size == 0:
        return None
    return int(pitches.min()), int(pitches.max())


def allowed_transpositions(tokens: np.ndarray, max_semitones: int = MAX_TRANSPOSE) -> list[int]:
    """Shifts in [-max, +max] that keep every pitch within 0..127."""
    span = pitch_range(tokens)
    if span is None:
        return [0]
    low, high = span
    return [k for k in range(-max_semitones, max_semitones + 1) if low + k >= 0 and high + k <= 127]


def transpose(tokens: np.ndarray, semitones: int) -> np.ndarray:
    """Shift every note token by `semitones`; a shift that would leave 0..127 is an error."""
    if semitones == 0:
        return tokens.copy()
    if semitones not in allowed_transpositions(tokens, abs(semitones)):
        raise ValueError(f"transposing by {semitones} would move a pitch outside 0..127")
    out = tokens.copy()
    mask = _note_mask(tokens)
    out[mask] = tokens[mask] + semitones  # a pitch is its id's offset in its range: checked above
    return out


def stretch_time(tokens: np.ndarray, factor: float) -> np.ndarray:
    """Scale every time gap by `factor` (1.05 = 5% slower); other tokens are kept as they are."""
    if factor <= 0:
        raise ValueError(f"stretch factor must be positive, got {factor}")
    if factor == 1.0 or tokens.size == 0:
        return tokens.copy()
    steps = V.shift_steps(tokens)
    # Each non-shift token closes the run of shifts before it; a run's new length comes from the
    # rounded cumulative time, so the stretched piece never drifts by more than half a step.
    stretched = np.floor(np.cumsum(steps) * factor + 0.5).astype(np.int64)
    events = np.flatnonzero(steps == 0)
    times = stretched[events]
    gaps = np.diff(times, prepend=0)
    trailing = stretched[-1] - (times[-1] if events.size else 0)  # a run of shifts after the last event
    shift_ids, counts = V.split_gaps(np.append(gaps, trailing))
    # the output: each event after the shifts of its gap, then the trailing shifts
    event_at = np.cumsum(counts[:-1] + 1) - 1
    out = np.empty(shift_ids.size + events.size, dtype=tokens.dtype)
    is_shift = np.ones(out.size, bool)
    is_shift[event_at] = False
    out[event_at] = tokens[events]
    out[is_shift] = shift_ids
    return out


def random_augment(
    window: np.ndarray,
    length: int,
    rng: np.random.Generator,
    max_transpose: int = MAX_TRANSPOSE,
    stretch_factors: tuple[float, ...] = STRETCH_FACTORS,
) -> np.ndarray:
    """A random stretch and transposition of `window`, cut to `length` tokens.

    `window` must be long enough that the stretched result still has `length` tokens: a factor
    f < 1 can remove shift tokens (callers read about 1.25x `length`).
    """
    factor = float(rng.choice(stretch_factors)) if stretch_factors else 1.0
    out = stretch_time(window, factor)[:length]
    shifts = allowed_transpositions(out, max_transpose)
    return transpose(out, int(rng.choice(shifts)))
