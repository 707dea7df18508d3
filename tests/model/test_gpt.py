"""The model core: configs, shapes, the two attention paths, the cache, checkpoints, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from conftest import TEXT_DIR

from musicgpt.errors import ConfigError, MusicGPTError
from musicgpt.model.gpt import GPT, PRESETS, CacheError, GPTConfig, ModelInputError

TINY = GPTConfig.preset("music-tiny")  # 2 layers, 2 heads, 64 wide, 256 positions, vocab 390


def text_ids(n: int, offset: int = 0) -> torch.Tensor:
    """Real text as byte ids (0..255): fits every vocabulary here."""
    data = (TEXT_DIR / "sherlock.txt").read_bytes()[1000 + offset : 1000 + offset + n]
    return torch.tensor(list(data), dtype=torch.long)


@pytest.fixture(scope="module")
def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(TINY).eval()


def test_presets_have_the_documented_sizes():
    with torch.device("meta"):
        assert GPT(GPTConfig.preset("gpt2")).num_params() == 124_439_808
        assert GPT(GPTConfig.preset("music-20m")).num_params() == 20_163_584
    assert GPTConfig.preset("music-small").dropout == 0.1
    assert {name: GPTConfig.preset(name).vocab_size for name in PRESETS if name.startswith("music")} == {
        "music-tiny": 390,
        "music-small": 390,
        "music-20m": 390,
        "music-20m-relative": 390,
    }
    assert GPTConfig.preset("music-tiny", n_layer=1).n_layer == 1
    with pytest.raises(ConfigError, match="unknown model preset 'gpt3'"):
        GPTConfig.preset("gpt3")


def test_gpt2_names_tied_head_and_scaled_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("music-small"))
    names = set(model.state_dict())
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.3.attn.c_attn.weight",
            "transformer.h.3.mlp.c_fc.bias", "transformer.ln_f.weight", "lm_head.weight"} <= names  # fmt: skip
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.h[0].attn.c_attn.weight.shape == (3 * 256, 256)  # nn.Linear: (out, in)
    # residual projections start 1/sqrt(2 * n_layer) smaller than the other weights (std 0.02)
    proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.02)
    assert fc.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.transformer.h[0].attn.c_attn.bias.abs().sum() == 0


def test_config_yaml_round_trip_and_load(tmp_path):
    config = GPTConfig.preset("music-small", bias=False, layer_norm_epsilon=1e-6)
    config.to_yaml(tmp_path / "model.yaml")
    assert GPTConfig.from_yaml(tmp_path / "model.yaml") == config
    assert GPTConfig.load(tmp_path / "model.yaml") == config
    assert GPTConfig.load("gpt2") == GPTConfig.preset("gpt2")
    assert GPTConfig.from_dict(config.to_dict()) == config
    assert list(tmp_path.iterdir()) == [tmp_path / "model.yaml"]  # atomic: no temporary left over


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_embd": 65}, "must be divisible by n_head"),
        ({"n_layer": 0}, "n_layer must be a positive integer"),
        ({"vocab_size": 3.5}, "vocab_size must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"colour": "red"}, "unknown GPTConfig field"),
    ],
)
def test_bad_config_yaml_names_the_file_and_the_problem(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY.to_dict(), **change}))
    with pytest.raises(ConfigError, match=message) as info:
        GPTConfig.from_yaml(path)
    assert str(path) in str(info.value)


def test_missing_field_and_unreadable_yaml(tmp_path):
    d = TINY.to_dict()
    del d["n_head"]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=r"missing GPTConfig field\(s\) \['n_head'\]"):
        GPTConfig.from_yaml(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("n_layer: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        GPTConfig.from_yaml(tmp_path / "b.yaml")
    with pytest.raises(ConfigError, match="neither a model preset"):
        GPTConfig.load("no-such-model")


def test_forward_always_returns_full_logits(tiny):
    idx = text_ids(40).view(2, 20)
    assert tiny(idx).shape == (2, 20, 390)
    tiny.setup_cache(2, 64)
    assert tiny(idx, torch.arange(20)).shape == (2, 20, 390)
    assert tiny(idx[:, :1], torch.tensor([20])).shape == (2, 1, 390)
    tiny.clear_cache()


def test_explicit_attention_path_equals_sdpa(tiny):
    idx = text_ids(90).view(3, 30)
    logits, probs = tiny.forward_with_attention(idx)
    assert torch.allclose(logits, tiny(idx), atol=1e-5, rtol=0)
    assert probs.shape == (2, 3, 2, 30, 30) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3, 2, 30), atol=1e-6)
    above_diagonal = torch.ones(30, 30, dtype=torch.bool).triu(1)
    assert (probs[..., above_diagonal] == 0).all()
    assert (probs[..., ~above_diagonal] > 0).all()
    assert torch.equal(tiny.attention_probs(idx), probs)


def test_cached_forward_equals_uncached(tiny):
    idx = text_ids(2 * 50).view(2, 50)
    full = tiny(idx)
    tiny.setup_cache(2, 64)
    prefix = tiny(idx[:, :30], torch.arange(30))  # prefill
    chunk = tiny(idx[:, 30:45], torch.arange(30, 45))  # a chunk at an offset: masked, not plain causal
    steps = [tiny(idx[:, t : t + 1], torch.tensor([t])) for t in range(45, 50)]  # decode steps
    cached = torch.cat([prefix, chunk, *steps], dim=1)
    assert torch.allclose(cached, full, atol=1e-5, rtol=0)
    tiny.clear_cache()


def test_cache_must_be_set_up_and_fit(tiny):
    idx = text_ids(8).view(2, 4)
    with pytest.raises(CacheError, match="needs a KV cache: call model.setup_cache"):
        tiny(idx, torch.arange(4))
    tiny.setup_cache(2, 16)
    assert tiny.cache_shape == (2, 16)
    with pytest.raises(CacheError, match="set up for batch size 2, got a batch of 1"):
        tiny(idx[:1], torch.arange(4))
    with pytest.raises(CacheError, match="positions 14..17 do not fit the KV cache of length 16"):
        tiny(idx, torch.arange(14, 18))
    with pytest.raises(ModelInputError, match="input_pos must increase"):
        tiny(idx, torch.tensor([3, 2, 1, 0]))
    with pytest.raises(CacheError, match="max_seq_len must be in 1..block_size=256"):
        tiny.setup_cache(1, 257)
    tiny.clear_cache()
    assert tiny.cache_shape is None
    with pytest.raises(CacheError):
        tiny(idx, torch.arange(4))


def test_setup_cache_keeps_a_cache_of_the_same_shape(tiny):
    tiny.setup_cache(1, 32)
    first = tiny.kv_cache
    tiny.setup_cache(1, 32)
    assert tiny.kv_cache is first
    tiny.setup_cache(1, 33)
    assert tiny.kv_cache is not first
    assert tiny.kv_cache.k.shape == (2, 1, 2, 33, 32)  # (n_layer, batch, n_head, slots, head_dim)
    tiny.clear_cache()


@pytest.mark.parametrize(
    "idx, message",
    [
        (torch.tensor([[1, 2, 390]]), r"token ids must be in 0..389, got ids from 1 to 390"),
        (torch.tensor([[-1, 2]]), r"token ids must be in 0..389, got ids from -1 to 2"),
        (
            torch.zeros(1, 257, dtype=torch.long),
            r"257 tokens is longer than the model's context \(block_size=256\)",
        ),
        (torch.zeros(1, 0, dtype=torch.long), "idx is empty"),
        (torch.tensor([1, 2, 3]), r"must be a \(batch, T\) tensor"),
        (torch.tensor([[1.0, 2.0]]), "integer token ids"),
    ],
)
def test_bad_input_is_a_clear_error(tiny, idx, message):
    with pytest.raises(ModelInputError, match=message) as info:
        tiny(idx)
    assert isinstance(info.value, MusicGPTError) and isinstance(info.value, ValueError)


def test_save_and_load_round_trip(tmp_path, tiny):
    tiny.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.yaml", "model.safetensors"]
    loaded = GPT.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == tiny.config and not loaded.training
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    idx = text_ids(32).view(1, 32)
    assert torch.equal(loaded(idx), tiny(idx))
    assert (
        GPT.from_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16).transformer.wte.weight.dtype
        == torch.bfloat16
    )


def test_bad_checkpoint_directories(tmp_path, tiny):
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        GPT.from_pretrained(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no config.yaml"):
        GPT.from_pretrained(tmp_path)
    tiny.save_pretrained(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="has config.yaml but no model.safetensors"):
        GPT.from_pretrained(tmp_path / "a")
    # weights of another shape than the config says
    tiny.save_pretrained(tmp_path / "b")
    GPTConfig.preset("music-tiny", n_embd=32).to_yaml(tmp_path / "b" / "config.yaml")
    with pytest.raises(ConfigError, match="transformer.h.0.attn.c_attn.bias has shape"):
        GPT.from_pretrained(tmp_path / "b")
    tiny.save_pretrained(tmp_path / "c")
    GPTConfig.preset("music-tiny", n_layer=3).to_yaml(tmp_path / "c" / "config.yaml")
    with pytest.raises(ConfigError, match=r"missing \['transformer.h.2"):
        GPT.from_pretrained(tmp_path / "c")


def test_bfloat16_model_runs_the_cache_in_bfloat16():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = text_ids(20).view(1, 20)
    expected = model(idx)
    model.to(torch.bfloat16)
    model.setup_cache(1, 20)
    assert model.kv_cache.k.dtype == torch.bfloat16
    logits = model(idx, torch.arange(20))
    assert logits.dtype == torch.bfloat16
    assert torch.allclose(logits.float(), expected, atol=0.05)
