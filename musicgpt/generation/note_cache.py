"""The note cache: copy what was heard at the level of notes, not tokens.

`PromptCache` (prompt_cache.py) matches token sequences. In a performance that is brittle: the
same passage played twice interleaves its NOTE_OFFs differently, splits its time shifts around
them, and changes velocity now and then, so an exact run of tokens rarely comes back, and once the
sampler has written a few events of its own it never does. Measured: the token cache lowers the
held-out loss (the model is scored on the real tokens), yet leaves the continuation statistics
where they were (docs/model.md, "The prompt cache").

This cache matches the piece's *skeleton*, what a listener recognises as the same passage:

    items   NOTE_ON(interval to the previous note) and GAP(time between onsets, merged over the
            NOTE_OFFs and shifts inside it), keyed with pitch intervals (a transposed repeat
            matches) and gaps in buckets of a ratio of 1.2 (+-10%: a repeat a little slower
            still matches); velocities and NOTE_OFFs are not items.

At each step, every earlier place whose last `min_match` items or more equal the most recent ones
proposes what came next there, translated to the next token from where the row stands now:

    the next item is a note at the same onset (a chord)  -> that note (VELOCITY first if its
                                                            velocity bin differs from the current)
    the next item is a gap of G steps, e elapsed so far  -> TIME_SHIFT(G - e), or the note after
                                                            the gap once e has reached G

and the proposals vote as in PromptCache (longer matches count more; the gate `CacheGate` turns the
longest match and the votes' agreement into a weight lam). NOTE_OFFs are the model's own: the
cache mixes only the rest of the distribution,

    p(v) = p_model(v)                                           for NOTE_OFF v
    p(v) = (1 - lam) * p_model(v) + lam * (1 - P_off) * q(v)    otherwise

where P_off is the model's total NOTE_OFF mass, so copying a passage's onsets never stops the
model from ending its notes. The gate's coefficients are set by hand, not fitted: in sampling the
cache fires on 1-3% of the steps (docs/model.md, "The note cache"), too rarely for a fit to matter.
"""

from __future__ import annotations

import numpy as np
import torch

from musicgpt.generation.prompt_cache import MAX_LAMBDA, CacheGate
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.vocab import EventType

# The default gate, set by hand (a six-item match with agreeing votes gets lam ~0.7); min_match 6
# as the token cache's, and 4 measured no better in the continuation table (docs/model.md).
NOTE_GATE = CacheGate(
    min_match=6, max_match=64, length_weight=0.15, bias=-2.0, length_coef=1.0, agreement_coef=1.0
)

# Onsets closer than this are one chord: a pianist's chord spreads over 10-30 ms, and whether two
# of its notes are 1 or 2 steps apart says nothing about the passage.
CHORD_STEPS = 4
_GAP_KEY_OFFSET = 1_000  # item keys: pitch intervals (-127..127) and gap buckets (offset) never collide
_RESET_KEY = -1_000_000  # an EOS: nothing matches across pieces
_SHIFT_TYPE, _ON, _OFF, _VEL = EventType.TIME_SHIFT, EventType.NOTE_ON, EventType.NOTE_OFF, EventType.VELOCITY
_IS_NOTE_OFF = V.TYPE_OF_ID == EventType.NOTE_OFF


def gap_key(steps: int) -> int:
    """The bucket a gap of `steps` (>= 1) falls in: buckets of a ratio of 1.2."""
    return _GAP_KEY_OFFSET + int(np.floor(np.log(steps) / np.log(1.2)))


class _Row:
    """One row's tokens, its skeleton (items and their match lengths) and where it stands now."""

    def __init__(self, max_match: int):
        self.max_match = max_match
        self.tokens: list[int] = []
        self.keys: list[int] = []
        self.pitch: list[int] = []  # NOTE_ON items: the pitch; GAP items and resets: -1
        self.at: list[int] = []  # NOTE_ON items: the index of their token in `tokens`
        self.match = np.zeros(0, np.int32)  # match[j]: common suffix length of items[:j+1] and items
        self.elapsed = 0  # steps since the last NOTE_ON
        self.velocity_bin = 0
        self.after_velocity = False
        self.last_pitch: int | None = None

    def _push(self, key: int, pitch: int) -> None:
        n = len(self.keys)
        grown = np.zeros(n + 1, np.int32)  # grown[n] = 0: an item is not an earlier place of itself
        if n:
            keys = np.fromiter(self.keys, np.int64, n)
            grown[0] = keys[0] == key
            grown[1:n] = np.where(keys[1:] == key, np.minimum(self.match[: n - 1] + 1, self.max_match), 0)
        self.match = grown
        self.keys.append(key)
        self.pitch.append(pitch)
        self.at.append(len(self.tokens) - 1)

    def read(self, token: int) -> None:
        self.tokens.append(token)
        kind = V.TYPE_OF_ID[token]
        self.after_velocity = kind == _VEL
        if kind == _SHIFT_TYPE:
            self.elapsed += int(V.STEPS_OF_ID[token])
        elif kind == _VEL:
            self.velocity_bin = int(V.VALUE_OF_ID[token])
        elif kind == _ON:
            pitch = int(V.VALUE_OF_ID[token])
            if self.elapsed >= CHORD_STEPS:
                self._push(gap_key(self.elapsed), -1)
            self.elapsed = 0
            self._push(0 if self.last_pitch is None else pitch - self.last_pitch, pitch)
            self.last_pitch = pitch
        elif token == V.EOS_ID:
            self._push(_RESET_KEY, -1)
            self.elapsed, self.last_pitch = 0, None

    def proposals(self, min_match: int, length_weight: float) -> tuple[dict[int, float], int]:
        """{token: vote} for the next token, and the longest match behind them (0: none)."""
        n = len(self.keys)
        if n < 2 or self.last_pitch is None:
            return {}, 0
        places = np.flatnonzero(self.match[: n - 1] >= min_match)
        if places.size == 0:
            return {}, 0
        lengths = self.match[places]
        longest = int(lengths.max())
        votes: dict[int, float] = {}
        for j, length in zip(places.tolist(), lengths.tolist(), strict=True):
            token = self._next_token(j)
            if token is not None:
                votes[token] = votes.get(token, 0.0) + float(np.exp(length_weight * (length - longest)))
        return votes, (longest if votes else 0)

    def _next_token(self, j: int) -> int | None:
        """What followed there (item j: a note aligned with our last one), from where we stand, or None.

        Walks the tokens after that note: the times of its NOTE_OFFs (the points where a shift
        stopped there, so that the model may end notes at the same moments) and of the next
        NOTE_ON, whose pitch is transposed as our last note is.
        """
        clock, stops, velocity = 0, [], None
        for token in self.tokens[self.at[j] + 1 : self.at[j] + 1 + _MAX_WALK]:
            kind = V.TYPE_OF_ID[token]
            if kind == _SHIFT_TYPE:
                clock += int(V.STEPS_OF_ID[token])
            elif kind == _OFF:
                stops.append(clock)
            elif kind == _VEL:
                velocity = int(V.VALUE_OF_ID[token])
            elif kind == _ON:
                break
            else:
                return None  # an EOS: the piece there ended
        else:
            return None  # no note within reach (or we are at the end of what was heard)
        if _same_time(self.elapsed, clock):
            if velocity is not None and velocity != self.velocity_bin and not self.after_velocity:
                return V.VELOCITY_OFFSET + velocity - 1
            pitch = self.last_pitch + int(V.VALUE_OF_ID[token]) - self.pitch[j]
            return V.NOTE_ON_OFFSET + pitch if 0 <= pitch < 128 else None
        if self.elapsed > clock or self.after_velocity:
            return None  # we have waited longer than the passage did: no longer the same
        nearest = min([t for t in stops if t > self.elapsed] + [clock])
        return int(V.shift_id(min(nearest - self.elapsed, V.MAX_SHIFT_STEPS)))


