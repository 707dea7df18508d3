"""Build token shards from a folder of MIDI (or text) files.

    musicgpt data build SRC --out DIR

Layout of DIR (see docs/data.md):

    manifest.json        tokenizer settings, the shard files of each split with their piece and
                         token counts, every file with its split and token count, every skipped
                         file with its reason
    tokenizer.json       the tokenizer's settings alone (what `load_tokenizer` reads)
    train-HASH.bin       all training pieces' ids back to back, each followed by EOS (uint16 memmap)
    train-HASH.idx.npy   int64 offsets: piece i is bin[idx[i]:idx[i+1]] (its EOS included)
    validation-HASH.*, test-HASH.*
    cache/               one .npy per tokenized file, so an interrupted build continues

Shard files are named by a hash of their content and the manifest names the set, so writing the
manifest (atomically, last) is what switches from the old set to the new one: a build killed at
any point leaves the previous set whole and in use. Readers check that the files agree with the
manifest. Running the same command again reuses the cached files and tokenizes only what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicgpt.data.splits import SPLITS, assign_splits
from musicgpt.errors import MusicGPTError
from musicgpt.io import WriteError, atomic_save_npy, atomic_write_json
from musicgpt.tokenizers import Tokenizer, is_music, load_tokenizer

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2  # 1: fixed shard names, no file names or vocab_size in the manifest
# shard files this module writes: split.bin / split.idx.npy (format 1), split-HASH.* (format 2)
_SHARD_FILE = re.compile(rf"^({'|'.join(SPLITS)})(-[0-9a-f]+)?\.(bin|idx\.npy)$")


@dataclass
class BuildReport:
    out_dir: Path
    n_files: int
    tokens: dict[str, int] = field(default_factory=dict)  # split -> token count
    pieces: dict[str, int] = field(default_factory=dict)  # split -> number of pieces
    skipped: list[dict[str, str]] = field(default_factory=list)  # files that could not be tokenized
    from_cache: int = 0
    passed_over: list[dict[str, str]] = field(default_factory=list)  # never opened: see scan_files

    def summary(self) -> str:
        parts = [f"{s}: {self.pieces.get(s, 0)} pieces, {self.tokens.get(s, 0):,} tokens" for s in SPLITS]
        lines = [f"built {self.out_dir} from {self.n_files} files ({self.from_cache} from cache)"]
        lines += ["  " + p for p in parts]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} file(s):")
            lines += [f"    {s['path']}: {s['reason']}" for s in self.skipped]
        if self.passed_over:
            lines.append(f"  passed over {len(self.passed_over)} path(s):")
            lines += [f"    {s['path']}: {s['reason']}" for s in self.passed_over]
        return "\n".join(lines)


def find_files(src: Path, suffixes: Iterable[str]) -> list[Path]:
    """Every regular file under src (recursively) with one of the suffixes, in a stable order."""
    return scan_files(src, suffixes)[0]


def scan_files(src: Path, suffixes: Iterable[str]) -> tuple[list[Path], list[dict[str, str]]]:
    """(the regular files under src with one of the suffixes, sorted; what was passed over and why).

    Passed over, each with its reason: a file whose name is not UTF-8 (it could not be named in
    the manifest), a FIFO, socket or device with a matching name (opening a FIFO blocks for ever),
    a link to nothing, and a folder that cannot be listed. Links to folders are not followed (a
    link to a parent would loop). Nothing here opens a file.
    """
    src = Path(src)
    suffixes = tuple(s.lower() for s in suffixes)
    if src.is_file():
        return [src], []
    if not src.is_dir():
        raise MusicGPTError(f"{src}: no such file or directory")
    files: list[Path] = []
    skipped: list[dict[str, str]] = []

    def passed_over(path: Path, reason: str) -> None:
        skipped.append({"path": printable(path.relative_to(src).as_posix()), "reason": reason})

    def unlistable(e: OSError) -> None:
        passed_over(Path(e.filename), f"a folder that cannot be listed ({e.strerror or e})")

    for folder, _, names in os.walk(src, onerror=unlistable):
        for name in names:
            path = Path(folder) / name
            if Path(name).suffix.lower() not in suffixes:
                continue
            if printable(name) != name:
                passed_over(path, "its name is not valid UTF-8 (rename it to read it)")
                continue
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                passed_over(path, f"a link to nothing ({os.readlink(path)})")
                continue
            except OSError as e:
                passed_over(path, f"cannot read ({e.strerror or e})")
                continue
            if not stat.S_ISREG(mode):
                passed_over(path, f"not a regular file ({_file_kind(mode)}): not opened")
                continue
            files.append(path)
    return sorted(files), sorted(skipped, key=lambda s: s["path"])


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (surrogate escapes) shown as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):  # fmt: skip
        if test(mode):
            return kind
    return "not a file"


def _cache_key(path: Path, tokenizer_settings: str) -> str:
    """Content hash of the file and the tokenizer settings: a changed file or setting is re-tokenized."""
    h = hashlib.sha1(tokenizer_settings.encode())
    h.update(path.read_bytes())
    return h.hexdigest()[:20]


# Worker state: each process builds its tokenizer once, not once per file.
_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer_settings: dict[str, Any], watch_parent: bool = False) -> None:
    global _WORKER_TOKENIZER
    if watch_parent:
        # Ctrl-C reaches every process of the terminal's group: the parent alone handles it (by
        # terminating the pool), so workers print no tracebacks of their own.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _exit_with_parent()
    _WORKER_TOKENIZER = load_tokenizer(tokenizer_settings)
    try:  # one thread per worker: the pool already uses every core
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _exit_with_parent(poll_seconds: float = 0.5) -> None:
    """End this worker when the build that started it is gone (killed with SIGKILL, say).

    Otherwise a pool worker waits forever on a task queue that nobody feeds, holding its memory.
    Polling the parent's pid works for every start method and every POSIX system (Linux's
    PR_SET_PDEATHSIG would follow the thread that forked, which the pool does not fix).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _cached_ids_ok(cache_file: Path) -> bool:
    """Whether a cache file holds a whole array; a truncated one (a full disk, a crash of another
    tool) is removed so that the file is tokenized again."""
    if not cache_file.exists():
        return False
    try:
        np.load(cache_file, mmap_mode="r")  # reads the header and checks the data's length
        return True
    except (ValueError, OSError, EOFError):
        cache_file.unlink(missing_ok=True)
        return False


