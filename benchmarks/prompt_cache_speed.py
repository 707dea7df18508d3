"""Generation speed with the prompt cache on and off, side by side in one run.

    python benchmarks/prompt_cache_speed.py [--checkpoint piano-small] [--seconds 30] [--samples 1 4]
        [--rounds 3] [--threads 2]

Continues the first 10 s of Für Elise (the README's first command) for --seconds, the cache off and
on taking turns, each round timing both; each row is the best round. The cache's work per step is
linear in the history (prompt + sample so far), in numpy beside the model's step.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from musicgpt.checkpoints import load_checkpoint
from musicgpt.generation.piano import PIANO_SAMPLING, continue_piano, cut_at_seconds
from musicgpt.resources import piano_corpus


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="piano-small")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = load_checkpoint(args.checkpoint)
    prompt = cut_at_seconds(tok.encode(piano_corpus() / "fur-elise.mid"), 10.0)
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'samples':>7} {'cache off tok/s':>16} {'cache on tok/s':>15} {'ratio':>6}")
    for k in args.samples:
        best = {0.0: 0.0, 1.0: 0.0}
        for _ in range(args.rounds):
            for strength in (0.0, PIANO_SAMPLING.prompt_cache):
                sampling = PIANO_SAMPLING.__class__(prompt_cache=strength)
                t0 = time.perf_counter()
                out = continue_piano(model, tok, prompt, args.seconds, k, sampling, seed=0)
                dt = time.perf_counter() - t0
                tokens = sum(len(s) for s in out.samples) / k  # steps: rows go in lockstep
                best[strength] = max(best[strength], tokens / dt)
        off, on = best[0.0], best[PIANO_SAMPLING.prompt_cache]
        print(f"{k:>7} {off:>16,.0f} {on:>15,.0f} {on / off:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
