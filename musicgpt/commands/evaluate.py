"""`musicgpt evaluate --checkpoint C --data DIR`: held-out loss beside unigram and bigram baselines."""

from __future__ import annotations

from musicgpt import argtypes


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="held-out loss (nats and bits per token) beside n-gram baselines"
    )
    p.add_argument(
        "--checkpoint",
        type=argtypes.input_path,
        required=True,
        help="model dir, run dir, HF GPT-2 dir or .ckpt file",
    )
    p.add_argument(
        "--data", type=argtypes.input_path, required=True, help="a folder built by `musicgpt data build`"
    )
    p.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    p.add_argument(
        "--max-windows",
        type=argtypes.positive_int,
        default=None,
        help="score only the first N context windows",
    )
    p.add_argument("--batch-size", type=argtypes.positive_int, default=8)
    p.add_argument("--no-baselines", action="store_true", help="skip the unigram/bigram baselines")
    p.set_defaults(run=run)


def run(args) -> int:
    for line in evaluate(
        args.checkpoint,
        args.data,
        args.split,
        args.max_windows,
        args.batch_size,
        baselines=not args.no_baselines,
    ):
        print(line)
    return 0


def evaluate(checkpoint, data, split="validation", max_windows=None, batch_size=8, baselines=True):
    """The evaluation table as lines of text: header, the model, then the baselines."""
    from musicgpt.data.build import check_model_reads
    from musicgpt.data.dataset import FixedWindows, TokenShard
    from musicgpt.evaluate.nll import TABLE_HEADER, bigram_loss, model_loss, unigram_loss
    from musicgpt.training.checkpoint import load_checkpoint

    model, tokenizer = load_checkpoint(checkpoint)
    check_model_reads(data, tokenizer, model.config.vocab_size, f"the model {checkpoint}")
    shard = TokenShard(data, split)
    windows = FixedWindows(shard, model.config.block_size, max_windows)
    rows = [model_loss(model, windows, batch_size)]
    if baselines:
        train = TokenShard(data, "train").tokens
        rows += [
            unigram_loss(train, windows, model.config.vocab_size),
            bigram_loss(train, windows, model.config.vocab_size),
        ]
    return [
        f"{split} split of {data}: {len(windows)} windows of {model.config.block_size} tokens",
        TABLE_HEADER,
    ] + [r.row() for r in rows]
