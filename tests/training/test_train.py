"""Training on real piano files: loss goes down, resume restores the state, DDP on CPU, the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PIANO_DIR, shipped_config

from musicgpt.data.build import build_dataset
from musicgpt.data.dataset import FixedWindows, TokenShard
from musicgpt.evaluate.nll import model_loss
from musicgpt.model.gpt import GPT
from musicgpt.training.cli import train_cli

FILES = ["Maestro_3.mid", "fur-elise.mid", "maple-leaf-rag.mid", "POP909_008.mid", "solace.mid"]
TINY = dict(vocab_size=390, block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0, bias=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in FILES:
        shutil.copy(PIANO_DIR / name, src / name)
    out = tmp_path_factory.mktemp("data")
    build_dataset(src, out, "performance", workers=1, progress=False, log=lambda _: None)
    return out


def tiny_config(tmp_path: Path, data_dir: Path, **trainer) -> Path:
    """The bundled piano_cpu config with a tiny model and a few steps."""
    trainer = {"max_steps": 6, "val_check_interval": 3, **trainer}
    return shipped_config("piano_cpu.yaml", tmp_path, data_dir, TINY, **trainer)


def train_loss(model: GPT, data_dir: Path) -> float:
    """Loss on the first fixed windows of the training split: what the optimizer works on."""
    windows = FixedWindows(TokenShard(data_dir, "train"), TINY["block_size"], max_windows=16)
    return model_loss(model, windows).nats


def test_a_few_steps_lower_the_loss(data_dir, tmp_path):
    cli = train_cli(
        ["--config", str(tiny_config(tmp_path, data_dir, max_steps=60, val_check_interval=30))], run=False
    )
    before = train_loss(cli.model.model, data_dir)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    after = train_loss(cli.model.model, data_dir)
    assert before > 5.5  # about ln(390) = 5.97 for random weights
    assert after < before - 1.0, (before, after)
    # the best model was exported where `generate` and `evaluate` look for it
    exported = GPT.from_pretrained(tmp_path / "model")
    assert exported.config.to_dict() == {
        **TINY,
        "vocab_size": 393,  # linked from the data's tokenizer: the events, EOS, PAD and the 3 FIM ids
        "layer_norm_epsilon": 1e-5,
        "position_encoding": "learned",
        "max_relative_distance": None,
        "rope_base": 10000.0,
        "rope_scale": 1.0,
    }
    assert (tmp_path / "model" / "tokenizer.json").exists()


def test_bf16_mixed_on_cpu_lowers_the_loss_with_a_fused_optimizer_and_clipping(data_dir, tmp_path):
    config = tiny_config(tmp_path, data_dir, max_steps=40, val_check_interval=20, precision="bf16-mixed")
    cli = train_cli(["--config", str(config)], run=False)
    before = train_loss(cli.model.model, data_dir)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert train_loss(cli.model.model, data_dir) < before - 0.5
    optimizer = cli.trainer.optimizers[0]
    assert all(group["fused"] for group in optimizer.param_groups)

    # Lightning's mixed-precision plugin refuses to clip for a fused optimizer; the module clips.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        p.grad = torch.full_like(p, 3.0)
    cli.model.configure_gradient_clipping(optimizer, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert norm.item() == pytest.approx(0.5, rel=1e-4)
    for p in params:
        p.grad = torch.full_like(p, -3.0)
    cli.model.configure_gradient_clipping(optimizer, gradient_clip_val=0.1, gradient_clip_algorithm="value")
    assert all(torch.equal(p.grad, torch.full_like(p, -0.1)) for p in params)


def test_the_progress_bar_counts_steps(data_dir, tmp_path):
    from musicgpt.training.callbacks import StepProgressBar

    cli = train_cli(["--config", str(tiny_config(tmp_path, data_dir, enable_progress_bar=True))])
    bar = cli.trainer.progress_bar_callback
    assert isinstance(bar, StepProgressBar)
    assert bar._get_train_description(0) == "Epoch 0"  # not Lightning's "Epoch 0/-2"
    metrics = bar.get_metrics(cli.trainer, cli.model)
    assert metrics["step"] == "6/6" and "v_num" not in metrics
    # a config that turns the bar off gets none
    (tmp_path / "quiet").mkdir()
    quiet = train_cli(["--config", str(tiny_config(tmp_path / "quiet", data_dir))], run=False)
    assert quiet.trainer.progress_bar_callback is None


def test_resume_restores_step_and_optimizer_state(data_dir, tmp_path):
    config = str(tiny_config(tmp_path, data_dir, max_steps=6))
    first = train_cli(["--config", config])
    assert first.trainer.global_step == 6
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 6

    resumed = train_cli(["--config", config, "--trainer.max_steps", "9", "--resume"], run=False)
    resumed.trainer.fit(resumed.model, datamodule=resumed.datamodule, ckpt_path="last")
    assert resumed.trainer.global_step == 9
    # the resumed run started from step 6: its optimizer has taken exactly 9 steps in all
    state = resumed.trainer.optimizers[0].state_dict()["state"]
    assert all(int(s["step"]) == 9 for s in state.values())


def test_resume_loads_the_saved_optimizer_state_exactly(data_dir, tmp_path):
    config = str(tiny_config(tmp_path, data_dir, max_steps=6))
    train_cli(["--config", config])
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = train_cli(["--config", config, "--resume"], run=False)
    # max_steps=6 is already reached: fit restores the checkpoint and stops without a step
    resumed.trainer.fit(resumed.model, datamodule=resumed.datamodule, ckpt_path="last")
    assert resumed.trainer.global_step == 6
    restored = resumed.trainer.optimizers[0].state_dict()
    for key, moments in saved["optimizer_states"][0]["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(restored["state"][key][name], moments[name])
    for name, value in saved["state_dict"].items():
        assert torch.equal(resumed.model.state_dict()[name], value)


@pytest.mark.slow
@pytest.mark.parametrize("killed_after", [7, 10])  # 7: two batches into the second epoch; 10: its end
def test_a_killed_run_resumed_ends_with_the_weights_of_an_uninterrupted_one(data_dir, tmp_path, killed_after):
    # 5 batches an epoch, the schedule fixed at 12 steps in every run
    data = ["--data.samples_per_epoch", "40", "--model.optimizer.decay_steps", "12"]
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_dir.mkdir(), killed_dir.mkdir()
    straight = train_cli(["--config", str(tiny_config(straight_dir, data_dir, max_steps=12)), *data])

    # The run that dies: a periodic checkpoint is written after step `killed_after` (kept under
    # its own name too), and the step it takes afterwards is lost, as if it had been killed there:
    # last.ckpt, which the run's end rewrote, goes back to that periodic one.
    config = tiny_config(killed_dir, data_dir, max_steps=killed_after + 1)
    periodic = [
        "--last_checkpoint.every_n_train_steps",
        str(killed_after),
        "--last_checkpoint.save_top_k",
        "-1",
    ]
    train_cli(["--config", str(config), *data, *periodic])
    checkpoints = killed_dir / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == killed_after + 1
    (at_kill,) = [p for p in checkpoints.glob(f"epoch=*-step={killed_after}.ckpt")]
    shutil.copy(at_kill, checkpoints / "last.ckpt")
    resumed = train_cli(["--config", str(config), "--trainer.max_steps", "12", "--resume", *data])

    assert resumed.trainer.global_step == 12
    ours, theirs = resumed.model.model.state_dict(), straight.model.model.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


def test_a_run_stopped_by_its_time_limit_resumes_from_its_last_step(data_dir, tmp_path):
    # No periodic checkpoint and no validation within reach: only the end of the run saves, and
    # `max_time` ends it after a second, at whatever step that is.
    config = str(tiny_config(tmp_path, data_dir, max_steps=100_000, val_check_interval=100_000))
    no_periodic = ["--last_checkpoint.every_n_train_steps", "100000", "--trainer.max_time", "00:00:00:01"]
    first = train_cli(["--config", config, *no_periodic])
    stopped_at = first.trainer.global_step
    assert 0 < stopped_at < 100_000
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == stopped_at
    for name, value in first.model.state_dict().items():
        assert torch.equal(saved["state_dict"][name], value)

    more = ["--last_checkpoint.every_n_train_steps", "100000", "--trainer.max_time", "00:00:10:00"]
    resumed = train_cli(["--config", config, "--trainer.max_steps", str(stopped_at + 2), "--resume", *more])
    assert resumed.trainer.global_step == stopped_at + 2


def test_ddp_two_processes_on_cpu(data_dir, tmp_path):
    config = tiny_config(tmp_path, data_dir, max_steps=4, val_check_interval=2, devices=2, strategy="ddp")
    result = subprocess.run(
        [sys.executable, "-m", "musicgpt.cli", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    assert "All distributed processes registered. Starting with 2 processes" in result.stderr + result.stdout
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
