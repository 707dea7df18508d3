"""File I/O in one place: atomic writes, and reads of user files that fail with one clear line.

Each write helper writes to a temporary file in the destination's folder and renames it over the
destination; os.replace is atomic on POSIX and Windows when both are on one filesystem, so a
reader (or a killed run) never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from musicgpt.errors import ConfigError, MusicGPTError

# A write that fails for want of room: the disk, a quota, or a file-size limit (ulimit -f).
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class WriteError(MusicGPTError):
    """A file that could not be written (full disk, read-only folder); the old file is unchanged."""


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path`, on error it is removed.

    Beside, not in $TMPDIR: a rename within one file system is atomic, while one across file
    systems fails (EXDEV) and a copy in its place could leave the target half written. A full
    disk is a WriteError naming `path`; the old `path` is whole and the temporary file is gone.
    """
    if "r" in mode or "a" in mode:
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not supported")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise WriteError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        no_room = _no_room(e)
        if no_room is not None:
            kept = "the previous file is unchanged" if path.exists() else "nothing was written"
            raise WriteError(f"{path}: cannot write: {os.strerror(no_room).lower()} ({kept})") from None
        raise


def _no_room(e: BaseException | None) -> int | None:
    """The errno of a full disk (or quota, or size limit) in `e` or what it was raised from:
    torch.save reports one as a RuntimeError of its zip writer, raised while handling the OSError."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in _NO_ROOM:
            return e.errno
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same inode if both exist (links, hard links), else
    the same absolute path once symlinks in the existing part are resolved."""
    a, b = Path(a), Path(b)
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def refuse_overlaps(inputs: dict[str, Any], outputs: Iterable[tuple[str, Any]]) -> None:
    """Before any work: no output may be an input, and no two outputs may be one file.

    inputs: {what: path or None}, e.g. {"--prompt": p}; outputs: (what, path or None) pairs, e.g.
    ("--out (sample 1)", p1). A clash is a MusicGPTError naming both.
    """
    seen: list[tuple[str, Path]] = []
    for what, out in outputs:
        if out is None:
            continue
        for source, inp in inputs.items():
            if inp is not None and same_file(out, inp):
                raise MusicGPTError(f"{what} {out} is the {source} file: writing it would destroy the input")
        for other, earlier in seen:
            if same_file(out, earlier):
                raise MusicGPTError(
                    f"{what} {out} and {other} {earlier} are the same file: one would overwrite the other"
                )
        seen.append((what, Path(out)))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: str | Path, array) -> None:
    import numpy as np

    with atomic_open(path, "wb") as f:
        # Through write(), not ndarray.tofile: tofile reports a full disk as an OSError without
        # an errno ("N requested and M written"), which could not be told from other failures.
        np.save(_Writer(f), array, allow_pickle=False)


class _Writer:
    """A file seen only through write(): numpy then writes in chunks with it."""

    def __init__(self, f: IO):
        self.write = f.write


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty one), or a one-line error."""
    import yaml

    text = read_text(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{path}: not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a YAML {what} must be a mapping of settings, not a {type(data).__name__}")
    return data


def read_json_mapping(path: str | Path, what: str = "settings file") -> dict[str, Any]:
    """A JSON file whose top level is an object, or a one-line error."""
    text = read_text(path, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not a JSON {what} ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a JSON {what} must be an object, not a {type(data).__name__}")
    return data


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's content; a missing file, a folder or binary data is a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: binary data, not a {what}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None


def read_safetensors(path: str | Path) -> dict[str, Any]:
    """Tensors from a .safetensors file; a truncated or foreign file is a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{path}: not a whole safetensors file ({' '.join(str(e).split())})") from None
