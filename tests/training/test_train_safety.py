"""Training loses nothing: checkpoints replace the old file only when whole, a run dir holds one
run at a time, and Ctrl-C exits 130 like every other command (issue 24)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import PIANO_DIR, shipped_config

from musicgpt.cli import main
from musicgpt.data.build import build_dataset
from musicgpt.io import WriteError
from musicgpt.training.checkpoint_io import AtomicCheckpointIO
from musicgpt.training.cli import run_dir_lock, train_cli

TINY = dict(block_size=32, n_layer=1, n_head=2, n_embd=32, dropout=0.0, bias=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in ("fur-elise.mid", "maple-leaf-rag.mid", "solace.mid"):
        shutil.copy(PIANO_DIR / name, src / name)
    out = tmp_path_factory.mktemp("data")
    build_dataset(src, out, "performance", workers=1, progress=False, log=lambda _: None)
    return out


def config(run, data_dir, **trainer):
    run.mkdir(exist_ok=True)
    return shipped_config(
        "piano_cpu", run, data_dir, TINY, **{"max_steps": 2, "val_check_interval": 2, **trainer}
    )


def test_a_second_train_into_a_run_dir_in_use_is_refused(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = config(run, data_dir)
    with run_dir_lock(run):  # what a first `musicgpt train` holds while it runs
        assert main(["train", "--config", str(cfg)]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"musicgpt: error: {run} is in use by another `musicgpt train` (pid {os.getpid()}): wait for it "
            "to finish, or give a different --run_dir"
        )
        assert not (run / "checkpoints").exists()
    # the lock goes with the run that held it, however it ended: the next run takes it
    assert main(["train", "--config", str(cfg)]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_ctrl_c_in_train_exits_130(data_dir, tmp_path, capsys, monkeypatch):
    from musicgpt.training.module import MusicGPTModule

    real_step = MusicGPTModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 1:
            raise KeyboardInterrupt
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(MusicGPTModule, "training_step", interrupted)
    handler = signal.getsignal(signal.SIGINT)
    assert main(["train", "--config", str(config(tmp_path / "run", data_dir, max_steps=5))]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "musicgpt: interrupted"
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's SIG_IGN does not outlive the run


def test_the_first_ctrl_c_in_train_saves_the_step_it_was_in(data_dir, tmp_path, capsys, monkeypatch):
    # A real SIGINT, as a terminal sends it, during step 3 of 6 (global_step 2): the step finishes,
    # last.ckpt holds it (no periodic checkpoint is due), and the command exits 130.
    from musicgpt.training.module import MusicGPTModule

    real_step = MusicGPTModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(MusicGPTModule, "training_step", interrupted)
    handler = signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    args = [
        "--config",
        str(config(run, data_dir, max_steps=6)),
        "--last_checkpoint.every_n_train_steps",
        "100",
    ]
    assert main(["train", *args]) == 130
    err = capsys.readouterr().err.splitlines()
    assert "musicgpt: stopping after this step and saving it (Ctrl-C again to stop at once)" in err
    assert err[-1] == "musicgpt: interrupted"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler


def test_loader_workers_leave_ctrl_c_to_the_main_process():
    from torch.utils.data import DataLoader

    from musicgpt.data.datamodule import leave_ctrl_c_to_the_main_process

    class SigintHandling(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return int(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)

    loader = DataLoader(SigintHandling(), num_workers=1, worker_init_fn=leave_ctrl_c_to_the_main_process)
    assert [int(x) for x in loader] == [1, 1]
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # the main process still hears it


def test_the_trainer_writes_checkpoints_beside_their_target(data_dir, tmp_path, monkeypatch):
    cli = train_cli(["--config", str(config(tmp_path / "run", data_dir))], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    # $TMPDIR on another file system (tmpfs) is never used: the rename stays in checkpoints/
    monkeypatch.setenv("TMPDIR", "/dev/shm")
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b))[1])
    cli.fit()
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last in [Path(b) for _, b in renames]
    assert all(Path(a).parent == Path(b).parent for a, b in renames)  # every file, checkpoints included
    assert sorted(p.name for p in last.parent.iterdir() if p.name.startswith(".")) == []


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("killed while writing")


def test_a_checkpoint_that_fails_half_way_leaves_the_old_one_whole(tmp_path):
    last = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 7, "w": torch.ones(1000)}, last)
    before = last.read_bytes()
    with pytest.raises(RuntimeError, match="killed while writing"):
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(100_000), "x": _Unpicklable()}, last)
    assert last.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_a_full_disk_is_one_line_and_keeps_the_old_checkpoint(tmp_path):
    last = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 7}, last)
    before = last.read_bytes()
    # a file-size limit fails writes as a full disk does (EFBIG rather than ENOSPC)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(WriteError) as e:
            AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(1_000_000)}, last)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert str(e.value) == f"{last}: cannot write: file too large (the previous file is unchanged)"
    assert last.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_a_resumed_run_keeps_an_exported_model_better_than_its_checkpoint_knows(tmp_path):
    # Killed after exporting a model at validation loss 2.70 but before last.ckpt caught up (it
    # knows 2.80 as the best): the resumed run's next validations at 2.75 must not replace it.
    from types import SimpleNamespace

    from musicgpt.io import atomic_write_json
    from musicgpt.training.callbacks import ExportBestModel

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    atomic_write_json(model_dir / "metrics.json", {"val/loss": 2.70, "step": 1845})
    export = ExportBestModel(dirpath=str(model_dir))
    export.load_state_dict({"best": 2.80})
    resumed = SimpleNamespace(global_step=1800, sanity_checking=False, is_global_zero=True)
    export.on_fit_start(resumed, None)
    assert export.best == 2.70

    resumed.callback_metrics = {"val/loss": torch.tensor(2.75)}
    export.on_validation_end(resumed, None)  # not better: nothing exported (pl_module unused)
    assert (model_dir / "metrics.json").read_text().count("1845") == 1

    # a new run (step 0) takes no notice of what a directory holds
    fresh = ExportBestModel(dirpath=str(model_dir))
    fresh.on_fit_start(SimpleNamespace(global_step=0), None)
    assert fresh.best is None
