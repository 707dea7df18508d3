"""Build the pretraining corpus: score-timed music these machines can reach and redistribute,
humanized into piano performances, one MIDI file per piece.

    python data/pretrain/build_corpus.py --out runs/corpus/pretrain [--shared ../shared/data]
    musicgpt data build runs/corpus/pretrain --out runs/pretrain/data

Sources (provenance and licenses: data/pretrain/README.md):
  folk/        every tune of music21's ABC corpus (Essen, O'Neill's 1850, Ryan's Mammoth, Aird's
               Airs, the Nottingham sample), converted by Debian's abc2midi with its chord
               accompaniment: melodies that repeat whole phrases, the skill the piano corpus is
               too small to teach.
  bach/        the 352 chorales of shared/data/midi/bach (music21's corpus, four voices).
  palestrina/  the 1,318 masses of shared/data/midi/palestrina (music21's corpus, 4-8 voices).

Every piece is merged to one piano track and humanized, because the model learns performances
(10 ms clock, 32 velocities) and a score's exact grid and single velocity would teach it to
expect both: a slow tempo curve (rubato), per-note onset jitter, shortened releases, and
velocities shaped by phrase, metre, voice and noise. The seed is the file's name, so a build
gives the same files on every machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pretty_midi

pretty_midi.pretty_midi.MAX_TICK = 1e9  # music21 writes 10,080 ticks per quarter
warnings.filterwarnings("ignore", module="pretty_midi")  # abc2midi puts tempo on track 2

FOLK_SOURCES = ["essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk", "nottingham-dataset"]
MAX_SECONDS = 600.0  # a piece longer than this is cut: the model trains on windows of a few seconds


def humanize(notes: np.ndarray, seed: int, voice: np.ndarray) -> np.ndarray:
    """notes: (N, 4) float rows of (start, end, pitch, velocity) in score time, seconds.
    voice: (N,) the instrument (voice) index of each note. Returns humanized rows."""
    rng = np.random.default_rng(seed)
    start, end, pitch = notes[:, 0].copy(), notes[:, 1].copy(), notes[:, 2]
    # A tempo for the piece, and rubato: a slow warp of the clock that stays monotonic
    # (its derivative 1 + 2*pi*A/P*cos > 0 for A/P < 1/(2*pi)).
    tempo = rng.uniform(0.85, 1.2)
    amp, period, phase = rng.uniform(0.03, 0.12), rng.uniform(6.0, 14.0), rng.uniform(0, 2 * np.pi)

    def warp(t):
        return (t + amp * np.sin(2 * np.pi * t / period + phase) - amp * np.sin(phase)) / tempo

    # Onset jitter: a little per chord (shared) and a little per note; releases slightly early.
    chord_jitter = rng.normal(0, 0.010, size=len(start))
    note_jitter = rng.normal(0, 0.006, size=len(start))
    on = warp(start) + chord_jitter + note_jitter
    legato = rng.uniform(0.8, 0.97)
    length = np.maximum((warp(end) - warp(start)) * legato, 0.04)
    on = np.maximum(on, 0.0)
    off = on + length
    # Velocity: the piece's level, a phrase arch every 2-4 s of score, the top voice sung out,
    # on-beat notes a little louder, noise.
    level = rng.uniform(48, 82)
    arch = 10 * np.sin(2 * np.pi * start / rng.uniform(4.0, 9.0) + rng.uniform(0, 2 * np.pi))
    top = np.where(voice == 0, 6.0, 0.0)
    beat = np.where(np.isclose(np.mod(start * 2, 1.0), 0, atol=1e-3), 4.0, 0.0)
    vel = np.clip(np.round(level + arch + top + beat + rng.normal(0, 5, size=len(start))), 12, 120)
    return np.stack([on, off, pitch, vel], axis=1)


def convert(job: tuple[str, str, str]) -> str:
    """Read one score-timed MIDI, humanize it, write it as a one-track piano MIDI. Returns a
    problem ('' when written)."""
    src, dst, name = job
    try:
        pm = pretty_midi.PrettyMIDI(src)
    except Exception as exc:  # noqa: BLE001  a bad source file is reported, not fatal
        return f"{src}: {exc}"
    rows, voices = [], []
    for v, inst in enumerate(i for i in pm.instruments if not i.is_drum):
        for n in inst.notes:
            if n.start < MAX_SECONDS and n.end > n.start and 21 <= n.pitch <= 108:
                rows.append((n.start, min(n.end, MAX_SECONDS), n.pitch, n.velocity))
                voices.append(v)
    if len(rows) < 8:
        return f"{src}: fewer than 8 notes"
    seed = zlib.crc32(name.encode())
    notes = humanize(np.array(rows, dtype=float), seed, np.array(voices))
    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0, name="piano")
    for on, off, p, vel in notes:
        piano.notes.append(pretty_midi.Note(velocity=int(vel), pitch=int(p), start=float(on), end=float(off)))
    out.instruments.append(piano)
    tmp = dst + ".tmp"
    out.write(tmp)
    os.replace(tmp, dst)
    return ""


def folk_midis(work: Path) -> list[Path]:
    """Every tune of music21's ABC corpus through abc2midi, into `work` (one .mid per tune)."""
    import music21

    corpus = Path(music21.__file__).parent / "corpus"
    abc2midi = shutil.which("abc2midi")
    if abc2midi is None:
        sys.exit("build_corpus: abc2midi is not installed (Debian package abcmidi)")
    for source in FOLK_SOURCES:
        for abc in sorted((corpus / source).rglob("*.abc")):
            # abc2midi writes STEM<X>.mid for every tune (X: field) of STEM.abc, beside it
            copy = work / f"{source}-{abc.stem}.abc".replace(" ", "_")
            shutil.copyfile(abc, copy)
            subprocess.run(
                [abc2midi, copy.name, "-quiet", "-silent"], cwd=work, capture_output=True, timeout=600
            )
    return sorted(work.glob("*.mid"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    jobs = []
    for source in ("bach", "palestrina"):
        (args.out / source).mkdir(parents=True, exist_ok=True)
        for src in sorted((args.shared / "midi" / source).glob("*.mid")):
            jobs.append((str(src), str(args.out / source / src.name), f"{source}/{src.name}"))
    work = Path(tempfile.mkdtemp(prefix="abc2midi-"))
    try:
        (args.out / "folk").mkdir(parents=True, exist_ok=True)
        for src in folk_midis(work):
            # abc2midi names tunes FILE<X>.mid; a digest keeps names short and unique
            name = f"{src.stem[:40]}-{hashlib.sha1(src.name.encode()).hexdigest()[:8]}.mid"
            jobs.append((str(src), str(args.out / "folk" / name), f"folk/{name}"))
        with ProcessPoolExecutor(args.workers) as pool:
            problems = [p for p in pool.map(convert, jobs, chunksize=32) if p]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for p in problems:
        print("skipped", p)
    print(f"{len(jobs) - len(problems)} pieces written to {args.out} ({len(problems)} skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
