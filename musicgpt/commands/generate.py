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
    add_sampling_arguments(s)
    s.add_argument("--seed", type=argtypes.seed, default=None, help="the same seed gives the same output")
    s.add_argument(
        "--num-samples",
        type=argtypes.sample_count,
        default=1,
        help=f"samples drawn in one batched call (up to {argtypes.MAX_SAMPLES})",
    )
    s.add_argument(
        "--yes",
        action="store_true",
        help=f"go ahead with a request of more than {MAX_MUSIC_HOURS:g} hours of music in all "
        "(--num-samples x --seconds), which is otherwise refused with an estimate of its cost",
    )
    p.add_argument("--device", type=argtypes.device, default="cpu", help="cpu, cuda, cuda:1, ...")
    p.set_defaults(run=run)


# A request is sized before any work: num_samples x seconds of music in all. Dense piano runs at
# up to ~100 tokens a second, and the sampler holds every token (8 bytes) about three times over
# (the steps, the table, the sequences), so 4 hours of music is ~1.4M tokens, ~35 MB... and 256 x
# 3600 s is 92M tokens, ~2.2 GB and hours of sampling: refused without --yes.
MAX_MUSIC_HOURS = 4.0
DENSE_TOKENS_PER_SECOND = 100
BYTES_PER_TOKEN_HELD = 24


def check_request_size(num_samples: int, seconds: float, confirmed: bool) -> None:
    """A one-line refusal, with the estimate, of more than MAX_MUSIC_HOURS of music unless confirmed."""
    from musicgpt.errors import MusicGPTError

    total = num_samples * seconds
    if total <= MAX_MUSIC_HOURS * 3600 or confirmed:
        return
    tokens = total * DENSE_TOKENS_PER_SECOND
    raise MusicGPTError(
        f"{num_samples} samples x {seconds:g} s is {total / 3600:.1f} hours of music: up to "
        f"{tokens / 1e6:,.1f}M tokens and {tokens * BYTES_PER_TOKEN_HELD / 1e9:.1f} GB of memory while "
        f"sampling; add --yes to go ahead, or ask for at most {MAX_MUSIC_HOURS:g} hours in all"
    )


def run(args) -> int:
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.errors import MusicGPTError
    from musicgpt.tokenizers import is_music

    # before any model is loaded: no output may be an input or another output
    check_outputs(args)
    check_request_size(args.num_samples, args.seconds, args.yes)
    text_prompt(args)  # invalid UTF-8 is a one-line error, not a traceback after loading
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
        return generate_text(model, tokenizer, args)


def check_outputs(args) -> None:
    """--out (each sample), its .wav files, its partial files and --png: none may be the prompt,
    and no two may be one file."""
    from musicgpt.io import refuse_overlaps

    if not args.out:
        return
    outputs = []
    paths = output_paths(args.out, args.num_samples)
    for k, path in enumerate(paths, 1):
        what = "--out" if len(paths) == 1 else f"--out (sample {k})"
        outputs.append((what, path))
        outputs.append((f"{what} if interrupted", partial_path(path)))
        if args.wav:
            outputs.append((f"{what} as WAV", path.with_suffix(".wav")))
    if args.png:
        outputs += [("--png", Path(args.png)), ("--png if interrupted", partial_path(Path(args.png)))]
    refuse_overlaps({"--prompt": args.prompt}, outputs)


