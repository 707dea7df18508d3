"""Learned positions, relative attention and rotary positions at equal wall-clock time, bundled piano corpus.

    OMP_NUM_THREADS=1 nice python benchmarks/positions_equal_time.py [--out runs/positions] [--budget 180]
        [--seeds 0 1] [--threads 1]

Equal wall-clock on a shared machine: the three encodings' training throughput is measured side
by side first (the same model, batch and precision as the runs, in CPU seconds of one thread;
the encodings take turns for --rounds rounds, each keeps its best), and each run then trains for
the steps that --budget seconds buy at its own measured rate (the cosine schedule decays over those steps). A run's own
wall time is printed too, but it depends on what else the machine was doing; the step counts do
not. Each run is the bundled piano_cpu recipe at --n-layer x --n-embd and a --block-size window.

Printed per run: steps, held-out loss on the validation split (the training window) and, on
the test split, the loss of the same target tokens seen through windows of 1x, 2x and 4x the
training window (learned positions stop at 1x). Rotary positions are scored twice past 1x: as
trained, and with linear position interpolation (`rope_scale` = the window multiple), a scaling
applied at evaluation only. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from musicgpt.resources import configs, piano_corpus

ENCODINGS = ("learned", "relative", "rope")
MULTIPLES = (1, 2, 4)


def recipe() -> dict:
    return yaml.safe_load(configs()["piano_cpu"].read_text())


def model_config(encoding: str, args, vocab_size: int):
    from musicgpt.model.gpt import GPTConfig

    base = recipe()["model"]["config"]
    return GPTConfig(
        vocab_size=vocab_size, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
        n_embd=args.n_embd, dropout=base["dropout"], bias=base["bias"], position_encoding=encoding,
    )  # fmt: skip


def measure_throughput(args, vocab_size: int) -> dict[str, float]:
    """Training tokens/s of each encoding, side by side: bf16 autocast, fused AdamW, random batches."""
    from musicgpt.model.gpt import GPT

    batch = recipe()["data"]["batch_size"]
    models, optimizers = {}, {}
    for encoding in ENCODINGS:
        torch.manual_seed(0)
        models[encoding] = GPT(model_config(encoding, args, vocab_size)).train()
        optimizers[encoding] = torch.optim.AdamW(models[encoding].parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, vocab_size, (batch, args.block_size + 1))

    def seconds(encoding: str, steps: int) -> float:
        # CPU seconds of this process: with one thread, the work itself, whatever else the
        # machine runs (wall time on a shared machine measures the neighbours)
        model, optimizer = models[encoding], optimizers[encoding]
        start = time.process_time()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x[:, :-1])
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), x[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.process_time() - start) / steps

    for encoding in ENCODINGS:  # warm-up: compiled CPU kernels, allocator
        seconds(encoding, 3)
    best = {e: float("inf") for e in ENCODINGS}
    for _ in range(args.rounds):
        for encoding in ENCODINGS:
            best[encoding] = min(best[encoding], seconds(encoding, args.steps_per_round))
    return {e: batch * args.block_size / s for e, s in best.items()}


def train_one(
    run_dir: Path, data_dir: Path, encoding: str, seed: int, steps: int, args
) -> tuple[Path, float]:
    from musicgpt.training.cli import train_cli

    config = recipe()
    model = config["model"]["config"]
    model.update(
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
        position_encoding=encoding,
    )  # fmt: skip
    config["seed_everything"] = seed
    config["run_dir"] = str(run_dir)
    config["data"]["data_dir"] = str(data_dir)
    config["trainer"].update(max_steps=steps, max_time=None, val_check_interval=steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    if not (run_dir / "model" / "config.yaml").exists():
        train_cli(["--config", str(run_dir / "config.yaml"), "--trainer.enable_progress_bar", "false"])
    return run_dir / "model", time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/positions")
    ap.add_argument(
        "--budget", type=float, default=180.0, help="seconds of training per run, at the measured rate"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--measure-only", action="store_true", help="print the measured rates and stop")
    ap.add_argument(
        "--encodings", nargs="+", default=list(ENCODINGS), choices=ENCODINGS, help="train only these"
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--rates", type=float, nargs=3, metavar=("LEARNED", "RELATIVE", "ROPE"),
        help="training tokens/s measured by an earlier run (to add seeds to it, or to re-print its table)",
    )  # fmt: skip
    ap.add_argument("--steps-per-round", type=int, default=5)
    ap.add_argument("--n-layer", type=int, default=3)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from musicgpt.data.build import build_dataset
    from musicgpt.data.dataset import FixedWindows, TokenShard
    from musicgpt.evaluate.nll import context_loss, model_loss
    from musicgpt.model.gpt import GPT

    out = Path(args.out)
    data_dir = out / "data"
    if not (data_dir / "tokenizer.json").exists():
        build_dataset(piano_corpus(), data_dir, "performance")
    validation = TokenShard(data_dir, "validation")
    test = TokenShard(data_dir, "test").tokens
    from musicgpt.tokenizers import load_tokenizer

    vocab_size = load_tokenizer(data_dir / "tokenizer.json").vocab_size
    longest = args.block_size * MULTIPLES[-1]

    tps = (
        dict(zip(ENCODINGS, args.rates, strict=True)) if args.rates else measure_throughput(args, vocab_size)
    )
    batch_tokens = recipe()["data"]["batch_size"] * args.block_size
    steps = {e: max(1, round(args.budget * tps[e] / batch_tokens)) for e in ENCODINGS}
    print(f"throughput ({args.threads} thread(s), side by side, best of {args.rounds} rounds, or --rates): "
          + ", ".join(f"{e} {tps[e]:,.0f} tokens/s -> {steps[e]} steps" for e in ENCODINGS), flush=True)  # fmt: skip
    if args.measure_only:
        return

    rows = []
    for seed in args.seeds:
        for encoding in args.encodings:
            path, wall = train_one(
                out / f"{encoding}-{seed}", data_dir, encoding, seed, steps[encoding], args
            )
            model = GPT.from_pretrained(path)
            val = model_loss(model, FixedWindows(validation, args.block_size), batch_size=8).nats
            losses = {}
            for m in MULTIPLES if model.config.relative else (1,):
                losses[m] = context_loss(model, test, args.block_size * m, args.block_size // 2, longest).nats
            rows.append((encoding, seed, steps[encoding], wall, val, losses))
            if encoding == "rope":  # linear position interpolation, at evaluation only
                scaled = {1: losses[1]}
                for m in MULTIPLES[1:]:
                    squeezed = GPT(dataclasses.replace(model.config, rope_scale=float(m))).eval()
                    squeezed.load_state_dict(model.state_dict())
                    scaled[m] = context_loss(
                        squeezed, test, args.block_size * m, args.block_size // 2, longest
                    ).nats
                rows.append(("rope, rope_scale = multiple", seed, steps[encoding], wall, val, scaled))
            print(rows[-1], flush=True)

    print(f"\n{args.budget:g} s of training per run at the measured rate; 16 x {args.block_size} tokens per "
          f"step, {args.n_layer} layers x {args.n_embd}, {args.threads} thread(s)")  # fmt: skip
    print("| positions | training tokens/s | seed | steps | wall s | validation nats/token | "
          + " | ".join(f"test, {m}x window" for m in MULTIPLES) + " |")  # fmt: skip
    print("|" + " --- |" * (6 + len(MULTIPLES)))
    for encoding, seed, n, wall, val, losses in rows:
        rate = tps.get(encoding, tps["rope"])
        cells = " | ".join(f"{losses[m]:.3f}" if m in losses else "" for m in MULTIPLES)
        print(f"| {encoding} | {rate:,.0f} | {seed} | {n} | {wall:.0f} | {val:.3f} | {cells} |")
    for encoding in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == encoding]
        means = " | ".join(
            f"{statistics.mean(r[5][m] for r in mine):.3f}" if m in mine[0][5] else "" for m in MULTIPLES
        )
        print(
            f"| {encoding}, mean of {len(mine)} | | | | | {statistics.mean(r[4] for r in mine):.3f} | {means} |"
        )


if __name__ == "__main__":
    main()
