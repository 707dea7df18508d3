"""Training throughput: tokens/s of forward + backward + AdamW, side by side in one run.

    python benchmarks/train.py [--threads 2] [--steps 5] [--batch 8] [--seq 512] [--config music-20m]

Rows: this project's GPT in fp32 and under bf16 autocast (what `precision: bf16-mixed` does),
and transformers' GPT2LMHeadModel with the same config (fp32, and bf16 autocast), all on the
same random token batches. Model FLOPs utilization counts 6 FLOPs per parameter per token plus
attention (PaLM's formula), against the peak matrix-product rate given with --peak-fp32/--peak-bf16
(defaults: measured on the 2-core development machines with a large matmul, see RESULTS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from musicgpt.model.gpt import GPT, GPTConfig


def flops_per_token(config: GPTConfig, seq: int) -> float:
    """PaLM (Chowdhery et al. 2022, appendix B): 6N for the weights + 12 * L * d * T for attention."""
    n = 12 * config.n_layer * config.n_embd**2 + config.vocab_size * config.n_embd  # blocks + tied head
    return 6 * n + 12 * config.n_layer * config.n_embd * seq


def measure_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def train_steps(model: torch.nn.Module, forward, batches, autocast: bool) -> float:
    """Seconds per step, over all but the first two (warm-up) batches."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    model.train()
    times = []
    for x, y in batches:
        start = time.perf_counter()
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx:
            logits = forward(model, x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sum(times[2:]) / len(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="music-20m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--peak-fp32", type=float, default=None, help="GFLOP/s; measured when omitted")
    parser.add_argument("--peak-bf16", type=float, default=None, help="GFLOP/s; measured when omitted")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers rows")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPTConfig.preset(args.config, dropout=args.dropout)
    peak = {
        "fp32": (args.peak_fp32 or measure_peak(torch.float32) / 1e9) * 1e9,
        "bf16": (args.peak_bf16 or measure_peak(torch.bfloat16) / 1e9) * 1e9,
    }
    shape = (args.batch, args.seq)
    batches = [
        (torch.randint(0, config.vocab_size, shape), torch.randint(0, config.vocab_size, shape))
        for _ in range(args.steps + 2)
    ]
    tokens = args.batch * args.seq
    fpt = flops_per_token(config, args.seq)

    ours = GPT(config)
    rows = []

    def add(name: str, model, forward, autocast: bool) -> None:
        seconds = train_steps(model, forward, batches, autocast)
        rate = tokens / seconds
        rows.append((name, rate, fpt * rate / peak["bf16" if autocast else "fp32"]))
        print(f"  measured {name}: {rate:,.0f} tokens/s", flush=True)

    state = {k: v.clone() for k, v in ours.state_dict().items()}
    add("musicgpt fp32", ours, lambda m, x: m(x), autocast=False)
    ours.load_state_dict(state)
    add("musicgpt bf16-mixed", ours, lambda m, x: m(x), autocast=True)
    if not args.no_hf:
        from transformers import GPT2Config, GPT2LMHeadModel

        from musicgpt.model.hf import state_to_hf

        hf_config = GPT2Config(
            vocab_size=config.vocab_size,
            n_positions=config.block_size,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            resid_pdrop=args.dropout,
            embd_pdrop=args.dropout,
            attn_pdrop=args.dropout,
            bos_token_id=None,
            eos_token_id=None,
        )
        hf = GPT2LMHeadModel(hf_config)
        ours.load_state_dict(state)
        hf.load_state_dict(state_to_hf(ours), strict=False)
        hf_state = {k: v.clone() for k, v in hf.state_dict().items()}
        add("transformers fp32", hf, lambda m, x: m(x).logits, autocast=False)
        hf.load_state_dict(hf_state)
        add("transformers bf16-mixed", hf, lambda m, x: m(x).logits, autocast=True)

    reference = next((r for n, r, _ in rows if n == "transformers fp32"), None)
    print()
    print(
        f"config {args.config}: {ours.num_params():,} parameters; batch {args.batch} x {args.seq} tokens; "
        f"{args.threads} threads; dropout {args.dropout}"
    )
    print(
        f"peak matmul: fp32 {peak['fp32'] / 1e9:,.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:,.0f} GFLOP/s; "
        f"{fpt / 1e6:,.1f} MFLOP per token"
    )
    print(f"{'run':<26} {'tokens/s':>10} {'vs transformers fp32':>21} {'MFU':>7}")
    for name, rate, mfu in rows:
        ratio = f"{rate / reference:.2f}x" if reference else "-"
        print(f"{name:<26} {rate:>10,.0f} {ratio:>21} {mfu:>7.1%}")


if __name__ == "__main__":
    main()
