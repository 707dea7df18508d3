"""Tokenizers: music (performance events) and text (bytes, GPT-2 BPE), behind one interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musicgpt.errors import ConfigError
from musicgpt.tokenizers.base import LogitsMask, Tokenizer

# registry name -> "module:class"; each class has from_dict(d)
TOKENIZERS = {
    "performance": "musicgpt.tokenizers.performance:PerformanceTokenizer",
    "bytes": "musicgpt.tokenizers.text:ByteTokenizer",
    "gpt2-bpe": "musicgpt.tokenizers.text:GPT2BPETokenizer",
}


def load_tokenizer(spec: str | Path | dict[str, Any]) -> Tokenizer:
    """Build a tokenizer from its settings dict, a saved JSON file, or a bare registry name."""
    import importlib

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
    name = spec.get("name")
    if name not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {name!r}; known: {sorted(TOKENIZERS)}")
    module_name, class_name = TOKENIZERS[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_dict(spec)


__all__ = ["LogitsMask", "Tokenizer", "TOKENIZERS", "load_tokenizer"]
