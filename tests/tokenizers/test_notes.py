"""The one note type: selecting notes and cutting them to a slice of tokens."""

from __future__ import annotations

import numpy as np

from musicgpt.tokenizers.notes import Notes
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.vocab import name_to_id

TOK = PerformanceTokenizer()


def decoded(*names: str) -> Notes:
    return TOK.decode_notes([name_to_id(n) for n in names])


def test_decode_notes_gives_notes():
    notes = decoded(
        "NOTE_ON_60", "NOTE_ON_64", "TIME_SHIFT_50", "NOTE_OFF_60", "TIME_SHIFT_50", "NOTE_OFF_64"
    )
    assert isinstance(notes, Notes) and len(notes) == 2
    assert notes.pitch.tolist() == [60, 64] and notes.end.tolist() == [0.5, 1.0]
    assert (notes.on_token.tolist(), notes.off_token.tolist()) == ([0, 1], [3, 5])


def test_take_keeps_token_indices():
    notes = decoded("NOTE_ON_60", "NOTE_ON_64", "TIME_SHIFT_50", "NOTE_OFF_60", "NOTE_OFF_64")
    part = notes.take(np.array([False, True]))
    assert part.pitch.tolist() == [64] and part.on_token.tolist() == [1] and part.off_token.tolist() == [4]


def test_in_tokens_makes_indices_relative_and_drops_ends_outside():
    notes = decoded(
        "NOTE_ON_60", "TIME_SHIFT_10", "NOTE_ON_62", "TIME_SHIFT_10", "NOTE_OFF_60", "NOTE_OFF_62"
    )
    part = notes.in_tokens(slice(1, 5))  # NOTE_ON_62 starts in it; its NOTE_OFF (token 5) lies after
    assert part.pitch.tolist() == [62]
    assert (part.on_token.tolist(), part.off_token.tolist()) == ([1], [-1])
    assert part.start.tolist() == [0.1] and part.end.tolist() == [0.2]  # times are the piece's
