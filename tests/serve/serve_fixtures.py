"""A tiny music model saved as a checkpoint directory, as `musicgpt serve --checkpoint` reads it.

A module, not a conftest.py: that name would shadow tests/conftest.py for `from conftest import`.
"""

from __future__ import annotations

import pytest
import torch

from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.performance import PerformanceTokenizer


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Random music-tiny weights (seed 0) with the performance tokenizer beside them."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-model")
    GPT(GPTConfig.preset("music-tiny")).save_pretrained(directory)
    PerformanceTokenizer().save(directory / "tokenizer.json")
    return directory
