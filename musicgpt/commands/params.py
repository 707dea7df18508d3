"""`musicgpt params CONFIG`: the parameter count of a model config, module by module."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "params",
        help="print a model config's parameter count by module",
        description="Print the parameters of a GPT config by module (embeddings, one block, final "
        "LayerNorm, the tied head counted once) and the total.",
    )
    p.add_argument(
        "config", metavar="CONFIG", help="a preset name (gpt2, music-small, ...) or a GPTConfig YAML file"
    )
    p.set_defaults(run=run)


def param_rows(config) -> list[tuple[str, int]]:
    """(label, count) rows: embeddings, the modules of one block, all blocks, ln_f, head, total."""
    import torch

    from musicgpt.model.gpt import GPT

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost, even for gpt2-xl
        model = GPT(config)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    t = model.transformer
    block = t.h[0]
    rows = [
        ("transformer.wte (token embedding)", count(t.wte)),
        ("transformer.wpe (position embedding)", count(t.wpe)),
    ]
    for name in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
        rows.append((f"  h.N.{name}", count(block.get_submodule(name))))
    rows.append(("  one block", count(block)))
    rows.append((f"transformer.h ({config.n_layer} blocks)", count(t.h)))
    rows.append(("transformer.ln_f", count(t.ln_f)))
    rows.append(("lm_head (tied to wte, counted there)", 0))
    rows.append(("total", model.num_params()))
    return rows


def run(args: argparse.Namespace) -> int:
    from musicgpt.model.gpt import GPTConfig

    config = GPTConfig.load(args.config)
    rows = param_rows(config)
    c = config
    print(
        f"{args.config}: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, "
        f"{c.block_size} positions, vocab {c.vocab_size}, bias={c.bias}"
    )
    width = max(len(label) for label, _ in rows)
    for label, n in rows:
        if label == "total":
            print("-" * (width + 14))
        print(f"{label:<{width}}  {n:>12,}")
    return 0
