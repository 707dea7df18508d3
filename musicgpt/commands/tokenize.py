"""`musicgpt tokenize IN.mid` (print or save event ids) and `musicgpt detokenize IDS.npy OUT.mid`."""

from __future__ import annotations

import argparse

from musicgpt import argtypes


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help="MIDI file -> performance event tokens",
        description="Encode a MIDI file as performance events. Prints them readably "
        "(VELOCITY_20 NOTE_ON_60 TIME_SHIFT_50 NOTE_OFF_60 ...) or, with --out, saves the ids as .npy.",
    )
    p.add_argument("midi", type=argtypes.input_file, help="MIDI file to encode")
    p.add_argument(
        "--out",
        type=argtypes.output_file,
        help="write the ids (int32, no EOS) to this .npy file instead of printing",
    )
    p.add_argument("--include-drums", action="store_true", help="keep drum tracks (left out by default)")
    p.add_argument(
        "--programs",
        type=argtypes.int_range(0, 127),
        nargs="+",
        metavar="P",
        help="keep only non-drum instruments with these GM programs",
    )
    p.add_argument("--no-sustain", action="store_true", help="do not apply the sustain pedal (CC64)")
    p.add_argument(
        "--max-piece-seconds",
        type=argtypes.positive_number(10 * 24 * 3600.0, " seconds"),
        default=7200.0,
        help="refuse a file whose last event lies later than this (default: 2 hours)",
    )
    p.add_argument(
        "--max-silence-seconds",
        type=argtypes.positive_number(10 * 24 * 3600.0, " seconds"),
        default=300.0,
        help="refuse a file with a longer silence (default: 5 minutes)",
    )
    p.add_argument(
        "--width", type=argtypes.positive_int, default=100, help="wrap printed tokens at this many characters"
    )
    p.set_defaults(run=run_tokenize)

    d = subparsers.add_parser(
        "detokenize",
        help="performance event ids (.npy) -> MIDI file",
        description="Decode performance event ids saved by `musicgpt tokenize --out` (or generated) to MIDI.",
    )
    d.add_argument("ids", type=argtypes.input_file, help=".npy file with a 1-D array of token ids")
    d.add_argument("out", type=argtypes.output_file, help="MIDI file to write")
    d.set_defaults(run=run_detokenize)


def _wrap(names: list[str], width: int) -> str:
    lines, line, used = [], [], 0
    for name in names:
        if line and used + 1 + len(name) > width:
            lines.append(" ".join(line))
            line, used = [], 0
        used += len(name) + (1 if line else 0)
        line.append(name)
    if line:
        lines.append(" ".join(line))
    return "\n".join(lines)


def run_tokenize(args: argparse.Namespace) -> int:
    from musicgpt.errors import MusicGPTError
    from musicgpt.io import refuse_overlaps
    from musicgpt.tokenizers.performance import PerformanceTokenizer
    from musicgpt.tokenizers.vocab import ID_NAMES

    refuse_overlaps({"input MIDI": args.midi}, [("--out", args.out)])
    tok = PerformanceTokenizer(
        include_drums=args.include_drums,
        programs=args.programs,
        sustain_pedal=not args.no_sustain,
        max_piece_seconds=args.max_piece_seconds,
        max_silence_seconds=args.max_silence_seconds,
    )
    ids = tok.encode(args.midi)
    if ids.size == 0:
        raise MusicGPTError(f"{args.midi}: nothing to encode: {tok.why_empty(args.midi)}")
    if args.out is not None:
        from musicgpt.io import atomic_save_npy

        atomic_save_npy(args.out, ids)
        n_notes = int((ids < 128).sum())
        print(f"{args.midi}: {ids.size} tokens, {n_notes} notes -> {args.out}")
    else:
        print(_wrap([ID_NAMES[i] for i in ids.tolist()], args.width))
    return 0


def run_detokenize(args: argparse.Namespace) -> int:
    import numpy as np

    from musicgpt.errors import MusicGPTError
    from musicgpt.io import refuse_overlaps
    from musicgpt.tokenizers.midi_io import write_midi
    from musicgpt.tokenizers.performance import PerformanceTokenizer

    refuse_overlaps({"ids": args.ids}, [("the output", args.out)])
    try:
        ids = np.load(args.ids, allow_pickle=False)
    except FileNotFoundError:
        raise MusicGPTError(f"{args.ids}: no such file") from None
    except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
        raise MusicGPTError(f"{args.ids}: not a .npy array of token ids ({e})") from None
    tok = PerformanceTokenizer()
    try:
        pm = tok.decode(ids)
    except MusicGPTError as e:
        raise MusicGPTError(f"{args.ids}: {e}") from None
    write_midi(pm, args.out)
    n_notes = sum(len(inst.notes) for inst in pm.instruments)
    print(f"{args.ids}: {n_notes} notes, {pm.get_end_time():.2f} s -> {args.out}")
    return 0
