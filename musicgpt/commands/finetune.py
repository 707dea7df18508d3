"""`musicgpt finetune FOLDER --out runs/NAME`: make the shipped model (or --checkpoint) yours."""

from __future__ import annotations

import sys

from musicgpt import argtypes
from musicgpt.models import DEFAULT_MODEL


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on a folder of your own MIDI files (minutes on a CPU)",
        description="Builds FOLDER (any MIDI files; bad ones are reported and skipped), fine-tunes "
        "the model on it with early stopping on the folder's validation loss, and writes OUT/model, "
        "which generate, evaluate, attention and serve take (--checkpoint OUT/model). Ctrl-C keeps "
        "the best model so far. See docs/finetune.md.",
    )
    p.add_argument("folder", type=argtypes.input_path, help="a folder of MIDI files (or one file)")
    p.add_argument("--out", required=True, type=argtypes.output_dir, help="the run's folder: data/, model/")
    p.add_argument(
        "--checkpoint",
        type=argtypes.checkpoint,
        default=DEFAULT_MODEL,
        help=f"the model to start from (default: {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--minutes", type=argtypes.positive_number(24 * 60, "minutes"), default=10.0,
        help="time budget of the whole run, building the folder included (default 10)",
    )  # fmt: skip
    p.add_argument(
        "--lr", type=argtypes.positive_number(1.0), default=1e-4, help="learning rate (default 1e-4)"
    )
    p.add_argument(
        "--train-layers",
        type=argtypes.positive_int,
        default=None,
        help="train only the top K blocks (default: all weights; see docs/finetune.md)",
    )
    p.add_argument("--batch-size", type=argtypes.positive_int, default=8)
    p.add_argument(
        "--steps-per-check", type=argtypes.positive_int, default=20, help="steps between validations"
    )
    p.add_argument("--max-steps", type=argtypes.positive_int, default=5000, help="stop after this many steps")
    p.add_argument(
        "--patience", type=argtypes.positive_int, default=3,
        help="validations without a gain before stopping (default 3)",
    )  # fmt: skip
    p.add_argument(
        "--precision",
        choices=["bf16-mixed", "32-true"],
        default="bf16-mixed",
        help="bf16-mixed (default) is 2x faster on CPUs with AVX512-BF16 or AMX; 32-true elsewhere",
    )
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.set_defaults(run=run)


def run(args) -> int:
    from musicgpt.training.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        minutes=args.minutes,
        lr=args.lr,
        train_layers=args.train_layers,
        batch_size=args.batch_size,
        patience=args.patience,
        steps_per_check=args.steps_per_check,
        max_steps=args.max_steps,
        precision=args.precision,
        seed=args.seed,
    )
    result = finetune(args.folder, args.out, args.checkpoint, config, log=_stderr)
    print(result.summary(), flush=True)
    if result.interrupted:
        print("musicgpt: interrupted: kept the best model so far", file=sys.stderr)
        return 130
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
