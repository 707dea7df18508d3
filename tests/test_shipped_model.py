"""The piano model that ships in the package: it loads by name, its metrics file is true, it plays."""

from __future__ import annotations

import json

import pytest
from conftest import PIANO_DIR

from musicgpt.checkpoints import load_checkpoint
from musicgpt.cli import main
from musicgpt.data.build import build_dataset
from musicgpt.models import DEFAULT_MODEL, bundled_model_dir, bundled_models
from musicgpt.ship import QUICK_CHECK_WINDOWS, validation_losses
from musicgpt.tokenizers.performance import PerformanceTokenizer


def test_the_default_model_ships_and_loads_by_name():
    assert DEFAULT_MODEL in bundled_models()
    directory = bundled_model_dir(DEFAULT_MODEL)
    assert {"config.yaml", "model.safetensors", "tokenizer.json", "metrics.json", "MODEL_CARD.md"} <= {
        p.name for p in directory.iterdir()
    }
    assert sum(p.stat().st_size for p in directory.iterdir()) < 30 * 2**20
    model, tokenizer = load_checkpoint(DEFAULT_MODEL)
    assert isinstance(tokenizer, PerformanceTokenizer)
    assert model.config.relative
    assert bundled_model_dir("no-such-model") is None


def test_its_metrics_file_agrees_with_a_fresh_evaluation(tmp_path):
    metrics = json.loads((bundled_model_dir(DEFAULT_MODEL) / "metrics.json").read_text())
    model, _ = load_checkpoint(DEFAULT_MODEL)
    data = tmp_path / "data"  # the bundled corpus, split as the model's training split it
    build_dataset(PIANO_DIR, data, "performance", workers=1, progress=False, log=lambda _: None)
    fresh = validation_losses(model, data, QUICK_CHECK_WINDOWS)
    recorded = metrics["quick_check"]
    assert fresh["tokens"] == recorded["tokens"]
    assert fresh["nats_per_token"] == pytest.approx(recorded["nats_per_token"], abs=2e-3)
    assert metrics["parameters"] == model.num_params()


def test_generate_without_a_checkpoint_plays_the_shipped_model(tmp_path, capsys):
    out = tmp_path / "out.mid"
    args = ["generate", "--prompt", str(PIANO_DIR / "fur-elise.mid"), "--prompt-seconds", "4"]
    assert main([*args, "--seconds", "2", "--seed", "0", "--out", str(out)]) == 0
    notes = PerformanceTokenizer().decode_notes(PerformanceTokenizer().encode(out))
    assert len(notes) > 5
    assert notes.end.max() > 4.5  # the continuation went on past the prompt
