"""The argument types every subcommand parses with: what each accepts, and the exact refusal."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from conftest import PIANO_DIR

from musicgpt import argtypes

FUR_ELISE = PIANO_DIR / "fur-elise.mid"


def refusal(parse, text: str) -> str:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    return str(info.value)


def probed(parse):
    """The type's parse, then its probe (what a command line gets, after all arguments parsed)."""

    def parse_and_probe(text: str):
        value = parse(text)
        argtypes.probe(parse, value)
        return value

    return parse_and_probe


def test_counts():
    assert argtypes.positive_int("3") == 3
    assert argtypes.non_negative_int("0") == 0
    assert refusal(argtypes.positive_int, "0") == "must be at least 1, got 0"
    assert refusal(argtypes.positive_int, "-2") == "must be at least 1, got -2"
    assert refusal(argtypes.positive_int, "1.5") == "expected a whole number, got '1.5'"
    assert refusal(argtypes.positive_int, "nan") == "expected a whole number, got 'nan'"
    assert refusal(argtypes.positive_int, "2147483648") == "must be in 1..2147483647, got 2147483648"
    assert refusal(argtypes.int_range(0, 127), "128") == "must be in 0..127, got 128"


def test_seeds_are_32_bit_like_lightnings():
    assert argtypes.seed("0") == 0 and argtypes.seed("4294967295") == 2**32 - 1
    assert refusal(argtypes.seed, "4294967296") == "must be in 0..4294967295, got 4294967296"
    assert refusal(argtypes.seed, "-1") == "must be in 0..4294967295, got -1"


def test_numbers_are_finite():
    assert argtypes.non_negative_float("0") == 0.0
    assert argtypes.seconds("3600") == 3600.0
    assert argtypes.probability("1") == 1.0
    assert argtypes.fraction("0") == 0.0
    assert argtypes.start_time("0") == 0.0
    for parse in (argtypes.non_negative_float, argtypes.seconds, argtypes.probability, argtypes.fraction):
        for text in ("nan", "inf", "-inf", "1e400"):
            assert refusal(parse, text) == f"expected a finite number, got {text!r}"
        assert refusal(parse, "abc") == "expected a number, got 'abc'"
    assert refusal(argtypes.non_negative_float, "-1") == "must be at least 0, got -1"
    assert refusal(argtypes.seconds, "0") == "must be more than 0 and at most 3600 seconds, got 0"
    assert refusal(argtypes.seconds, "100000") == "must be more than 0 and at most 3600 seconds, got 100000"
    assert refusal(argtypes.minutes, "-1") == "must be more than 0 and at most 10080 minutes, got -1"
    assert refusal(argtypes.probability, "0") == "must be in (0, 1], got 0"
    assert refusal(argtypes.probability, "1.5") == "must be in (0, 1], got 1.5"
    assert refusal(argtypes.fraction, "1") == "must be in [0, 1), got 1"
    assert refusal(argtypes.start_time, "-5") == "must be at least 0 seconds, got -5"


def test_devices():
    import torch

    assert argtypes.device("cpu") == "cpu" and argtypes.device("cpu:0") == "cpu:0"
    assert probed(argtypes.device)("cpu:0") == "cpu:0"
    assert refusal(argtypes.device, "banana") == "'banana' is not a device (cpu, cuda, cuda:1, mps, ...)"
    assert argtypes.device("cuda:7") == "cuda:7"  # parsing asks no driver: the probe does
    if not torch.cuda.is_available():
        why = " (this PyTorch is a CPU build)" if torch.version.cuda is None else ""
        assert refusal(probed(argtypes.device), "cuda") == f"cuda: no cuda device on this machine{why}"
    else:
        n = torch.cuda.device_count()
        assert probed(argtypes.device)("cuda:0") == "cuda:0"
        assert refusal(probed(argtypes.device), f"cuda:{n}") == (
            f"cuda:{n}: this machine has {n} cuda device(s), cuda:0 to cuda:{n - 1}"
        )


def test_input_paths(tmp_path):
    assert argtypes.input_file(str(FUR_ELISE)) == FUR_ELISE
    assert argtypes.input_path(str(PIANO_DIR)) == PIANO_DIR
    assert (
        refusal(argtypes.input_file, str(tmp_path / "x.mid"))
        == f"{tmp_path / 'x.mid'}: no such file or folder"
    )
    assert refusal(argtypes.input_file, str(tmp_path)) == f"{tmp_path}: a folder, not a file"
    os.mkfifo(tmp_path / "fifo")  # reading one would block until someone writes to it
    assert refusal(argtypes.input_file, str(tmp_path / "fifo")) == f"{tmp_path / 'fifo'}: not a regular file"
    assert (
        refusal(argtypes.input_path, str(tmp_path / "fifo"))
        == f"{tmp_path / 'fifo'}: not a regular file or folder"
    )


