"""`musicgpt train`: Lightning's own config system (LightningCLI, jsonargparse) over our classes.

    musicgpt train --config configs/piano_cpu.yaml [--trainer.max_steps 2000] [--resume]

Every field of `MusicGPTModule` (model config, optimizer), `TokenDataModule` and Lightning's
`Trainer` can be set in the YAML or overridden as a dotted flag. `--resume` continues from the
last checkpoint of the run (`ckpt_path="last"`), with the same step, optimizer state and
learning-rate schedule.
"""

from __future__ import annotations

import importlib.util
import warnings

from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI

from musicgpt.data.datamodule import TokenDataModule
from musicgpt.training.callbacks import StepProgressBar
from musicgpt.training.module import MusicGPTModule


class MusicGPTCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")

    def instantiate_trainer(self, **kwargs):
        # A progress bar counted in steps, unless the config turns the bar off or names its own.
        trainer = self._get(self.config_init, "trainer", default={})
        callbacks = list(trainer.get("callbacks") or [])
        wants_bar = trainer.get("enable_progress_bar") is not False
        if (
            wants_bar
            and importlib.util.find_spec("rich")
            and not any(isinstance(c, ProgressBar) for c in callbacks)
        ):
            kwargs["callbacks"] = [*callbacks, StepProgressBar()]
        return super().instantiate_trainer(**kwargs)


def train_cli(args: list[str], run: bool = True) -> MusicGPTCLI:
    """Build the CLI from an argument list; with run=True, fit (resuming when --resume is given)."""
    with warnings.catch_warnings():
        # `musicgpt train` hands its own arguments over: not the mix of both the warning is about.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
        cli = _make_cli(args)
    if run:
        ckpt_path = "last" if cli.config.get("resume") else None
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli


def _make_cli(args: list[str]) -> MusicGPTCLI:
    return MusicGPTCLI(
        MusicGPTModule,
        TokenDataModule,
        args=args,
        run=False,
        seed_everything_default=1337,
        # A resumed run writes its config again beside the first one's.
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
