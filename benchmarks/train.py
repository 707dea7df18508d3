"""Training throughput: tokens/s of forward + backward + AdamW, side by side in one run.

    python benchmarks/train.py [--threads 2] [--rounds 3] [--steps 4] [--batch 8] [--seq 512]
                               [--config music-20m] [--no-hf]

Rows: this project's GPT in fp32 and under bf16 autocast (what `precision: bf16-mixed` does; once
more with PyTorch's stock kernels, to show what `musicgpt/model/cpu_kernels.py` buys), and
transformers' GPT2LMHeadModel with the same config and weights (fp32, and bf16 autocast), all on
the same random token batches, with the optimizer `musicgpt train` uses for every row (fused
AdamW, gradient clipping).

The variants are timed in rounds, `--steps` steps of each per round, so that they meet the same
load on a shared machine; each row is its best round. Model FLOPs utilization counts PaLM's
6N + 12·L·d·T FLOPs per token against the peak rate of a large matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from musicgpt.model.cpu_kernels import use_compiled_cpu_kernels
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


@dataclass
class Variant:
    name: str
    model: torch.nn.Module
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]  # ids -> logits
    autocast: bool
    compiled_cpu_kernels: bool = True
    seconds_per_step: list[float] = field(default_factory=list)  # one mean per round

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        use_compiled_cpu_kernels(self.compiled_cpu_kernels)
        context = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with context:
            logits = self.forward(self.model, x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        start = time.perf_counter()
        for x, y in batches:
            self.step(x, y)
        self.seconds_per_step.append((time.perf_counter() - start) / len(batches))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="music-20m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers rows")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPTConfig.preset(args.config, dropout=args.dropout)
    shape = (args.batch, args.seq)
    batches = [
        (torch.randint(0, config.vocab_size, shape), torch.randint(0, config.vocab_size, shape))
        for _ in range(args.steps)
    ]

    def ours() -> GPT:
        torch.manual_seed(0)  # the same weights in every musicgpt row
        return GPT(config)

    reference = ours()
    variants = [
        Variant("musicgpt fp32", ours(), lambda m, x: m(x), autocast=False),
        Variant("musicgpt bf16-mixed", ours(), lambda m, x: m(x), autocast=True),
        Variant(
            "musicgpt bf16-mixed, stock kernels",
            ours(),
            lambda m, x: m(x),
            autocast=True,
            compiled_cpu_kernels=False,
        ),
    ]
    if not args.no_hf:
        from transformers import GPT2Config, GPT2LMHeadModel

        from musicgpt.model.hf import config_to_hf, state_to_hf

        hf_config = GPT2Config(
            **{
                **config_to_hf(config),
                "resid_pdrop": args.dropout,
                "embd_pdrop": args.dropout,
                "attn_pdrop": args.dropout,
                "bos_token_id": None,
                "eos_token_id": None,
            }
        )

        def hf() -> GPT2LMHeadModel:
            model = GPT2LMHeadModel(hf_config)
            model.load_state_dict(state_to_hf(reference), strict=False)
            return model

        variants += [
            Variant("transformers fp32", hf(), lambda m, x: m(x).logits, autocast=False),
            Variant("transformers bf16-mixed", hf(), lambda m, x: m(x).logits, autocast=True),
        ]

    tokens = args.batch * args.seq  # per step
    for variant in variants:  # warm-up: first-step allocations, compiling cpu_kernels
        variant.step(*batches[0])
    for round_index in range(args.rounds):
        for variant in variants:
            variant.run(batches)
        summary = ", ".join(f"{v.name} {tokens / v.seconds_per_step[-1]:,.0f}" for v in variants)
        print(f"  round {round_index + 1}/{args.rounds} tokens/s: {summary}", flush=True)

    peak = {"fp32": measure_peak(torch.float32), "bf16": measure_peak(torch.bfloat16)}
    fpt = flops_per_token(config, args.seq)
    rates = {v.name: tokens / min(v.seconds_per_step) for v in variants}
    print()
    print(
        f"config {args.config}: {reference.num_params():,} parameters; batch {args.batch} x {args.seq} tokens; "
        f"{args.threads} threads; dropout {args.dropout}; "
        f"best of {args.rounds} rounds of {args.steps} steps"
    )
    print(
        f"peak matmul: fp32 {peak['fp32'] / 1e9:,.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:,.0f} GFLOP/s; "
        f"{fpt / 1e6:,.1f} MFLOP per token"
    )
    baseline = rates.get("transformers fp32")
    print(f"{'run':<36} {'tokens/s':>10} {'vs transformers fp32':>21} {'MFU':>7}")
    for variant in variants:
        rate = rates[variant.name]
        ratio = f"{rate / baseline:.2f}x" if baseline else "-"
        mfu = fpt * rate / peak["bf16" if variant.autocast else "fp32"]
        print(f"{variant.name:<36} {rate:>10,.0f} {ratio:>21} {mfu:>7.1%}")
    if baseline:
        ours_bf16 = rates["musicgpt bf16-mixed"]
        print(
            f"musicgpt bf16-mixed: {ours_bf16 / baseline:.2f}x transformers fp32, "
            f"{ours_bf16 / rates['transformers bf16-mixed']:.2f}x transformers bf16-mixed"
        )


if __name__ == "__main__":
    main()
