"""Fill-in-the-middle training windows (`data.fim_rate`) and the piano_fim recipe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR, shipped_config

from musicgpt.data.build import build_dataset
from musicgpt.data.datamodule import TokenDataModule
from musicgpt.data.dataset import AugmentConfig, RandomWindows, TokenShard
from musicgpt.data.fim import fim_window
from musicgpt.errors import ConfigError
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.training.cli import train_cli

TOK = PerformanceTokenizer(max_note_seconds=600.0, max_polyphony=127)  # limits beyond the data's


@pytest.fixture(scope="module")
def piano_dir(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("fim-src")
    for name in ["fur-elise.mid", "maple-leaf-rag.mid", "Maestro_3.mid", "POP909_008.mid"]:
        shutil.copy(PIANO_DIR / name, src / name)
    out = tmp_path_factory.mktemp("fim-data")
    build_dataset(src, out, "performance", workers=1, progress=False, log=lambda _: None)
    return out


def parts(window: np.ndarray):
    """(prefix, gap steps, suffix, middle) of a FIM window; None for a plain one."""
    w = window.tolist()
    if V.FIM_SUFFIX_ID not in w:
        return None
    a, b, c = w.index(V.FIM_SUFFIX_ID), w.index(V.FIM_MIDDLE_ID), w.index(V.FIM_END_ID)
    assert a < b < c == len(w) - 1
    assert [w.count(t) for t in (V.FIM_SUFFIX_ID, V.FIM_MIDDLE_ID, V.FIM_END_ID)] == [1, 1, 1]
    after = np.asarray(w[a + 1 : b])
    steps = V.shift_steps(after)
    n_gap = int(np.argmax(steps == 0))  # the suffix starts with its VELOCITY
    assert V.TYPE_OF_ID[after[n_gap]] == V.EventType.VELOCITY
    return np.asarray(w[:a]), int(steps[:n_gap].sum()), after[n_gap:], np.asarray(w[b + 1 : c])


def test_fim_windows_have_the_format_and_a_middle_that_lasts_the_gap(piano_dir):
    shard = TokenShard(piano_dir, "train")
    rng = np.random.default_rng(0)
    made, gaps = 0, []
    for _ in range(60):
        start = int(rng.integers(0, len(shard) - 1100))
        stretch = np.asarray(shard.tokens[start : start + 1026], np.int64)
        window = fim_window(stretch, 513, rng)
        if window is None:
            continue
        made += 1
        assert window.size == 513
        prefix, gap, suffix, middle = parts(window)
        assert V.shift_steps(middle).sum() == gap
        gaps.append(gap)
        # the suffix is a stretch of the piece: stated velocity, then the stretch's own tokens
        assert V.TYPE_OF_ID[suffix[0]] == V.EventType.VELOCITY
    assert made >= 45  # stretches across a piece boundary, or without a velocity, stay plain
    assert min(gaps) >= 1 and max(gaps) <= 1000 and np.median(gaps) > 150


def test_the_fim_rate_of_the_dataset(piano_dir):
    shard = TokenShard(piano_dir, "train")
    plain = RandomWindows(shard, 128, samples=50, seed=3)
    same = RandomWindows(shard, 128, samples=50, seed=3, fim_rate=0.0)
    for i in range(50):  # fim_rate 0: exactly the windows of before
        assert torch.equal(plain[i][0], same[i][0])
    half = RandomWindows(shard, 128, samples=300, seed=3, fim_rate=0.5, augment=AugmentConfig())
    share = np.mean([V.FIM_SUFFIX_ID in half[i][0].tolist() for i in range(300)])
    assert 0.35 < share < 0.6
    x, y = half[0]
    assert x.shape == y.shape == (128,) and torch.equal(x[1:], y[:-1])


def test_the_datamodule_checks_fim_settings(piano_dir):
    with pytest.raises(ConfigError, match="fim_rate must be between 0 and 1"):
        TokenDataModule(piano_dir, fim_rate=1.5)
    with pytest.raises(ConfigError, match="fim_span_seconds"):
        TokenDataModule(piano_dir, fim_rate=0.5, fim_span_seconds=(5.0, 2.0))
    dm = TokenDataModule(piano_dir, block_size=64, fim_rate=0.5, augment=False)
    dm.setup("fit")
    assert dm.train_set.fim_rate == 0.5
    assert V.FIM_SUFFIX_ID not in [t for i in range(len(dm.val_set)) for t in dm.val_set[i][0].tolist()]


def test_the_fim_recipe_warm_starts_a_390_id_model_and_trains(piano_dir, tmp_path):
    """piano_fim.yaml as shipped (test-sized): from a model that predates the FIM ids, a few steps."""
    model = dict(block_size=128, n_layer=2, n_head=2, n_embd=64, max_relative_distance=64)
    start = tmp_path / "start"
    torch.manual_seed(0)
    GPT(GPTConfig(vocab_size=390, position_encoding="relative", **model)).save_pretrained(start)
    config = shipped_config(
        "piano_fim", tmp_path, piano_dir, model, data={"mix_data_dir": None, "mix_weight": 0.0},
        max_steps=3, val_check_interval=3,
    )  # fmt: skip
    import yaml

    settings = yaml.safe_load(config.read_text())
    assert settings["data"]["fim_rate"] == 0.5
    settings["model"]["init_from"] = str(start)
    config.write_text(yaml.safe_dump(settings))
    cli = train_cli(["--config", str(config)], run=False)
    wte = cli.model.model.transformer.wte.weight
    assert wte.shape[0] == V.VOCAB_SIZE
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 3
