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
        model = GPT.from_pretrained(path)
        tokenizer = _tokenizer_beside(path)
    else:
        model, tokenizer = _from_lightning_ckpt(path)
    return model.to(device).eval(), tokenizer


def _tokenizer_beside(directory: Path) -> Tokenizer | None:
    """Our tokenizer.json (settings with a "name"), else a Hugging Face GPT-2 tokenizer's files."""
    import json

    from musicgpt.tokenizers import TOKENIZERS

    ours = directory / "tokenizer.json"
    if ours.exists():
        settings = json.loads(ours.read_text(encoding="utf-8"))
        if isinstance(settings, dict) and settings.get("name") in TOKENIZERS:
            return load_tokenizer(settings)
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
        config = GPTConfig.from_dict(ckpt["hyper_parameters"]["config"], source=str(path))
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    except KeyError as e:
        raise MusicGPTError(f"{path}: not a musicgpt training checkpoint (no {e})") from None
    model = GPT(config)
    model.load_state_dict(state)
    settings = ckpt.get("tokenizer")
    return model, load_tokenizer(settings) if settings else None
