"""Rotary positions: parity with transformers' Llama rotary code, cached against uncached decoding
past 3x the training window, and contexts longer than trained."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from musicgpt import generate
from musicgpt.errors import ConfigError
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.model.positions import apply_rope, rope_angles

ROPE = GPTConfig(vocab_size=390, block_size=64, n_layer=2, n_head=4, n_embd=64, position_encoding="rope")


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    m = GPT(ROPE).eval()
    # large weights: GPT-2's init makes a random model repeat one token, and cache parity trivial
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return m


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_rotation_equals_transformers_llama_rotary_code(scale):
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    rope = {"rope_type": "default", "rope_theta": 500.0}
    if scale != 1.0:
        rope = {"rope_type": "linear", "factor": scale, "rope_theta": 500.0}
    config = transformers.LlamaConfig(
        hidden_size=64, num_attention_heads=4, head_dim=16, rope_parameters=rope, max_position_embeddings=64
    )
    torch.manual_seed(1)
    q, k = torch.randn(2, 4, 20, 16), torch.randn(2, 4, 20, 16)
    positions = torch.arange(37, 57)  # not from 0: a decode step's positions
    cos, sin = LlamaRotaryEmbedding(config)(q, positions[None])
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    ours = rope_angles(positions, 16, base=500.0, scale=scale)
    assert torch.equal(ours[0], cos[0]) and torch.equal(ours[1], sin[0])
    assert torch.equal(apply_rope(q, *ours), q_ref)
    assert torch.equal(apply_rope(k, *ours), k_ref)


def test_scores_depend_on_the_distance_alone():
    torch.manual_seed(2)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)

    def score(i: int, j: int) -> float:
        qi = apply_rope(q, *(a.double() for a in rope_angles(torch.tensor([i]), 16)))
        kj = apply_rope(k, *(a.double() for a in rope_angles(torch.tensor([j]), 16)))
        return float((qi * kj).sum())

    assert score(7, 3) == pytest.approx(score(1007, 1003), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)


def test_the_model_has_no_position_parameters_and_runs_past_its_window(model):
    assert "transformer.wpe.weight" not in model.state_dict()
    assert not any("rel_emb" in name for name in model.state_dict())
    assert model.config.relative  # attention sees distances only: a ring buffer, longer contexts
    assert model(torch.randint(0, 388, (2, 200))).shape == (2, 200, 390)


def test_cached_equals_uncached_past_three_windows(model):
    p = torch.randint(0, 388, (1, 10))
    cached = generate(model, p, max_new_tokens=300, greedy=True)  # past 3x block_size (64)
    assert torch.equal(cached, generate(model, p, max_new_tokens=300, greedy=True, use_cache=False))
    assert len(set(cached[0, 10:].tolist())) > 5  # not a trivial repetition


def test_cached_logits_equal_the_uncached_window_at_every_step(model):
    torch.manual_seed(2)
    tokens = torch.randint(0, 388, (2, 300))
    context = 128  # 2x the training window; the ring buffer wraps twice
    model.setup_cache(2, context)
    positions = torch.arange(300)
    cached = [model(tokens[:, :20], positions[:20])[:, -1]]
    for n in range(20, 300):
        cached.append(model(tokens[:, n : n + 1], positions[n : n + 1])[:, -1])
    for n in (20, 100, 128, 129, 200, 300):
        uncached = model(tokens[:, :n], window=context)[:, -1]
        assert torch.allclose(cached[n - 20], uncached, atol=1e-4), n


def test_sampled_cached_equals_uncached_in_batches(model):
    p = torch.randint(0, 388, (3, 30))
    kw = dict(temperature=1.0, top_k=20, max_context=96)
    a = generate(model, p, 250, generator=torch.Generator().manual_seed(0), **kw)
    b = generate(model, p, 250, generator=torch.Generator().manual_seed(0), use_cache=False, **kw)
    assert torch.equal(a, b)


def test_attention_probabilities_match_the_forward(model):
    x = torch.randint(0, 388, (1, 90))
    logits, probs = model.forward_with_attention(x)
    assert torch.allclose(logits, model(x), atol=1e-4)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 1, 4, 90), atol=1e-5)
    assert probs.triu(1).abs().max() == 0


def test_rope_scale_squeezes_positions(model):
    x = torch.randint(0, 388, (1, 50))
    squeezed = GPT(dataclasses.replace(ROPE, rope_scale=2.0)).eval()
    squeezed.load_state_dict(model.state_dict())
    assert not torch.allclose(squeezed(x), model(x), atol=1e-3)
    # rope_scale s rotates position p as the unscaled rotation rotates p / s
    q = torch.randn(1, 4, 1, 16)
    assert torch.equal(
        apply_rope(q, *rope_angles(torch.tensor([40]), 16, scale=2.0)),
        apply_rope(q, *rope_angles(torch.tensor([20]), 16)),
    )


def test_config_fields_round_trip_and_are_checked(tmp_path):
    config = dataclasses.replace(ROPE, rope_base=500.0, rope_scale=2.0)
    config.to_yaml(tmp_path / "c.yaml")
    assert GPTConfig.from_yaml(tmp_path / "c.yaml") == config
    with pytest.raises(ConfigError, match="rope_scale must be a positive number"):
        dataclasses.replace(ROPE, rope_scale=0)
    with pytest.raises(ConfigError, match="rope_base and rope_scale are for position_encoding='rope' only"):
        GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, rope_scale=2.0)
    with pytest.raises(ConfigError, match="for position_encoding='relative' only"):
        dataclasses.replace(ROPE, max_relative_distance=4)
