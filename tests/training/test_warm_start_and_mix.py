"""Warm starts (`model.init_from`) and a pretraining corpus mixed into the training windows
(`data.mix_data_dir`, `data.mix_weight`): what the piano_base recipe trains with."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BACH_DIR, PIANO_DIR, shipped_config

from musicgpt.data.build import build_dataset
from musicgpt.data.datamodule import TokenDataModule
from musicgpt.data.dataset import RandomWindows, TokenShard
from musicgpt.errors import ConfigError
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.training.cli import train_cli
from musicgpt.training.module import MusicGPTModule

TINY = dict(vocab_size=390, block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0, bias=True)


def build(tmp_path_factory, source: Path, names: list[str], tag: str) -> Path:
    src = tmp_path_factory.mktemp(f"{tag}-src")
    for name in names:
        shutil.copy(source / name, src / name)
    out = tmp_path_factory.mktemp(f"{tag}-data")
    build_dataset(src, out, "performance", workers=1, progress=False, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def piano_dir(tmp_path_factory) -> Path:
    names = ["fur-elise.mid", "maple-leaf-rag.mid", "solace.mid", "POP909_008.mid"]
    return build(tmp_path_factory, PIANO_DIR, names, "piano")


@pytest.fixture(scope="module")
def bach_dir(tmp_path_factory) -> Path:
    return build(tmp_path_factory, BACH_DIR, sorted(p.name for p in BACH_DIR.glob("*.mid")), "bach")


def test_mixed_windows_come_from_each_corpus_at_the_given_share(piano_dir, bach_dir):
    piano, bach = TokenShard(piano_dir, "train"), TokenShard(bach_dir, "train")
    windows = RandomWindows(piano, 32, samples=400, seed=0, mix=bach, mix_weight=0.3)
    # which shard item i reads is the seeded draw the dataset makes; replay it
    from_bach = [np.random.default_rng((0, 0, i)).random() < 0.3 for i in range(400)]
    assert 0.2 < np.mean(from_bach) < 0.4
    for i in range(400):
        x, _ = windows[i]
        shard = bach if from_bach[i] else piano
        rng = np.random.default_rng((0, 0, i))
        rng.random()
        start = int(rng.integers(0, len(shard) - windows.read_len + 1))
        assert np.array_equal(x.numpy(), np.asarray(shard.tokens[start : start + 32], np.int64))
    plain = RandomWindows(piano, 32, samples=8, seed=0)
    assert plain.mix is None  # no mix: the same windows as before this feature
    rng = np.random.default_rng((0, 0, 5))
    start = int(rng.integers(0, len(piano) - plain.read_len + 1))
    assert np.array_equal(plain[5][0].numpy(), np.asarray(piano.tokens[start : start + 32], np.int64))


def test_the_datamodule_checks_the_mix_settings(piano_dir, bach_dir):
    with pytest.raises(ConfigError, match="mix_weight must be between 0 and 1"):
        TokenDataModule(piano_dir, mix_data_dir=bach_dir, mix_weight=1.5)
    with pytest.raises(ConfigError, match="mix_data_dir is not"):
        TokenDataModule(piano_dir, mix_weight=0.5)
    dm = TokenDataModule(piano_dir, block_size=32, mix_data_dir=bach_dir, mix_weight=0.5, augment=False)
    dm.setup("fit")
    assert dm.train_set.mix is not None and dm.train_set.mix_weight == 0.5
    assert dm.val_set.shard.path.parent == piano_dir  # validation stays on the music the run is for


def test_init_from_starts_from_the_given_weights(tmp_path):
    torch.manual_seed(1)
    source = GPT(GPTConfig(**TINY))
    source.save_pretrained(tmp_path / "m")
    module = MusicGPTModule(GPTConfig(**TINY), init_from=str(tmp_path / "m"))
    for (name, a), (_, b) in zip(source.state_dict().items(), module.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    other = GPTConfig(**{**TINY, "n_embd": 32})
    with pytest.raises(ConfigError, match=r"n_embd: 64 vs 32"):
        MusicGPTModule(other, init_from=str(tmp_path / "m"))


def test_the_base_recipe_trains_a_warm_start_on_the_mix(piano_dir, bach_dir, tmp_path):
    """piano_base.yaml as shipped (test-sized): from a saved model, with the mix, a few steps."""
    start = tmp_path / "start"
    torch.manual_seed(0)
    GPT(GPTConfig(**{**TINY, "position_encoding": "relative", "max_relative_distance": 64})).save_pretrained(
        start
    )
    model = {**TINY, "position_encoding": "relative", "max_relative_distance": 64}
    config = shipped_config(
        "piano_base", tmp_path, piano_dir, model,
        data={"mix_data_dir": str(bach_dir), "mix_weight": 0.5}, max_steps=4, val_check_interval=2,
    )  # fmt: skip
    import yaml

    settings = yaml.safe_load(config.read_text())
    settings["model"]["init_from"] = str(start)
    config.write_text(yaml.safe_dump(settings))
    cli = train_cli(["--config", str(config)], run=False)
    first = cli.model.model.transformer.wte.weight.detach().clone()
    # the saved model reads the 390 ids from before the FIM tokens; the data's tokenizer has 393
    assert first.shape[0] == 393
    assert torch.equal(first[:390], GPT.from_pretrained(start).transformer.wte.weight)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 4
    assert not torch.equal(first, cli.model.model.transformer.wte.weight)


def test_init_from_a_smaller_vocabulary_copies_its_rows_and_grows_the_tied_table(tmp_path):
    """A model trained before the FIM tokens warm-starts one that has them: its 390 rows carry
    over, the 3 new ones start near the mean row, and the output layer is the same matrix."""
    torch.manual_seed(1)
    source = GPT(GPTConfig(**TINY))
    source.save_pretrained(tmp_path / "m")
    module = MusicGPTModule(GPTConfig(**{**TINY, "vocab_size": 393}), init_from=str(tmp_path / "m"))
    ours, theirs = module.model.state_dict(), source.state_dict()
    for name, value in theirs.items():
        if name in ("transformer.wte.weight", "lm_head.weight"):
            assert torch.equal(ours[name][:390], value), name
        else:
            assert torch.equal(ours[name], value), name
    wte = module.model.transformer.wte.weight
    assert wte.shape == (393, 64) and module.model.lm_head.weight is wte  # still tied
    old = theirs["transformer.wte.weight"]
    new = wte[390:].detach()
    assert (new - old.mean(0)).abs().max() < (old - old.mean(0)).abs().max() / 2  # near the mean row
    assert not torch.equal(new[0], new[1])  # but not one row three times
    with pytest.raises(ConfigError, match=r"vocab_size: 393 vs 390"):  # never shrinks
        MusicGPTModule(GPTConfig(**TINY), init_from=str(module_dir(module, tmp_path)))


def module_dir(module: MusicGPTModule, tmp_path: Path) -> Path:
    module.model.save_pretrained(tmp_path / "grown")
    return tmp_path / "grown"


def test_the_wide_recipe_continues_a_model_and_averages_with_it(piano_dir, tmp_path):
    """piano_wide.yaml as shipped (test-sized), then `python -m musicgpt.average`: piano-small's
    recipe after its first run. The run starts from the saved model, transposes by up to ±6, and
    the half-and-half average of the two loads and lies halfway between them."""
    import yaml

    from musicgpt.average import main as average
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.tokenizers.performance import PerformanceTokenizer

    model = {**TINY, "position_encoding": "relative", "max_relative_distance": 64}
    start = tmp_path / "pretrained"
    torch.manual_seed(0)
    GPT(GPTConfig(**model)).save_pretrained(start)
    PerformanceTokenizer().save(start / "tokenizer.json")
    (tmp_path / "wide").mkdir()
    config = shipped_config(
        "piano_wide", tmp_path / "wide", piano_dir, model, max_steps=4, val_check_interval=2
    )
    settings = yaml.safe_load(config.read_text())
    assert settings["data"]["augment_config"] == {"max_transpose": 6}
    assert settings["model"]["init_from"] == "runs/pretrained/model"
    settings["model"]["init_from"] = str(start)
    config.write_text(yaml.safe_dump(settings))
    cli = train_cli(["--config", str(config)], run=False)
    assert cli.datamodule.augment.max_transpose == 6
    assert torch.equal(
        cli.model.model.transformer.h[0].attn.c_attn.weight,
        GPT.from_pretrained(start).transformer.h[0].attn.c_attn.weight,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 4
    wide = tmp_path / "wide" / "model"
    assert average([str(start), str(wide), "--out", str(tmp_path / "soup")]) == 0
    soup, _ = load_checkpoint(tmp_path / "soup")
    first, second = GPT.from_pretrained(start), GPT.from_pretrained(wide)
    rows = soup.config.vocab_size  # the start's 390 ids; the run's data adds the 3 FIM ids
    assert rows == 390 and second.config.vocab_size == 393
    for (name, a), b, c in zip(
        soup.state_dict().items(), first.state_dict().values(), second.state_dict().values(), strict=True
    ):
        assert torch.allclose(
            a,
            0.5 * b + 0.5 * c[: len(a)]
            if name.endswith(("wte.weight", "lm_head.weight"))
            else 0.5 * b + 0.5 * c,
        ), name
