"""`musicgpt generate`: piano continuations of a MIDI prompt, or text continuations of a prompt."""

from __future__ import annotations

import sys
from pathlib import Path

from musicgpt import argtypes
from musicgpt.models import DEFAULT_MODEL


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="continue a MIDI prompt (piano) or a text prompt with a trained model",
        description="Music: --prompt IN.mid --seconds S --out OUT.mid. Text: --text PROMPT --max-new-tokens N.",
    )
    p.add_argument(
        "--checkpoint",
        type=argtypes.checkpoint,
        default=DEFAULT_MODEL,
        help=f"model dir, run dir, HF GPT-2 dir, .ckpt file or a shipped model's name (default: {DEFAULT_MODEL})",
    )
    music = p.add_argument_group("music")
    music.add_argument(
        "--prompt",
        type=argtypes.input_file,
        help="a MIDI file whose opening is continued (omit to start from nothing)",
    )
    music.add_argument(
        "--prompt-seconds", type=argtypes.seconds, default=10.0, help="seconds of the prompt to keep"
    )
    music.add_argument(
        "--seconds", type=argtypes.seconds, default=30.0, help="seconds of new music per sample (up to 3600)"
    )
    music.add_argument(
        "--out",
        type=argtypes.output_file,
        help="output MIDI file; with --num-samples N > 1, OUT-1.mid ... OUT-N.mid beside it",
    )
    music.add_argument("--wav", action="store_true", help="also render each MIDI to .wav with fluidsynth")
    music.add_argument(
        "--report",
        type=argtypes.output_file,
        help="write the copy report (the longest stretch of each sample found in the model's training "
        "corpus) to this JSON file; it is printed either way (docs/finetune.md)",
    )
    music.add_argument(
        "--png",
        type=argtypes.output_file,
        help="also draw a piano roll of prompt and continuation, one panel per sample, to this PNG",
    )
    text = p.add_argument_group("text")
    text.add_argument("--text", help="a text prompt (text models)")
    text.add_argument("--max-new-tokens", type=argtypes.positive_int, default=200)
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=argtypes.non_negative_float, default=1.0, help="0 means greedy")
    s.add_argument("--top-k", type=argtypes.positive_int, default=None)
    s.add_argument("--top-p", type=argtypes.probability, default=None, help="in (0, 1]")
    s.add_argument(
        "--mask-mode",
        choices=["per_group", "renormalize"],
        default="per_group",
        help="music: how the grammar hands on forbidden probability: per_group keeps each event "
        "type's mass (default), renormalize spreads it over all allowed tokens (for comparison)",
    )
    s.add_argument("--seed", type=argtypes.seed, default=None, help="the same seed gives the same output")
    s.add_argument(
        "--num-samples",
        type=argtypes.sample_count,
        default=1,
        help=f"samples drawn in one batched call (up to {argtypes.MAX_SAMPLES})",
    )
    p.add_argument("--device", type=argtypes.device, default="cpu", help="cpu, cuda, cuda:1, ...")
    p.set_defaults(run=run)


def run(args) -> int:
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.errors import MusicGPTError
    from musicgpt.tokenizers import is_music

    if args.wav:
        from musicgpt.audio import wav_tools

        wav_tools()  # before any sampling: a missing fluidsynth must not throw the music away
    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    if tokenizer is None:
        raise MusicGPTError(
            f"{args.checkpoint}: no tokenizer.json (or vocab.json + merges.txt) beside the model"
        )
    # music and text generation differ in what they read, stop on and write: one decision, here
    if is_music(tokenizer):
        if args.text is not None:
            raise MusicGPTError(f"{args.checkpoint} is a music model: use --prompt IN.mid, not --text")
        if not args.out:
            raise MusicGPTError("music generation needs --out OUT.mid")
        return generate_music(model, tokenizer, args)
    else:
        if args.prompt is not None:
            raise MusicGPTError(f"{args.checkpoint} is a text model: use --text PROMPT, not --prompt")
        if args.png is not None:
            raise MusicGPTError(f"{args.checkpoint} is a text model: --png draws music only")
        if args.report is not None:
            raise MusicGPTError(f"{args.checkpoint} is a text model: --report compares music only")
        generate_text(model, tokenizer, args)
    return 0


def sampling_config(args):
    """The --temperature, --top-k, --top-p and --mask-mode flags as one SamplingConfig."""
    from musicgpt.generation.sampling import SamplingConfig

    return SamplingConfig(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, mask_mode=args.mask_mode
    )


def output_paths(out: str, n: int) -> list[Path]:
    out = Path(out)
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.mid'}") for i in range(1, n + 1)]


