"""Attention as data, apart from any drawing (the bertviz habit).

    ids ─▶ model.attention_probs ─▶ AttentionData (layers, heads, T, T) ─▶ html.py / png.py
                                         │
    decoded notes ─▶ token_note_map ─────┴─▶ note_attention (layers, heads, N, N)

Tokens and notes. A note is a NOTE_ON token: as a query and as a key, note i *is* the token that
started it, so the weight note i gives note j is the weight its NOTE_ON token gives j's NOTE_ON
token. NOTE_OFF, VELOCITY and TIME_SHIFT tokens are dropped from the note view (they stay in the
token heatmap): folding a NOTE_OFF's weight into its note would blur "looks at where the note
began" with "looks at where it ended", which can lie seconds apart. So a note row does not sum
to 1; what is missing went to those other tokens, and `note_share` says how much reached notes.

Long inputs. A 2,048-token excerpt has 4 M weights per head; `compact` keeps the k strongest
keys of every query row, strongest first, with their weights as uint8 fractions of the row's
largest weight (or float16), which is what the page embeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from musicgpt.errors import MusicGPTError
from musicgpt.tokenizers.base import MusicTokenizer, Tokenizer
from musicgpt.tokenizers.notes import Notes


class ExcerptError(MusicGPTError, ValueError):
    """An excerpt (--start/--seconds) that holds no tokens, or a sequence the model cannot read."""


@dataclass(frozen=True)
class TokenNoteMap:
    """Which note each token starts or ends (-1: none), and each note's two tokens."""

    note_of_on: np.ndarray  # (T,) int32: the note a NOTE_ON token starts, else -1
    note_of_off: np.ndarray  # (T,) int32: the note a NOTE_OFF token ends, else -1
    on_token: np.ndarray  # (N,) int64
    off_token: np.ndarray  # (N,) int64, -1 where the note is closed at the end


def token_note_map(notes: Notes, n_tokens: int) -> TokenNoteMap:
    """Invert the decoder's note -> token links into token -> note arrays of length `n_tokens`.

    VELOCITY and TIME_SHIFT tokens belong to no note (-1).
    """
    on = np.asarray(notes.on_token, dtype=np.int64)
    off = np.asarray(notes.off_token, dtype=np.int64)
    if on.shape != off.shape or on.ndim != 1:
        raise ValueError(f"on_token and off_token must be 1-D and alike, got {on.shape} and {off.shape}")
    if on.size and (on.min() < 0 or on.max() >= n_tokens):
        raise ValueError(f"a NOTE_ON index lies outside 0..{n_tokens - 1}: {on.min()}..{on.max()}")
    if np.any((off < -1) | (off >= n_tokens)) or np.any((off >= 0) & (off <= on)):
        raise ValueError("a NOTE_OFF index lies outside the sequence or not after its NOTE_ON")
    note_of_on = np.full(n_tokens, -1, dtype=np.int32)
    note_of_off = np.full(n_tokens, -1, dtype=np.int32)
    note_of_on[on] = np.arange(on.size, dtype=np.int32)
    closed = off >= 0
    note_of_off[off[closed]] = np.flatnonzero(closed).astype(np.int32)
    if np.count_nonzero(note_of_on >= 0) != on.size or np.count_nonzero(note_of_off >= 0) != closed.sum():
        raise ValueError("two notes share one NOTE_ON or NOTE_OFF token")
    return TokenNoteMap(note_of_on, note_of_off, on, off)


def note_attention(attention: np.ndarray, tmap: TokenNoteMap) -> np.ndarray:
    """(..., T, T) token attention -> (..., N, N) note attention: rows and columns of NOTE_ON tokens."""
    on = tmap.on_token
    return attention[..., on[:, None], on[None, :]]


