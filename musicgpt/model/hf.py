"""Hugging Face GPT-2 checkpoints in and out (no `transformers` needed for either).

HF's GPT-2 uses `Conv1D` layers whose weights are stored (in_features, out_features), the
transpose of `nn.Linear`; the names are otherwise ours. Its attention-mask buffers
(`attn.bias`, `attn.masked_bias`, in old checkpoints) are not weights and are dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from musicgpt.errors import ConfigError
from musicgpt.model.config import GPTConfig

if TYPE_CHECKING:  # gpt.py imports this file to load HF checkpoints; at run time only configs are needed here
    from musicgpt.model.gpt import GPT

# the Conv1D layers: their weights are transposed relative to nn.Linear
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# activations that are GPT-2's tanh-approximated GELU, the only one GPT implements
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def config_from_hf(d: dict, source: str = "config.json") -> GPTConfig:
    """GPTConfig from a Hugging Face GPT2Config dict; anything GPT cannot reproduce is a ConfigError."""
    if d.get("model_type", "gpt2") != "gpt2":
        raise ConfigError(f"{source}: model_type {d.get('model_type')!r} is not GPT-2")
    act = d.get("activation_function", "gelu_new")
    if act not in _TANH_GELU:
        raise ConfigError(f"{source}: activation_function {act!r} is not supported (only GPT-2's gelu_new)")
    n_embd = d.get("n_embd", 768)
    if d.get("n_inner") not in (None, 4 * n_embd):
        raise ConfigError(f"{source}: n_inner={d['n_inner']} is not 4 * n_embd; GPT has a 4x MLP")
    for key, supported in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
        ("tie_word_embeddings", True),
    ):
        if d.get(key, supported) != supported:
            raise ConfigError(f"{source}: {key}={d[key]} is not supported")
    # n_ctx is the old name for the context; n_positions is what the position table holds
    block_size = d.get("n_positions", d.get("n_ctx", 1024))
    return GPTConfig(
        vocab_size=d.get("vocab_size", 50257),
        block_size=block_size,
        n_layer=d.get("n_layer", 12),
        n_head=d.get("n_head", 12),
        n_embd=n_embd,
        dropout=d.get("resid_pdrop", 0.1),
        bias=True,
        layer_norm_epsilon=d.get("layer_norm_epsilon", 1e-5),
    )


def config_to_hf(config: GPTConfig) -> dict:
    """The config.json for `config` that transformers' GPT2LMHeadModel loads."""
    if not config.bias:
        raise ConfigError("Hugging Face GPT-2 always has biases; a config with bias=False cannot be exported")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        # GPT-2 has no special tokens apart from EOS, which a music vocabulary places elsewhere
        "bos_token_id": None,
        "eos_token_id": None,
    }


def state_from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF GPT-2 tensors -> GPT names and layouts (works for GPT2Model and GPT2LMHeadModel keys)."""
    out = {}
    for key, value in state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")) or key == "lm_head.weight":
            continue  # causal-mask buffers; the head is tied to wte
        name = key if key.startswith("transformer.") else f"transformer.{key}"
        out[name] = value.t().contiguous() if name.endswith(_CONV1D) else value
    return out


def state_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    """GPT tensors in HF GPT2LMHeadModel's names and Conv1D layout (the tied head left out)."""
    return {
        k: (v.t() if k.endswith(_CONV1D) else v).detach().contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.weight"
    }


def load_hf_checkpoint(directory: str | Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """Read a HF GPT-2 directory: config.json plus model.safetensors (preferred) or pytorch_model.bin."""
    directory = Path(directory)
    config_path = directory / "config.json"
    from musicgpt.io import read_json_mapping

    config = config_from_hf(read_json_mapping(config_path, "Hugging Face config"), source=str(config_path))
    if (directory / "model.safetensors").exists():
        from musicgpt.io import read_safetensors

        state = read_safetensors(directory / "model.safetensors")
    elif (directory / "pytorch_model.bin").exists():
        try:  # weights_only: a .bin file is a pickle, and a pickle can run code
            state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(
                f"{directory / 'pytorch_model.bin'}: not a plain tensor checkpoint ({e})"
            ) from None
    else:
        raise ConfigError(f"{directory}: config.json but neither model.safetensors nor pytorch_model.bin")
    return config, state_from_hf(state)


def export_hf(model: GPT, directory: str | Path) -> None:
    """Write `model` as a HF GPT-2 directory (config.json + model.safetensors) transformers can load."""
    from safetensors.torch import save

    from musicgpt.io import atomic_write_bytes, atomic_write_json

    directory = Path(directory)
    hf_config = config_to_hf(model.config)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / "model.safetensors", save(state_to_hf(model), metadata={"format": "pt"}))
    atomic_write_json(directory / "config.json", hf_config)