def generate_music(model, tokenizer, args) -> int:
    """Sample, then write every MIDI (then the PNG, then every WAV); print each path as it is written.

    Ctrl-C while sampling writes the music sampled so far and exits with 130.
    """
    from tqdm.auto import tqdm

    from musicgpt.audio import render_wav
    from musicgpt.errors import MusicGPTError
    from musicgpt.generation.piano import continue_piano, cut_at_seconds
    from musicgpt.tokenizers import vocab as V
    from musicgpt.tokenizers.midi_io import write_midi

    prompt = []
    if args.prompt:
        prompt = cut_at_seconds(tokenizer.encode(args.prompt), args.prompt_seconds)
        if not V.strikes_a_note(prompt):
            raise MusicGPTError(
                f"{args.prompt}: no notes in its first {args.prompt_seconds:g} s to continue "
                "(a longer --prompt-seconds, or no --prompt to start from nothing)"
            )
    bar = tqdm(
        total=args.seconds,
        unit="s",
        desc="music generated",
        bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} s [{elapsed}<{remaining}]",
    )

    def progress(seconds: float) -> None:
        bar.update(seconds - bar.n)

    result = continue_piano(
        model,
        tokenizer,
        prompt,
        args.seconds,
        num_samples=args.num_samples,
        sampling=sampling_config(args),
        seed=args.seed,
        on_progress=progress,
    )
    bar.close()
    paths = output_paths(args.out, args.num_samples)
    for ids, path in zip(result.sequences(), paths, strict=True):
        print(write_midi(tokenizer.decode(ids), path), flush=True)
    report_copies(tokenizer, result, paths, args)
    if args.png:
        print(draw_continuations(tokenizer, result, args), flush=True)
    if result.interrupted:
        print(f"musicgpt: interrupted: wrote the {bar.n:.1f} s sampled so far", file=sys.stderr)
        return 130
    if args.wav:  # last: an external program that may fail, after every other file is written
        for path in paths:
            print(render_wav(path, path.with_suffix(".wav")), flush=True)
    return 0


def report_copies(tokenizer, result, paths: list[Path], args) -> None:
    """The copy report of every sample, on stderr (stdout lists the files); JSON to --report."""
    from musicgpt.evaluate.copying import FLAG_SECONDS, index_for, sequence_report
    from musicgpt.io import atomic_write_json

    index = index_for(args.checkpoint)
    if index is None:
        print(
            f"copy report: {args.checkpoint} carries no corpus index; nothing to compare with",
            file=sys.stderr,
        )
        if args.report:
            atomic_write_json(
                args.report, {"checkpoint": str(args.checkpoint), "index": False, "samples": []}
            )
        return
    n = len(result.prompt)
    reports = [sequence_report(index, tokenizer, ids, n) for ids in result.sequences()]
    for path, report in zip(paths, reports, strict=True):
        print(f"copy report: {path}: {report.line()}", file=sys.stderr)
    if args.report:
        atomic_write_json(
            args.report,
            {
                "checkpoint": str(args.checkpoint),
                "index": True,
                "corpus_pieces": len(index.names),
                "flag_seconds": FLAG_SECONDS,
                "samples": [{"midi": str(p), **r.to_dict()} for p, r in zip(paths, reports, strict=True)],
            },
        )
        print(args.report, flush=True)


def draw_continuations(tokenizer, result, args) -> Path:
    from musicgpt.tokenizers import vocab as V
    from musicgpt.viz.pianoroll import render_continuations_png

    cut = V.seconds_of(result.prompt)
    samples = f"{args.num_samples} continuations" if args.num_samples > 1 else "a continuation"
    opening = f"the first {cut:.2f} s of {Path(args.prompt).name}" if args.prompt else "no prompt"
    render_continuations_png(
        [tokenizer.decode_notes(ids) for ids in result.sequences()],
        args.png,
        prompt_tokens=len(result.prompt),
        cut_seconds=cut,
        title=f"{opening}, then {samples} of {args.seconds:g} s",
    )
    return Path(args.png)


def generate_text(model, tokenizer, args) -> None:
    """Stream tokens to stdout as they come (one sample), or print each sample in full (several)."""
    import numpy as np
    import torch

    from musicgpt.errors import MusicGPTError
    from musicgpt.generation.decode import generate_stream
    from musicgpt.tokenizers.text import TextStream

    prompt = np.asarray(tokenizer.encode(args.text or ""), dtype=np.int64)
    if prompt.size == 0:
        prompt = np.array([tokenizer.eos_id])  # an empty prompt starts a new document
    if prompt.size >= model.config.block_size:
        raise MusicGPTError(
            f"the prompt is {prompt.size} tokens; the model's context is {model.config.block_size}"
        )
    device = next(model.parameters()).device
    idx = torch.as_tensor(prompt, device=device).unsqueeze(0).repeat(args.num_samples, 1)
    generator = torch.Generator(device=device).manual_seed(args.seed) if args.seed is not None else None
    stream = generate_stream(
        model,
        idx,
        max_new_tokens=args.max_new_tokens,
        sampling=sampling_config(args),
        stop_tokens=[tokenizer.eos_id],
        generator=generator,
    )
    rows: list[list[int]] = [[] for _ in range(args.num_samples)]
    streaming = args.num_samples == 1
    if streaming:
        sys.stdout.write(args.text or "")
        text_stream = TextStream(tokenizer)
    for step in stream:
        for row, token in zip(rows, step.tolist(), strict=True):
            if not row or row[-1] != tokenizer.eos_id:
                row.append(token)
        if streaming and rows[0][-1] != tokenizer.eos_id:
            sys.stdout.write(text_stream.push(rows[0][-1]))
            sys.stdout.flush()
    if streaming:
        sys.stdout.write(text_stream.finish() + "\n")
    else:
        for i, row in enumerate(rows, 1):
            text = tokenizer.decode([t for t in row if t != tokenizer.eos_id])
            print(f"--- sample {i} ---\n{args.text or ''}{text}")
