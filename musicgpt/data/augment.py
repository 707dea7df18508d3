"""Music Transformer's data augmentation, applied to token windows on the fly.

Working on tokens (not on MIDI) keeps one copy of the shards on disk and costs microseconds:
- transposition shifts every NOTE_ON / NOTE_OFF id by the same number of semitones;
- a time stretch rescales every run of TIME_SHIFT tokens, re-quantized on the cumulative time
  so that rounding errors do not add up over a window.
"""

from __future__ import annotations

import numpy as np

from musicgpt.tokenizers import vocab as V

# Music Transformer (Huang et al. 2018, section 5.1): transpositions of up to 3 semitones and
# stretches of +-2.5% and +-5%.
MAX_TRANSPOSE = 3
STRETCH_FACTORS = (0.95, 0.975, 1.0, 1.025, 1.05)


def _note_mask(tokens: np.ndarray) -> np.ndarray:
    return tokens < V.NOTE_OFF_OFFSET + 128  # NOTE_ON and NOTE_OFF are ids 0..255


def pitch_range(tokens: np.ndarray) -> tuple[int, int] | None:
    """Lowest and highest pitch of the NOTE_ON/NOTE_OFF tokens, None when there are none."""
    notes = tokens[_note_mask(tokens)]
    if notes.size == 0:
        return None
    pitches = notes % 128
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
    out[mask] = tokens[mask] + semitones  # stays inside its own range: checked above
    return out


def stretch_time(tokens: np.ndarray, factor: float) -> np.ndarray:
    """Scale every time gap by `factor` (1.05 = 5% slower); other tokens are kept as they are."""
    if factor <= 0:
        raise ValueError(f"stretch factor must be positive, got {factor}")
    if factor == 1.0 or tokens.size == 0:
        return tokens.copy()
    is_shift = (tokens >= V.TIME_SHIFT_OFFSET) & (tokens < V.TIME_SHIFT_OFFSET + V.MAX_SHIFT_STEPS)
    steps = np.where(is_shift, tokens.astype(np.int64) - V.TIME_SHIFT_OFFSET + 1, 0)
    # Each non-shift token closes the run of shifts before it; a run's new length comes from the
    # rounded cumulative time, so the stretched piece never drifts by more than half a step.
    cumulative = np.cumsum(steps)
    events = np.flatnonzero(~is_shift)
    stretched = np.floor(cumulative * factor + 0.5).astype(np.int64)
    out: list[int] = []
    previous_time = 0
    previous_event = -1
    for e in events:
        gap = stretched[e] - previous_time
        out.extend(_shift_tokens(gap))
        out.append(int(tokens[e]))
        previous_time, previous_event = stretched[e], e
    if previous_event < tokens.size - 1:  # a trailing run of shifts
        out.extend(_shift_tokens(stretched[-1] - previous_time))
    return np.asarray(out, dtype=tokens.dtype)


def token_steps_total(tokens: np.ndarray) -> int:
    """Total TIME_SHIFT steps (10 ms each) in `tokens`."""
    tokens = np.asarray(tokens)
    is_shift = (tokens >= V.TIME_SHIFT_OFFSET) & (tokens < V.TIME_SHIFT_OFFSET + V.MAX_SHIFT_STEPS)
    return int((tokens[is_shift] - V.TIME_SHIFT_OFFSET + 1).sum())


def _shift_tokens(steps: int) -> list[int]:
    full, rest = divmod(int(steps), V.MAX_SHIFT_STEPS)
    ids = [V.TIME_SHIFT_OFFSET + V.MAX_SHIFT_STEPS - 1] * full
    if rest:
        ids.append(V.TIME_SHIFT_OFFSET + rest - 1)
    return ids


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
