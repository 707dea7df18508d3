"""`musicgpt train`: see musicgpt/training/cli.py (LightningCLI owns the arguments).

`musicgpt.cli.main` hands `train`'s arguments to `run_train` before argparse reads anything (so
`--help` is LightningCLI's); the parser added here only lists the command in `musicgpt --help`.
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    subparsers.add_parser(
        "train",
        help="train a model from a YAML config (LightningCLI: --config FILE, dotted overrides, --resume)",
        add_help=False,
    )


def run_train(argv: list[str]) -> int:
    from musicgpt.training.cli import train_cli

    train_cli(argv)
    return 0
