"""Build token shards from a folder of MIDI (or text) files.

    musicgpt data build SRC --out DIR

Layout of DIR (see docs/data.md):

    manifest.json        tokenizer settings, every file with its split and token count, every
                         skipped file with its reason
    tokenizer.json       the tokenizer's settings alone (what `load_tokenizer` reads)
    train.bin            all training pieces' ids back to back, each followed by EOS (uint16 memmap)
    train.idx.npy        int64 offsets: piece i is train.bin[idx[i]:idx[i+1]] (its EOS included)
    validation.bin/.idx.npy, test.bin/.idx.npy
    cache/               one .npy per tokenized file, so an interrupted build continues

Every file is written atomically, so a killed build leaves only whole files behind; running the
same command again reuses the cached files and tokenizes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicgpt.data.splits import SPLITS, assign_splits
from musicgpt.errors import MusicGPTError
from musicgpt.io import atomic_save_npy, atomic_write_json
from musicgpt.tokenizers import Tokenizer, is_music, load_tokenizer

MANIFEST = "manifest.json"


@dataclass
class BuildReport:
    out_dir: Path
    n_files: int
    tokens: dict[str, int] = field(default_factory=dict)  # split -> token count
    pieces: dict[str, int] = field(default_factory=dict)  # split -> number of pieces
    skipped: list[dict[str, str]] = field(default_factory=list)
    from_cache: int = 0

    def summary(self) -> str:
        parts = [f"{s}: {self.pieces.get(s, 0)} pieces, {self.tokens.get(s, 0):,} tokens" for s in SPLITS]
        lines = [f"built {self.out_dir} from {self.n_files} files ({self.from_cache} from cache)"]
        lines += ["  " + p for p in parts]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} file(s):")
            lines += [f"    {s['path']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


def find_files(src: Path, suffixes: Iterable[str]) -> list[Path]:
    """Every file under src (recursively) with one of the suffixes, in a stable order."""
    suffixes = tuple(s.lower() for s in suffixes)
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise MusicGPTError(f"{src}: no such file or directory")
    return sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _cache_key(path: Path, tokenizer_settings: str) -> str:
    """Content hash of the file and the tokenizer settings: a changed file or setting is re-tokenized."""
    h = hashlib.sha1(tokenizer_settings.encode())
    h.update(path.read_bytes())
    return h.hexdigest()[:20]


# Worker state: each process builds its tokenizer once, not once per file.
_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer_settings: dict[str, Any]) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = load_tokenizer(tokenizer_settings)
    try:  # one thread per worker: the pool already uses every core
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _tokenize_one(path: str, cache_file: str) -> tuple[str, int | None, str | None]:
    """(path, n_tokens or None, error or None). Writes the ids to cache_file."""
    assert _WORKER_TOKENIZER is not None
    try:
        ids = np.asarray(_WORKER_TOKENIZER.encode(Path(path)))
    except MusicGPTError as e:
        return path, None, _reason(e, path)
    except Exception as e:  # a library failing on a file we did not foresee: report, never end the run
        return path, None, f"{type(e).__name__}: {e}"
    if ids.size == 0:
        return path, None, "no notes (or no text): nothing to train on"
    atomic_save_npy(cache_file, ids.astype(np.int32, copy=False))
    return path, int(ids.size), None


def _reason(error: Exception, path: str) -> str:
    """The problem without the file name (the report puts the name beside it)."""
    message = str(error)
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def build_dataset(
    src: str | Path,
    out: str | Path,
    tokenizer: Tokenizer | dict[str, Any] | str = "performance",
    *,
    workers: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> BuildReport:
    """Tokenize every file under `src` and write shards to `out` (see the module docstring)."""
    src, out = Path(src), Path(out)
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    settings = tok.to_dict()
    settings_key = json.dumps(settings, sort_keys=True)
    suffixes = tok.suffixes
    files = find_files(src, suffixes)
    if not files:
        raise MusicGPTError(f"{src}: no {'/'.join(suffixes)} files found")
    root = src if src.is_dir() else src.parent
    rel = {p: p.relative_to(root).as_posix() for p in files}

    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_files = {p: cache_dir / f"{_cache_key(p, settings_key)}.npy" for p in files}
    todo = [p for p in files if not cache_files[p].exists()]
    report = BuildReport(out_dir=out, n_files=len(files), from_cache=len(files) - len(todo))
    failures: dict[Path, str] = {}

    if todo:
        workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        log(f"tokenizing {len(todo)} file(s) with {workers} worker(s) ({report.from_cache} cached)")
        failures = _run_pool(todo, cache_files, settings, workers, progress)

    # A text corpus of one or two documents (a novel) cannot be split by file: each document's
    # opening is training text and its last fractions are validation and test text.
    good = [p for p in files if p not in failures]
    by_position = not is_music(tok) and len(good) < 3
    # Splits are drawn among the files that tokenized: a broken file must not take the place of
    # the only validation piece.
    splits = assign_splits(root, [rel[p] for p in good], val_fraction, test_fraction)
    manifest_files, pieces_by_split = [], {s: [] for s in SPLITS}
    for p in files:
        if p in failures:
            report.skipped.append({"path": rel[p], "reason": failures[p]})
            continue
        ids = np.load(cache_files[p])
        if by_position:
            parts = split_by_position(ids, val_fraction, test_fraction)
            for split, part in parts.items():
                pieces_by_split[split].append(part)
            counts = {split: int(part.size) for split, part in parts.items()}
            manifest_files.append({"path": rel[p], "split": "by position", "tokens": counts})
        else:
            split = splits[rel[p]]
            pieces_by_split[split].append(ids)
            manifest_files.append({"path": rel[p], "split": split, "tokens": int(ids.size)})

    dtype = np.uint16 if tok.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    for split, pieces in pieces_by_split.items():
        report.tokens[split], report.pieces[split] = _write_shard(out, split, pieces, tok.eos_id, dtype)

    tok.save(out / "tokenizer.json")
    atomic_write_json(
        out / MANIFEST,
        {
            "format": 1,
            "source": str(src.resolve()),
            "tokenizer": settings,
            "dtype": np.dtype(dtype).name,
            "splits": {s: {"pieces": report.pieces[s], "tokens": report.tokens[s]} for s in SPLITS},
            "files": manifest_files,
            "skipped": report.skipped,
        },
    )
    return report


def split_by_position(ids: np.ndarray, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """The first (1 - val - test) of a document for training, then validation, then test."""
    n = ids.size
    val_start = int(round(n * (1 - val_fraction - test_fraction)))
    test_start = int(round(n * (1 - test_fraction)))
    return {"train": ids[:val_start], "validation": ids[val_start:test_start], "test": ids[test_start:]}


def _run_pool(
    todo: list[Path], cache_files: dict[Path, Path], settings: dict, workers: int, progress: bool
) -> dict[Path, str]:
    from tqdm.auto import tqdm

    failures: dict[Path, str] = {}
    by_name = {str(p): p for p in todo}
    bar = tqdm(total=len(todo), unit="file", desc="tokenize", disable=not progress)
    if workers == 1:  # in-process: simpler to debug, no pickling
        _init_worker(settings)
        results = (_tokenize_one(str(p), str(cache_files[p])) for p in todo)
        for path, _, error in results:
            if error is not None:
                failures[by_name[path]] = error
            bar.update()
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(settings,)) as pool:
            futures = [pool.submit(_tokenize_one, str(p), str(cache_files[p])) for p in todo]
            for future in as_completed(futures):
                path, _, error = future.result()
                if error is not None:
                    failures[by_name[path]] = error
                bar.update()
    bar.close()
    return failures


def _write_shard(out: Path, split: str, pieces: list[np.ndarray], eos_id: int, dtype) -> tuple[int, int]:
    """Concatenate pieces, each followed by EOS, into split.bin; offsets into split.idx.npy."""
    lengths = np.array([p.size + 1 for p in pieces], dtype=np.int64)
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.empty(int(offsets[-1]), dtype=dtype)
    for piece, start, end in zip(pieces, offsets[:-1], offsets[1:], strict=True):
        tokens[start : end - 1] = piece
        tokens[end - 1] = eos_id
    from musicgpt.io import atomic_write_bytes

    atomic_write_bytes(out / f"{split}.bin", tokens.tobytes())
    atomic_save_npy(out / f"{split}.idx.npy", offsets)
    return int(tokens.size), len(pieces)


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise MusicGPTError(
            f"{data_dir}: not a built dataset (no {MANIFEST}); run `musicgpt data build` first"
        )
    return json.loads(path.read_text(encoding="utf-8"))
