"""Tokenizer throughput: this project's PerformanceTokenizer against miditok 3.1's MIDILike, side by side.

    OMP_NUM_THREADS=1 python benchmarks/tokenizer.py [--repeats 3] [--no-write]

Both run in one process on the same real piano files (musicgpt/assets/piano), interleaved file by file,
best of --repeats per file, so a loaded machine slows both alike; the ratio is what to read.

miditok is set as close to the performance vocabulary as it goes:
  * MIDILike (NoteOn / NoteOff / TimeShift / Velocity: the same family of events),
    pitch_range (0, 127) (inclusive: all 128 pitches), num_velocities 32, no time signatures, tempos,
    programs, chords or rests, specials PAD and EOS;
  * time: MIDILike's time shifts are in beats, so each score is first normalized to seconds:
    rewritten at 60 bpm with 100 ticks per quarter (one beat = 1 s, one tick = 10 ms), and
    beat_res {(0, 1): 100} gives shifts of 1-100 steps of 10 ms, longer gaps as several shifts;
  * the notes it gets are ours after the sustain pedal (miditok does not extend notes by the
    pedal), merged into one piano track.
That normalization is done before timing and is not counted: miditok's "encode" below is only
`tokenizer.encode(score)` on a ready score, while ours is `encode(path)`, file reading, pedal and
all. Decode: ours to a pretty_midi.PrettyMIDI (and to note arrays), miditok's to a symusic Score.

The MAESTRO estimate scales the measured encode rate to about 1,300 files and 7 million notes
split over 2 cores (one process each).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import symusic

from musicgpt.resources import piano_corpus
from musicgpt.tokenizers import midi_io
from musicgpt.tokenizers.performance import PerformanceTokenizer

ROOT = Path(__file__).resolve().parent.parent
PIANO_DIR = piano_corpus()
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MAESTRO_NOTES, MAESTRO_FILES, CORES = 7_000_000, 1_300, 2


def miditok_tokenizer():
    from miditok import MIDILike, TokenizerConfig

    config = TokenizerConfig(
        pitch_range=(0, 127),
        beat_res={(0, 1): 100},
        num_velocities=32,
        special_tokens=["PAD", "EOS"],
        use_time_signatures=False,
        use_tempos=False,
        use_programs=False,
        use_chords=False,
        use_rests=False,
        use_sustain_pedals=False,
    )
    return MIDILike(config)


def seconds_score(path: Path) -> symusic.Score:
    """Our pedalled notes as a one-track score at 60 bpm, 100 tpq: ticks are 10 ms steps."""
    parts = midi_io.select_parts(midi_io.read_parts(path), include_drums=False, programs=None)
    pitch, velocity, start, end, units = midi_io.pedal_notes(parts)
    on = np.floor(start / units * 100 + 0.5).astype(np.int32)
    off = np.maximum(np.floor(end / units * 100 + 0.5).astype(np.int32), on + 1)
    score = symusic.Score(100)
    score.tempos.append(symusic.Tempo(0, qpm=60.0))
    track = symusic.Track("piano", 0, False)
    track.notes = symusic.Note.from_numpy(
        time=on, duration=off - on, pitch=pitch.astype(np.int8), velocity=velocity.astype(np.int8)
    )
    score.tracks.append(track)
    return score


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def grammar_step_us(tok: PerformanceTokenizer, ids: np.ndarray, batch: int = 8, steps: int = 2000) -> float:
    g = tok.grammar(batch)
    g.start(np.tile(ids[:256], (batch, 1)))
    rng = np.random.default_rng(0)
    spent = 0.0
    for _ in range(steps):  # time allowed() + advance() only, not the random pick between them
        start = time.perf_counter()
        mask = g.allowed()
        spent += time.perf_counter() - start
        tokens = (rng.random(mask.shape) * mask).argmax(1)
        start = time.perf_counter()
        g.advance(tokens)
        spent += time.perf_counter() - start
    return spent / steps * 1e6


def write_section(text: str) -> None:
    """Replace (or add) the `## Tokenizer` section of RESULTS.md, leaving the others alone."""
    from musicgpt.io import atomic_write_text

    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    lines = old.splitlines(keepends=True)
    try:
        begin = next(i for i, line in enumerate(lines) if line.strip() == "## Tokenizer")
        end = next((i for i in range(begin + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:begin]) + text + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    except StopIteration:
        new = old.rstrip("\n") + "\n\n" + text
    atomic_write_text(RESULTS, new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    ours, theirs = PerformanceTokenizer(), miditok_tokenizer()
    files = sorted(p for p in PIANO_DIR.glob("*.mid") if p.name != "empty.mid")
    totals = dict.fromkeys(["enc", "dec_pm", "dec_notes", "mt_enc", "mt_dec"], 0.0)
    n_notes = n_tokens = mt_tokens = 0
    for path in files:
        ids = ours.encode(path)
        score = seconds_score(path)
        mt_ids = theirs.encode(score)
        mt_seq = mt_ids[0] if isinstance(mt_ids, list) else mt_ids
        n_notes += int((ids < 128).sum())
        n_tokens += ids.size
        mt_tokens += len(mt_seq.ids)
        totals["enc"] += best_time(lambda: ours.encode(path), args.repeats)  # noqa: B023
        totals["mt_enc"] += best_time(lambda: theirs.encode(score), args.repeats)  # noqa: B023
        totals["dec_notes"] += best_time(lambda: ours.decode_notes(ids), args.repeats)  # noqa: B023
        totals["dec_pm"] += best_time(lambda: ours.decode(ids), args.repeats)  # noqa: B023
        totals["mt_dec"] += best_time(lambda: theirs.decode(mt_ids), args.repeats)  # noqa: B023

    rate = {k: n_notes / v for k, v in totals.items()}
    maestro_s = MAESTRO_NOTES / (rate["enc"] * CORES)
    step_us = grammar_step_us(ours, ours.encode(files[0]))
    rows = [
        ("encode (file -> ids)", rate["enc"], rate["mt_enc"]),
        ("decode (ids -> PrettyMIDI / Score)", rate["dec_pm"], rate["mt_dec"]),
        ("decode_notes (ids -> note arrays)", rate["dec_notes"], None),
    ]
    table = [
        "| | musicgpt PerformanceTokenizer | miditok 3.1 MIDILike | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, a, b in rows:
        table.append(
            f"| {name}, notes/s | {a:,.0f} | {'-' if b is None else f'{b:,.0f}'} | "
            f"{'-' if b is None else f'{a / b:.1f}x'} |"
        )
    text = "\n".join(
        [
            "## Tokenizer",
            "",
            f"`python benchmarks/tokenizer.py`: {len(files)} real piano files of musicgpt/assets/piano, {n_notes:,} notes "
            f"after the pedal, best of {args.repeats} per file, one process, side by side in one run. "
            "miditok's time excludes reading the file and the pedal (done for it beforehand); ours includes both.",
            "",
            *table,
            "",
            f"- tokens per note: {n_tokens / n_notes:.2f} (miditok MIDILike with the same steps: {mt_tokens / n_notes:.2f})",
            f"- MAESTRO-sized corpus ({MAESTRO_FILES:,} files, {MAESTRO_NOTES / 1e6:.0f}M notes) on {CORES} cores, "
            f"from the measured encode rate: {maestro_s:.0f} s (target: under 120 s)",
            f"- generation grammar, batch 8: {step_us:.0f} us per step (allowed + advance)",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"(written to {RESULTS})")


if __name__ == "__main__":
    main()
