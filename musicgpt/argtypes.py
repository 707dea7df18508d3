"""What each kind of command-line value may be: one argparse `type=` function per kind.

Every subcommand declares its arguments with these, so a bad value (negative, zero, nan, inf, too
large, not a number, a path that cannot be read or written) stops the command while its arguments
are parsed, as one line naming the argument, before any model is loaded or any work is done.
The training command (LightningCLI) checks its own values with the jsonargparse types in the
signatures of `TokenDataModule` and `GPTConfig`; `output_dir` serves it too.

Parsing has no side effects: paths are checked, never created. The two checks that must act to
know (a probe file written and removed where an output goes; a query of the GPU driver) are each
type's `probe`, which `probe_arguments` runs once every argument has parsed, before the command
starts (`check` runs both for a value from a config file).
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

# Counts are bounded by C's int: larger ones overflow in numpy and torch before they mean anything.
INT_MAX = 2**31 - 1
# Lightning's seed_everything takes 32-bit seeds; one range for every seed the commands accept.
SEED_MAX = 2**32 - 1

_Error = argparse.ArgumentTypeError


def _named(name: str, fn: Callable) -> Callable:
    fn.__name__ = name  # argparse names the type in its messages
    return fn


def _parse_int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise _Error(f"expected a whole number, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Error(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _Error(f"expected a finite number, got {text!r}")
    return value


def int_range(low: int, high: int = INT_MAX) -> Callable[[str], int]:
    """A whole number in [low, high]."""

    def parse(text: str) -> int:
        value = _parse_int(text)
        if not low <= value <= high:
            bound = f"at least {low}" if high == INT_MAX and value < low else f"in {low}..{high}"
            raise _Error(f"must be {bound}, got {value}")
        return value

    return _named(f"int in {low}..{high}", parse)


positive_int = _named("positive int", int_range(1))
non_negative_int = _named("non-negative int", int_range(0))
seed = _named("seed", int_range(0, SEED_MAX))
# Samples are drawn as one batch, whose memory grows with it: more than this, run the command again.
MAX_SAMPLES = 256
sample_count = _named("sample count", int_range(1, MAX_SAMPLES))
# --mask-mode's choices: SamplingConfig.mask_mode's values (generation/sampling.MASK_MODES), spelt
# here so that building the parser imports no torch; a test holds the two equal.
MASK_MODES = ("per_group", "spread", "renormalize")
# --grid: SamplingConfig.grid's range (generation/sampling.MAX_GRID_DIVISIONS), as MASK_MODES
grid_divisions = _named("grid divisions", int_range(0, 4))


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a temperature: 0 means greedy)."""
    value = _parse_float(text)
    if value < 0:
        raise _Error(f"must be at least 0, got {text}")
    return value


def positive_number(high: float = math.inf, unit: str = "") -> Callable[[str], float]:
    """A finite number more than 0 and at most `high`."""

    def parse(text: str) -> float:
        value = _parse_float(text)
        if not 0 < value <= high:
            limit = f" and at most {high:g}{unit}" if math.isfinite(high) else ""
            raise _Error(f"must be more than 0{limit}, got {text}")
        return value

    return _named(f"positive number{unit}", parse)


# A generated piece, a prompt or an excerpt of up to an hour: longer requests are mistakes
# (seconds typed for samples) that would sample for hours.
seconds = positive_number(3600.0, " seconds")
# A training time limit of up to a week (Lightning's max_time).
minutes = positive_number(7 * 24 * 60.0, " minutes")


def start_time(text: str) -> float:
    """A time in a piece: 0 or later."""
    value = _parse_float(text)
    if value < 0:
        raise _Error(f"must be at least 0 seconds, got {text}")
    return value


def probability(text: str) -> float:
    """A probability mass to keep, in (0, 1] (top-p)."""
    value = _parse_float(text)
    if not 0 < value <= 1:
        raise _Error(f"must be in (0, 1], got {text}")
    return value


def prompt_cache_strength(text: str) -> float:
    """How strongly the sampler copies (SamplingConfig.prompt_cache): 0 (off) to 2."""
    value = _parse_float(text)
    if not 0 <= value <= 2:
        raise _Error(f"must be from 0 (off) to 2, got {text}")
    return value


def fraction(text: str) -> float:
    """A share of a whole, in [0, 1)."""
    value = _parse_float(text)
    if not 0 <= value < 1:
        raise _Error(f"must be in [0, 1), got {text}")
    return value


def _probes(probe: Callable[[object], None]) -> Callable[[Callable], Callable]:
    """Give a type the check that `probe_arguments` runs after parsing."""

    def mark(parse: Callable) -> Callable:
        parse.probe = probe
        return parse

    return mark


