"""Relative attention's cost: training and decoding tokens/s of relative vs learned positions.

    python benchmarks/relative.py [--threads 2] [--rounds 3] [--config music-20m] [--batch 8] [--seq 512]
                                  [--new-tokens 256] [--device cpu]

The same model config twice, once with GPT-2's learned positions and once with Music
Transformer's relative attention (`music-20m` and `music-20m-relative` at the same window), on the
same random batches. Training: forward + backward + fused AdamW under bf16 autocast (what
`precision: bf16-mixed` runs), `--batch` x `--seq`. Decoding: greedy `generate` at batch 1 from a
64-token prompt, `--new-tokens` new tokens through the KV cache (fp32 weights). Variants are timed
in rounds, one run of each per round, so that they meet the same load on a shared machine; each
row is its best round, and the ratio is relative / learned within this run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from musicgpt import generate
from musicgpt.model.gpt import GPT, GPTConfig


def train_seconds(model: GPT, optimizer, x: torch.Tensor, device: str) -> float:
    start = time.perf_counter()
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = model(x[:, :-1])
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), x[:, 1:].reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def decode_seconds(model: GPT, prompt: torch.Tensor, new_tokens: int, device: str) -> float:
    start = time.perf_counter()
    generate(model, prompt, new_tokens, greedy=True, max_context=prompt.shape[1] + new_tokens)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="training steps per variant per round")
    ap.add_argument("--config", default="music-20m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device

    models, optimizers = {}, {}
    for encoding in ("learned", "relative"):
        torch.manual_seed(0)
        config = GPTConfig.preset(args.config, block_size=args.seq, position_encoding=encoding)
        models[encoding] = GPT(config).to(device)
        optimizers[encoding] = torch.optim.AdamW(models[encoding].parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, 388, (args.batch, args.seq + 1), device=device)
    prompt = torch.randint(0, 388, (1, 64), device=device)
    for encoding, model in models.items():  # warm-up: compiled CPU kernels, allocator
        train_seconds(model, optimizers[encoding], x, device)
        decode_seconds(model.eval(), prompt, 8, device)
        model.train()

    best_train = {e: float("inf") for e in models}
    best_decode = {e: float("inf") for e in models}
    for _ in range(args.rounds):
        for encoding, model in models.items():
            model.train()
            per_step = [train_seconds(model, optimizers[encoding], x, device) for _ in range(args.steps)]
            best_train[encoding] = min(best_train[encoding], sum(per_step) / len(per_step))
            model.eval()
            best_decode[encoding] = min(
                best_decode[encoding], decode_seconds(model, prompt, args.new_tokens, device)
            )

    params = {e: m.num_params() for e, m in models.items()}
    train_tps = {e: args.batch * args.seq / s for e, s in best_train.items()}
    decode_tps = {e: args.new_tokens / s for e, s in best_decode.items()}
    print(
        f"{args.config} at a {args.seq}-token window, {device}, {args.threads} threads, torch {torch.__version__}"
    )
    print(f"{'':<34} {'learned':>10} {'relative':>10} {'ratio':>7}")
    print(
        f"{'parameters':<34} {params['learned']:>10,} {params['relative']:>10,} {params['relative'] / params['learned']:>7.2f}"
    )
    print(
        f"{f'training tokens/s ({args.batch} x {args.seq}, bf16)':<34} {train_tps['learned']:>10,.0f} "
        f"{train_tps['relative']:>10,.0f} {train_tps['relative'] / train_tps['learned']:>7.2f}"
    )
    print(
        f"{f'decoding tokens/s (batch 1, {args.new_tokens} new)':<34} {decode_tps['learned']:>10,.0f} "
        f"{decode_tps['relative']:>10,.0f} {decode_tps['relative'] / decode_tps['learned']:>7.2f}"
    )


if __name__ == "__main__":
    main()
