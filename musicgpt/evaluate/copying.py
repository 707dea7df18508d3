"""The copy report: does a continuation play back a piece the model was trained on?

A model directory carries `corpus_index.npz`, an index of the music it was trained on: for every
training piece, the hashes of its n-grams of note transitions. A transition is the step from one
note to the next, in onset order (a chord's notes from low to high): the pitch interval and the
onset gap, the gap binned on a log scale (25% wide bins, a chord's notes sharing an onset have
gap 0). Intervals make the index blind to transposition (the training windows were transposed),
log bins to most of the ±5% time stretch, and storing hashes alone keeps it small enough for the
wheel (about 2.5 bytes per n-gram after compression, no notes).

The report of one continuation is its longest run of consecutive n-grams found in one training
piece: the stretch in notes and seconds, and which piece. An n-gram that also occurs in the
prompt does not count (continuing the prompt's own material is wanted, even when the prompt is a
training piece), and a stretch of `FLAG_SECONDS` or more is flagged.

    python -m musicgpt.evaluate.copying MODEL_DIR --data DATA_DIR   # index DATA_DIR's training split

writes MODEL_DIR/corpus_index.npz (what `python -m musicgpt.models.ship` runs for a shipped model).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from musicgpt.errors import MusicGPTError

INDEX_FILE = "corpus_index.npz"
INDEX_FORMAT = 1
NGRAM = 8  # transitions per n-gram: 9 notes, a bar or two of a melody with its chords
CHORD_SECONDS = 0.03  # onsets closer than this are one chord
GAP_BIN_RATIO = 1.25  # onset gaps within 25% of each other fall in the same bin (mostly)
FLAG_SECONDS = 5.0  # a stretch of the training set this long or longer is flagged


def transitions(pitch: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(one int key per transition, the onset of each note in that order) for notes in any order."""
    order = np.lexsort((pitch, start))
    pitch, start = np.asarray(pitch)[order], np.asarray(start, dtype=np.float64)[order]
    if pitch.size < 2:
        return np.zeros(0, np.int64), start
    # a new chord where the onset moves more than CHORD_SECONDS from the previous chord's first note
    chord_start = start.copy()
    for i in range(1, start.size):
        chord_start[i] = chord_start[i - 1] if start[i] - chord_start[i - 1] <= CHORD_SECONDS else start[i]
    # within a chord, low to high whatever the order the notes were struck in
    order = np.lexsort((pitch, chord_start))
    pitch, chord_start = pitch[order], chord_start[order]
    gap = np.diff(chord_start)
    steps = np.maximum(np.round(gap * 100), 1)  # the tokenizer's 10 ms clock
    gap_bin = np.where(gap == 0, 0, 1 + np.round(np.log(steps) / math.log(GAP_BIN_RATIO))).astype(np.int64)
    interval = np.clip(np.diff(pitch.astype(np.int64)), -127, 127) + 127
    return interval * 64 + np.minimum(gap_bin, 63), chord_start


def ngram_hashes(keys: np.ndarray, n: int = NGRAM) -> np.ndarray:
    """uint32 hash of every n consecutive keys (len(keys) - n + 1 of them, or none)."""
    m = keys.size - n + 1
    if m <= 0:
        return np.zeros(0, np.uint32)
    with np.errstate(over="ignore"):
        h = np.zeros(m, np.uint64)
        for j in range(n):  # polynomial hash mod 2^64, then a splitmix64 finish to spread the bits
            h = h * np.uint64(0x100000001B3) + keys[j : j + m].astype(np.uint64) + np.uint64(1)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(32)).astype(np.uint32)


def notes_hashes(notes) -> tuple[np.ndarray, np.ndarray]:
    """(n-gram hashes, onsets of the notes in transition order) of a `Notes`."""
    keys, onsets = transitions(notes.pitch, notes.start)
    return ngram_hashes(keys), onsets


