"""The notes of a token sequence: what a music tokenizer's `decode_notes` gives back.

One type for every reader of notes: the attention view, the piano rolls, the music statistics
and the continuation protocol.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Notes:
    """Notes decoded from ids; index i of every array is one note, in the order of their NOTE_ONs.

    Token indices count from the first token of the sequence the notes were decoded from (or,
    after `in_tokens`, from the first token of the slice).
    """

    pitch: np.ndarray  # (N,) int64, MIDI 0-127
    velocity: np.ndarray  # (N,) int64, MIDI 1-127 (the lowest velocity of the bin)
    start: np.ndarray  # (N,) float64 seconds
    end: np.ndarray  # (N,) float64 seconds
    on_token: np.ndarray  # (N,) int64: index of the NOTE_ON that started the note
    off_token: np.ndarray  # (N,) int64: index of the NOTE_OFF that ended it; -1 if closed at the end

    def __len__(self) -> int:
        return int(self.pitch.size)

    def take(self, keep: np.ndarray) -> Notes:
        """The notes selected by a boolean mask or an index array, token indices unchanged."""
        return Notes(**{f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(self)})

    def in_tokens(self, tokens: slice) -> Notes:
        """The notes started by tokens[tokens.start:tokens.stop], token indices made relative to it.

        A note ended after the slice keeps its times but gets off_token -1.
        """
        i0, i1 = tokens.start, tokens.stop
        part = self.take((self.on_token >= i0) & (self.on_token < i1))
        off = part.off_token
        return dataclasses.replace(
            part, on_token=part.on_token - i0, off_token=np.where((off >= i0) & (off < i1), off - i0, -1)
        )
