"""Music Transformer's relative attention: the skewed logits against a plain float64 computation,
cached against uncached decoding past the training window, and the model on longer contexts."""

from __future__ import annotations

import pytest
import torch

from musicgpt import generate
from musicgpt.errors import ConfigError
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.model.positions import relative_logits_at, relative_logits_causal, skew

RELATIVE = GPTConfig(
    vocab_size=390, block_size=64, n_layer=2, n_head=4, n_embd=64, position_encoding="relative"
)


def naive_relative_logits(q: torch.Tensor, rel_emb: torch.Tensor, q_pos, k_pos) -> torch.Tensor:
    """[b, h, i, j] = q[b, h, i] · E[h, min(q_pos[i] - k_pos[j], R - 1)] for every pair, in float64."""
    B, H, T, _ = q.shape
    R = rel_emb.shape[1]
    out = torch.zeros(B, H, T, len(k_pos), dtype=torch.float64)
    for i, qp in enumerate(q_pos):
        for j, kp in enumerate(k_pos):
            d = qp - kp
            if d >= 0:
                out[:, :, i, j] = (q[:, :, i].double() * rel_emb[:, min(d, R - 1)].double()).sum(-1)
    return out


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    m = GPT(RELATIVE).eval()
    # Large weights (GPT-2's init makes a random model repeat one token, and cache parity trivial)
    # and large relative embeddings, so that distances decide what is attended.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
            elif name.endswith("rel_emb"):
                p.normal_(0.0, 1.0)
    return m


def test_skew_moves_each_distance_to_its_key():
    T = 5
    by_distance = torch.arange(T - 1, -1, -1.0).expand(T, T)  # column c holds distance T-1-c
    out = skew(by_distance)
    rows, cols = torch.tril_indices(T, T)
    assert torch.equal(out[rows, cols], (rows - cols).float())


@pytest.mark.parametrize("T, R", [(7, 7), (9, 4), (3, 8)])  # R < T: farther keys share E[R-1]
def test_skewed_logits_equal_the_plain_computation(T, R):
    torch.manual_seed(T * R)
    q, rel_emb = torch.randn(2, 3, T, 8), torch.randn(3, R, 8)
    expected = naive_relative_logits(q, rel_emb, range(T), range(T))
    got = relative_logits_causal(q, rel_emb).double().tril()
    assert torch.allclose(got, expected, atol=1e-5)


def test_logits_against_cached_keys_in_ring_order_equal_the_plain_computation():
    torch.manual_seed(1)
    q, rel_emb = torch.randn(2, 3, 2, 8), torch.randn(3, 5, 8)
    q_pos = [11, 12]
    k_pos = [8, 9, 10, 11, 12, 5, 6, 7]  # a ring of 8 slots after position 12: slot = pos % 8
    distance = torch.tensor(q_pos)[:, None] - torch.tensor(k_pos)[None, :]
    got = relative_logits_at(q, rel_emb, distance).double()
    expected = naive_relative_logits(q, rel_emb, q_pos, k_pos)
    assert torch.allclose(got.masked_fill(distance < 0, 0), expected, atol=1e-5)


def test_the_contract_config_runs_past_its_window_and_cached_equals_uncached(model):
    x = torch.randint(0, 388, (2, 200))  # 200 > block_size 64
    assert model(x).shape == (2, 200, 390)
    p = torch.randint(0, 388, (1, 10))
    cached = generate(model, p, max_new_tokens=300, greedy=True)  # past 3x block_size
    assert torch.equal(cached, generate(model, p, max_new_tokens=300, greedy=True, use_cache=False))
    assert len(set(cached[0, 10:].tolist())) > 5  # not a trivial repetition


def test_cached_logits_equal_the_uncached_window_at_every_step(model):
    # A context of 2x the training window, a ring buffer that wraps twice
    torch.manual_seed(2)
    tokens = torch.randint(0, 388, (2, 300))
    context = 128
    model.setup_cache(2, context)
    positions = torch.arange(300)
    cached = [model(tokens[:, :20], positions[:20])[:, -1]]
    for n in range(20, 300):
        cached.append(model(tokens[:, n : n + 1], positions[n : n + 1])[:, -1])
    for n in (20, 100, 128, 129, 200, 300):
        # a ring buffer is sliding-window attention: each token saw the last `context` when it was new
        uncached = model(tokens[:, :n], window=context)[:, -1]
        assert torch.allclose(cached[n - 20], uncached, atol=1e-4), n
    # up to the context, that is plain attention over the window
    assert torch.allclose(cached[128 - 20], model(tokens[:, :128])[:, -1], atol=1e-4)


