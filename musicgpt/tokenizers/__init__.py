"""Tokenizers: music (performance events) and text (bytes, GPT-2 BPE), behind one interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musicgpt.errors import ConfigError
from musicgpt.tokenizers.base import (
    LogitsMask,
    Modality,
    MusicTokenizer,
    TextTokenizer,
    Tokenizer,
    is_music,
    require_music,
)

# registry name -> "module:class"; each class has from_dict(d)
TOKENIZERS = {
    "performance": "musicgpt.tokenizers.performance:PerformanceTokenizer",
    "bytes": "musicgpt.tokenizers.text:ByteTokenizer",
    "gpt2-bpe": "musicgpt.tokenizers.text:GPT2BPETokenizer",
}


def load_tokenizer(spec: str | Path | dict[str, Any]) -> Tokenizer:
    """Build a tokenizer from its settings dict, a saved JSON file, or a bare registry name."""
    if isinstance(spec, (str, Path)):
        if str(spec) in TOKENIZERS:
            spec = {"name": str(spec)}
        else:
            from musicgpt.io import read_json_mapping

            path = Path(spec)
            if not path.exists():
                raise ConfigError(f"{path}: no such tokenizer file (or tokenizer name: {sorted(TOKENIZERS)})")
            spec = read_json_mapping(path, "tokenizer file")
    if not isinstance(spec, dict):
        raise ConfigError(f"tokenizer settings must be a mapping with a 'name', got {spec!r}")
    return tokenizer_class(spec.get("name")).from_dict(spec)


def tokenizer_class(name: str) -> type:
    """The class registered as `name`; its `modality` says music or text without building one."""
    import importlib

    if not isinstance(name, str) or name not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {name!r}; known: {sorted(TOKENIZERS)}")
    module_name, class_name = TOKENIZERS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = [
    "LogitsMask",
    "Modality",
    "MusicTokenizer",
    "TOKENIZERS",
    "TextTokenizer",
    "Tokenizer",
    "is_music",
    "load_tokenizer",
    "require_music",
    "tokenizer_class",
]
