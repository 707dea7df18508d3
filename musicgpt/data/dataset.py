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
from musicgpt.data.build import read_manifest
from musicgpt.errors import MusicGPTError


class TokenShard:
    """One split of a built dataset: a read-only memmap of ids and the offsets of its pieces."""

    def __init__(self, data_dir: str | Path, split: str):
        data_dir = Path(data_dir)
        manifest = read_manifest(data_dir)
        self.path = data_dir / f"{split}.bin"
        if not self.path.exists():
            raise MusicGPTError(f"{data_dir}: no {split} shard ({self.path.name})")
        n = self.path.stat().st_size // np.dtype(manifest["dtype"]).itemsize
        # np.memmap refuses empty files; an empty split is a valid (if useless) outcome of a build.
        self.tokens = (
            np.memmap(self.path, dtype=manifest["dtype"], mode="r") if n else np.empty(0, manifest["dtype"])
        )
        self.offsets = np.load(data_dir / f"{split}.idx.npy")
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
    ):
        # Stretching can remove time-shift tokens, so augmented windows read a margin more.
        self.read_len = block_size + 1 if augment is None else int((block_size + 1) * 1.25) + 8
        if len(shard) < self.read_len + 1:
            raise MusicGPTError(
                f"{shard.path}: {len(shard)} tokens, too few for windows of {block_size + 1} tokens"
            )
        self.shard, self.block_size, self.samples = shard, block_size, samples
        self.seed, self.epoch, self.augment = seed, 0, augment
        self.resume_batches = 0  # batches of this epoch a resumed run skips (see ResumableLoader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        start = int(rng.integers(0, len(self.shard) - self.read_len + 1))
        window = np.asarray(self.shard.tokens[start : start + self.read_len]).astype(np.int64)
        if self.augment is not None:
            window = random_augment(
                window, self.block_size + 1, rng, self.augment.max_transpose, self.augment.stretch_factors
            )
            if window.size < self.block_size + 1:  # a stretch that removed more than the margin
                window = np.asarray(self.shard.tokens[start : start + self.block_size + 1]).astype(np.int64)
        window = torch.from_numpy(window[: self.block_size + 1])
        return window[:-1], window[1:]


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
