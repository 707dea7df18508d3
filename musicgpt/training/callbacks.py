"""Callbacks: training throughput, a progress bar counted in steps, the exported model, and the
checkpoint a stopped run resumes from."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from musicgpt.io import atomic_write_json


class TokensPerSecond(L.Callback):
    """Logs training tokens per second (all devices, all accumulated micro-batches)."""

    def __init__(self):
        self._start: float | None = None
        self._tokens = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        x = batch[0]
        self._tokens += x.numel() * trainer.world_size
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0 and self._start is not None:
            elapsed = time.perf_counter() - self._start
            if elapsed > 0:
                pl_module.log(
                    "train/tokens_per_sec", self._tokens / elapsed, prog_bar=True, rank_zero_only=True
                )
            self._start, self._tokens = time.perf_counter(), 0


class ExportBestModel(L.Callback):
    """Writes the model with the lowest validation loss as a directory `GPT.from_pretrained` reads.

    The directory (default `<trainer.default_root_dir>/model`) holds config.yaml,
    model.safetensors, tokenizer.json and metrics.json; each file is written atomically.
    A run that ends before its first validation (a few steps, or stopped by `max_time`) exports
    its final weights instead, so that there is always a model to evaluate and sample.
    """

    def __init__(self, dirpath: str | None = None, monitor: str = "val/loss"):
        self.dirpath = dirpath
        self.monitor = monitor
        self.best: float | None = None

    def _dir(self, trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "model"

    def on_fit_start(self, trainer, pl_module) -> None:
        # A resumed run restores `best` from last.ckpt, which can be older than the exported model
        # (a run killed after a better validation than its last checkpoint knows of): the model
        # on disk stays until a lower loss beats it, instead of being overwritten by a worse one.
        if trainer.global_step == 0:
            return
        try:
            exported = json.loads((self._dir(trainer) / "metrics.json").read_text()).get(self.monitor)
        except (OSError, ValueError, AttributeError):
            return
        if isinstance(exported, (int, float)) and (self.best is None or exported < self.best):
            self.best = float(exported)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self.best is not None and value >= self.best:
            return
        self.best = value
        if trainer.is_global_zero:
            export_model(pl_module, self._dir(trainer), {self.monitor: value, "step": trainer.global_step})

    def on_train_end(self, trainer, pl_module) -> None:
        if self.best is None and trainer.is_global_zero:
            export_model(pl_module, self._dir(trainer), {self.monitor: None, "step": trainer.global_step})

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best")


class SaveLastCheckpointAtEnd(L.Callback):
    """Writes last.ckpt when training ends, whatever ended it: `max_steps`, early stopping, or
    `max_time`. `ModelCheckpoint(save_last=True)` saves only every N steps and at validations, so a
    run stopped by its time limit lost the steps since (up to `every_n_train_steps`), and a resume
    repeated them. The first Ctrl-C of `musicgpt train` ends here too (`StopWhenAsked`, after its
    step); a second Ctrl-C or a crash does not, and the last periodic checkpoint is the one to
    continue from (the state there may be mid-step)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state: --resume reads it


class StopWhenAsked(L.Callback):
    """Ends training after the current step once `requested` is set (the first Ctrl-C of `musicgpt
    train`, or of `musicgpt finetune`, whose `StopOnRequest` adds a deadline): the step finishes,
    `SaveLastCheckpointAtEnd` saves it, and `--resume` goes on from there. Checked at every step:
    `fit` clears `trainer.should_stop` when it starts."""

    def __init__(self):
        self.requested = threading.Event()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.requested.is_set():
            trainer.should_stop = True


def export_model(pl_module, directory: Path, metrics: dict) -> None:
    model = pl_module.model
    model = getattr(model, "_orig_mod", model)
    model.save_pretrained(directory)
    if pl_module.tokenizer is not None:
        atomic_write_json(directory / "tokenizer.json", pl_module.tokenizer)
    atomic_write_json(directory / "metrics.json", {k: v for k, v in metrics.items()})


class NewWindowsEachEpoch(L.Callback):
    """Tells the data which epoch begins, so that every epoch trains on new random windows.

    A callback (which `musicgpt train` always adds) rather than the LightningModule reaching for
    `trainer.datamodule`: the model knows nothing of how its batches are drawn.
    """

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        set_epoch = getattr(trainer.datamodule, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(trainer.current_epoch)


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar for runs that stop at `max_steps`: shows `step 120/1000`.

    Lightning's own labels such a run "Epoch 0/-2" (max_epochs is -1, "no limit") and shows a
    `v_num` that means nothing here. `musicgpt train` uses this bar unless the config names one.
    """

    def _get_train_description(self, current_epoch: int) -> str:  # the label RichProgressBar shows
        if self.trainer.max_epochs in (None, -1):
            return f"Epoch {current_epoch}"
        return super()._get_train_description(current_epoch)

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if trainer.max_steps and trainer.max_steps > 0:
            items = {"step": f"{trainer.global_step}/{trainer.max_steps}", **items}
        return items
