"""The `musicgpt` command.

Each subcommand lives in its own module under `musicgpt/commands/`, which exposes
`add_parser(subparsers)` (argparse only, cheap to import) and `run(args) -> int | None`
(imports torch and friends lazily). `musicgpt train` hands its arguments to LightningCLI, before
argparse sees them.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from musicgpt.errors import MusicGPTError

# module under musicgpt.commands, in the order `musicgpt --help` lists them
COMMAND_MODULES = (
    "demo",
    "tokenize",
    "data",
    "train",
    "finetune",
    "evaluate",
    "generate",
    "infill",
    "attention",
    "serve",
    "duet",
    "params",
)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other `musicgpt: error:` (no usage block),
    and the probes of its argument types (argtypes: can this output be written, is this device
    here) run once every argument has parsed, before the command starts."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        from musicgpt.argtypes import probe_arguments

        namespace, extras = super().parse_known_args(args, namespace)
        try:
            probe_arguments(self._actions, namespace)  # argparse keeps no public list of them
        except argparse.ArgumentError as e:
            self.error(str(e))
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="musicgpt",
        description="Train a GPT on MIDI (or text), generate piano continuations, look at attention.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"musicgpt.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            # LightningCLI owns the whole argument list of `train` (config files, dotted overrides):
            # it is handed over here, not parsed (commands/train.py only lists it in --help).
            from musicgpt.commands.train import run_train

            return run_train(argv[1:]) or 0
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help (0) or a bad argument (2, its message already printed)
            return e.code if isinstance(e.code, int) else 2
        return args.run(args) or 0
    except MusicGPTError as e:
        print(f"musicgpt: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader closed the pipe (`musicgpt tokenize x.mid | head`): not an error. Point
        # stdout at devnull so that Python's exit-time flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("musicgpt: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        # A full disk in a write that is not ours (a library's log file): one line, not a
        # traceback. Our own writes already say so (musicgpt.io.WriteError).
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"musicgpt: error: {where}cannot write: {os.strerror(e.errno).lower()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
