"""What position encodings cost: training and decoding tokens/s of learned, relative and rotary positions.

    python benchmarks/positions.py [--threads 1] [--clock cpu] [--rounds 3] [--config music-20m]
                                   [--batch 4] [--windows 512 2048] [--new-tokens 128] [--device cpu]

The same model config three times per window (`--windows`: the training window, block_size),
with GPT-2's learned positions, Music Transformer's relative attention and rotary positions, on
the same random batches. Training: forward + backward + fused AdamW under bf16 autocast (what
`precision: bf16-mixed` runs), `--batch` x window tokens. Decoding: greedy `generate` at batch 1
from a 64-token prompt, `--new-tokens` new tokens through the KV cache (fp32 weights; the cache
holds prompt + new tokens, so a decode step's cost should not depend on the window). Variants
take turns in rounds, one run of each per round, so that they meet the same load on a shared
machine; each figure is its best round, and the ratios are against learned positions within
this run. `--clock cpu` (the default on CPU) times the CPU seconds of this process rather than the
wall clock: with one thread that is the work itself, however busy the machine is with other
processes (wall time on a shared machine mostly measures the neighbours); `--clock wall` for an
idle machine or a GPU. A window past 1024 tokens keeps the tokens per training step (smaller batch).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from musicgpt import generate
from musicgpt.model.gpt import GPT, GPTConfig

ENCODINGS = ("learned", "relative", "rope")


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time


def train_seconds(model: GPT, optimizer, x: torch.Tensor, device: str) -> float:
    start = clock()
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = model(x[:, :-1])
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), x[:, 1:].reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def decode_seconds(model: GPT, prompt: torch.Tensor, new_tokens: int, device: str) -> float:
    start = clock()
    generate(model, prompt, new_tokens, greedy=True, max_context=prompt.shape[1] + new_tokens)
    if device == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bench_window(args, window: int) -> dict[str, dict[str, float]]:
    device = args.device
    models, optimizers = {}, {}
    for encoding in ENCODINGS:
        torch.manual_seed(0)
        config = GPTConfig.preset(args.config, block_size=window, position_encoding=encoding)
        models[encoding] = GPT(config).to(device)
        optimizers[encoding] = torch.optim.AdamW(models[encoding].parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, 388, (args.batch, window + 1), device=device)
    prompt = torch.randint(0, 388, (1, 64), device=device)
    for encoding, model in models.items():  # warm-up: compiled CPU kernels, allocator
        train_seconds(model, optimizers[encoding], x, device)
        decode_seconds(model.eval(), prompt, 8, device)
        model.train()

    best = {e: {"train": float("inf"), "decode": float("inf")} for e in models}
    for _ in range(args.rounds):
        for encoding, model in models.items():
            model.train()
            per_step = [train_seconds(model, optimizers[encoding], x, device) for _ in range(args.steps)]
            best[encoding]["train"] = min(best[encoding]["train"], sum(per_step) / len(per_step))
            model.eval()
            best[encoding]["decode"] = min(
                best[encoding]["decode"], decode_seconds(model, prompt, args.new_tokens, device)
            )
    return {
        e: {
            "params": models[e].num_params(),
            "train": args.batch * window / b["train"],
            "decode": args.new_tokens / b["decode"],
        }
        for e, b in best.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--clock", choices=CLOCK, default=None, help="cpu (default on CPU) or wall (default on GPU)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="training steps per variant per round")
    ap.add_argument("--config", default="music-20m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--windows", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global clock
    args.clock = args.clock or ("cpu" if args.device == "cpu" else "wall")
    clock = CLOCK[args.clock]

    where = cpu_name() if args.device == "cpu" else torch.cuda.get_device_name()
    print(
        f"{args.config}, {args.device} ({where}), {args.threads} threads, {args.clock} time, "
        f"torch {torch.__version__}"
    )
    print(f"| window | measure | {' | '.join(ENCODINGS)} | relative / learned | rope / learned |")
    print("| ---: | --- |" + " ---: |" * (len(ENCODINGS) + 2))
    for window in args.windows:
        batch = (
            args.batch if window <= 1024 else max(1, args.batch * 512 // window)
        )  # the same tokens per step
        r = bench_window(argparse.Namespace(**{**vars(args), "batch": batch}), window)
        rows = (
            ("parameters", "params", ",.0f"),
            (f"training tokens/s ({batch} x {window}, bf16)", "train", ",.0f"),
            (f"decoding tokens/s (batch 1, {args.new_tokens} new)", "decode", ",.1f"),
        )
        for label, key, fmt in rows:
            cells = " | ".join(format(r[e][key], fmt) for e in ENCODINGS)
            ratios = " | ".join(f"{r[e][key] / r['learned'][key]:.2f}" for e in ENCODINGS[1:])
            print(f"| {window} | {label} | {cells} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