def test_sampled_cached_equals_uncached_with_a_longer_context(model):
    p = torch.randint(0, 388, (3, 30))
    kw = dict(temperature=1.0, top_k=20, max_context=96)
    a = generate(model, p, 250, generator=torch.Generator().manual_seed(0), **kw)
    b = generate(model, p, 250, generator=torch.Generator().manual_seed(0), use_cache=False, **kw)
    assert torch.equal(a, b)


def test_attention_probabilities_match_the_forward(model):
    x = torch.randint(0, 388, (1, 90))
    logits, probs = model.forward_with_attention(x)
    assert torch.allclose(logits, model(x), atol=1e-4)
    assert probs.shape == (2, 1, 4, 90, 90)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 1, 4, 90), atol=1e-5)
    assert probs.triu(1).abs().max() == 0


def test_the_forward_equals_a_plain_float64_attention(model):
    torch.manual_seed(3)
    x = torch.randint(0, 388, (1, 40))
    block = model.transformer.h[0]
    h = model.transformer.wte(x)  # no absolute positions
    a = block.attn
    q, k, v = a.c_attn(block.ln_1(h)).double().split(64, dim=2)
    q, k, v = (t.view(1, 40, 4, 16).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) + naive_relative_logits(q, a.rel_emb, range(40), range(40))
    scores = (scores / 4.0).masked_fill(~torch.ones(40, 40, dtype=torch.bool).tril(), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 40, 64)
    expected = a.c_proj.double()(y)
    a.c_proj.float()
    got, _ = a(block.ln_1(h))
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_config_round_trips_and_checks_its_fields(tmp_path, model):
    path = tmp_path / "c.yaml"
    RELATIVE.to_yaml(path)
    assert GPTConfig.from_yaml(path) == RELATIVE
    assert "transformer.wpe.weight" not in model.state_dict()
    assert model.state_dict()["transformer.h.1.attn.rel_emb"].shape == (4, 64, 16)
    model.save_pretrained(tmp_path / "m")
    again = GPT.from_pretrained(tmp_path / "m")
    x = torch.randint(0, 388, (1, 100))
    assert torch.equal(again(x), model(x))
    with pytest.raises(ConfigError, match="position_encoding must be one of"):
        GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, position_encoding="rotary")
    with pytest.raises(ConfigError, match="for position_encoding='relative' only"):
        GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, max_relative_distance=4)
    assert GPTConfig.preset("music-20m-relative").n_relative == 512


def test_a_block_of_queries_gets_the_rows_of_the_square():
    torch.manual_seed(4)
    q, rel_emb = torch.randn(2, 3, 9, 8), torch.randn(3, 6, 8)
    square = relative_logits_causal(q, rel_emb)  # (.., 9, 9)
    block = relative_logits_causal(q[:, :, 5:], rel_emb, first=5)  # queries 5..8 against keys 0..8
    rows, cols = torch.tril_indices(4, 9, offset=5)
    assert torch.allclose(block[:, :, rows, cols], square[:, :, 5:][:, :, rows, cols])


def test_a_decode_step_reads_only_the_distances_its_cache_can_hold():
    # Cost in proportion to the cached tokens: with 10 slots, E's rows past 9 are never read
    # (NaN there would show), however many distances the model learned.
    torch.manual_seed(5)
    q, rel_emb = torch.randn(1, 3, 1, 8), torch.randn(3, 2048, 8)
    rel_emb[:, 10:] = float("nan")
    distance = torch.tensor([[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
    got = relative_logits_at(q, rel_emb, distance).double()
    assert torch.allclose(got, naive_relative_logits(q, rel_emb[:, :10], [9], range(10)), atol=1e-5)


@pytest.mark.parametrize("encoding", ["relative", "rope"])
def test_a_text_prompt_may_be_longer_than_the_training_window(tmp_path, capsys, encoding):
    # `musicgpt generate --text` cut prompts at block_size, though these models read 2x that
    from musicgpt.cli import main
    from musicgpt.tokenizers.text import ByteTokenizer

    config = GPTConfig(
        vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16, position_encoding=encoding
    )
    torch.manual_seed(0)
    GPT(config).save_pretrained(tmp_path / "m")
    ByteTokenizer().save(tmp_path / "m" / "tokenizer.json")
    prompt = "x" * 24  # past the 16-token window, inside the 32 tokens a continuation reads
    args = ["generate", "--checkpoint", str(tmp_path / "m"), "--max-new-tokens", "5", "--temperature", "0"]
    assert main([*args, "--text", prompt]) == 0
    assert capsys.readouterr().out.startswith(prompt)
    assert main([*args, "--text", "x" * 32]) == 2
    assert "the prompt is 32 tokens; the model's context is 32" in capsys.readouterr().err
