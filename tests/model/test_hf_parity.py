"""Parity with transformers' GPT2LMHeadModel: the same random weights give the same logits and tokens."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GPT2_VOCAB_DIR, TEXT_DIR

from musicgpt.errors import ConfigError
from musicgpt.generation.decode import generate
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.model.hf import export_hf

transformers = pytest.importorskip("transformers")


def sherlock_gpt2_ids(n: int) -> torch.Tensor:
    """Real English text through the real GPT-2 BPE: (1, n) ids."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(str(GPT2_VOCAB_DIR / "encoder.json"), str(GPT2_VOCAB_DIR / "vocab.bpe"))
    ids = bpe.encode((TEXT_DIR / "sherlock.txt").read_text(encoding="utf-8")[2000:8000]).ids[:n]
    assert len(ids) == n
    return torch.tensor([ids])


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def hf_model(tmp_path, lively: bool = False, **config) -> tuple[torch.nn.Module, GPT]:
    """A random GPT2LMHeadModel saved by transformers, and the same directory loaded by GPT.

    lively: weight matrices drawn with std 0.2 instead of 0.02, so that greedy decoding does not
    just repeat one token (which would make a generation comparison trivially pass)."""
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()
    if lively:
        with torch.no_grad():
            for p in hf.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.2)
    hf.save_pretrained(tmp_path / "hf")
    return hf, GPT.from_pretrained(tmp_path / "hf")


def test_tiny_logits_match_transformers(tmp_path):
    hf, model = hf_model(tmp_path, n_layer=2, n_head=4, n_embd=64, n_positions=128, vocab_size=50257)
    assert model.config == GPTConfig(
        vocab_size=50257, block_size=128, n_layer=2, n_head=4, n_embd=64, dropout=0.1
    )
    idx = torch.cat([sherlock_gpt2_ids(100)[:, :50], sherlock_gpt2_ids(100)[:, 50:]])  # (2, 50)
    with torch.no_grad():
        expected = hf(idx).logits
    assert (model(idx) - expected).abs().max().item() < 1e-4


def test_pytorch_model_bin_loads_without_unpickling_code(tmp_path):
    hf, _ = hf_model(tmp_path, n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=300)
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    model = GPT.from_pretrained(tmp_path / "hf")
    idx = torch.arange(64).view(2, 32)
    with torch.no_grad():
        assert (model(idx) - hf(idx).logits).abs().max().item() < 1e-4
    # a pickle that would call a function when loaded is refused, not executed
    torch.save({"transformer.wte.weight": RunsCodeWhenUnpickled()}, tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="not a plain tensor checkpoint"):
        GPT.from_pretrained(tmp_path / "hf")


def test_greedy_generation_matches_transformers_generate(tmp_path):
    hf, model = hf_model(
        tmp_path, lively=True, n_layer=2, n_head=2, n_embd=64, n_positions=256, vocab_size=390
    )
    idx = torch.tensor([[5, 17, 200, 33, 8, 1, 77, 389], [9, 9, 9, 100, 250, 3, 2, 1]])
    with torch.no_grad():
        expected = hf.generate(
            idx, attention_mask=torch.ones_like(idx), max_new_tokens=120, min_new_tokens=120,
            do_sample=False, pad_token_id=0, eos_token_id=None,
        )  # fmt: skip
    assert all(len(set(row.tolist())) > 10 for row in expected[:, 8:])  # varied, not one token repeated
    assert torch.equal(generate(model, idx, 120, greedy=True), expected)


@pytest.mark.slow
def test_full_gpt2_logits_match_transformers(tmp_path):
    hf, model = hf_model(tmp_path)  # GPT2Config() is the 124M gpt2
    assert model.config == GPTConfig.preset("gpt2", dropout=0.1)
    assert model.num_params() == sum(p.numel() for p in hf.parameters()) == 124_439_808
    idx = sherlock_gpt2_ids(64)
    with torch.no_grad():
        expected = hf(idx).logits
    assert (model(idx) - expected).abs().max().item() < 1e-4


def test_export_loads_in_transformers(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("music-tiny")).eval()
    export_hf(model, tmp_path / "out")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    idx = torch.arange(100).view(2, 50) * 3
    with torch.no_grad():
        assert (hf(idx).logits - model(idx)).abs().max().item() < 1e-4
    # and back: our loader reads what we exported
    assert torch.equal(GPT.from_pretrained(tmp_path / "out")(idx), model(idx))


def test_export_refuses_what_gpt2_cannot_hold(tmp_path):
    model = GPT(GPTConfig.preset("music-tiny", bias=False))
    with pytest.raises(ConfigError, match="bias=False cannot be exported"):
        export_hf(model, tmp_path / "out")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation_function": "relu"}, "activation_function 'relu' is not supported"),
        ({"n_inner": 100}, "n_inner=100 is not 4 \\* n_embd"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True is not supported"),
        ({"model_type": "llama"}, "is not GPT-2"),
    ],
)
def test_unsupported_hf_configs_are_refused(tmp_path, change, message):
    hf_model(tmp_path, n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=300)
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ConfigError, match=message) as info:
        GPT.from_pretrained(tmp_path / "hf")
    assert str(path) in str(info.value)