def test_checkpoints_are_paths_or_shipped_models(tmp_path):
    from musicgpt.models import bundled_models

    assert argtypes.checkpoint(str(tmp_path)) == str(tmp_path)
    for name in bundled_models():
        assert argtypes.checkpoint(name) == name  # read from the package by load_checkpoint
    shipped = ", ".join(bundled_models()) or "none ship yet"
    assert refusal(argtypes.checkpoint, "no-such-model") == (
        f"no-such-model: no such file or folder, nor a shipped model ({shipped})"
    )


def test_output_paths_are_checked_never_created(tmp_path):
    assert argtypes.output_file(str(tmp_path / "a" / "b" / "x.mid")) == tmp_path / "a" / "b" / "x.mid"
    assert argtypes.output_dir(str(tmp_path / "new")) == tmp_path / "new"
    assert list(tmp_path.iterdir()) == []  # nothing made, no probe left behind
    assert refusal(argtypes.output_file, str(tmp_path)) == f"{tmp_path}: a folder; give a file name"
    assert refusal(argtypes.output_file, "gen/") == "gen/: a folder; give a file name"
    (tmp_path / "f").write_text("")
    assert refusal(argtypes.output_file, str(tmp_path / "f" / "x.mid")) == (
        f"{tmp_path / 'f' / 'x.mid'}: {tmp_path / 'f'} is a file, not a folder"
    )
    assert refusal(argtypes.output_dir, str(tmp_path / "f")) == f"{tmp_path / 'f'}: a file, not a folder"
    # /proc takes no new files, even from root (who passes every os.access check): only a probe
    # file tells, and parsing writes none
    assert argtypes.output_file("/proc/musicgpt/x.mid") == Path("/proc/musicgpt/x.mid")
    assert refusal(probed(argtypes.output_file), "/proc/musicgpt/x.mid").startswith(
        "/proc/musicgpt/x.mid: cannot write in /proc ("
    )
    assert refusal(probed(argtypes.output_dir), "/proc/musicgpt").startswith(
        "/proc/musicgpt: cannot write in /proc ("
    )
    assert probed(argtypes.output_file)(str(tmp_path / "a" / "x.mid")) == tmp_path / "a" / "x.mid"
    assert probed(argtypes.output_dir)(str(tmp_path / "new")) == tmp_path / "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the probes left nothing behind


def test_probes_run_after_every_argument_parsed(tmp_path, capsys):
    """A command line with a bad number and an unwritable output names the number: parsing acts on
    nothing, and the probe (a file written in /proc) runs only for a command line that parsed."""
    from musicgpt.cli import main

    argv = ["tokenize", str(FUR_ELISE), "--out", "/proc/musicgpt/x.npy", "--width"]
    assert main([*argv, "0"]) == 2
    assert "argument --width: must be at least 1, got 0" in capsys.readouterr().err
    assert main([*argv, "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "musicgpt tokenize: error: argument --out: /proc/musicgpt/x.npy: cannot write in /proc ("
    )


def test_the_mask_modes_the_commands_offer_are_the_samplers():
    from musicgpt.cli import build_parser
    from musicgpt.generation.sampling import MASK_MODES

    assert argtypes.MASK_MODES == MASK_MODES
    for argv in (["generate"], ["evaluate", "--data", str(PIANO_DIR)]):
        assert build_parser().parse_args([*argv, "--mask-mode", "spread"]).mask_mode == "spread"


def test_the_grid_the_commands_offer_is_the_samplers():
    from musicgpt.cli import build_parser
    from musicgpt.generation.sampling import MAX_GRID_DIVISIONS

    assert argtypes.grid_divisions(str(MAX_GRID_DIVISIONS)) == MAX_GRID_DIVISIONS
    with pytest.raises(argparse.ArgumentTypeError, match="must be in 0..4, got 5"):
        argtypes.grid_divisions(str(MAX_GRID_DIVISIONS + 1))
    for argv in (["generate"], ["infill", str(PIANO_DIR / "fur-elise.mid"), "--start", "1", "--end", "2", "--out", "x.mid"],
                 ["evaluate", "--data", str(PIANO_DIR)]):  # fmt: skip
        assert build_parser().parse_args([*argv, "--grid", "0"]).grid == 0
