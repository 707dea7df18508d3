"""Generation speed, side by side with transformers' GPT2LMHeadModel.generate on the same weights.

    python benchmarks/generate.py            # 64-token prompt, 512 new tokens, batch 1 and 8
    python benchmarks/generate.py --quick    # 128 new tokens, a smoke run

For the music-20m config and for gpt2, in one process on 2 threads, with greedy decoding:
transformers' generate (fp32, its KV cache) and musicgpt's generate with the KV cache (fp32 eager,
fp32 and bf16 compiled, bf16 eager) and without it. The machine is shared, so every figure is
the best of a few runs and is compared with the reference measured beside it (a ratio).
The table goes into benchmarks/RESULTS.md under "## Generation".
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from musicgpt.generation.decode import generate
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.model.hf import export_hf

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PROMPT = 64


def best_rates(runs: dict[str, tuple], repeats: int) -> dict[str, float]:
    """name -> new tokens/s, for runs {name: (callable, new tokens it makes, rounds or None)}.

    Runs are timed in rounds, one call of each per round, so that all of them meet the same load
    on a shared machine; the best round counts. A run limited to a number of rounds (the slow
    uncached path) takes part in those only and gets no warm-up; the others are called once first
    to warm up (and compile).
    """
    for run, _, limit in runs.values():
        if limit is None:
            run()
    best = dict.fromkeys(runs, float("inf"))
    for round_ in range(repeats):
        for name, (run, _, limit) in runs.items():
            if limit is not None and round_ >= limit:
                continue
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: n / best[name] for name, (_, n, _) in runs.items()}


def hf_copy(model: GPT, directory: Path):
    """The same weights in transformers' GPT2LMHeadModel, through our HF export."""
    import transformers

    transformers.logging.set_verbosity_error()
    export_hf(model, directory)
    return transformers.GPT2LMHeadModel.from_pretrained(directory).eval()


def bench_config(
    name: str, new_tokens: int, uncached_tokens: int, batches: list[int], repeats: int
) -> list[dict]:
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset(name)).eval()
    bf16 = GPT(model.config).eval()
    bf16.load_state_dict(model.state_dict())
    bf16.to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        hf = hf_copy(model, Path(tmp))
    rows = []
    for batch in batches:
        idx = torch.randint(
            0, model.config.vocab_size, (batch, PROMPT), generator=torch.Generator().manual_seed(1)
        )
        rates = bench_batch(model, bf16, hf, idx, new_tokens, uncached_tokens, repeats)
        reference = rates["transformers generate, KV cache, fp32"]
        for variant, rate in rates.items():
            rows.append(dict(config=name, batch=batch, variant=variant, rate=rate, ratio=rate / reference))
            print(
                f"{name:10} batch {batch}  {variant:52} {rate:9.1f} tok/s  {rate / reference:5.2f}x",
                flush=True,
            )
        model.clear_cache()
        bf16.clear_cache()
    return rows


def bench_batch(
    model: GPT, bf16: GPT, hf, idx: torch.Tensor, new_tokens: int, uncached_tokens: int, repeats: int
) -> dict[str, float]:
    """variant -> new tokens/s for one prompt batch."""

    def ours(m, n=new_tokens, **kw):
        return lambda: generate(m, idx, n, greedy=True, **kw)

    def theirs():
        with torch.inference_mode():
            return hf.generate(
                idx, attention_mask=torch.ones_like(idx), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None,
            )  # fmt: skip

    if not torch.equal(ours(model)(), theirs()):  # the same work: the same greedy tokens
        raise SystemExit("musicgpt and transformers disagree on the greedy tokens: the comparison is void")
    n = idx.shape[0] * new_tokens
    return best_rates(
        {
            "transformers generate, KV cache, fp32": (theirs, n, None),
            "musicgpt, KV cache, fp32": (ours(model), n, None),
            "musicgpt, KV cache, fp32, compiled": (ours(model, compile=True), n, None),
            "musicgpt, KV cache, bf16": (ours(bf16), n, None),
            "musicgpt, KV cache, bf16, compiled": (ours(bf16, compile=True), n, None),
            # slow: timed in the first round only
            f"musicgpt, no cache, fp32 ({uncached_tokens} new tokens)": (
                ours(model, uncached_tokens, use_cache=False),
                idx.shape[0] * uncached_tokens,
                1,
            ),
        },
        repeats,
    )


def markdown(rows: list[dict], args: argparse.Namespace, seconds: float, load: float) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    lines = [
        "## Generation",
        "",
        f"`python benchmarks/generate.py{' --quick' if args.quick else ''}`: greedy decoding, a {PROMPT}-token "
        f"prompt and {args.new_tokens} new tokens, random weights (the same in both libraries: the greedy "
        f"tokens were checked equal), {args.threads} threads, torch {torch.__version__}, {cpu}, "
        f"{os.cpu_count()} cores shared with other work (load average {load:.1f} at the end); "
        f"{seconds:.0f} s in all. Variants are timed in rounds, one run of each per round, so that they "
        f"meet the same load; the best of {args.repeats} rounds counts (the uncached path: its one run; "
        "for gpt2 over 64 new tokens, as its step over a long window takes about a second). Compiled: "
        "`generate(..., compile=True)`, the decode step through torch.compile (inductor, frozen weights, "
        "max-autotune GEMMs, C++ wrapper); compile time is not counted.",
        "",
        "No GPU was available in this session: CPU figures only.",
        "",
        "| config | batch | variant | new tokens/s | vs transformers |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['variant']} | {r['rate']:,.1f} | {r['ratio']:.2f}x |"
        )
    lines.append("")
    for (config, batch), group in itertools.groupby(rows, key=lambda r: (r["config"], r["batch"])):
        rate = {r["variant"]: r["rate"] for r in group}
        best_name = max((v for v in rate if v.startswith("musicgpt, KV")), key=rate.get)
        reference = rate["transformers generate, KV cache, fp32"]
        uncached = next(v for v in rate if "no cache" in v)
        lines.append(
            f"- {config}, batch {batch}: fastest {best_name} at {rate[best_name] / reference:.2f}x "
            f"transformers; the cache (fp32) {rate['musicgpt, KV cache, fp32'] / rate[uncached]:.0f}x the "
            f"uncached path{' (over fewer tokens, see above)' if f'({args.new_tokens} ' not in uncached else ''}"
        )
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace (or add) the "## Generation" section of RESULTS.md, leaving the others alone."""
    from musicgpt.io import atomic_write_text

    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Generation\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    atomic_write_text(RESULTS, new.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 new tokens, 2 rounds")
    parser.add_argument("--configs", nargs="+", default=["music-20m", "gpt2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    args.new_tokens = 128 if args.quick else 512
    args.repeats = 2 if args.quick else 4
    torch.set_num_threads(2)
    start = time.perf_counter()
    rows = []
    for name in args.configs:
        # gpt2's uncached step over a 576-token window takes about a second: time fewer of them
        uncached = args.new_tokens if name != "gpt2" else min(args.new_tokens, 64)
        rows += bench_config(name, args.new_tokens, uncached, args.batches, args.repeats)
    args.threads = torch.get_num_threads()
    text = markdown(rows, args, time.perf_counter() - start, os.getloadavg()[0])
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