class _CacheWriteFailed(Exception):
    """A cache file could not be written (a full disk): the build stops, it does not skip on."""


def _tokenize_one(path: str, cache_file: str) -> tuple[str, int | None, str | None]:
    """(path, n_tokens or None, error or None). Writes the ids to cache_file.

    A file that cannot be tokenized is an error string (the build skips it and says why); one
    whose ids cannot be written raises _CacheWriteFailed (every later file would fail the same way).
    """
    assert _WORKER_TOKENIZER is not None
    try:
        ids = np.asarray(_WORKER_TOKENIZER.encode(Path(path)))
    except MusicGPTError as e:
        return path, None, _reason(e, path)
    except MemoryError:
        return path, None, "too large to tokenize in the memory this machine has"
    except Exception as e:  # a library failing on a file we did not foresee: report, never end the run
        return path, None, f"{type(e).__name__}: {e}"
    if ids.size == 0:
        return path, None, "no notes (or no text): nothing to train on"
    try:
        atomic_save_npy(cache_file, ids.astype(np.int32, copy=False))
    except (WriteError, OSError) as e:
        raise _CacheWriteFailed(str(e)) from None
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
    small_by_position: bool = False,
) -> BuildReport:
    """Tokenize every file under `src` and write shards to `out` (see the module docstring)."""
    src, out = Path(src), Path(out)
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    settings = tok.to_dict()
    settings_key = json.dumps(settings, sort_keys=True)
    suffixes = tok.suffixes
    files, passed_over = scan_files(src, suffixes)
    if not files:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in passed_over[:3])
        raise MusicGPTError(
            f"{src}: no {'/'.join(suffixes)} files found" + (f" ({reasons})" if reasons else "")
        )
    root = src if src.is_dir() else src.parent
    rel = {p: p.relative_to(root).as_posix() for p in files}

    cache_dir = out / "cache"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MusicGPTError(f"{cache_dir}: cannot make the cache folder ({e.strerror or e})") from None
    failures: dict[Path, str] = {}
    cache_files: dict[Path, Path] = {}
    for p in files:
        try:
            cache_files[p] = cache_dir / f"{_cache_key(p, settings_key)}.npy"
        except OSError as e:  # unreadable (permissions, an I/O error): reported and skipped
            failures[p] = f"cannot read ({e.strerror or e})"
    todo = [p for p in files if p in cache_files and not _cached_ids_ok(cache_files[p])]
    report = BuildReport(
        out_dir=out, n_files=len(files), from_cache=len(cache_files) - len(todo), passed_over=passed_over
    )

    if todo:
        workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        log(f"tokenizing {len(todo)} file(s) with {workers} worker(s) ({report.from_cache} cached)")
        try:
            failures.update(_run_pool(todo, cache_files, settings, workers, progress))
        except _CacheWriteFailed as e:
            cached = sum(1 for f in cache_files.values() if f.exists())
            raise MusicGPTError(
                f"{e}; stopped. {cached} file(s) tokenized so far are kept in {cache_dir}: free some space "
                f"and run the command again to continue, or delete {cache_dir} to give their space back"
            ) from None

    good = [p for p in files if p not in failures]
    if not good:
        reasons = "; ".join(f"{rel[p]}: {failures[p]}" for p in files[:3] if p in failures)
        more = f"; and {len(files) - 3} more" if len(files) > 3 else ""
        raise MusicGPTError(f"{src}: none of the {len(files)} file(s) could be tokenized ({reasons}{more})")
    # A text corpus of one or two documents (a novel) cannot be split by file: each document's
    # opening is training text and its last fractions are validation and test text. Fine-tuning
    # on one or two pieces (`small_by_position`) splits them the same way.
    by_position = (small_by_position or not is_music(tok)) and len(good) < 3
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
    shards = {
        split: _write_shard(out, split, pieces, tok.eos_id, dtype)
        for split, pieces in pieces_by_split.items()
    }
    for split, entry in shards.items():
        report.tokens[split], report.pieces[split] = entry["tokens"], entry["pieces"]

    # The manifest names the new set: replacing it is the switch from the old shards to these.
    atomic_write_json(
        out / MANIFEST,
        {
            "format": MANIFEST_FORMAT,
            "source": str(src.resolve()),
            "tokenizer": settings,
            "vocab_size": tok.vocab_size,
            "dtype": np.dtype(dtype).name,
            "splits": shards,
            "files": manifest_files,
            "skipped": report.skipped + passed_over,
        },
    )
    tok.save(out / "tokenizer.json")
    _remove_unlisted_shards(out, shards)
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
    import multiprocessing

    from tqdm.auto import tqdm

    failures: dict[Path, str] = {}
    by_name = {str(p): p for p in todo}
    bar = tqdm(total=len(todo), unit="file", desc="tokenize", disable=not progress)
    jobs = [(str(p), str(cache_files[p])) for p in todo]
    pool = None
    if workers == 1:  # in-process: simpler to debug, no pickling
        _init_worker(settings)
        results = (_tokenize_one(*job) for job in jobs)
    else:
        # A Ctrl-C while the pool starts would escape before the handler below can stop the
        # workers: hold SIGINT until the pool exists; a pending one then arrives inside the try.
        with _sigint_held():
            pool = multiprocessing.Pool(workers, initializer=_init_worker, initargs=(settings, True))
            results = pool.imap_unordered(_tokenize_job, jobs)
    try:
        for path, _, error in results:
            if error is not None:
                failures[by_name[path]] = error
            bar.update()
    except BaseException:
        # Ctrl-C (or any error): drop the queued files and stop the workers now; every file
        # finished so far is in the cache, so running the command again continues from there.
        if pool is not None:
            pool.terminate()
            pool.join()
        raise
    finally:
        bar.close()
    if pool is not None:
        pool.close()
        pool.join()
    return failures


