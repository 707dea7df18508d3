"""One run, one directory: what `--run_dir` derives, what it refuses, and the README run as written.

Rows 1 and 2 of the hardening issue: a new run never trains over another one (the README's
"your own collection" steps leave runs/piano alone), and `--resume` with no checkpoint, or with
one that is truncated or empty, is one clear line.
"""

from __future__ import annotations

import csv
import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import PIANO_DIR, ROOT, shipped_config

from musicgpt.cli import main
from musicgpt.commands.demo import cpu_has_bf16_matmul
from musicgpt.data.build import build_dataset
from musicgpt.training.cli import train_cli

TINY = dict(block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("fur-elise.mid", "solace.mid", "bethena.mid", "maple-leaf-rag.mid"):
        shutil.copy(PIANO_DIR / name, src / name)
    out = tmp_path_factory.mktemp("data")
    build_dataset(src, out, "performance", workers=1, progress=False, log=lambda _: None)
    return out


def tiny_run(run_dir: Path, data_dir: Path, *extra: str, run: bool = True):
    run_dir.mkdir(parents=True, exist_ok=True)
    config = shipped_config("piano_cpu", run_dir, data_dir, TINY, max_steps=2, val_check_interval=2)
    return train_cli(["--config", str(config), *extra], run=run)


def test_the_run_dir_is_the_only_place_a_run_is_named(data_dir, tmp_path):
    cli = tiny_run(tmp_path / "run", data_dir, run=False)
    run = str(tmp_path / "run")
    assert cli.trainer.default_root_dir == run
    assert cli.trainer.logger.save_dir == run
    checkpoints = [c for c in cli.trainer.callbacks if type(c).__name__ == "ModelCheckpoint"]
    assert [c.dirpath for c in checkpoints] == [f"{run}/checkpoints"] * 2
    assert [(c.monitor, c.save_last) for c in checkpoints] == [("val/loss", None), (None, True)]
    # linked, not typed twice: the vocabulary from the data's tokenizer, the window from the model
    assert cli.model.config.vocab_size == 393 and cli.datamodule.block_size == 64
    assert (
        cli.model.tokenizer
        == cli.datamodule.tokenizer_settings
        == {"name": "performance", **_perf_defaults()}
    )


def _perf_defaults() -> dict:
    from musicgpt.tokenizers.performance import PerformanceTokenizer

    return {k: v for k, v in PerformanceTokenizer().to_dict().items() if k != "name"}


def test_the_data_defaults_to_the_run_dirs_data(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(data_dir, run / "data")
    assert main(["train", "--config", "text_bytes", "--run_dir", str(run), "--trainer.max_steps", "1"]) == 2
    # text_bytes asks for bytes; the run dir's data/ was built for performance events: it was read
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"musicgpt: error: {run / 'data'} was built with the 'performance' tokenizer, but the config asks for "
        "'bytes': build it again with `musicgpt data build --tokenizer bytes`"
    )


def test_a_new_run_never_trains_over_an_old_one(data_dir, tmp_path, capsys):  # row 1
    run = tmp_path / "run"
    tiny_run(run, data_dir)
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    config = run / "config.yaml"
    assert main(["train", "--config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"musicgpt: error: {run} already holds a run ({run / 'checkpoints' / 'last.ckpt'}): --resume "
        "continues it, --run_dir DIR starts a new one elsewhere"
    )
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    # the same for the demo, before it builds anything
    assert main(["demo", "--run-dir", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"musicgpt: error: {run} already holds a run ({run / 'checkpoints' / 'last.ckpt'}): --resume "
        "continues it, --run-dir DIR starts a new one\n"
    )


def test_resume_needs_a_whole_checkpoint(data_dir, tmp_path, capsys):  # row 2
    run = tmp_path / "run"
    run.mkdir()
    config = shipped_config("piano_cpu", run, data_dir, TINY, max_steps=2)
    argv = ["train", "--config", str(config), "--resume"]
    last = run / "checkpoints" / "last.ckpt"

    assert main(argv) == 2  # nothing to resume: not a silent start from step 0
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == f"musicgpt: error: --resume: {last} does not exist; nothing to continue"
    )

    tiny_run(run, data_dir)
    whole = last.read_bytes()
    for broken in (whole[: len(whole) // 2], b""):
        last.write_bytes(broken)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert err.splitlines()[-1].startswith(f"musicgpt: error: {last}: cannot be read as a checkpoint (")
        assert err.splitlines()[-1].endswith("); delete it to start over")

    last.write_bytes(whole)
    resumed = train_cli(["--config", str(config), "--resume", "--trainer.max_steps", "3"])
    assert resumed.trainer.global_step == 3


def _maestro_like_copy(root: Path) -> Path:
    """The bundled MAESTRO performances laid out as MAESTRO ships: year folders, .midi, the CSV."""
    maestro = root / "maestro-v3.0.0"
    rows = []
    splits = ["train"] * 5 + ["validation"] * 2 + ["test"]
    for i, split in enumerate(splits, 1):
        year = 2004 + 2 * (i % 4)
        name = f"{year}/MIDI-Unprocessed_{i:02d}_R1_{year}_01-03_ORIG_MID--AUDIO_{i:02d}_R1_{year}_Track{i:02d}_wav.midi"
        (maestro / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PIANO_DIR / f"Maestro_{i}.mid", maestro / name)
        rows.append(
            {
                "canonical_composer": "Unknown",
                "canonical_title": f"Piece {i}",
                "split": split,
                "year": year,
                "midi_filename": name,
                "audio_filename": name.replace(".midi", ".wav"),
                "duration": 100.0 + i,
            }
        )
    with open(maestro / "maestro-v3.0.0.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return maestro


def readme_commands(section: str) -> list[list[str]]:
    """The commands of the README section's first ```bash block: continuation lines joined,
    optional parts (`[--wav]`) left out."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(f"## {section}", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    block = re.sub(r"\[[^\]]*\]", "", block.replace("\\\n", " "))
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_readme_steps_for_your_own_collection_run_as_written(tmp_path, monkeypatch, capsys):  # row 1
    maestro = _maestro_like_copy(tmp_path / "home")
    work = tmp_path / "work"  # the folder the user runs the commands in, with the demo's run in it
    demo_run = work / "runs" / "piano"
    for name in (
        "model/model.safetensors",
        "model/config.yaml",
        "checkpoints/last.ckpt",
        "data/manifest.json",
    ):
        (demo_run / name).parent.mkdir(parents=True, exist_ok=True)
        (demo_run / name).write_text(f"the demo's {name}")
    demo_files = {p: p.read_bytes() for p in demo_run.rglob("*") if p.is_file()}
    monkeypatch.chdir(work)
    # test-sized: a couple of steps, a short continuation; everything else as the README writes it
    tiny_training = ["--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false"]
    if not cpu_has_bf16_matmul():
        tiny_training += ["--trainer.precision", "32-true"]
    ran = []
    for argv in readme_commands("Your own MIDI collection"):
        assert argv[0] == "musicgpt"
        if "piano_gpu" in argv:
            continue  # a GPU config (8 devices, DDP)
        args = [
            {"~/maestro-v3.0.0": str(maestro), "IN.mid": str(PIANO_DIR / "Maestro_6.mid")}.get(a, a)
            for a in argv[1:]
        ]
        if args[0] == "train":
            args += tiny_training
        if "--continuations" in args:
            args += ["--seconds", "2", "--num-samples", "1"]
        if args[0] == "generate":
            args[args.index("--seconds") + 1] = "2"
        assert main(args) == 0, (args, capsys.readouterr())
        ran.append(args[0])
    assert ran == ["data", "train", "train", "evaluate", "evaluate", "generate", "attention"]
    out = capsys.readouterr().out
    assert "train: 5 pieces" in out and "validation: 2 pieces" in out and "test: 1 pieces" in out
    assert "test split of runs/maestro/data" in out
    assert sorted(p.name for p in work.glob("OUT-*.mid")) == [
        "OUT-1.mid",
        "OUT-2.mid",
        "OUT-3.mid",
        "OUT-4.mid",
    ]
    assert (work / "attention.html").exists() and (work / "attention.png").exists()
    run = work / "runs" / "maestro"
    assert (run / "model" / "model.safetensors").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "logs" / "version_0" / "config.yaml").exists()  # the CSV logger writes there too
    # and the demo's run is as it was
    assert {p: p.read_bytes() for p in demo_run.rglob("*") if p.is_file()} == demo_files
