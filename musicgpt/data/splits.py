"""Train / validation / test splits by file, so that no piece is in two splits.

MAESTRO ships its own split in `maestro-v*.csv` (columns `split`, `midi_filename`); when the
source folder holds such a file we use it, as every MAESTRO paper does. Otherwise each file's
split comes from a hash of its relative path: deterministic, the same on every machine, and
independent of the order files are found in.
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

from musicgpt.errors import MusicGPTError

SPLITS = ("train", "validation", "test")


def maestro_csv(root: Path) -> Path | None:
    candidates = sorted(root.glob("maestro-v*.csv"))
    return candidates[-1] if candidates else None  # the newest version when several are present


def assign_splits(
    root: Path, rel_paths: list[str], val_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, str]:
    """Relative path -> "train" | "validation" | "test"."""
    csv_path = maestro_csv(root)
    if csv_path is not None:
        return _maestro_splits(csv_path, rel_paths)
    return hash_splits(rel_paths, val_fraction, test_fraction)


def _maestro_splits(csv_path: Path, rel_paths: list[str]) -> dict[str, str]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"split", "midi_filename"} <= set(rows[0]):
        raise MusicGPTError(f"{csv_path}: expected MAESTRO's columns 'split' and 'midi_filename'")
    official = {row["midi_filename"]: row["split"] for row in rows}
    unknown = sorted({s for s in official.values()} - set(SPLITS))
    if unknown:
        raise MusicGPTError(f"{csv_path}: unknown split name(s) {unknown}; expected {list(SPLITS)}")
    # A file missing from the CSV (added by hand) is training data, never evaluation data.
    return {p: official.get(p, "train") for p in rel_paths}


def hash_splits(rel_paths: list[str], val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Rank files by a hash of their path; the first ranks are validation, then test, the rest train.

    Ranking (rather than thresholding each hash) guarantees a non-empty validation and test split
    for any corpus of three files or more, which matters for the small corpora people start with.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise MusicGPTError(f"bad split fractions: validation {val_fraction}, test {test_fraction}")
    ranked = sorted(rel_paths, key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    n = len(ranked)
    n_val = math.ceil(n * val_fraction) if n >= 3 and val_fraction > 0 else 0
    n_test = math.ceil(n * test_fraction) if n >= 3 and test_fraction > 0 else 0
    splits = {}
    for rank, path in enumerate(ranked):
        splits[path] = "validation" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return splits
