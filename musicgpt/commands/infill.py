"""`musicgpt infill`: sample a span of a piece again, keeping the rest note for note."""

from __future__ import annotations

import sys
from pathlib import Path

from musicgpt import argtypes
from musicgpt.commands.generate import add_sampling_arguments, output_paths, partial_path
from musicgpt.models import INFILL_MODEL


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "infill",
        help="sample a span of a MIDI file again (fill in the middle), the rest kept as it is",
        description="IN.mid --start S --end E --out OUT.mid: the piece with the span S-E seconds "
        "written anew; every sample lasts the span exactly and the rest equals IN.mid note for note.",
    )
    p.add_argument("input", type=argtypes.input_file, metavar="IN.mid", help="the piece")
    p.add_argument("--start", type=argtypes.start_time, required=True, help="where the span starts (seconds)")
    p.add_argument("--end", type=argtypes.start_time, required=True, help="where the span ends (seconds)")
    p.add_argument(
        "--out",
        type=argtypes.output_file,
        required=True,
        help="output MIDI file; with --num-samples N > 1, OUT-1.mid ... OUT-N.mid beside it",
    )
    p.add_argument(
        "--checkpoint",
        type=argtypes.checkpoint,
        default=INFILL_MODEL,
        help="a model trained with the fill-in-the-middle tokens (model dir, run dir, .ckpt or a "
        f"shipped model's name; default: {INFILL_MODEL})",
    )
    p.add_argument("--png", type=argtypes.output_file, help="also draw the span of every sample to this PNG")
    p.add_argument("--wav", action="store_true", help="also render each MIDI to .wav with fluidsynth")
    s = p.add_argument_group("sampling")
    add_sampling_arguments(s)
    s.add_argument("--seed", type=argtypes.seed, default=None, help="the same seed gives the same output")
    s.add_argument(
        "--num-samples",
        type=argtypes.sample_count,
        default=1,
        help=f"samples drawn in one batched call (up to {argtypes.MAX_SAMPLES})",
    )
    p.add_argument("--device", type=argtypes.device, default="cpu", help="cpu, cuda, cuda:1, ...")
    p.set_defaults(run=run)


def check_outputs(args) -> None:
    """Every output (each sample, its .partial and .wav, --png): not the input, no two the same."""
    from musicgpt.io import refuse_overlaps

    outputs = []
    paths = output_paths(args.out, args.num_samples)
    for k, path in enumerate(paths, 1):
        what = "--out" if len(paths) == 1 else f"--out (sample {k})"
        outputs += [(what, path), (f"{what} if interrupted", partial_path(path))]
        if args.wav:
            outputs.append((f"{what} as WAV", path.with_suffix(".wav")))
    if args.png:
        outputs.append(("--png", Path(args.png)))
    refuse_overlaps({"IN.mid": args.input}, outputs)


def run(args) -> int:
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.commands.generate import check_request_size
    from musicgpt.errors import MusicGPTError
    from musicgpt.generation.infill import check_span, check_span_order, require_infill
    from musicgpt.tokenizers import require_music

    # everything that can be refused is refused before the model is loaded and before any output
    check_outputs(args)
    check_span_order(args.start, args.end)
    check_request_size(args.num_samples, args.end - args.start, confirmed=False)
    if args.wav:
        from musicgpt.audio import wav_tools

        wav_tools()
    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    if tokenizer is None:
        raise MusicGPTError(f"{args.checkpoint}: no tokenizer.json beside the model")
    require_music(tokenizer, "infill", str(args.checkpoint))
    require_infill(model, tokenizer, str(args.checkpoint))
    ids = tokenizer.encode(args.input)
    if ids.size == 0:
        raise MusicGPTError(f"{args.input}: nothing to infill: {tokenizer.why_empty(args.input)}")
    check_span(ids, args.start, args.end, str(args.input))
    return infill_music(model, tokenizer, ids, args)


def infill_music(model, tokenizer, ids, args) -> int:
    """Sample, then write every MIDI (then the PNG, then every WAV); print each path as written.
    Ctrl-C while sampling writes the samples that finished (as .partial files) and exits with 130."""
    from musicgpt.audio import render_wav
    from musicgpt.commands.generate import Progress, sampling_config
    from musicgpt.generation.infill import infill_piano
    from musicgpt.tokenizers.midi_io import write_midi

    bar = Progress(args.end - args.start)
    result = infill_piano(
        model,
        tokenizer,
        ids,
        args.start,
        args.end,
        num_samples=args.num_samples,
        sampling=sampling_config(args),
        seed=args.seed,
        on_progress=bar.update,
    )
    bar.close()
    paths = output_paths(args.out, args.num_samples)
    if result.interrupted:
        paths = [partial_path(p) for p, ok in zip(paths, result.finished, strict=True) if ok]
    pieces = result.pieces()
    for piece, path in zip(pieces, paths, strict=True):
        print(write_midi(tokenizer.decode(piece), path), flush=True)
    if args.png and pieces and not result.interrupted:
        print(draw_infills(tokenizer, result, args), flush=True)
    if result.interrupted:
        print(
            f"musicgpt: interrupted: wrote the {len(pieces)} of {args.num_samples} samples that had "
            "finished, as .partial files",
            file=sys.stderr,
        )
        return 130
    if args.wav:
        for path in paths:
            print(render_wav(path, path.with_suffix(".wav")), flush=True)
    return 0


def draw_infills(tokenizer, result, args) -> Path:
    from musicgpt.viz.pianoroll import render_infill_png

    first = len(result.cut.prefix)
    render_infill_png(
        [tokenizer.decode_notes(p) for p in result.pieces()],
        args.png,
        middles=[(first, first + len(m)) for m in result.samples],
        span=(args.start, args.end),
        title=f"{Path(args.input).name}: {args.start:g}-{args.end:g} s infilled",
    )
    return Path(args.png)
