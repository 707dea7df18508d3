import numpy as np
import pytest

from musicgpt.data.augment import (
    STRETCH_FACTORS,
    allowed_transpositions,
    random_augment,
    stretch_time,
    transpose,
)
from musicgpt.tokenizers import vocab as V

ON, OFF, SHIFT, VEL = V.NOTE_ON_OFFSET, V.NOTE_OFF_OFFSET, V.TIME_SHIFT_OFFSET, V.VELOCITY_OFFSET


def shift(steps: int) -> int:
    return SHIFT + steps - 1


def event_times(tokens: np.ndarray) -> list[tuple[int, int]]:
    """(time in steps, id) of every non-shift token."""
    clock, out = 0, []
    for t in tokens.tolist():
        if SHIFT <= t < SHIFT + V.MAX_SHIFT_STEPS:
            clock += t - SHIFT + 1
        else:
            out.append((clock, t))
    return out


def test_transpose_moves_notes_only():
    tokens = np.array([VEL + 10, ON + 60, shift(50), OFF + 60, ON + 64, V.EOS_ID])
    out = transpose(tokens, 3)
    assert out.tolist() == [VEL + 10, ON + 63, shift(50), OFF + 63, ON + 67, V.EOS_ID]
    assert transpose(tokens, -2).tolist() == [VEL + 10, ON + 58, shift(50), OFF + 58, ON + 62, V.EOS_ID]


def test_transposition_never_leaves_the_keyboard():
    tokens = np.array([ON + 1, OFF + 1, ON + 126, OFF + 126])
    assert allowed_transpositions(tokens, 3) == [-1, 0, 1]
    with pytest.raises(ValueError, match="outside 0..127"):
        transpose(tokens, 2)
    assert allowed_transpositions(np.array([shift(3), V.EOS_ID]), 3) == [0]


def test_stretch_requantizes_on_the_cumulative_clock():
    tokens = np.array([ON + 60, shift(100), OFF + 60])
    assert stretch_time(tokens, 1.05).tolist() == [ON + 60, shift(100), shift(5), OFF + 60]
    assert stretch_time(tokens, 0.95).tolist() == [ON + 60, shift(95), OFF + 60]
    # ten 1-step gaps at 0.9: onsets at k*0.9 steps round half up to 0,1,2,3,4,5,5,6,7,8; rounding
    # each gap alone would give ten 1-step gaps (0.9 -> 1) and drift by a whole step
    gaps = np.array([x for _ in range(10) for x in (ON + 60, shift(1))])
    out = stretch_time(gaps, 0.9)
    assert [t for t, _ in event_times(out)] == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8]
    assert V.shift_steps(out).sum() == 9


def test_stretch_keeps_events_in_order_at_scaled_times(piano_tokens):
    window = piano_tokens[:3000]
    for factor in STRETCH_FACTORS:
        out = stretch_time(window, factor)
        before, after = event_times(window), event_times(out)
        assert [i for _, i in after] == [i for _, i in before]
        expected = [int(np.floor(t * factor + 0.5)) for t, _ in before]
        assert [t for t, _ in after] == expected


def test_random_augment_gives_the_requested_length_and_valid_ids(piano_tokens):
    rng = np.random.default_rng(0)
    for _ in range(50):
        start = int(rng.integers(0, len(piano_tokens) - 700))
        out = random_augment(piano_tokens[start : start + 700], 513, rng)
        assert out.shape == (513,)
        assert out.min() >= 0 and out.max() < V.VOCAB_SIZE