def excerpt_slice(times: np.ndarray, start: float | None = None, seconds: float | None = None) -> slice:
    """The tokens that happen in [start, start + seconds), as a slice (times must not decrease)."""
    times = np.asarray(times, dtype=np.float64)
    start = 0.0 if start is None else float(start)
    if seconds is not None and seconds <= 0:
        raise ExcerptError(f"--seconds must be positive, got {seconds}")
    # 1 ns of slack: token times are sums of 10 ms steps and carry float rounding
    lo = int(np.searchsorted(times, start - 1e-9, side="left"))
    hi = len(times) if seconds is None else int(np.searchsorted(times, start + seconds - 1e-9, side="left"))
    if hi <= lo:
        last = float(times[-1]) if len(times) else 0.0
        span = "to the end" if seconds is None else f"for {seconds:g} s"
        raise ExcerptError(
            f"no tokens from {start:g} s {span} (the piece's events run from 0 to {last:.2f} s)"
        )
    return slice(lo, hi)


def attention_probs(model: Any, ids: np.ndarray) -> np.ndarray:
    """The model's attention for one sequence: (layers, heads, T, T) float32, rows summing to 1."""
    import torch

    if len(ids) > model.config.block_size:
        raise ExcerptError(f"{len(ids)} tokens do not fit the model's context of {model.config.block_size}")
    device = next(model.parameters()).device
    idx = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)[None]  # (1, T)
    with torch.inference_mode():
        probs = model.attention_probs(idx)  # (L, 1, H, T, T)
    return probs[:, 0].float().cpu().numpy()


@dataclass
class AttentionData:
    """Everything a view needs: the weights, what the tokens are, and (music) their notes.

    Built by `from_music` (a piano roll: notes and times) or `from_model` (any tokens, text); the
    views read `music` to tell which.
    """

    attention: np.ndarray  # (layers, heads, T, T) float32, causal, rows sum to 1
    token_ids: np.ndarray  # (T,) int64
    token_names: list[str]
    notes: Notes | None = None  # music: the notes the tokens start
    token_map: TokenNoteMap | None = None
    token_times: np.ndarray | None = None  # music: (T,) seconds from the start of the piece
    first_token: int = 0  # index of token 0 in the whole encoded piece

    @property
    def music(self) -> bool:
        """Whether the tokens are music with notes (from `from_music`), so the views draw a piano roll."""
        return self.notes is not None

    @property
    def n_layer(self) -> int:
        return self.attention.shape[0]

    @property
    def n_head(self) -> int:
        return self.attention.shape[1]

    @property
    def n_tokens(self) -> int:
        return self.attention.shape[-1]

    def note_attention(self) -> np.ndarray:
        """(layers, heads, N, N): the weight each note's NOTE_ON gives each note's NOTE_ON."""
        if self.token_map is None:
            raise ValueError("this AttentionData has no notes (text mode)")
        return note_attention(self.attention, self.token_map)

    def note_share(self) -> np.ndarray:
        """(layers, heads, N): how much of each note's attention reaches note onsets at all."""
        return self.note_attention().sum(axis=-1)

    @classmethod
    def from_model(cls, model: Any, ids: np.ndarray, tokenizer: Tokenizer) -> AttentionData:
        """Run `model` over `ids` (text or any token sequence; no notes)."""
        ids = np.asarray(ids, dtype=np.int64)
        return cls(attention_probs(model, ids), ids, [tokenizer.id_to_token(int(i)) for i in ids])

    @classmethod
    def from_music(
        cls,
        model: Any,
        ids: np.ndarray,
        tokenizer: MusicTokenizer,
        start: float | None = None,
        seconds: float | None = None,
    ) -> AttentionData:
        """The excerpt of an encoded piece from `start` for `seconds`, cut to the model's context.

        Notes come from decoding the whole piece, so velocities and times are those of the piece.
        """
        ids = np.asarray(ids, dtype=np.int64)
        times = np.asarray(tokenizer.token_times(ids), dtype=np.float64)
        span = excerpt_slice(times, start, seconds)
        span = slice(span.start, min(span.stop, span.start + model.config.block_size))
        notes = tokenizer.decode_notes(ids).in_tokens(span)
        part = ids[span]
        return cls(
            attention=attention_probs(model, part),
            token_ids=part,
            token_names=[tokenizer.id_to_token(int(i)) for i in part],
            notes=notes,
            token_map=token_note_map(notes, len(part)),
            token_times=times[span],
            first_token=span.start,
        )


