"""`musicgpt evaluate`: held-out loss beside n-gram baselines, or continuations against the real ones.

    musicgpt evaluate --checkpoint C --data DIR [--split validation]
    musicgpt evaluate --checkpoint C --data DIR_OR_MIDI --continuations [--report out.json]

See docs/evaluation.md for the continuation protocol and how to read its table.
"""

from __future__ import annotations

import sys

from musicgpt import argtypes
from musicgpt.commands.generate import add_sampling_arguments
from musicgpt.models import DEFAULT_MODEL


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="held-out loss beside n-gram baselines; --continuations: music against the real continuation",
    )
    p.add_argument(
        "--checkpoint",
        type=argtypes.checkpoint,
        default=DEFAULT_MODEL,
        help=f"model dir, run dir, HF GPT-2 dir, .ckpt file or a shipped model's name (default: {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--data",
        type=argtypes.input_path,
        required=True,
        help="a folder built by `musicgpt data build`; with --continuations also a folder of MIDI or one file",
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
    p.add_argument("--device", type=argtypes.device, default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--copy-gap",
        action="store_true",
        help="per piece: the loss with and without the prompt cache, and what a naive cache of the piece "
        "still gains (the copy gap; see docs/evaluation.md)",
    )
    p.add_argument(
        "--infill",
        action="store_true",
        help="cut the span [P, P + --span-seconds) from each piece, infill it (a model trained with "
        "the FIM tokens) and compare with the real span, a ceiling and a floor, plus the edges",
    )
    p.add_argument(
        "--span-seconds",
        type=argtypes.seconds,
        default=None,
        help="with --infill: the span's length (default 4); it starts at --prompt-seconds",
    )
    c = p.add_argument_group("continuations (music models; see docs/evaluation.md)")
    c.add_argument(
        "--continuations",
        action="store_true",
        help="continue each piece's opening and compare with its real continuation, a ceiling and two floors",
    )
    c.add_argument(
        "--prompt-seconds",
        type=argtypes.seconds,
        default=10.0,
        help="P: seconds of each piece given as prompt",
    )
    c.add_argument("--seconds", type=argtypes.seconds, default=20.0, help="S: seconds generated and compared")
    c.add_argument(
        "--num-samples",
        type=argtypes.sample_count,
        default=4,
        help="K: samples per piece, in one batched call",
    )
    c.add_argument(
        "--max-pieces", type=argtypes.positive_int, default=None, help="only the first N pieces long enough"
    )
    c.add_argument("--seed", type=argtypes.seed, default=0, help="the same seed gives the same numbers")
    c.add_argument(
        "--report",
        type=argtypes.output_file,
        default=None,
        help="also write every number, per piece and sample, as JSON",
    )
    c.add_argument(
        "--bigram-data",
        type=argtypes.input_path,
        default=None,
        help="a built data folder whose train split counts the bigram floor (default: --data, when built)",
    )
    # the model's sampling, as `musicgpt generate` takes it (the floors keep the defaults)
    add_sampling_arguments(c)
    p.set_defaults(run=run)


def run(args) -> int:
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.data.build import check_model_reads
    from musicgpt.errors import MusicGPTError
    from musicgpt.evaluate.nll import loss_table

    chosen = [f for f, on in (("--continuations", args.continuations), ("--copy-gap", args.copy_gap),
                               ("--infill", args.infill)) if on]  # fmt: skip
    if len(chosen) > 1:
        raise MusicGPTError(f"{' and '.join(chosen)} are separate evaluations: run them one at a time")
    if args.span_seconds is not None and not args.infill:
        raise MusicGPTError("--span-seconds goes with --infill")
    if args.infill:
        return run_infill(args)
    if args.continuations:
        return run_continuations(args)
    if args.copy_gap:
        return run_copy_gap(args)
    given = [flag for flag, value in _CONTINUATION_ONLY.items() if getattr(args, value) is not None]
    if given:
        verb = "goes" if len(given) == 1 else "go"
        raise MusicGPTError(f"{' and '.join(given)} {verb} with --continuations")
    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    check_model_reads(args.data, tokenizer, model.config.vocab_size, f"the model {args.checkpoint}")
    for line in loss_table(
        model, args.data, args.split, args.max_windows, args.batch_size, baselines=not args.no_baselines
    ):
        print(line)
    return 0


def run_copy_gap(args) -> int:
    import numpy as np

    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.commands.generate import sampling_config
    from musicgpt.evaluate.continuations import load_pieces
    from musicgpt.evaluate.copy_gap import TABLE_HEADER, copy_gap, total
    from musicgpt.generation.piano import default_context
    from musicgpt.tokenizers import require_music

    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    tokenizer = require_music(tokenizer, "--copy-gap", str(args.checkpoint))
    pieces = load_pieces(args.data, args.split, tokenizer)
    context = default_context(model)
    key_of_id = getattr(tokenizer.grammar(1), "match_key_of_id", None)
    print(f"{len(pieces)} piece(s) of {args.data}, read through windows of {context} tokens (nats/token)")
    print(TABLE_HEADER)
    rows = []
    for piece in pieces:
        if len(piece.ids) < 2:
            continue
        rows.append(
            copy_gap(
                model,
                np.asarray(piece.ids),
                context,
                piece.name,
                strength=sampling_config(args).prompt_cache,  # --prompt-cache, or the music default
                key_of_id=key_of_id,
                tokenizer=tokenizer,
            )
        )
        print(rows[-1].row(), flush=True)
    if rows:
        everything = total(rows)
        print(everything.row())
        if everything.off_grammar:
            print(
                f"({everything.off_grammar:,} real tokens the sampler's grammar forbids, mostly notes held "
                f"past {context} tokens, which it ends: scored by the model alone)"
            )
    return 0


# flags that only --continuations reads (None unless given), so that they are not silently ignored
_CONTINUATION_ONLY = {"--report": "report", "--max-pieces": "max_pieces", "--bigram-data": "bigram_data"}


def run_continuations(args) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.commands.generate import sampling_config
    from musicgpt.evaluate.continuations import (
        ContinuationSettings,
        evaluate_continuations,
        load_pieces,
        select_pieces,
    )
    from musicgpt.tokenizers import require_music

    settings = ContinuationSettings(
        prompt_seconds=args.prompt_seconds,
        seconds=args.seconds,
        num_samples=args.num_samples,
        seed=args.seed,
        max_pieces=args.max_pieces,
        sampling=sampling_config(args),
    )
    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    tokenizer = require_music(tokenizer, "--continuations", str(args.checkpoint))
    pieces, skipped = select_pieces(load_pieces(args.data, args.split, tokenizer), settings)
    for s in skipped:
        print(f"skipped {s['name']}: {s['reason']}", file=sys.stderr)
    bigram, bigram_note = _bigram(args, model.config.vocab_size)

    bar = tqdm(
        total=len(pieces) * settings.seconds,
        unit="s",
        desc=f"continuing {len(pieces)} piece{'s' if len(pieces) > 1 else ''}",
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of music",
    )

    def progress(seconds: float) -> None:
        bar.update(seconds - bar.n)

    if bigram is not None:
        bigram = bigram.to(args.device)
    report = evaluate_continuations(model, tokenizer, pieces, settings, bigram=bigram, on_progress=progress)
    bar.close()
    report.skipped.extend(skipped)
    if bigram_note:
        report.remarks.append(bigram_note)
    built = (Path(args.data) / "manifest.json").exists()
    source = f"the {args.split} split of {args.data}" if built else args.data
    print(
        f"continuations of {len(pieces)} piece{'s' if len(pieces) > 1 else ''} from {source}: "
        f"{settings.prompt_seconds:g} s prompt, {settings.num_samples} x {settings.seconds:g} s"
    )
    print_report(report, args)
    return 0


def run_infill(args) -> int:
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.commands.generate import sampling_config
    from musicgpt.errors import MusicGPTError
    from musicgpt.evaluate.continuations import ContinuationSettings, load_pieces, select_pieces
    from musicgpt.evaluate.infill import evaluate_infill
    from musicgpt.generation.infill import require_infill
    from musicgpt.tokenizers import require_music

    if args.bigram_data is not None:
        raise MusicGPTError("--bigram-data goes with --continuations (a bigram cannot infill)")
    settings = ContinuationSettings(
        prompt_seconds=args.prompt_seconds,
        seconds=args.span_seconds or 4.0,
        num_samples=args.num_samples,
        seed=args.seed,
        max_pieces=args.max_pieces,
        sampling=sampling_config(args),
    )
    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    tokenizer = require_music(tokenizer, "--infill", str(args.checkpoint))
    require_infill(model, tokenizer, str(args.checkpoint))
    pieces, skipped = select_pieces(load_pieces(args.data, args.split, tokenizer), settings)
    for s in skipped:
        print(f"skipped {s['name']}: {s['reason']}", file=sys.stderr)
    report = evaluate_infill(model, tokenizer, pieces, settings)
    report.skipped.extend(skipped)
    p0, span = settings.prompt_seconds, settings.seconds
    print(
        f"infilling {len(pieces)} piece{'s' if len(pieces) > 1 else ''} of {args.data}: the span "
        f"{p0:g}-{p0 + span:g} s, {settings.num_samples} samples each"
    )
    print_report(report, args)
    return 0


def _bigram(args, vocab_size: int):
    """(the bigram floor's model, None) or (None, why there is none)."""
    from pathlib import Path

    import numpy as np

    from musicgpt.data.dataset import TokenShard
    from musicgpt.evaluate.bigram import BigramLM

    source = args.bigram_data or args.data
    if not (Path(source) / "manifest.json").exists():
        return None, "no bigram floor: --data is not a built dataset; give --bigram-data DIR to count one"
    train = TokenShard(source, "train").tokens
    if len(train) < 2:
        return None, f"no bigram floor: the train split of {source} is empty"
    return BigramLM.count(np.asarray(train), vocab_size), None


def print_report(report, args) -> None:
    """A continuation or infill report's table and remarks; with --report, every number as JSON."""
    from musicgpt.io import atomic_write_json

    for line in report.table():
        print(line)
    for remark in report.remarks:
        print(f"({remark})")
    if args.report:
        payload = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split}
        atomic_write_json(args.report, {**payload, **report.to_json()})
        print(f"report written to {args.report}")