@dataclass
class CorpusIndex:
    """Sorted (hash, piece) pairs: which training pieces hold each n-gram."""

    hashes: np.ndarray  # (K,) uint32, sorted
    pieces: np.ndarray  # (K,) uint16, the piece of each hash
    names: list[str]

    @classmethod
    def build(cls, pieces: list[tuple[str, object]]) -> CorpusIndex:
        """From (name, Notes) pairs."""
        hashes, owners = [], []
        for k, (_, notes) in enumerate(pieces):
            h = np.unique(notes_hashes(notes)[0])
            hashes.append(h)
            owners.append(np.full(h.size, k, np.uint16))
        return cls._sorted(hashes, owners, [name for name, _ in pieces])

    @classmethod
    def _sorted(cls, hashes: list[np.ndarray], owners: list[np.ndarray], names: list[str]) -> CorpusIndex:
        if len(names) > np.iinfo(np.uint16).max:
            raise MusicGPTError(f"a corpus index holds at most 65535 pieces, not {len(names)}")
        h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint32)
        p = np.concatenate(owners) if owners else np.zeros(0, np.uint16)
        order = np.lexsort((p, h))
        return cls(h[order], p[order], list(names))

    def union(self, other: CorpusIndex) -> CorpusIndex:
        """Both corpora in one index (the other's pieces numbered after this one's)."""
        shifted = (other.pieces.astype(np.int64) + len(self.names)).astype(np.uint16)
        return self._sorted([self.hashes, other.hashes], [self.pieces, shifted], self.names + other.names)

    def save(self, path: str | Path) -> None:
        import io

        from musicgpt.io import atomic_write_bytes

        buf = io.BytesIO()
        # Deltas of the sorted hashes compress to about half of the hashes themselves.
        deltas = np.diff(self.hashes, prepend=np.uint32(0)).astype(np.uint32)
        np.savez_compressed(
            buf,
            format=np.int64(INDEX_FORMAT),
            ngram=np.int64(NGRAM),
            hash_deltas=deltas,
            pieces=self.pieces,
            names=np.array(self.names, dtype=str),
        )
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> CorpusIndex:
        try:
            with np.load(path, allow_pickle=False) as f:
                if int(f["format"]) != INDEX_FORMAT or int(f["ngram"]) != NGRAM:
                    raise MusicGPTError(
                        f"{path}: a corpus index of another format; rebuild it with "
                        "`python -m musicgpt.evaluate.copying`"
                    )
                hashes = np.cumsum(f["hash_deltas"], dtype=np.uint32)
                return cls(hashes, f["pieces"].astype(np.uint16), [str(n) for n in f["names"]])
        except (OSError, KeyError, ValueError) as e:
            raise MusicGPTError(f"{path}: not a corpus index ({type(e).__name__})") from None

    def lookup(self, hashes: np.ndarray) -> list[np.ndarray]:
        """For each hash, the pieces that hold it."""
        left = np.searchsorted(self.hashes, hashes, "left")
        right = np.searchsorted(self.hashes, hashes, "right")
        return [self.pieces[a:b] for a, b in zip(left, right, strict=True)]


@dataclass(frozen=True)
class CopyReport:
    """The longest stretch of a continuation found in one training piece."""

    seconds: float  # from the stretch's first onset to its last
    notes: int
    piece: str | None  # None: no n-gram of the continuation is in the corpus
    start: float  # where the stretch begins, in seconds of the whole sequence
    flagged: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        if self.piece is None:
            return "no stretch of the training corpus"
        verdict = f"FLAGGED (>= {FLAG_SECONDS:g} s)" if self.flagged else "not flagged"
        return (
            f"longest stretch of the training corpus {self.seconds:.1f} s ({self.notes} notes, "
            f"from {self.start:.1f} s) of {self.piece}: {verdict}"
        )


def copy_report(index: CorpusIndex, continuation, prompt=None) -> CopyReport:
    """The report of `continuation` (Notes); n-grams found in `prompt` (Notes) do not count."""
    hashes, onsets = notes_hashes(continuation)
    found = index.lookup(hashes)
    if prompt is not None and len(prompt):
        in_prompt = np.isin(hashes, notes_hashes(prompt)[0])
        found = [np.zeros(0, np.uint16) if skip else f for f, skip in zip(found, in_prompt, strict=True)]
    best = (0.0, 0, None, 0.0)  # seconds, notes, piece, start
    run_start: dict[int, int] = {}  # piece -> first n-gram of its current run
    for i in range(len(found) + 1):
        here = set(found[i].tolist()) if i < len(found) else set()
        for piece in list(run_start):
            if piece not in here:  # the run of n-grams i0..i-1 ends: notes i0..i-1+NGRAM
                i0 = run_start.pop(piece)
                seconds = float(onsets[i - 1 + NGRAM] - onsets[i0])
                candidate = (seconds, i - i0 + NGRAM, piece, float(onsets[i0]))
                if candidate[:2] > best[:2]:
                    best = candidate
        for piece in here:
            run_start.setdefault(piece, i)
    seconds, notes, piece, start = best
    name = index.names[piece] if piece is not None else None
    return CopyReport(round(seconds, 2), notes, name, round(start, 2), seconds >= FLAG_SECONDS)