def partial_path(path: Path) -> Path:
    """Where an interrupted run writes what it has: beside the complete file, never over it."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def text_prompt(args) -> str | None:
    """--text as a str that encodes to UTF-8 (argv bytes that are not UTF-8 come as surrogates)."""
    from musicgpt.errors import MusicGPTError

    if args.text is None:
        return None
    try:
        args.text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MusicGPTError(
            f"--text is not valid UTF-8 (a byte that is no UTF-8 character at position {e.start})"
        ) from None
    return args.text


def add_sampling_arguments(group) -> None:
    """The flags `sampling_config` reads, for every command that samples (generate, infill, evaluate)."""
    group.add_argument("--temperature", type=argtypes.non_negative_float, default=1.0, help="0 means greedy")
    group.add_argument("--top-k", type=argtypes.positive_int, default=None)
    group.add_argument("--top-p", type=argtypes.probability, default=None, help="in (0, 1]")
    group.add_argument(
        "--mask-mode",
        choices=argtypes.MASK_MODES,
        default="per_group",
        help="music: how the grammar hands on forbidden probability: per_group keeps each event "
        "type's mass (default), renormalize spreads it over all allowed tokens (for comparison)",
    )
    group.add_argument(
        "--prompt-cache",
        type=argtypes.prompt_cache_strength,
        default=None,
        help="how strongly to copy what followed the same events earlier in the prompt and sample: "
        "0 off, 1 the weight fitted on piano, up to 2 (default: 1 for music, 0 for text)",
    )
    group.add_argument(
        "--grid",
        type=argtypes.grid_divisions,
        default=None,
        help="music: strike every note on the onset grid of a sequenced prompt (a file written in a "
        "sequencer; a performance has none), subdivided N times: 0 off, 1 the grid (default), up to 4",
    )


def sampling_config(args, music: bool = True):
    """The --temperature, --top-k, --top-p, --mask-mode, --prompt-cache and --grid flags as one
    SamplingConfig (the prompt cache and the grid on by default for music, whose numbers chose them;
    off for text)."""
    from musicgpt.generation.piano import PIANO_SAMPLING
    from musicgpt.generation.sampling import SamplingConfig

    prompt_cache = args.prompt_cache
    if prompt_cache is None:
        prompt_cache = PIANO_SAMPLING.prompt_cache if music else 0.0
    grid = args.grid
    if grid is None:
        grid = PIANO_SAMPLING.grid if music else 0
    return SamplingConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        mask_mode=args.mask_mode,
        prompt_cache=prompt_cache,
        grid=grid,
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
    from musicgpt.audio import render_wav
    from musicgpt.errors import MusicGPTError
    from musicgpt.generation.piano import continue_piano, cut_at_seconds
    from musicgpt.tokenizers import vocab as V
    from musicgpt.tokenizers.midi_io import write_midi

    prompt = []
    if args.prompt:
        whole = tokenizer.encode(args.prompt)
        if whole.size == 0 and hasattr(tokenizer, "why_empty"):
            raise MusicGPTError(
                f"{args.prompt}: nothing to continue: {tokenizer.why_empty(args.prompt)} "
                "(no --prompt starts from nothing)"
            )
        prompt = cut_at_seconds(whole, args.prompt_seconds)
        if not V.strikes_a_note(prompt):
            raise MusicGPTError(
                f"{args.prompt}: no notes in its first {args.prompt_seconds:g} s to continue "
                "(a longer --prompt-seconds, or no --prompt to start from nothing)"
            )
    bar = Progress(args.seconds)
    progress = bar.update

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
    if result.interrupted:  # a partial result is written beside a complete one, never over it
        paths = [partial_path(p) for p in paths]
    for ids, path in zip(result.sequences(), paths, strict=True):
        print(write_midi(tokenizer.decode(ids), path), flush=True)
    report_copies(tokenizer, result, paths, args)
    if args.png:
        png = partial_path(Path(args.png)) if result.interrupted else Path(args.png)
        print(draw_continuations(tokenizer, result, args, png), flush=True)
    if result.interrupted:
        print(
            f"musicgpt: interrupted: wrote the {bar.n:.1f} s sampled so far, as .partial files",
            file=sys.stderr,
        )
        return 130
    if args.wav:  # last: an external program that may fail, after every other file is written
        for path in paths:
            print(render_wav(path, path.with_suffix(".wav")), flush=True)
    return 0


class Progress:
    """Seconds of music generated: a tqdm bar on a terminal; elsewhere (a log file, a pipe) one
    line every `every` seconds rather than one per update."""

    def __init__(self, total: float, every: float = 5.0, file=None):
        import time

        self.file = file if file is not None else sys.stderr
        self.total, self.every, self.n = total, every, 0.0
        self._clock, self._last = time.monotonic, time.monotonic()
        self.bar = None
        if self.file.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                unit="s",
                desc="music generated",
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} s [{elapsed}<{remaining}]",
                file=self.file,
            )

    def update(self, seconds: float) -> None:
        if self.bar is not None:
            self.bar.update(seconds - self.bar.n)
        elif (now := self._clock()) - self._last >= self.every:
            self._last = now
            print(f"music generated: {seconds:.1f}/{self.total:g} s", file=self.file, flush=True)
        self.n = seconds

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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


def draw_continuations(tokenizer, result, args, png: Path) -> Path:
    from musicgpt.tokenizers import vocab as V
    from musicgpt.viz.pianoroll import render_continuations_png

    cut = V.seconds_of(result.prompt)
    samples = f"{args.num_samples} continuations" if args.num_samples > 1 else "a continuation"
    opening = f"the first {cut:.2f} s of {Path(args.prompt).name}" if args.prompt else "no prompt"
    render_continuations_png(
        [tokenizer.decode_notes(ids) for ids in result.sequences()],
        png,
        prompt_tokens=len(result.prompt),
        cut_seconds=cut,
        title=f"{opening}, then {samples} of {args.seconds:g} s",
    )
    return png


def generate_text(model, tokenizer, args) -> int:
    """Stream tokens to stdout as they come (one sample), or print each sample in full (several).

    Ctrl-C stops the sampling and prints what came so far (as music mode writes it); exit 130."""
    import numpy as np
    import torch

    from musicgpt.errors import MusicGPTError
    from musicgpt.generation.decode import generate_stream
    from musicgpt.generation.piano import default_context
    from musicgpt.tokenizers.text import TextStream

    prompt = np.asarray(tokenizer.encode(args.text or ""), dtype=np.int64)
    if prompt.size == 0:
        prompt = np.array([tokenizer.eos_id])  # an empty prompt starts a new document
    # a relative (or rotary) model reads past its training window, as in piano continuations
    context = default_context(model)
    if prompt.size >= context:
        raise MusicGPTError(f"the prompt is {prompt.size} tokens; the model's context is {context}")
    device = next(model.parameters()).device
    idx = torch.as_tensor(prompt, device=device).unsqueeze(0).repeat(args.num_samples, 1)
    generator = torch.Generator(device=device).manual_seed(args.seed) if args.seed is not None else None
    stream = generate_stream(
        model,
        idx,
        max_new_tokens=args.max_new_tokens,
        sampling=sampling_config(args, music=False),
        stop_tokens=[tokenizer.eos_id],
        generator=generator,
        max_context=context,
    )
    rows: list[list[int]] = [[] for _ in range(args.num_samples)]
    streaming = args.num_samples == 1
    if streaming:
        sys.stdout.write(args.text or "")
        text_stream = TextStream(tokenizer)
    interrupted = False
    try:
        for step in stream:
            for row, token in zip(rows, step.tolist(), strict=True):
                if not row or row[-1] != tokenizer.eos_id:
                    row.append(token)
            if streaming and rows[0][-1] != tokenizer.eos_id:
                sys.stdout.write(text_stream.push(rows[0][-1]))
                sys.stdout.flush()
    except KeyboardInterrupt:
        interrupted = True
    stream.close()
    if streaming:
        sys.stdout.write(text_stream.finish() + "\n")
    else:
        for i, row in enumerate(rows, 1):
            text = tokenizer.decode([t for t in row if t != tokenizer.eos_id])
            print(f"--- sample {i} ---\n{args.text or ''}{text}")
    if interrupted:
        sys.stdout.flush()
        print("musicgpt: interrupted: printed the text sampled so far", file=sys.stderr)
        return 130
    return 0
