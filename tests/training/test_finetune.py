"""`musicgpt finetune`: a folder of MIDI in, a model directory out, the best model kept."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from musicgpt.checkpoints import load_checkpoint
from musicgpt.cli import main
from musicgpt.evaluate.copying import CorpusIndex, index_for
from musicgpt.training.finetune import FinetuneConfig, finetune, freeze_below
from tests.conftest import CORRUPTED_FILES, PIANO_DIR

QUICK = FinetuneConfig(
    minutes=2,
    max_steps=4,
    steps_per_check=2,
    batch_size=2,
    precision="32-true",
    max_val_windows=2,
    patience=5,
)
RAGS = ["maple-leaf-rag.mid", "peacherine-rag.mid", "pineapple-rag.mid", "elite-syncopations.mid"]


def folder_of(tmp_path, names, broken=True):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in names:
        shutil.copy(PIANO_DIR / name, folder / name)
    if broken:
        shutil.copy(CORRUPTED_FILES[0], folder / CORRUPTED_FILES[0].name)
    return folder


def test_finetune_writes_a_model_that_loads(tmp_path, tiny_checkpoint):
    folder = folder_of(tmp_path, RAGS)
    lines = []
    result = finetune(folder, tmp_path / "run", tiny_checkpoint, QUICK, log=lines.append, show_progress=False)
    # the broken file is reported and skipped; at least one piece validates
    assert result.skipped == [{"path": CORRUPTED_FILES[0].name, "reason": result.skipped[0]["reason"]}]
    assert result.pieces["validation"] >= 1 and result.pieces["train"] + result.pieces["validation"] == 4
    assert any("skipped 1 file" in line for line in lines)
    assert result.steps == 4 and result.stopped == "max steps"
    assert result.best_loss <= result.base_loss  # the base model is the first candidate
    model, tokenizer = load_checkpoint(tmp_path / "run" / "model")
    assert tokenizer.name == "performance" and model.config.n_layer == 2
    metrics = json.loads((tmp_path / "run" / "model" / "metrics.json").read_text())
    history = metrics["finetune"]["history"]
    assert [h["step"] for h in history] == [0, 2, 4]
    assert metrics["finetune"]["best_val_loss"] == min(h["val_loss"] for h in history)
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress["state"] == "done" and progress["history"] == history
    # the tiny base carries no corpus index: the fine-tuned model's index is the folder's training split
    manifest = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())
    train = [f["path"] for f in manifest["files"] if f["split"] == "train"]
    assert index_for(tmp_path / "run" / "model").names == train
    # the same --out again is refused rather than overwritten
    with pytest.raises(Exception, match="already holds a fine-tuned model"):
        finetune(folder, tmp_path / "run", tiny_checkpoint, QUICK, log=lambda m: None, show_progress=False)


def test_finetune_stretches_its_windows_over_a_wide_range_of_tempos(tmp_path, tiny_checkpoint, monkeypatch):
    """A few pieces carry a few tempos: a fine-tune stretches its training windows 0.71x-1.41x
    (pretraining: +-5%), so that the model keeps a prompt's tempo (docs/finetune.md, "Tempo")."""
    import musicgpt.data.dataset as dataset

    seen = []
    real = dataset.random_augment

    def recording(window, length, rng, max_transpose, stretch_factors):
        seen.append((max_transpose, tuple(stretch_factors)))
        return real(window, length, rng, max_transpose, stretch_factors)

    monkeypatch.setattr(dataset, "random_augment", recording)
    folder = folder_of(tmp_path, RAGS[:2], broken=False)
    finetune(folder, tmp_path / "run", tiny_checkpoint, QUICK, log=lambda m: None, show_progress=False)
    assert seen and set(seen) == {(3, (0.707, 0.841, 1.0, 1.189, 1.414))}

    # and the transposition is the config's (+-3 semitones unless set)
    seen.clear()
    untransposed = dataclasses.replace(QUICK, max_transpose=0)
    finetune(
        folder, tmp_path / "run0", tiny_checkpoint, untransposed, log=lambda m: None, show_progress=False
    )
    assert seen and {t for t, _ in seen} == {0}


def test_finetune_the_shipped_model_unions_its_index(tmp_path):
    """From piano-small: the model dir's index holds its 18 training pieces and the folder's."""
    folder = folder_of(tmp_path, ["peacherine-rag.mid"], broken=False)
    config = FinetuneConfig(minutes=2, max_steps=1, steps_per_check=1, batch_size=1, precision="32-true",
                            max_val_windows=1)  # fmt: skip
    result = finetune(
        folder, tmp_path / "run", "piano-small", config, log=lambda m: None, show_progress=False
    )
    # one piece: its opening trains, its last fifth validates
    assert result.pieces["train"] == 1 and result.pieces["validation"] == 1
    index = CorpusIndex.load(tmp_path / "run" / "model" / "corpus_index.npz")
    assert len(index.names) == 19 and index.names[-1] == "peacherine-rag.mid"
    assert index.names[:18] == index_for("piano-small").names


def test_stop_keeps_the_best_model(tmp_path, tiny_checkpoint):
    """A stop asked from another thread (the app; Ctrl-C does the same) ends the run with its best model."""
    stop = threading.Event()
    stop.set()
    config = FinetuneConfig(minutes=2, max_steps=1000, steps_per_check=1000, batch_size=2, precision="32-true",
                            max_val_windows=2)  # fmt: skip
    folder = folder_of(tmp_path, RAGS[:3], broken=False)
    t = time.monotonic()
    result = finetune(
        folder, tmp_path / "run", tiny_checkpoint, config, log=lambda m: None, show_progress=False, stop=stop
    )
    assert result.interrupted and result.steps < 1000 and time.monotonic() - t < 60
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["state"] == "interrupted"


def test_freeze_below_trains_only_the_top_blocks(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    freeze_below(model, 1)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("transformer.h.1.", "transformer.ln_f.")) for n in trained)
    with pytest.raises(Exception, match="the model has 2 blocks"):
        freeze_below(model, 3)


def test_cli_errors_are_one_line(tmp_path, tiny_checkpoint, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["finetune", str(empty), "--out", str(tmp_path / "run"), "--checkpoint", str(tiny_checkpoint)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no .mid/.midi files found" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(CORRUPTED_FILES[0], broken)
    assert (
        main(["finetune", str(broken), "--out", str(tmp_path / "run2"), "--checkpoint", str(tiny_checkpoint)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("musicgpt: error:") and "could be tokenized" in err
    assert main(["finetune", str(tmp_path / "nope"), "--out", str(tmp_path / "run3")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_exits_130_with_the_best_model(tmp_path, tiny_checkpoint):
    folder = folder_of(tmp_path, RAGS[:3], broken=False)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "musicgpt.cli", "finetune", str(folder), "--out", str(out),
         "--checkpoint", str(tiny_checkpoint), "--minutes", "5", "--precision", "32-true", "--batch-size", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        p = out / "progress.json"
        if p.exists() and json.loads(p.read_text())["state"] == "training":
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "kept the best model so far" in stderr and "Traceback" not in stderr
    assert "validation loss on the folder" in stdout
    model, _ = load_checkpoint(out / "model")
    assert np.isfinite(json.loads((out / "model" / "metrics.json").read_text())["finetune"]["best_val_loss"])
