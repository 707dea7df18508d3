"""Shared fixtures: paths to the real data the project carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicgpt.resources import configs, gpt2_vocabulary, piano_corpus

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
FIXTURES = ROOT / "tests" / "fixtures"

# the files the package carries (musicgpt/assets, musicgpt/configs)
PIANO_DIR = piano_corpus()
GPT2_VOCAB_DIR = gpt2_vocabulary()[0].parent
CONFIGS = configs()
MULTITRACK_DIR = FIXTURES / "midi" / "multitrack"
CORRUPTED_DIR = FIXTURES / "midi" / "corrupted"
BACH_DIR = FIXTURES / "midi" / "bach"
TEXT_DIR = DATA / "text"

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


def shipped_config(
    name: str, tmp_path: Path, data_dir: Path, model: dict, data: dict | None = None, **trainer
) -> Path:
    """A bundled config made test-sized: the given model fields, quick steps, the run in tmp_path.

    Tests train through the shipped YAML files, so a config that stops working fails a test.
    """
    import yaml

    config = yaml.safe_load(CONFIGS[name.removesuffix(".yaml")].read_text())
    # vocab_size is not a config field: it comes from the data's tokenizer
    config["model"]["config"].update({k: v for k, v in model.items() if k != "vocab_size"})
    config["model"]["optimizer"].update(lr=1e-2, warmup_steps=5)
    config["run_dir"] = str(tmp_path)
    config["data"].update(
        {"data_dir": str(data_dir), "batch_size": 8, "num_workers": 0, "max_val_windows": 8}
    )
    config["data"].update(data or {})
    t = config["trainer"]
    t.pop("max_time")
    t.update(
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="32-true",
    )
    t.update(trainer)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A checkpoint directory as training writes it: random music-tiny weights (seed 0) and the
    performance tokenizer beside them (what `--checkpoint DIR` reads)."""
    import torch

    from musicgpt.model.gpt import GPT, GPTConfig
    from musicgpt.tokenizers.performance import PerformanceTokenizer

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-model")
    GPT(GPTConfig.preset("music-tiny")).save_pretrained(directory)
    PerformanceTokenizer().save(directory / "tokenizer.json")
    return directory