def _same_time(a: int, b: int) -> bool:
    """Two onset gaps alike: both within a chord, or both longer and in the same bucket."""
    if a < CHORD_STEPS or b < CHORD_STEPS:
        return a < CHORD_STEPS and b < CHORD_STEPS
    return gap_key(a) == gap_key(b)


_MAX_WALK = 256  # tokens looked at after a matched note for the next one


class NoteCache:
    """The note-level copy distribution and its mixing weight, for rows decoded in lockstep.

    The same interface as `PromptCache`: `NoteCache(history)` with history (B, T) performance ids,
    then per step `mix(logits)` and `append(tokens)`; `distribution()` for analysis and tests.
    """

    def __init__(self, history: np.ndarray, gate: CacheGate = NOTE_GATE, strength: float = 1.0):
        history = np.asarray(history, dtype=np.int64)
        if history.ndim != 2:
            raise ValueError(f"history must be (batch, T), got shape {history.shape}")
        self.gate, self.strength = gate, strength
        self.vocab_size = V.VOCAB_SIZE
        self.rows = [_Row(gate.max_match) for _ in range(history.shape[0])]
        for row, tokens in zip(self.rows, history, strict=True):
            for token in tokens.tolist():
                row.read(token)

    def append(self, tokens) -> None:
        """Read the next token of every row (B,)."""
        for row, token in zip(self.rows, np.asarray(tokens).reshape(-1).tolist(), strict=True):
            row.read(token)

    def distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """(q (B, V), lam (B,)): the copy distribution of the next token and its weight."""
        q = np.zeros((len(self.rows), self.vocab_size))
        longest = np.zeros(len(self.rows), np.int64)
        for b, row in enumerate(self.rows):
            votes, longest[b] = row.proposals(self.gate.min_match, self.gate.length_weight)
            for token, vote in votes.items():
                q[b, token] = vote
            if votes:
                q[b] /= q[b].sum()
        lam = self.strength * self.gate.weight(longest, q.max(axis=1))
        return q, np.minimum(lam, MAX_LAMBDA)

    def mix(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V) logits -> the log of the mixture above (NOTE_OFFs keep the model's probabilities)."""
        q, lam = self.distribution()
        if not lam.any():
            return logits
        logp = logits.float().log_softmax(dim=-1)
        width = logits.shape[-1]  # a model's vocabulary may end before or after the table's specials
        is_off = torch.as_tensor(_fit(_IS_NOTE_OFF, width), device=logits.device)
        p_off = logp.masked_fill(~is_off, float("-inf")).logsumexp(dim=-1, keepdim=True)
        q_t = torch.as_tensor(_fit(q, width), dtype=torch.float32, device=logits.device)
        lam_t = torch.as_tensor(lam, dtype=torch.float32, device=logits.device)[:, None]
        # log((1 - lam) p + lam (1 - P_off) q), in logs: exact where a term underflows float32
        copied = torch.log(q_t) + torch.log(lam_t) + torch.log1p(-p_off.exp().clamp(max=1 - 1e-7))
        mixed = torch.logaddexp(logp + torch.log1p(-lam_t), copied)
        mixed = torch.where(is_off, logp, mixed)
        return torch.where(lam_t > 0, mixed, logits.float())


def _fit(table: np.ndarray, width: int) -> np.ndarray:
    """The last axis cut or zero-padded to `width` (only special ids lie past the events)."""
    table = table[..., :width]
    return np.pad(table, [(0, 0)] * (table.ndim - 1) + [(0, width - table.shape[-1])])