def _device_exists(text: str) -> None:
    """The device is on this machine (asks the driver: run after parsing, not while)."""
    import torch

    d = torch.device(text)
    if d.type in ("cpu", "meta"):
        return
    if d.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    else:
        backend = getattr(torch, d.type, None)  # torch.cuda, torch.xpu, ...
        available = bool(backend is not None and getattr(backend, "is_available", lambda: False)())
        count = backend.device_count() if available else 0
    if not available:
        why = " (this PyTorch is a CPU build)" if d.type == "cuda" and torch.version.cuda is None else ""
        raise _Error(f"{text}: no {d.type} device on this machine{why}")
    if d.index is not None and d.index >= count:
        raise _Error(
            f"{text}: this machine has {count} {d.type} device(s), {d.type}:0 to {d.type}:{count - 1}"
        )


@_probes(_device_exists)
def device(text: str) -> str:
    """A torch device name: cpu, cuda, cuda:1, mps, ... (its probe: one this machine has)."""
    if text == "cpu":
        return text  # no torch import for the default
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise _Error(f"{text!r} is not a device (cpu, cuda, cuda:1, mps, ...)") from None
    return text


def input_file(text: str) -> Path:
    """A regular file that can be read (not a folder, and not a FIFO, which would block)."""
    path = Path(text)
    _must_exist(path)
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise _Error(f"{text}: a folder, not a file")
    if not stat.S_ISREG(mode):
        raise _Error(f"{text}: not a regular file")
    if not os.access(path, os.R_OK):
        raise _Error(f"{text}: not readable")
    return path


def input_path(text: str) -> Path:
    """A regular file or a folder that exists (a data source, a checkpoint)."""
    path = Path(text)
    _must_exist(path)
    mode = path.stat().st_mode
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise _Error(f"{text}: not a regular file or folder")
    return path


def checkpoint(text: str) -> str:
    """A model: a checkpoint file or folder that exists, or the name of a model shipped in the package."""
    if Path(text).exists():
        return str(input_path(text))
    from musicgpt.models import bundled_models

    shipped = bundled_models()
    if text in shipped:
        return text
    raise _Error(
        f"{text}: no such file or folder, nor a shipped model ({', '.join(shipped) or 'none ship yet'})"
    )


@_probes(lambda path: _writable_from(path.parent, str(path)))
def output_file(text: str) -> Path:
    """A file that can be written: not a folder, in a folder that exists or can be made (its probe:
    a file can be created there)."""
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise _Error(f"{text}: a folder; give a file name")
    _nearest_folder(path.parent, text)
    return path


@_probes(lambda path: _writable_from(path, str(path)))
def output_dir(text: str | Path) -> Path:
    """A folder that exists, or that can be made (its probe: a file can be created in it)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise _Error(f"{text}: a file, not a folder")
    _nearest_folder(path, str(text))
    return path


def probe(parse: Callable[[str], object], value) -> None:
    """Run the probe of the type `parse` (if it has one) on its parsed `value`."""
    check_by_acting = getattr(parse, "probe", None)
    if check_by_acting is not None and value is not None:
        check_by_acting(value)


def probe_arguments(actions: Iterable[argparse.Action], namespace: argparse.Namespace) -> None:
    """The probes of every argument that has a value, once all have parsed; a bad value raises
    argparse.ArgumentError (worded as argparse words a value its type refused)."""
    for action in actions:
        try:
            probe(action.type, getattr(namespace, action.dest, None))
        except _Error as e:
            raise argparse.ArgumentError(action, str(e)) from None


def check(parse: Callable[[str], object], value, name: str):
    """`parse(value)` and its probe outside argparse (a value from a config file): a bad one is a
    ConfigError naming `name`."""
    from musicgpt.errors import ConfigError

    try:
        parsed = parse(str(value))
        probe(parse, parsed)
        return parsed
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"{name}: {e}") from None


def _must_exist(path: Path) -> None:
    if not path.exists():
        raise _Error(f"{path}: no such file or folder")


def _nearest_folder(folder: Path, text: str) -> Path:
    """The nearest folder on the way to `folder` that exists; a file there is an error."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise _Error(f"{text}: {existing} is a file, not a folder")
    return existing


def _writable_from(folder: Path, text: str) -> None:
    """The nearest existing folder on the way to `folder` must be a folder we can create files in."""
    existing = _nearest_folder(folder, text)
    try:
        # Create a file, rather than trust os.access: root passes access() on a read-only mount.
        fd, probe_file = tempfile.mkstemp(dir=existing, prefix=".musicgpt-probe-")
    except OSError as e:
        raise _Error(f"{text}: cannot write in {existing} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe_file)