def sequence_report(index: CorpusIndex, tokenizer, ids, prompt_tokens: int) -> CopyReport:
    """The report of a generated sequence: its notes after the prompt's, against the prompt's."""
    notes = tokenizer.decode_notes(np.asarray(ids))
    from_prompt = notes.on_token < prompt_tokens
    return copy_report(index, notes.take(~from_prompt), notes.take(from_prompt))


# --- where indexes come from -----------------------------------------------------------------------


def model_directory(checkpoint: str | Path) -> Path | None:
    """The directory `load_checkpoint` reads for `checkpoint`, or None (a .ckpt file)."""
    from musicgpt.models import bundled_model_dir

    path = Path(checkpoint)
    if not path.exists() and (bundled := bundled_model_dir(str(path))) is not None:
        path = bundled
    if not path.is_dir():
        return None
    if not (path / "config.yaml").exists() and (path / "model").is_dir():
        path = path / "model"
    return path


def index_for(checkpoint: str | Path) -> CorpusIndex | None:
    """The corpus index beside a model, or None when it carries none."""
    directory = model_directory(checkpoint)
    if directory is None or not (directory / INDEX_FILE).exists():
        return None
    return CorpusIndex.load(directory / INDEX_FILE)


def training_pieces(data_dir: str | Path) -> list[tuple[str, object]]:
    """(file name, Notes) of every piece of a built data dir's training split."""
    from musicgpt.data.build import read_manifest
    from musicgpt.data.dataset import TokenShard
    from musicgpt.tokenizers import load_tokenizer, require_music

    manifest = read_manifest(data_dir)
    tokenizer = require_music(load_tokenizer(manifest["tokenizer"]), "the copy report")
    shard = TokenShard(data_dir, "train")
    names = [f["path"] for f in manifest.get("files", []) if f.get("split") in ("train", "by position")]
    if len(names) != shard.n_pieces:
        names = [f"piece {i + 1}" for i in range(shard.n_pieces)]
    return [(name, tokenizer.decode_notes(shard.piece(i))) for i, name in enumerate(names)]


def build_index(data_dir: str | Path) -> CorpusIndex:
    return CorpusIndex.build(training_pieces(data_dir))


def finetuned_index(base_checkpoint: str | Path, data_dir: str | Path) -> CorpusIndex:
    """The base model's corpus (when it carries an index) and the fine-tuning folder's training split."""
    folder = build_index(data_dir)
    base = index_for(base_checkpoint)
    return folder if base is None else base.union(folder)


def write_index(model_dir: str | Path, data_dir: str | Path) -> Path:
    """Index `data_dir`'s training split into MODEL_DIR/corpus_index.npz; returns its path."""
    path = Path(model_dir) / INDEX_FILE
    build_index(data_dir).save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m musicgpt.evaluate.copying",
        description="Write MODEL_DIR/corpus_index.npz from the training split the model was trained on.",
    )
    ap.add_argument("model_dir", help="a model directory (musicgpt/models/NAME, runs/NAME/model)")
    ap.add_argument("--data", required=True, help="the data dir the model trained on (its training split)")
    args = ap.parse_args(argv)
    try:
        if not Path(args.model_dir, "config.yaml").exists():
            raise MusicGPTError(f"{args.model_dir}: not a model directory (no config.yaml)")
        path = write_index(args.model_dir, args.data)
    except MusicGPTError as e:
        print(f"musicgpt: error: {e}", file=sys.stderr)
        return 2
    index = CorpusIndex.load(path)
    print(f"{path}: {len(index.names)} pieces, {index.hashes.size:,} n-grams, {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
