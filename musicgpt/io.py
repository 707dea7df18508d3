"""File I/O in one place: atomic writes, and reads of user files that fail with one clear line.

Each write helper writes to a temporary file in the destination's folder and renames it over the
destination; os.replace is atomic on POSIX and Windows when both are on one filesystem, so a
reader (or a killed run) never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from musicgpt.errors import ConfigError


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path`, on error it is removed."""
    if "r" in mode or "a" in mode:
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not supported")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
        np.save(f, array, allow_pickle=False)


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
