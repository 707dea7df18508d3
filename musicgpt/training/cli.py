"""`musicgpt train`: Lightning's own config system (LightningCLI, jsonargparse) over our classes.

    musicgpt train --config piano_cpu --run_dir runs/maestro [--trainer.max_steps 2000] [--resume]

Every field of `MusicGPTModule` (model config, optimizer), `TokenDataModule` and Lightning's
`Trainer` can be set in the YAML or overridden as a dotted flag. `--config` takes a YAML file or
the name of a bundled config (musicgpt/configs: piano_cpu, piano_gpu, piano_base, ...;
`musicgpt.resources.configs()` lists them, and an unknown name's error names them all). `-c` is
the same as `--config`.

One run, one directory: `run_dir` is the only place a config names where a run lives. The
trainer's root, the CSV logs, both checkpoints and the exported model are derived from it, and the
data is read from `RUN_DIR/data` unless `data.data_dir` says otherwise. `vocab_size` comes from
the data's tokenizer and the data's window length from `model.config.block_size` (linked
arguments), so no config spells them twice.

`--resume` continues `RUN_DIR/checkpoints/last.ckpt` with the same step, optimizer state and
learning-rate schedule. Without it, a run directory that already holds a run is refused rather
than overwritten.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import sys
import threading
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI

from musicgpt.data.datamodule import TokenDataModule
from musicgpt.errors import ConfigError, MusicGPTError
from musicgpt.training.callbacks import (
    NewWindowsEachEpoch,
    SaveLastCheckpointAtEnd,
    StepProgressBar,
    StopWhenAsked,
)
from musicgpt.training.module import MusicGPTModule


def checkpoint_dir(run_dir: str | Path | None) -> str | None:
    # None: no run_dir given, which the parser reports as such
    return None if run_dir is None else str(Path(run_dir) / "checkpoints")


def last_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint `--resume` continues (written by the config's `last_checkpoint`)."""
    return Path(checkpoint_dir(run_dir)) / "last.ckpt"


def existing_run(run_dir: str | Path) -> Path | None:
    """What shows that `run_dir` already holds a run (its last checkpoint or its model), or None."""
    for marker in (last_checkpoint(run_dir), Path(run_dir) / "model" / "model.safetensors"):
        if marker.exists():
            return marker
    return None


class MusicGPTCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--run_dir",
            required=True,
            help="where the run lives: checkpoints/, model/, logs/ (and data/, unless data.data_dir is set)",
        )
        parser.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoints/last.ckpt")
        # The best checkpoint (by validation loss) and last.ckpt, in RUN_DIR/checkpoints; their
        # other settings (monitor, every_n_train_steps, ...) are the config's `best_checkpoint` and
        # `last_checkpoint` sections.
        for key in ("best_checkpoint", "last_checkpoint"):
            parser.add_lightning_class_args(ModelCheckpoint, key)
            parser.link_arguments("run_dir", f"{key}.dirpath", compute_fn=checkpoint_dir)
        parser.link_arguments("run_dir", "trainer.default_root_dir")
        parser.link_arguments("run_dir", "trainer.logger.init_args.save_dir")
        parser.link_arguments("model.config.block_size", "data.block_size")
        parser.link_arguments("data.vocab_size", "model.config.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.tokenizer_settings", "model.tokenizer", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        from musicgpt.argtypes import check, output_dir

        config = self.config
        run_dir = check(output_dir, config.run_dir, "run_dir")  # before any work: one we cannot write to
        if config.data.data_dir is None:
            config.data.data_dir = str(Path(run_dir) / "data")

    def instantiate_trainer(self, **kwargs):
        trainer = self.config_init.get("trainer", {})  # no subcommand (run=False): a top-level key
        callbacks = [*(trainer.get("callbacks") or []), NewWindowsEachEpoch(), StopWhenAsked()]
        # A progress bar counted in steps, unless the config turns the bar off or names its own.
        wants_bar = trainer.get("enable_progress_bar") is not False
        if (
            wants_bar
            and importlib.util.find_spec("rich")
            and not any(isinstance(c, ProgressBar) for c in callbacks)
        ):
            callbacks.append(StepProgressBar())
        if self.config.last_checkpoint.save_last:
            callbacks.append(SaveLastCheckpointAtEnd(last_checkpoint(self.config.run_dir)))
        kwargs["callbacks"] = callbacks
        if not trainer.get("plugins"):  # checkpoints written beside their target, then renamed
            from musicgpt.training.checkpoint_io import AtomicCheckpointIO

            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    def checkpoint_to_resume(self) -> Path | None:
        """last.ckpt when --resume is given (checked to load); None for a new run in an unused run dir."""
        last = last_checkpoint(self.run_dir)
        if not self.config.resume:
            found = existing_run(self.run_dir)
            if found is not None:
                raise MusicGPTError(
                    f"{self.run_dir} already holds a run ({found}): --resume continues it, "
                    "--run_dir DIR starts a new one elsewhere"
                )
            return None
        if not last.exists():
            raise MusicGPTError(f"--resume: {last} does not exist; nothing to continue")
        _check_checkpoint(last)
        return last

    def _stop_after_the_step_on_ctrl_c(self, stop: StopWhenAsked) -> None:
        """The first Ctrl-C lets the step finish and saves it (last.ckpt, then exit 130); a second
        one stops at once, as Lightning does (back to the last periodic checkpoint). Lightning's
        own answer to the first would lose every step since that checkpoint. One process only:
        under DDP every rank would have to agree on the step to stop at."""
        if self.trainer.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum, frame) -> None:
            stop.requested.set()
            print(
                "\nmusicgpt: stopping after this step and saving it (Ctrl-C again to stop at once)",
                file=sys.stderr,
                flush=True,
            )
            signal.signal(signal.SIGINT, signal.default_int_handler)

        signal.signal(signal.SIGINT, request_stop)

    def fit(self) -> None:
        self.checkpoint_to_resume()  # its one-line errors before the run dir is touched
        with run_dir_lock(self.run_dir):
            ckpt_path = self.checkpoint_to_resume()  # again, now that no other run can start
            handler = signal.getsignal(signal.SIGINT)
            # Lightning's own use of a torch.utils._pytree name torch deprecated: nothing a user can act on.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            stop = next(c for c in self.trainer.callbacks if isinstance(c, StopWhenAsked))
            self._stop_after_the_step_on_ctrl_c(stop)
            try:
                self.trainer.fit(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
                if stop.requested.is_set():
                    raise KeyboardInterrupt  # saved; the command exits 130 as on any Ctrl-C
            except SystemExit:
                # Lightning answers Ctrl-C by tidying up, ignoring SIGINT from then on and calling
                # sys.exit(1); every other musicgpt command exits 130 on Ctrl-C, and so does this.
                if self.trainer.interrupted:
                    raise KeyboardInterrupt from None
                raise
            finally:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGINT, handler)


