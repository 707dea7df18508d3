"""Piano continuations with the piece's draws off and on, side by side in one run.

    python benchmarks/length_draws_speed.py [--pieces pineapple-rag.mid,fur-elise.mid] [--seconds 20]
        [--samples 4] [--rounds 3] [--threads 2]

The draws (`PianoPriors.length_draws`, `onset_draws`, `chord_draws`, and the longest length `longest_share`; docs/model.md "Note lengths,
drawn when a note is struck" and "Onsets and chords, drawn from the piece") decide a share of the
notes' lengths, of the gaps between onsets and of the chords' sizes from the piece's own, and
hold the model to them: a few numpy operations per row and step, beside the model's step. Each
round continues the first 10 s of each bundled piece with every draw off and with the defaults,
taking turns; each number is decode steps per second (the longest sample's tokens over the wall
time) in the best round, the ratio on / off from the same row.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from musicgpt.checkpoints import load_checkpoint
from musicgpt.generation.piano import PianoPriors, continue_piano, cut_at_seconds
from musicgpt.resources import piano_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="piano-small")
    ap.add_argument("--pieces", default="pineapple-rag.mid,fur-elise.mid")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_checkpoint(args.checkpoint)
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'piece':22s} {'off steps/s':>12s} {'on steps/s':>11s} {'on / off':>9s}")
    for piece in args.pieces.split(","):
        prompt = cut_at_seconds(np.asarray(tokenizer.encode(str(piano_corpus() / piece))), 10.0)
        off = PianoPriors(
            length_draws=0.0, length_draws_on_grid=0.0, onset_draws=0.0, chord_draws=0.0, longest_share=0.0
        )
        settings = {"off": off, "on": PianoPriors()}
        best = dict.fromkeys(settings, 0.0)
        for seed in range(args.rounds):
            for name, priors in settings.items():
                start = time.perf_counter()
                out = continue_piano(
                    model, tokenizer, prompt, args.seconds, num_samples=args.samples, seed=seed, priors=priors
                )
                steps = max(len(s) for s in out.samples)
                best[name] = max(best[name], steps / (time.perf_counter() - start))
        off, on = best["off"], best["on"]
        print(f"{piece:22s} {off:12.0f} {on:11.0f} {on / off:9.2f}")


if __name__ == "__main__":
    main()
