"""Shared fixtures: paths to the real data the project carries."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
FIXTURES = ROOT / "tests" / "fixtures"

PIANO_DIR = DATA / "midi" / "piano"
MULTITRACK_DIR = FIXTURES / "midi" / "multitrack"
CORRUPTED_DIR = FIXTURES / "midi" / "corrupted"
TEXT_DIR = DATA / "text"
GPT2_VOCAB_DIR = DATA / "gpt2"

PIANO_FILES = sorted(p for p in PIANO_DIR.glob("*.mid") if p.name != "empty.mid")
EMPTY_MIDI = PIANO_DIR / "empty.mid"
MULTITRACK_FILES = sorted(MULTITRACK_DIR.glob("*.mid"))
CORRUPTED_FILES = sorted(CORRUPTED_DIR.glob("*.mid"))


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests run side by side on 2 cores; one intra-op thread each keeps them from fighting."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def piano_tokens():
    """A real MAESTRO performance, encoded (about 12k tokens), as int64."""
    import numpy as np

    from musicgpt.tokenizers.performance import PerformanceTokenizer

    return PerformanceTokenizer().encode(PIANO_DIR / "Maestro_3.mid").astype(np.int64)
