"""`musicgpt attention`: an offline HTML page (and PNGs) of what a model attends to."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from musicgpt import argtypes
from musicgpt.models import DEFAULT_MODEL


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "attention",
        help="draw a model's attention over a MIDI excerpt (or a text) as an offline HTML page and PNGs",
        description=(
            "Music: --midi IN.mid draws a piano roll; choosing a note draws arcs to the earlier notes it "
            "attends to. Text: --text '...' draws the tokens in a row with arcs between them."
        ),
    )
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--checkpoint",
        type=argtypes.checkpoint,
        default=DEFAULT_MODEL,
        help=f"model dir (config.yaml + model.safetensors), run dir, .ckpt or a shipped model (default: {DEFAULT_MODEL})",
    )
    model.add_argument(
        "--random-init", metavar="CONFIG", help="an untrained model: a preset (music-tiny) or YAML"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--midi", type=argtypes.input_file, help="a MIDI file")
    source.add_argument("--text", help="a text (text models)")
    p.add_argument("--out", type=argtypes.output_file, required=True, help="the HTML page to write")
    p.add_argument(
        "--png",
        type=argtypes.output_file,
        help="also write PNGs: FILE (the arcs of one query) and FILE-heads.png (per head)",
    )
    index = argtypes.non_negative_int
    p.add_argument("--layer", type=index, default=None, help="layer shown on opening (default: the last)")
    p.add_argument("--head", type=index, default=None, help="the only head shown on opening (default: all)")
    p.add_argument(
        "--note", type=index, default=None, help="query note (index in the excerpt; default 3/4 in)"
    )
    p.add_argument(
        "--arcs-per-head",
        type=argtypes.positive_int,
        default=6,
        help="arcs drawn per head (page on opening, PNG)",
    )
    p.add_argument("--start", type=argtypes.start_time, default=None, help="music: excerpt start, in seconds")
    p.add_argument(
        "--seconds",
        type=argtypes.seconds,
        default=None,
        help="music: excerpt length (cut to the model's context)",
    )
    p.add_argument(
        "--top-k",
        type=argtypes.positive_int,
        default=None,
        help="keys kept per query row (default: up to 16, within ~4 MB)",
    )
    p.add_argument("--precision", choices=("uint8", "float16"), default="uint8", help="stored weights")
    p.add_argument(
        "--tokenizer", help="tokenizer name or JSON (default: the checkpoint's, else performance/bytes)"
    )
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of --random-init weights")
    p.add_argument("--device", type=argtypes.device, default="cpu", help="cpu, cuda, ...")
    p.set_defaults(run=run)


def _model_and_tokenizer(args):
    import torch

    from musicgpt.errors import MusicGPTError
    from musicgpt.model.gpt import GPT, GPTConfig
    from musicgpt.tokenizers import is_music, load_tokenizer

    if not args.random_init:
        from musicgpt.checkpoints import load_checkpoint

        model, tokenizer = load_checkpoint(args.checkpoint, args.device)
        label = f"checkpoint {args.checkpoint}"
    else:
        torch.manual_seed(args.seed)
        model = GPT(GPTConfig.load(args.random_init)).to(args.device).eval()
        tokenizer, label = None, f"random {args.random_init} weights (seed {args.seed})"
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    if tokenizer is None:
        tokenizer = load_tokenizer("performance" if args.midi else "bytes")
    music = is_music(tokenizer)
    if args.midi and not music:
        raise MusicGPTError(
            f"--midi needs a music model, but its tokenizer is {tokenizer.name!r}; use --text"
        )
    if args.text is not None and music:
        raise MusicGPTError(
            "--text needs a text tokenizer, but this model reads performance events; use --midi"
        )
    # a tokenizer whose vocabulary grew at its end (the FIM ids) still reads older models
    if getattr(tokenizer, "base_vocab_size", tokenizer.vocab_size) > model.config.vocab_size:
        raise MusicGPTError(
            f"the {tokenizer.name} tokenizer has {tokenizer.vocab_size} ids; the model reads only {model.config.vocab_size}"
        )
    return model, tokenizer, label


def _check_choice(name: str, value: int | None, n: int) -> None:
    from musicgpt.errors import MusicGPTError

    if value is not None and not 0 <= value < n:
        raise MusicGPTError(f"--{name} {value} does not exist: choose 0..{n - 1}")


def run(args) -> int:
    from musicgpt.tokenizers import is_music
    from musicgpt.viz.html import render_html

    tic = time.perf_counter()
    model, tokenizer, label = _model_and_tokenizer(args)
    c = model.config
    _check_choice("layer", args.layer, c.n_layer)
    _check_choice("head", args.head, c.n_head)
    # the one place that tells the two apart: how the tokens are read; the page and PNGs follow `data`
    data, what, title = (_music_data if is_music(tokenizer) else _text_data)(args, model, tokenizer)
    if data.music:
        _check_choice("note", args.note, len(data.notes))
    size = render_html(
        data,
        args.out,
        title=title,
        subtitle=f"{what} · {label} · {c.n_layer} layers x {c.n_head} heads",
        layer=args.layer,
        head=args.head,
        query=args.note if data.music else None,
        top_k=args.top_k,
        precision=args.precision,
        per_head=args.arcs_per_head,
    )
    print(f"wrote {args.out} ({size / 1e3:.0f} kB): {what}")
    if args.png:
        _pngs(args, data)
    print(f"in {time.perf_counter() - tic:.1f} s")
    return 0


def _music_data(args, model, tokenizer):
    """(AttentionData of the --start/--seconds excerpt of --midi, what it holds, the page's title)."""
    import numpy as np

    from musicgpt.errors import MusicGPTError
    from musicgpt.viz.attention import AttentionData, excerpt_slice

    ids = np.asarray(tokenizer.encode(args.midi), dtype=np.int64)
    if ids.size == 0:
        raise MusicGPTError(f"{args.midi}: no notes to draw")
    wanted = excerpt_slice(tokenizer.token_times(ids), args.start, args.seconds)
    data = AttentionData.from_music(model, ids, tokenizer, args.start, args.seconds)
    first, last = data.token_times[0], data.token_times[-1]
    if wanted.stop - wanted.start > data.n_tokens:
        print(
            f"musicgpt: the excerpt ({wanted.stop - wanted.start} tokens) is cut to the model's context of "
            f"{data.n_tokens} tokens ({first:.2f}-{last:.2f} s); choose another with --start/--seconds",
            file=sys.stderr,
        )
    what = f"{data.n_tokens} tokens, {len(data.notes)} notes, {first:.2f}-{last:.2f} s"
    return data, what, f"{Path(args.midi).name}: attention"


def _text_data(args, model, tokenizer):
    """(AttentionData of --text, cut to the model's context, what it holds, the page's title)."""
    import numpy as np

    from musicgpt.errors import MusicGPTError
    from musicgpt.viz.attention import AttentionData

    ids = np.asarray(tokenizer.encode(args.text), dtype=np.int64)
    if ids.size == 0:
        raise MusicGPTError("--text is empty")
    block = model.config.block_size
    if ids.size > block:
        print(f"musicgpt: the text is cut to the model's context of {block} tokens", file=sys.stderr)
        ids = ids[:block]
    data = AttentionData.from_model(model, ids, tokenizer)
    return data, f"{data.n_tokens} {tokenizer.name} tokens", "text: attention"


def _pngs(args, data) -> None:
    from musicgpt.viz import png

    heads = None if args.head is None else [args.head]
    query = args.note if data.music else None
    png.render_arcs_png(
        data, args.png, query=query, layer=args.layer, heads=heads, per_head=args.arcs_per_head
    )
    grid = Path(args.png).with_name(Path(args.png).stem + "-heads.png")
    png.render_heads_png(data, grid)
    print(f"wrote {args.png} and {grid}")