@dataclass(frozen=True)
class CompactAttention:
    """The k strongest keys of every query row, strongest first.

    index: (..., R, k) key position; weight: (..., R, k) uint8 as a fraction of the row's largest
    weight (255 = `scale`), or float16; scale: (..., R) float32, the row's largest weight (uint8)
    or 1 (float16). Rows with fewer than k positive weights are padded with weight 0.
    """

    index: np.ndarray
    weight: np.ndarray
    scale: np.ndarray
    n_keys: int

    @property
    def k(self) -> int:
        return self.index.shape[-1]

    def weights(self) -> np.ndarray:
        """The kept weights as float32, (..., R, k)."""
        if self.weight.dtype == np.uint8:
            return self.weight.astype(np.float32) / 255.0 * self.scale[..., None]
        return self.weight.astype(np.float32)

    def dense(self) -> np.ndarray:
        """(..., R, n_keys) float32 with the kept weights and zeros elsewhere."""
        out = np.zeros(self.index.shape[:-1] + (self.n_keys,), dtype=np.float32)
        np.put_along_axis(out, self.index.astype(np.int64), self.weights(), axis=-1)
        return out


def compact(attention: np.ndarray, k: int, precision: str = "uint8") -> CompactAttention:
    """Keep the top-`k` weights of every row of (..., R, n) `attention` (exactly those; ties by position)."""
    if precision not in ("uint8", "float16"):
        raise ValueError(f"precision must be 'uint8' or 'float16', got {precision!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    *lead, rows, n = attention.shape
    k = min(k, n)
    flat = attention.reshape(-1, rows, n)
    index = np.empty((len(flat), rows, k), dtype=np.uint16 if n <= 65536 else np.uint32)
    value = np.empty((len(flat), rows, k), dtype=np.float32)
    for m, a in enumerate(flat):  # one (rows, n) matrix at a time: argsort's int64 copy stays small
        top = (
            np.argpartition(-a, k - 1, axis=-1)[:, :k] if k < n else np.broadcast_to(np.arange(n), (rows, n))
        )
        w = np.take_along_axis(a, top, axis=-1)
        order = np.lexsort((top, -w), axis=-1)  # strongest first, ties by earlier key
        index[m] = np.take_along_axis(top, order, axis=-1)
        value[m] = np.take_along_axis(w, order, axis=-1)
    index = index.reshape(*lead, rows, k)
    value = value.reshape(*lead, rows, k)
    if precision == "float16":
        return CompactAttention(index, value.astype(np.float16), np.ones(value.shape[:-1], np.float32), n)
    scale = value[..., 0].copy()  # the row's largest weight
    safe = np.where(scale > 0, scale, 1.0)[..., None]
    quant = np.rint(np.clip(value / safe, 0.0, 1.0) * 255.0).astype(np.uint8)
    return CompactAttention(index, quant, scale.astype(np.float32), n)


def strongest_keys(
    weights: np.ndarray, query: int, heads: list[int] | None = None, per_head: int = 8, threshold: float = 0.0
) -> list[tuple[int, int, float]]:
    """The arcs of one query: (head, key, weight) for the `per_head` strongest keys of each head.

    `weights` is (heads, n_keys), the query's row in every head of one layer. Keys below
    `threshold` and the query itself are left out; the result is strongest first.
    """
    arcs = []
    for h in range(weights.shape[0]) if heads is None else heads:
        row = weights[h].astype(np.float64).copy()
        row[query] = -1.0
        order = np.argsort(-row, kind="stable")[:per_head]
        arcs += [(h, int(j), float(row[j])) for j in order if row[j] > 0 and row[j] >= threshold]
    return sorted(arcs, key=lambda a: -a[2])
