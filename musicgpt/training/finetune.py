"""Fine-tune a trained model on a folder of MIDI files: the recipe for a few to a few hundred pieces.

    musicgpt finetune FOLDER --out runs/NAME [--checkpoint M] [--minutes N]

The same Lightning loop and `MusicGPTModule` as `musicgpt train`, set for a small folder:

- the folder is built by the data builder into OUT/data (bad files reported and skipped); at
  least one piece goes to validation (one or two pieces: the last fifth of each, by position);
- a low, constant learning rate (1e-4 after a short warm-up: the pretrained weights are a good
  start, and a cosine decay would need to know when the time budget ends);
- every `steps_per_check` steps the folder's validation loss is measured; the best model so far
  is written to OUT/model (the base model's own loss is the first entry, so the model written is
  never worse on the folder than what it started from) and training stops after `patience` checks
  without a gain, at `minutes`, or at Ctrl-C (the best model so far stays);
- all layers train by default; `train_layers=K` trains only the top K blocks (docs/finetune.md
  has the numbers that chose the default).

OUT/progress.json is rewritten at every check (the app's fine-tuning panel reads it), and
OUT/model is a model directory that `generate`, `evaluate`, `attention` and `serve` take, with the
corpus index of its training music (base corpus and folder) for the copy report.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L

from musicgpt.data.augment import MAX_TRANSPOSE
from musicgpt.errors import MusicGPTError
from musicgpt.io import atomic_write_json
from musicgpt.training.callbacks import StopWhenAsked

MIN_BLOCK = 64  # shortest window worth training on (about a second of piano)

# Time stretches of a fine-tune's training windows: a fourth of an octave of tempo apart, 0.71x to
# 1.41x. A few pieces carry a few tempos, and a model fine-tuned on them at pretraining's +-5%
# learned those tempos: continuing a rag at another tempo it chose the folder's longer gaps
# (pineapple-rag's inter-onset OA 0.81 -> 0.68 after fine-tuning on five slower rags). Stretched
# this wide it keeps the prompt's (0.86-0.87; docs/finetune.md, "Tempo").
FINETUNE_STRETCH_FACTORS = tuple(round(2.0 ** (k / 4), 3) for k in range(-2, 3))


@dataclass(frozen=True)
class FinetuneConfig:
    minutes: float = 10.0  # wall-clock budget of the whole run, from building the folder to the model
    lr: float = 1e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0  # a few hundred steps from a good start: nothing to regularize towards zero
    batch_size: int = 8
    steps_per_check: int = 20  # training steps between two validations
    patience: int = 3  # checks without a gain before stopping
    max_steps: int = 5000
    train_layers: int | None = None  # None: every weight; K: only the top K blocks and the final LayerNorm
    val_fraction: float = 0.2
    max_val_windows: int = 16
    augment: bool = True  # transposed windows, time-stretched by stretch_factors
    stretch_factors: tuple[float, ...] = FINETUNE_STRETCH_FACTORS
    max_transpose: int = MAX_TRANSPOSE  # semitones either way
    precision: str = "bf16-mixed"
    seed: int = 0


@dataclass
class FinetuneResult:
    model_dir: Path
    base_loss: float
    best_loss: float
    best_step: int
    steps: int
    seconds: float
    stopped: str  # "early stopping", "time", "max steps", "interrupted"
    pieces: dict[str, int] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"

    def summary(self) -> str:
        change = self.best_loss - self.base_loss
        kept = f"step {self.best_step}" if self.best_step else "the base model (no step beat it)"
        return (
            f"validation loss on the folder: {self.base_loss:.4f} -> {self.best_loss:.4f} nats/token "
            f"({change:+.4f}); kept {kept}; {self.steps} steps in {self.seconds / 60:.1f} min, "
            f"stopped by {self.stopped}\nmodel: {self.model_dir}"
        )


def freeze_below(model, train_layers: int | None) -> None:
    """Train only the top `train_layers` blocks and the final LayerNorm (None: everything).

    The tied embedding (and output head) stays frozen with the lower blocks: it is shared by
    every layer, and moving it moves what the frozen layers read.
    """
    if train_layers is None:
        return
    blocks = model.transformer.h
    n = len(blocks)
    if not 1 <= train_layers <= n:
        raise MusicGPTError(f"--train-layers {train_layers}: the model has {n} blocks")
    for p in model.parameters():
        p.requires_grad_(False)
    for block in blocks[n - train_layers :]:
        block.requires_grad_(True)
    model.transformer.ln_f.requires_grad_(True)


def build_folder(folder: Path, data_dir: Path, tokenizer, config: FinetuneConfig, log: Callable[[str], None]):
    """Build the folder with the data builder; at least one validation piece, no test split."""
    from musicgpt.data.build import build_dataset

    report = build_dataset(
        folder,
        data_dir,
        tokenizer,
        val_fraction=config.val_fraction,
        test_fraction=0.0,
        progress=False,
        log=log,
        small_by_position=True,
    )
    log(report.summary())
    return report


def window_length(model_block: int, data_dir: Path) -> int:
    """The model's window, or shorter when the folder's validation (or training) music is shorter."""
    from musicgpt.data.dataset import TokenShard

    n_val = len(TokenShard(data_dir, "validation"))
    n_train = len(TokenShard(data_dir, "train"))
    # augmented training windows read 1.25x their length (see RandomWindows)
    block = min(model_block, n_val - 1, int((n_train - 10) / 1.25) - 8)
    if block < MIN_BLOCK:
        raise MusicGPTError(
            f"{data_dir}: too little music to fine-tune on ({n_train} training and {n_val} validation "
            f"tokens; at least ~{2 * MIN_BLOCK} of each): add pieces, or longer ones"
        )
    return block


class StopOnRequest(StopWhenAsked):
    """Ends training after the step during which `requested` was set (Ctrl-C, or the app's stop),
    or the first step past `deadline` (time.monotonic()).

    The deadline counts from the start of the whole command (building the folder, the base model's
    validation), unlike Lightning's `max_time`, which starts with the training loop.
    """

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.out_of_time = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if time.monotonic() >= self.deadline:
            self.out_of_time = True
            trainer.should_stop = True
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class Progress(L.Callback):
    """A bar over the time budget (elapsed / time left), and OUT/progress.json at every check.

    The bar's total is the budget: early stopping can end the run sooner, never later.
    """

    def __init__(self, out: Path, config: FinetuneConfig, show: bool = True):
        self.out, self.config, self.show = out, config, show
        self.start = time.monotonic()  # the budget counts from here: the command's start
        self.history: list[dict] = []  # {"step", "val_loss"} per check, the base model's at step 0
        self.train_loss: float | None = None
        self.state = "building"
        self.bar = None

    @property
    def budget(self) -> float:
        return self.config.minutes * 60

    def begin(self) -> None:
        if self.show:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=round(self.budget),
                unit="s",
                desc="fine-tune",
                bar_format="{l_bar}{bar}|{postfix}",  # times from the run's start, not the bar's
                initial=min(round(self.budget), round(self.elapsed())),
            )
        self.state = "training"
        self.write()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.train_loss = float(loss)
        if self.bar is not None:
            self.bar.n = min(self.bar.total, round(self.elapsed()))
            self.bar.set_postfix_str(self._postfix(trainer), refresh=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        step = trainer.global_step
        self.history.append({"step": step, "val_loss": round(float(trainer.callback_metrics["val/loss"]), 5)})
        self.write(trainer)

    def _postfix(self, trainer) -> str:
        elapsed = self.elapsed()
        parts = [f"{_clock(elapsed)} elapsed, at most {_clock(max(0.0, self.budget - elapsed))} left"]
        parts.append(f"step {trainer.global_step}")
        if self.train_loss is not None:
            parts.append(f"loss {self.train_loss:.3f}")
        if self.history:
            parts.append(f"val {self.history[-1]['val_loss']:.3f} (best {self.best()['val_loss']:.3f})")
        return ", ".join(parts)

    def best(self) -> dict:
        return min(self.history, key=lambda h: h["val_loss"])

    def write(self, trainer=None, **extra) -> None:
        atomic_write_json(
            self.out / "progress.json",
            {
                "state": self.state,
                "step": trainer.global_step if trainer is not None else 0,
                "elapsed_s": round(self.elapsed(), 1),
                "budget_s": round(self.budget, 1),
                "train_loss": self.train_loss,
                "history": self.history,
                **extra,
            },
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.n = min(self.bar.total, round(self.elapsed()))
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def _quiet_lightning() -> None:
    """Lightning's start-up lines (GPU available: False, tips, AMP) say nothing to someone fine-tuning."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def finetune(
    folder: str | Path,
    out: str | Path,
    checkpoint: str | Path = "piano-small",
    config: FinetuneConfig | None = None,
    *,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
    stop: threading.Event | None = None,
) -> FinetuneResult:
    """Fine-tune `checkpoint` on the MIDI files under `folder`; the best model goes to OUT/model.

    `stop`: set it (from another thread) to end training after the current step, as Ctrl-C does.
    """
    import torch
    from lightning.pytorch.callbacks import EarlyStopping

    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.data.datamodule import TokenDataModule
    from musicgpt.data.dataset import AugmentConfig
    from musicgpt.evaluate import copying
    from musicgpt.tokenizers import require_music
    from musicgpt.training.callbacks import ExportBestModel, NewWindowsEachEpoch
    from musicgpt.training.module import MusicGPTModule, OptimizerConfig

    config = config or FinetuneConfig()
    folder, out = Path(folder), Path(out)
    _quiet_lightning()
    model_dir = out / "model"
    if (model_dir / "model.safetensors").exists():
        raise MusicGPTError(f"{out} already holds a fine-tuned model ({model_dir}): choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(out, config, show=show_progress)
    progress.write()

    base, tokenizer = load_checkpoint(checkpoint)
    tokenizer = require_music(tokenizer, "finetune")
    report = build_folder(folder, out / "data", tokenizer, config, log)
    block = window_length(base.config.block_size, out / "data")
    # the corpus index first: whatever ends the run, the model written beside it has its index
    model_dir.mkdir(parents=True, exist_ok=True)
    copying.finetuned_index(checkpoint, out / "data").save(model_dir / copying.INDEX_FILE)

    module = MusicGPTModule(
        base.config,
        OptimizerConfig(
            lr=config.lr,
            weight_decay=config.weight_decay,
            warmup_steps=config.warmup_steps,
            decay_steps=config.max_steps,
            min_lr_ratio=1.0,  # constant after warm-up: the run ends by time or early stopping
        ),
        tokenizer=tokenizer.to_dict(),
    )
    module.model.load_state_dict(base.state_dict())
    freeze_below(module.model, config.train_layers)
    data = TokenDataModule(
        out / "data",
        batch_size=config.batch_size,
        block_size=block,
        samples_per_epoch=config.steps_per_check * config.batch_size,  # one "epoch" per check
        augment=config.augment,
        augment_config=AugmentConfig(
            max_transpose=config.max_transpose, stretch_factors=tuple(config.stretch_factors)
        ),
        max_val_windows=config.max_val_windows,
        seed=config.seed,
    )
    exporter = ExportBestModel(dirpath=str(model_dir))
    early = EarlyStopping(monitor="val/loss", mode="min", patience=config.patience, min_delta=1e-3)
    # the last step ends by the deadline; the index and metrics take a few seconds more
    stopper = StopOnRequest(deadline=progress.start + config.minutes * 60 - 5)
    L.seed_everything(config.seed, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu" if not torch.cuda.is_available() else "auto",
        devices=1,
        precision=config.precision,
        max_steps=config.max_steps,
        max_epochs=-1,
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        callbacks=[exporter, early, stopper, NewWindowsEachEpoch(), progress],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
        log_every_n_steps=1,
    )
    # Ctrl-C (or `stop`, from another thread) asks the loop to stop after the current step; the
    # exporter has written the best model so far (the base model's loss on the folder is the first
    # entry, so OUT/model never holds a model worse than the one it started from).
    interrupted, finished = stopper.requested, threading.Event()

    def request_stop(*_) -> None:
        interrupted.set()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    if stop is not None:

        def watch() -> None:
            while not stop.wait(0.2):
                if finished.is_set():
                    return
            request_stop()

        threading.Thread(target=watch, daemon=True).start()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, request_stop) if in_main else None
    try:
        # the base model's loss on the folder, written to OUT/model before any step
        trainer.validate(module, datamodule=data, verbose=False)
        base_loss = progress.history[0]["val_loss"]
        progress.begin()
        trainer.fit(module, datamodule=data)
    finally:
        finished.set()
        if in_main:
            signal.signal(signal.SIGINT, previous)
        progress.close()
    elapsed = progress.elapsed()
    best = progress.best()
    if interrupted.is_set():
        stopped = "interrupted"
    elif early.stopped_epoch:
        stopped = "early stopping"
    elif stopper.out_of_time:
        stopped = "time"
    else:
        stopped = "max steps"
    result = FinetuneResult(
        model_dir=model_dir,
        base_loss=base_loss,
        best_loss=best["val_loss"],
        best_step=best["step"],
        steps=trainer.global_step,
        seconds=elapsed,
        stopped=stopped,
        pieces=dict(report.pieces),
        skipped=report.skipped,
    )
    atomic_write_json(
        model_dir / "metrics.json",
        {
            "validation": {
                "split": "validation of the fine-tuning folder",
                "nats_per_token": best["val_loss"],
            },
            "finetune": {
                "base": str(checkpoint),
                "folder": str(folder.resolve()),
                "pieces": result.pieces,
                "skipped": result.skipped,
                "base_val_loss": base_loss,
                "best_val_loss": best["val_loss"],
                "best_step": best["step"],
                "steps": result.steps,
                "minutes": round(elapsed / 60, 2),
                "stopped": stopped,
                "window": block,
                "config": asdict(config),
                "history": progress.history,
            },
        },
    )
    progress.state = "interrupted" if result.interrupted else "done"
    progress.write(trainer, best=best, stopped=stopped, model=str(model_dir))
    return result
