"""Datasets over token shards: random windows for training, fixed windows for evaluation.

Pieces are stored back to back, each followed by EOS, and windows may run across a piece
boundary, as GPT-2 trains on documents separated by <|endoftext|>: the model learns that a piece
ends and another begins, and no token is wasted on padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from musicgpt.data.augment import MAX_TRANSPOSE, STRETCH_FACTORS, random_augment
from musicgpt.data.build import MANIFEST, DataDirError, read_manifest, shard_files
from musicgpt.data.fim import FIM_SPAN_SECONDS, fim_window
from musicgpt.errors import MusicGPTError


class TokenShard:
    """One split of a built dataset: a read-only memmap of ids and the offsets of its pieces.

    The files are checked against the manifest (sizes, piece and token counts), so a data dir that
    was half-written or damaged is a clear error, never training on the wrong tokens.
    """

    def __init__(self, data_dir: str | Path, split: str):
        data_dir = Path(data_dir)
        manifest = read_manifest(data_dir)
        self.path, index_path, entry = shard_files(data_dir, manifest, split)
        dtype = np.dtype(manifest["dtype"])
        for f in (self.path, index_path):
            if not f.exists():
                raise DataDirError(data_dir, f"{f.name} is missing")
        n = int(entry.get("tokens", -1))
        if self.path.stat().st_size != n * dtype.itemsize:
            raise DataDirError(
                data_dir,
                f"{self.path.name} holds {self.path.stat().st_size:,} bytes, {MANIFEST} says {n:,} tokens",
            )
        try:
            self.offsets = np.load(index_path)
        except (ValueError, OSError, EOFError):
            raise DataDirError(data_dir, f"{index_path.name} is not a whole .npy array") from None
        pieces = int(entry.get("pieces", -1))
        if self.offsets.shape != (pieces + 1,) or self.offsets[0] != 0 or self.offsets[-1] != n:
            raise DataDirError(
                data_dir, f"{index_path.name} does not index the {pieces} pieces of {self.path.name}"
            )
        # np.memmap refuses empty files; an empty split is a valid (if useless) outcome of a build.
        self.tokens = np.memmap(self.path, dtype=dtype, mode="r") if n else np.empty(0, dtype)
        self.tokenizer_settings = manifest["tokenizer"]
        self.split = split

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_pieces(self) -> int:
        return len(self.offsets) - 1

    def piece(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]])


@dataclass
class AugmentConfig:
    """On-the-fly augmentation of training windows (music only; see musicgpt.data.augment)."""

    max_transpose: int = MAX_TRANSPOSE
    stretch_factors: tuple[float, ...] = STRETCH_FACTORS


class RandomWindows(Dataset):
    """`samples` windows of `block_size + 1` tokens at random places; item i is always the same window.

    Deterministic per (seed, epoch, index), so runs are repeatable and DistributedSampler can
    hand disjoint indices to each process.
    """

    def __init__(
        self,
        shard: TokenShard,
        block_size: int,
        samples: int,
        seed: int = 0,
        augment: AugmentConfig | None = None,
        mix: TokenShard | None = None,
        mix_weight: float = 0.0,
        fim_rate: float = 0.0,
        fim_span_seconds: tuple[float, float] = FIM_SPAN_SECONDS,
    ):
        """`mix`, `mix_weight`: draw that share of the windows from a second shard instead (a
        pretraining corpus beside the music the run is for); item i's source is fixed like its place.
        `fim_rate`: that share of the windows rearranged for infilling (`musicgpt.data.fim`) at a
        span of `fim_span_seconds` (music only); with 0 the windows are exactly those of before."""
        # Stretching can remove time-shift tokens, so augmented windows read a margin more.
        self.read_len = block_size + 1 if augment is None else int((block_size + 1) * 1.25) + 8
        if len(shard) < self.read_len + 1:
            raise MusicGPTError(
                f"{shard.path}: {len(shard)} tokens, too few for windows of {block_size + 1} tokens"
            )
        if mix is not None and len(mix) < self.read_len + 1:
            raise MusicGPTError(
                f"{mix.path}: {len(mix)} tokens, too few for windows of {block_size + 1} tokens"
            )
        self.shard, self.block_size, self.samples = shard, block_size, samples
        self.mix, self.mix_weight = (mix, mix_weight) if mix is not None and mix_weight > 0 else (None, 0.0)
        self.seed, self.epoch, self.augment = seed, 0, augment
        self.fim_rate, self.fim_span_seconds = fim_rate, tuple(fim_span_seconds)
        # a FIM window cuts its prefix and suffix from a stretch of about two windows
        self.fim_read_len = 2 * (block_size + 1) if augment is None else int(2 * (block_size + 1) * 1.25) + 8
        self.resume_batches = 0  # batches of this epoch a resumed run skips (see ResumableLoader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        shard = self.mix if self.mix is not None and rng.random() < self.mix_weight else self.shard
        if self.fim_rate > 0 and rng.random() < self.fim_rate:
            window = self._fim_window(shard, rng)
            if window is not None:
                window = torch.from_numpy(window)
                return window[:-1], window[1:]
        start = int(rng.integers(0, len(shard) - self.read_len + 1))
        window = np.asarray(shard.tokens[start : start + self.read_len]).astype(np.int64)
        if self.augment is not None:
            window = random_augment(
                window, self.block_size + 1, rng, self.augment.max_transpose, self.augment.stretch_factors
            )
            if window.size < self.block_size + 1:  # a stretch that removed more than the margin
                window = np.asarray(shard.tokens[start : start + self.block_size + 1]).astype(np.int64)
        window = torch.from_numpy(window[: self.block_size + 1])
        return window[:-1], window[1:]

    def _fim_window(self, shard: TokenShard, rng: np.random.Generator) -> np.ndarray | None:
        """A fill-in-the-middle window (augmented first, like any other), or None (see `fim_window`)."""
        read = min(self.fim_read_len, len(shard))
        start = int(rng.integers(0, len(shard) - read + 1))
        stretch = np.asarray(shard.tokens[start : start + read]).astype(np.int64)
        if self.augment is not None:
            want = min(2 * (self.block_size + 1), read)
            stretch = random_augment(
                stretch, want, rng, self.augment.max_transpose, self.augment.stretch_factors
            )
        return fim_window(stretch, self.block_size + 1, rng, self.fim_span_seconds)


class FixedWindows(Dataset):
    """Consecutive non-overlapping windows from the start of the split: the same every time.

    Every token after the first of each window is predicted once with up to a full context.
    `max_windows` bounds evaluation time on large splits (the first windows, not a sample).
    """

    def __init__(self, shard: TokenShard, block_size: int, max_windows: int | None = None):
        n = max(0, (len(shard) - 1) // block_size)
        if n == 0:
            raise MusicGPTError(
                f"{shard.path}: {len(shard)} tokens, too few for one window of {block_size + 1}"
            )
        self.shard, self.block_size = shard, block_size
        self.n = n if max_windows is None else min(n, max_windows)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = i * self.block_size
        window = torch.from_numpy(
            np.asarray(self.shard.tokens[start : start + self.block_size + 1]).astype(np.int64)
        )
        return window[:-1], window[1:]
