"""The LightningDataModule: built shards in, batches of (input, target) windows out."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader

from musicgpt.data.build import read_manifest
from musicgpt.data.dataset import AugmentConfig, FixedWindows, RandomWindows, TokenShard
from musicgpt.data.fim import FIM_SPAN_SECONDS
from musicgpt.errors import ConfigError
from musicgpt.tokenizers import is_music, tokenizer_class


class TokenDataModule(L.LightningDataModule):
    """Random training windows (augmented for music) and fixed validation windows.

    Args:
        data_dir: a folder written by `musicgpt data build` (`musicgpt train`: RUN_DIR/data unless set).
        tokenizer: the tokenizer the config expects ("performance", "bytes", "gpt2-bpe"); None
            accepts whatever the data was built with. `musicgpt data build --config` reads it too.
        batch_size: windows per batch (per device).
        block_size: tokens of context (`musicgpt train` links it to `model.config.block_size`).
        samples_per_epoch: training windows per epoch; None means one pass worth of tokens
            (split length / block_size), so an epoch sees each token about once.
        augment: augment training windows (music only: transposition and time stretch).
        max_val_windows: bound on validation windows, for a quick validation on large splits.
        num_workers: DataLoader worker processes.
        seed: seeds the choice of training windows (with the epoch and index).
        mix_data_dir: a second built dataset (same tokenizer), e.g. a pretraining corpus
            (data/pretrain): `mix_weight` of the training windows come from its train split.
            Validation stays on `data_dir`, the music the run is for.
        mix_weight: the share of training windows drawn from `mix_data_dir` (0 to 1).
        fim_rate: the share of training windows rearranged for infilling (music only; 0 to 1):
            prefix, FIM_SUFFIX, gap, suffix, FIM_MIDDLE, middle, FIM_END (docs/tokenizer.md).
            Validation stays plain continuation windows.
        fim_span_seconds: the shortest and longest span (seconds) of those windows.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        tokenizer: str | None = None,
        batch_size: PositiveInt = 16,
        block_size: PositiveInt | None = None,
        samples_per_epoch: PositiveInt | None = None,
        augment: bool = True,
        augment_config: AugmentConfig | None = None,
        max_val_windows: PositiveInt | None = 64,
        num_workers: NonNegativeInt = 0,
        seed: NonNegativeInt = 0,
        mix_data_dir: str | Path | None = None,
        mix_weight: float = 0.0,
        fim_rate: float = 0.0,
        fim_span_seconds: tuple[float, float] = FIM_SPAN_SECONDS,
    ):
        super().__init__()
        if data_dir is None:
            raise ConfigError("data.data_dir is not set")
        self.data_dir = Path(data_dir)
        self.batch_size, self.block_size = batch_size, block_size
        self.samples_per_epoch, self.max_val_windows = samples_per_epoch, max_val_windows
        self.num_workers, self.seed = num_workers, seed
        if not 0.0 <= mix_weight <= 1.0:
            raise ConfigError(f"data.mix_weight must be between 0 and 1, got {mix_weight}")
        if mix_weight > 0 and mix_data_dir is None:
            raise ConfigError("data.mix_weight is set but data.mix_data_dir is not")
        self.mix_data_dir = Path(mix_data_dir) if mix_data_dir is not None else None
        self.mix_weight = mix_weight
        if not 0.0 <= fim_rate <= 1.0:
            raise ConfigError(f"data.fim_rate must be between 0 and 1, got {fim_rate}")
        lo, hi = fim_span_seconds
        if not 0.01 <= lo <= hi:
            raise ConfigError(
                f"data.fim_span_seconds must be [shortest, longest] with 0.01 <= shortest <= longest, got {list(fim_span_seconds)}"
            )
        self.fim_rate, self.fim_span_seconds = fim_rate, (float(lo), float(hi))
        manifest = read_manifest(self.data_dir)
        self.tokenizer_settings = manifest["tokenizer"]
        if tokenizer is not None and tokenizer != self.tokenizer_settings["name"]:
            raise ConfigError(
                f"{self.data_dir} was built with the {self.tokenizer_settings['name']!r} tokenizer, but the "
                f"config asks for {tokenizer!r}: build it again with `musicgpt data build --tokenizer {tokenizer}`"
            )
        music = is_music(tokenizer_class(self.tokenizer_settings["name"]))
        if augment and not music:
            augment = False  # transposition and stretch mean nothing for text
        if fim_rate > 0 and not music:
            raise ConfigError("data.fim_rate is for music (performance tokens); this data is text")
        self.augment = (augment_config or AugmentConfig()) if augment else None
        self.train_set: RandomWindows | None = None
        self.val_set: FixedWindows | None = None

    @property
    def vocab_size(self) -> int:
        """Ids the data's tokenizer can produce: the model's `vocab_size` (linked by `musicgpt train`)."""
        from musicgpt.tokenizers import load_tokenizer

        return load_tokenizer(self.tokenizer_settings).vocab_size

    def setup(self, stage: str | None = None) -> None:
        block_size = self.block_size
        if block_size is None:
            raise ConfigError(
                "data.block_size is not set (musicgpt train takes it from model.config.block_size)"
            )
        if stage in ("fit", None):
            train = TokenShard(self.data_dir, "train")
            samples = self.samples_per_epoch or max(1, len(train) // block_size)
            mix = None
            if self.mix_data_dir is not None and self.mix_weight > 0:
                mix = TokenShard(self.mix_data_dir, "train")
                if mix.tokenizer_settings != self.tokenizer_settings:
                    raise ConfigError(
                        f"{self.mix_data_dir} was built with other tokenizer settings than {self.data_dir}"
                    )
            self.train_set = RandomWindows(
                train,
                block_size,
                samples,
                seed=self.seed,
                augment=self.augment,
                mix=mix,
                mix_weight=self.mix_weight,
                fim_rate=self.fim_rate,
                fim_span_seconds=self.fim_span_seconds,
            )
        if stage in ("fit", "validate", None):
            self.val_set = FixedWindows(
                TokenShard(self.data_dir, "validation"), block_size, self.max_val_windows
            )

    def set_epoch(self, epoch: int) -> None:
        """New random windows every epoch (called by the LightningModule at each epoch start)."""
        if self.train_set is not None:
            self.train_set.set_epoch(epoch)

    def _resume_mid_epoch(self) -> None:
        """In a run restored from a checkpoint, continue the epoch where the checkpoint left it."""
        trainer = self.trainer
        if trainer is None or self.train_set is None or not trainer.fit_loop.restarting:
            return
        # Lightning builds the loader before working out where the checkpoint stopped; ask now.
        trainer.fit_loop.update_restart_stage()
        if not trainer.fit_loop.restarted_mid_epoch:
            return  # a checkpoint at an epoch's end (or a run's end) starts the next epoch afresh
        # Lightning does not call on_train_epoch_start again for an epoch it resumes midway.
        self.set_epoch(trainer.current_epoch)
        self.train_set.resume_batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        self._resume_mid_epoch()
        return ResumableLoader(
            self.train_set,
            batch_size=self.batch_size,
            # Item i is already a window at a random place (RandomWindows): shuffling the indices
            # would add nothing but an order that a resumed run cannot reproduce.
            shuffle=False,
            drop_last=True,
            num_workers=self.num_workers,
            # workers are re-created each epoch so that they see the new epoch's windows
            persistent_workers=False,
            worker_init_fn=leave_ctrl_c_to_the_main_process,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            worker_init_fn=leave_ctrl_c_to_the_main_process,
        )


def leave_ctrl_c_to_the_main_process(worker_id: int) -> None:
    """A loader worker ignores SIGINT. Ctrl-C in a terminal reaches every process of the group; the
    main one finishes its step and saves it (`musicgpt train`), and a worker that died of the
    signal meanwhile would end the run with "DataLoader worker exited unexpectedly" instead.
    (Items are fixed per seed, epoch and index, so the workers need no seeding of their own.)"""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ResumableLoader(DataLoader):
    """A DataLoader that continues an epoch where a checkpoint left it, instead of restarting it.

    Training windows are fixed per (seed, epoch, index), so continuing an epoch needs only how
    many batches of it were trained on: the loader draws and drops those (they are cheap) and
    yields the rest, the very batches the interrupted run would have seen next. The count lives
    on the dataset (`resume_batches`, set by `TokenDataModule`) because Lightning re-creates the
    loader around its DistributedSampler under DDP, and each process drops its own.
    """

    def __iter__(self):
        skip = self.dataset.resume_batches
        self.dataset.resume_batches = 0  # once: the next epoch starts from its first batch
        if skip >= len(self):
            # The checkpoint followed the epoch's last batch: Lightning goes on with the next
            # epoch on this very iterator, without an on_train_epoch_start to set its windows.
            self.dataset.set_epoch(self.dataset.epoch + 1)
            skip = 0
        iterator = super().__iter__()  # after set_epoch: worker processes copy the dataset here
        for _ in range(skip):
            next(iterator)
        return iterator

    # Lightning calls a loader with these two "resumable" and stops warning that it is not. The
    # state is Lightning's own progress counters, which TokenDataModule reads back on resume.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
