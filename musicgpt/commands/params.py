"""`musicgpt params MODEL`: the parameter count of a model config, module by module."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "params",
        help="print a model's parameter count by module",
        description="Print the parameters of a GPT config by module (embeddings, one block, final "
        "LayerNorm, the tied head counted once) and the total.",
    )
    p.add_argument(
        "config",
        metavar="MODEL",
        help="a preset name (gpt2, music-small, ...), a shipped model's name (piano-small), a "
        "checkpoint directory (config.yaml, or a Hugging Face config.json) or a GPTConfig YAML file",
    )
    p.set_defaults(run=run)


def load_config(spec: str):
    """The GPTConfig that `spec` names: a preset, a shipped model, a checkpoint directory or a YAML file."""
    from musicgpt.errors import ConfigError
    from musicgpt.model.config import PRESETS, GPTConfig
    from musicgpt.models import bundled_model_dir

    if spec in PRESETS:
        return GPTConfig.preset(spec)
    path = Path(spec)
    if not path.exists() and bundled_model_dir(spec) is not None:
        path = bundled_model_dir(spec)
    if path.is_dir():
        for directory in (path, path / "model"):  # a model directory, or a training run's
            if (directory / "config.yaml").is_file():
                return GPTConfig.from_yaml(directory / "config.yaml")
            if (directory / "config.json").is_file():
                from musicgpt.io import read_json_mapping
                from musicgpt.model.hf import config_from_hf

                json_path = directory / "config.json"
                return config_from_hf(read_json_mapping(json_path, "Hugging Face config"), str(json_path))
        raise ConfigError(f"{path}: no config.yaml (musicgpt) or config.json (Hugging Face GPT-2) in it")
    return GPTConfig.load(spec)


def param_rows(config) -> list[tuple[str, int]]:
    """(label, count) rows: embeddings, the modules of one block, all blocks, ln_f, head, total."""
    import torch

    from musicgpt.model.gpt import GPT

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost, even for gpt2-xl
        model = GPT(config)

    def count(module: torch.nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    t = model.transformer
    block = t.h[0]
    rows = [("transformer.wte (token embedding)", count(t.wte))]
    if t.wpe is not None:  # learned positions only; the others live in attention (or have no parameters)
        rows.append(("transformer.wpe (position embedding)", count(t.wpe)))
    names = ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
    for name in names:
        rows.append((f"  h.N.{name}", count(block.get_submodule(name))))
    if block.attn.rel_emb is not None:
        rows.insert(-3, ("  h.N.attn.rel_emb (relative distances)", block.attn.rel_emb.numel()))
    rows.append(("  one block", count(block)))
    rows.append((f"transformer.h ({config.n_layer} blocks)", count(t.h)))
    rows.append(("transformer.ln_f", count(t.ln_f)))
    rows.append(("lm_head (tied to wte, counted there)", 0))
    rows.append(("total", model.num_params()))
    return rows


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    rows = param_rows(config)
    c = config
    if c.position_encoding == "learned":
        positions = f"{c.block_size} learned positions"
    else:
        positions = f"{c.position_encoding} positions, a {c.block_size}-token training window"
    print(
        f"{args.config}: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, "
        f"{positions}, vocab {c.vocab_size}, bias={c.bias}"
    )
    width = max(len(label) for label, _ in rows)
    for label, n in rows:
        if label == "total":
            print("-" * (width + 14))
        print(f"{label:<{width}}  {n:>12,}")
    return 0