LOCK_FILE = "train.lock"


@contextlib.contextmanager
def run_dir_lock(run_dir: Path):
    """Hold RUN_DIR/train.lock (an advisory lock) for the whole run: a second `musicgpt train`
    into the same run dir is refused instead of mixing its checkpoints, logs and model with ours.

    The kernel drops the lock when the process ends, however it ends, so a killed run leaves no
    stale lock behind; the file itself stays (removing it would race with a run taking it)."""
    import fcntl
    import os

    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        yield  # a process Lightning started for DDP: the launching process holds the lock
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            raise MusicGPTError(
                f"{run_dir} is in use by another `musicgpt train` (pid {holder}): wait for it to "
                "finish, or give a different --run_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_checkpoint(path: Path) -> None:
    """A truncated or foreign last.ckpt is one clear line, not a traceback from deep in torch."""
    import torch

    try:
        # mmap: the tensors are not read, only the archive's index and the pickled structure
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise MusicGPTError(
            f"{path}: cannot be read as a checkpoint ({type(e).__name__}); delete it to start over"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise MusicGPTError(f"{path}: not a Lightning training checkpoint")


def train_cli(args: list[str], run: bool = True) -> MusicGPTCLI:
    """Build the CLI from an argument list; with run=True, fit (resuming when --resume is given)."""
    cli = _make_cli(_bundled_configs(args))
    if run:
        cli.fit()
    return cli


def _bundled_configs(args: list[str]) -> list[str]:
    """`--config NAME` (or `-c NAME`, as LightningCLI spells it too) for a bundled config; every
    config file checked to be a YAML mapping.

    jsonargparse would take a missing file name for inline YAML, and a binary file for text.
    """
    from musicgpt.io import read_yaml_mapping
    from musicgpt.resources import config_path

    out = list(args)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            at, prefix, value = i + 1, "", out[i + 1]
        elif arg.startswith(("--config=", "-c=")):
            at, prefix = i, arg[: arg.index("=") + 1]
            value = arg.removeprefix(prefix)
        elif arg.startswith("-c") and len(arg) > 2:  # argparse reads -cFILE as -c FILE
            at, prefix, value = i, "-c", arg[2:]
        else:
            continue
        path = config_path(value)
        read_yaml_mapping(path)
        out[at] = prefix + str(path)
    return out


def _make_cli(args: list[str]) -> MusicGPTCLI:
    import jsonargparse
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    with warnings.catch_warnings():
        # `musicgpt train` hands its own arguments over: not the mix of both the warning is about.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
        try:
            return MusicGPTCLI(
                MusicGPTModule,
                TokenDataModule,
                args=args,
                run=False,
                seed_everything_default=1337,
                # A resumed run writes its config again beside the first one's.
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
                # Errors come back as exceptions, and the `musicgpt` command prints them as one line.
                parser_kwargs={"exit_on_error": False},
            )
        except (jsonargparse.ArgumentError, MisconfigurationException, ValueError) as e:
            # ValueError: what Lightning raises for a value it cannot take (seed_everything: -1)
            raise ConfigError(" ".join(str(e).split())) from None
