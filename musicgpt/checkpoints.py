"""Load a trained model (and its tokenizer) from whatever a user points at.

`--checkpoint` accepts:
- the name of a model shipped in the package (`piano-small`: see `musicgpt.models`);
- a model directory written by training (`runs/NAME/model`: config.yaml, model.safetensors,
  tokenizer.json) or by `GPT.save_pretrained`;
- a Hugging Face GPT-2 directory (config.json with model.safetensors or pytorch_model.bin; its
  vocab.json + merges.txt give the tokenizer);
- a run directory (`runs/NAME`): its `model/` subdirectory;
- a Lightning checkpoint file (`*.ckpt`), read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from musicgpt.errors import MusicGPTError
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers import Tokenizer, load_tokenizer


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer | None]:
    """(model in eval mode, its tokenizer or None when the checkpoint names none)."""
    from musicgpt.models import bundled_model_dir

    path = Path(path)
    if not path.exists() and (bundled := bundled_model_dir(str(path))) is not None:
        path = bundled
    if not path.exists():
        raise MusicGPTError(f"{path}: no such checkpoint file or directory")
    if path.is_dir() and not (path / "config.yaml").exists() and not (path / "config.json").exists():
        if (path / "model").is_dir():
            path = path / "model"
        else:
            raise MusicGPTError(f"{path}: not a model directory (no config.yaml or config.json, no model/)")
    if path.is_dir():
        if (path / "config.yaml").exists():
            from musicgpt.io import read_yaml_mapping

            check_config_types(read_yaml_mapping(path / "config.yaml", "model config"), path / "config.yaml")
            _check_stored_dtypes(path / "model.safetensors")
        model = GPT.from_pretrained(path)
        tokenizer = _tokenizer_beside(path)
    else:
        model, tokenizer = _from_lightning_ckpt(path)
    check_weights_finite(model, path)
    check_vocabularies(model.config.vocab_size, tokenizer, path)
    return model.to(device).eval(), tokenizer


def check_config_types(d: dict, source) -> None:
    """Every value of a model config of the type its GPTConfig field declares: `bias: maybe` (a
    str) or `n_layer: 2.5` is a one-line ConfigError naming the file, not a model that half works."""
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(GPTConfig)
    for field in dataclasses.fields(GPTConfig):
        if field.name not in d:
            continue
        value, hint = d[field.name], hints[field.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        ok = any(
            (kind is type(None) and value is None)
            or (kind is bool and isinstance(value, bool))
            or (kind is int and isinstance(value, int) and not isinstance(value, bool))
            or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (kind is str and isinstance(value, str))
            for kind in allowed
        )
        if not ok:
            expected = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
            raise MusicGPTError(f"{source}: {field.name} must be {expected}, got {value!r}")


def _check_stored_dtypes(weights: Path) -> None:
    """Weights stored as integers or booleans would be cast to float silently when loaded."""
    from safetensors import SafetensorError, safe_open

    if not weights.exists():
        return  # from_pretrained names the missing file
    try:
        with safe_open(str(weights), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                dtype = f.get_slice(name).get_dtype()
                if dtype not in ("F16", "BF16", "F32", "F64"):
                    raise MusicGPTError(f"{weights}: {name} holds {dtype} values; model weights are floats")
    except (SafetensorError, OSError):
        return  # a damaged file: from_pretrained's own one-line error


def check_weights_finite(model: GPT, source) -> None:
    """NaN or inf weights make every sample fail in torch.multinomial and every loss nan."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise MusicGPTError(
                f"{source}: {name} holds {bad} NaN or infinite value(s); the model cannot be used"
            )


def check_vocabularies(model_vocab: int, tokenizer: Tokenizer | None, source) -> None:
    """A model reads the ids of its own tokenizer: the model's vocabulary holds every tokenizer id,
    and is not larger than that rounded up to a multiple of 128 (models pad their vocabulary, as
    GPT-2's 50257 becomes 50304; a music model's 390 beside a 259-id text tokenizer does not)."""
    if tokenizer is None:
        return
    n = tokenizer.vocab_size
    # a tokenizer whose vocabulary grew at its end (the performance FIM tokens) still reads the
    # models trained before: they must hold its older ids
    least = getattr(tokenizer, "base_vocab_size", n)
    if not least <= model_vocab <= -(-n // 128) * 128:
        raise MusicGPTError(
            f"{source}: the model reads {model_vocab} token ids but its tokenizer ({tokenizer.name}) has "
            f"{n}: they were not trained together"
        )


def _tokenizer_beside(directory: Path) -> Tokenizer | None:
    """Our tokenizer.json (settings with a "name"), else a Hugging Face GPT-2 tokenizer's files."""
    from musicgpt.io import read_json_mapping
    from musicgpt.tokenizers import TOKENIZERS

    ours = directory / "tokenizer.json"
    if ours.exists():
        settings = read_json_mapping(ours, "tokenizer file")  # not JSON, or not an object: one line
        if settings.get("name") in TOKENIZERS:
            try:
                return load_tokenizer(settings)
            except MusicGPTError as e:
                raise MusicGPTError(f"{ours}: {e}") from None
    hf_files = [("vocab.json", "merges.txt"), ("tokenizer.json",)]
    if any(all((directory / f).exists() for f in group) for group in hf_files):
        from musicgpt.tokenizers.text import GPT2BPETokenizer

        return GPT2BPETokenizer.from_hf_dir(directory)
    return None


def _from_lightning_ckpt(path: Path) -> tuple[GPT, Tokenizer | None]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, or one that needs pickled code to load
        raise MusicGPTError(
            f"{path}: cannot read as a Lightning checkpoint ({type(e).__name__}: {e})"
        ) from None
    try:
        config_dict = ckpt["hyper_parameters"]["config"]
        if isinstance(config_dict, dict):
            check_config_types(config_dict, path)
        config = GPTConfig.from_dict(config_dict, source=str(path))
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    except (KeyError, TypeError) as e:
        raise MusicGPTError(f"{path}: not a musicgpt training checkpoint (no {e})") from None
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and not tensor.is_floating_point():
            raise MusicGPTError(f"{path}: {name} holds {tensor.dtype} values; model weights are floats")
    model = GPT(config)
    model.load_weights(state, str(path))  # a mismatch is one line naming the file
    settings = ckpt.get("tokenizer")
    return model, load_tokenizer(settings) if settings else None
