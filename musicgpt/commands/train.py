"""`musicgpt train`: see musicgpt/training/cli.py (LightningCLI owns the arguments)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a YAML config (LightningCLI: --config FILE, dotted overrides, --resume)",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(run=lambda args: run_train(args.rest))


def run_train(argv: list[str]) -> int:
    from musicgpt.training.cli import train_cli

    train_cli(argv)
    return 0
