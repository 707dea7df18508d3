"""Generation speed of the default piano sampler against the plain one, side by side in one run.

    python benchmarks/prompt_cache_speed.py [--checkpoint piano-small] [--seconds 30] [--samples 1 4]
        [--rounds 3] [--threads 2] [--prompt fur-elise.mid]

Continues the first 10 s of a bundled piece (default Für Elise, the README's first command; give
pineapple-rag.mid for a sequenced one, where the grid snap works) for --seconds with three
samplers taking turns, each round timing all; each number is decode steps per second (every row
takes one token a step) in the best round, each ratio against
the plain sampler of the same row: plain (no prompt cache, no grid), the prompt cache alone, and
the default (`PIANO_SAMPLING`: the cache and, where the prompt has one, the grid). The cache's
work per step is linear in the history (prompt + sample so far), the snap's a loop over the rows,
both in numpy beside the model's step.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from musicgpt.checkpoints import load_checkpoint
from musicgpt.generation.piano import PIANO_SAMPLING, continue_piano, cut_at_seconds
from musicgpt.generation.sampling import SamplingConfig
from musicgpt.resources import piano_corpus


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="piano-small")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--prompt", default="fur-elise.mid", help="a piece of the bundled corpus, or a MIDI path"
    )
    args = parser.parse_args(argv)
    prompt_path = Path(args.prompt) if Path(args.prompt).is_file() else piano_corpus() / args.prompt
    if not prompt_path.is_file():
        parser.error(f"--prompt {args.prompt}: neither a MIDI file nor a piece of {piano_corpus()}")
    torch.set_num_threads(args.threads)
    model, tok = load_checkpoint(args.checkpoint)
    prompt = cut_at_seconds(tok.encode(prompt_path), 10.0)
    samplers = {
        "plain": SamplingConfig.build(PIANO_SAMPLING, prompt_cache=0.0, grid=0),
        "cache": SamplingConfig.build(PIANO_SAMPLING, grid=0),
        "default": PIANO_SAMPLING,
    }
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, {args.prompt}"
    )
    print(
        f"{'samples':>7} {'plain steps/s':>14} {'cache steps/s':>14} {'ratio':>6} {'default steps/s':>16} {'ratio':>6}"
    )
    for k in args.samples:
        best = dict.fromkeys(samplers, 0.0)
        for _ in range(args.rounds):
            for name, sampling in samplers.items():
                t0 = time.perf_counter()
                out = continue_piano(model, tok, prompt, args.seconds, k, sampling, seed=0)
                dt = time.perf_counter() - t0
                # decode steps: rows go in lockstep until the last reaches the seconds asked for
                # (a row that got there sooner pads; its own length would undercount the work)
                steps = max(len(s) for s in out.samples)
                best[name] = max(best[name], steps / dt)
        plain, cache, default = best["plain"], best["cache"], best["default"]
        print(
            f"{k:>7} {plain:>14,.0f} {cache:>14,.0f} {cache / plain:>6.2f} {default:>16,.0f} {default / plain:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