@contextlib.contextmanager
def _sigint_held():
    """Block SIGINT in this block (main thread, POSIX); a signal that came meanwhile arrives after it."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _tokenize_job(job: tuple[str, str]) -> tuple[str, int | None, str | None]:
    return _tokenize_one(*job)


def _write_shard(out: Path, split: str, pieces: list[np.ndarray], eos_id: int, dtype) -> dict[str, Any]:
    """Concatenate pieces, each followed by EOS, into split-HASH.bin, with offsets in split-HASH.idx.npy.

    Returns the split's manifest entry: its files, pieces and tokens.
    """
    from musicgpt.io import atomic_write_bytes

    lengths = np.array([p.size + 1 for p in pieces], dtype=np.int64)
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.empty(int(offsets[-1]), dtype=dtype)
    for piece, start, end in zip(pieces, offsets[:-1], offsets[1:], strict=True):
        tokens[start : end - 1] = piece
        tokens[end - 1] = eos_id
    data = tokens.tobytes()
    # Named by content: the same build gives the same names (two builds into one folder agree),
    # and new files never overwrite the ones the current manifest names.
    digest = hashlib.sha1(data)
    digest.update(offsets.tobytes())
    stem = f"{split}-{digest.hexdigest()[:16]}"
    entry = {
        "bin": f"{stem}.bin",
        "index": f"{stem}.idx.npy",
        "pieces": len(pieces),
        "tokens": int(tokens.size),
    }
    atomic_write_bytes(out / entry["bin"], data)
    atomic_save_npy(out / entry["index"], offsets)
    return entry


def _remove_unlisted_shards(out: Path, shards: dict[str, dict[str, Any]]) -> None:
    """Shard files of earlier builds (or of builds killed before their manifest) that no manifest names."""
    listed = {name for entry in shards.values() for name in (entry["bin"], entry["index"])}
    for path in out.iterdir():
        if _SHARD_FILE.match(path.name) and path.name not in listed:
            path.unlink(missing_ok=True)  # a reader that has it open keeps its copy (POSIX)


def shard_files(data_dir: Path, manifest: dict[str, Any], split: str) -> tuple[Path, Path, dict[str, Any]]:
    """(bin, index, the split's manifest entry); format-1 manifests name no files: split.bin, split.idx.npy."""
    entry = manifest.get("splits", {}).get(split)
    if not isinstance(entry, dict):
        raise DataDirError(data_dir, f"{MANIFEST} lists no {split} split")
    bin_name = entry.get("bin", f"{split}.bin")
    index_name = entry.get("index", f"{split}.idx.npy")
    return data_dir / bin_name, data_dir / index_name, entry


class DataDirError(MusicGPTError):
    """A data dir whose files do not agree with its manifest: half-written, damaged or edited."""

    def __init__(self, data_dir: str | Path, problem: str):
        super().__init__(
            f"{data_dir}: {problem}; build it again with `musicgpt data build SRC --out {data_dir}`"
        )


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise MusicGPTError(
            f"{data_dir}: not a built dataset (no {MANIFEST}); run `musicgpt data build` first"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataDirError(data_dir, f"{MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or not {"tokenizer", "dtype", "splits"} <= set(manifest):
        raise DataDirError(data_dir, f"{MANIFEST} is not a musicgpt data manifest")
    if manifest.get("format", 1) > MANIFEST_FORMAT:
        raise MusicGPTError(f"{data_dir}: built by a newer musicgpt (format {manifest['format']}); upgrade")
    return manifest


def check_model_reads(data_dir: str | Path, tokenizer: Tokenizer | None, vocab_size: int, what: str) -> None:
    """A model scored on (or continuing) a data dir must read the tokens it was built with.

    `tokenizer` is the model's own (None when its checkpoint names none: then only the vocabulary
    size is compared); `what` names the model in the message.
    """
    settings = read_manifest(data_dir)["tokenizer"]
    name = settings.get("name")
    if tokenizer is not None and tokenizer.name != name:
        raise MusicGPTError(
            f"{what} reads {tokenizer.name} tokens, but {data_dir} was built with the {name} tokenizer"
        )
    data_tokenizer = load_tokenizer(settings)
    # shards hold no ids added to a vocabulary since the model's (the FIM ids live only in windows)
    data_vocab = getattr(data_tokenizer, "base_vocab_size", data_tokenizer.vocab_size)
    if data_vocab > vocab_size:
        raise MusicGPTError(
            f"{data_dir} holds ids up to {data_vocab - 1}; {what} reads only {vocab_size} ids"
        )
