"""musicgpt: symbolic music (and text) generation with one decoder-only GPT-2-style transformer.

The public names are imported lazily so that `musicgpt tokenize` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "PerformanceTokenizer": "musicgpt.tokenizers.performance",
    "ByteTokenizer": "musicgpt.tokenizers.text",
    "GPT2BPETokenizer": "musicgpt.tokenizers.text",
    "load_tokenizer": "musicgpt.tokenizers",
    "GPT": "musicgpt.model.gpt",
    "GPTConfig": "musicgpt.model.gpt",
    "generate": "musicgpt.generation.decode",
    "generate_stream": "musicgpt.generation.decode",
    "MusicGPTError": "musicgpt.errors",
}

__all__ = [
    "GPT",
    "ByteTokenizer",
    "GPT2BPETokenizer",
    "GPTConfig",
    "MusicGPTError",
    "PerformanceTokenizer",
    "__version__",
    "generate",
    "generate_stream",
    "load_tokenizer",
]
assert set(__all__) == set(_EXPORTS) | {"__version__"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'musicgpt' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from musicgpt.errors import MusicGPTError
    from musicgpt.generation.decode import generate, generate_stream
    from musicgpt.model.gpt import GPT, GPTConfig
    from musicgpt.tokenizers import load_tokenizer
    from musicgpt.tokenizers.performance import PerformanceTokenizer
    from musicgpt.tokenizers.text import ByteTokenizer, GPT2BPETokenizer
