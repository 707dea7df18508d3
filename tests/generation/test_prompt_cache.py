"""The prompt cache: every match found, the copy distribution and its weight exact, the mixture
exact, and a sampler that copies a repeated passage when the model has no opinion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicgpt.generation.decode import generate
from musicgpt.generation.prompt_cache import (
    MAX_LAMBDA,
    NAIVE_GATE,
    CacheGate,
    PromptCache,
    cache_features,
    mixture_log_probs,
)
from musicgpt.generation.sampling import SamplingConfig, SamplingError
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers import vocab as V


def common_suffix(seq: list[int], j: int, n: int) -> int:
    """Brute force: the length of the common suffix of seq[:j + 1] and seq[:n]."""
    k = 0
    while k <= j and seq[j - k] == seq[n - 1 - k]:
        k += 1
    return k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_equal_brute_force_common_suffixes(seed):
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, 3, size=200).tolist()  # a small alphabet: many long matches
    gate = CacheGate(max_match=1000)
    cache = PromptCache(np.array([seq[:1]]), 3, gate)
    for n in range(2, len(seq) + 1):
        cache.append([seq[n - 1]])
        got = cache.match[0, : n - 1].tolist()
        assert got == [common_suffix(seq, j, n) for j in range(n - 1)]


def test_distribution_votes_for_what_followed_each_match():
    # "1 2 3 4 ... 1 2 3 5 ... 1 2 3": two earlier places end in "1 2 3" (length 3), followed by 4
    # and by 5; the one after "0 1 2 3" also matches "0" before it (length 4)
    seq = [1, 2, 3, 4, 7, 0, 1, 2, 3, 5, 8, 0, 1, 2, 3]
    gate = CacheGate(min_match=3, length_weight=0.5, bias=0.0, length_coef=1.0, agreement_coef=0.0)
    cache = PromptCache(np.array([seq]), 10, gate)
    q, lam = cache.distribution()
    w4, w5 = math.exp(0.5 * (3 - 4)), 1.0  # votes relative to the longest match (4, before the 5)
    assert q[0, 4] == pytest.approx(w4 / (w4 + w5))
    assert q[0, 5] == pytest.approx(w5 / (w4 + w5))
    assert q[0].sum() == pytest.approx(1.0)
    assert lam[0] == pytest.approx(1 / (1 + math.exp(-math.log(4))))  # sigmoid(0 + log(longest))


def test_no_match_means_no_cache():
    cache = PromptCache(np.array([[1, 2, 3, 4, 5, 6]]), 10)
    q, lam = cache.distribution()
    assert lam.tolist() == [0.0] and not q.any()
    logits = torch.randn(1, 10)
    assert torch.equal(cache.mix(logits), logits)


def test_mix_is_the_log_of_the_mixture_and_rows_are_independent():
    seq = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3]  # row 0 repeats; row 1 never does
    rows = np.array([seq, list(range(11))])
    cache = PromptCache(rows, 12, CacheGate(min_match=3))
    q, lam = cache.distribution()
    assert lam[0] > 0 and lam[1] == 0
    assert q[0, 4] == 1.0  # every match of "1 2 3" was followed by 4
    logits = torch.randn(2, 12)
    mixed = cache.mix(logits)
    p = logits.softmax(-1)
    expected = torch.log((1 - lam[0]) * p[0] + lam[0] * torch.as_tensor(q[0], dtype=torch.float32))
    torch.testing.assert_close(mixed[0], expected)
    assert torch.equal(mixed[1], logits[1])


def test_the_weight_never_reaches_one():
    gate = CacheGate(bias=50.0)
    cache = PromptCache(np.array([[1, 2, 3] * 20]), 5, gate, strength=2.0)
    assert cache.distribution()[1][0] == MAX_LAMBDA


def test_velocity_and_small_timing_differences_still_match():
    """The grammar's match keys: a passage replayed louder and 10 ms slower is a repeat."""
    on, shift = V.name_to_id, V.shift_id
    first = [on("VELOCITY_20"), on("NOTE_ON_60"), shift(50), on("NOTE_OFF_60"), on("NOTE_ON_64"), shift(50)]
    again = [on("VELOCITY_24"), on("NOTE_ON_60"), shift(52), on("NOTE_OFF_60")]
    history = np.array([first + again])
    gate = CacheGate(min_match=3)
    exact = PromptCache(history, V.VOCAB_SIZE, gate)
    keyed = PromptCache(history, V.VOCAB_SIZE, gate, key_of_id=V.MATCH_KEY_OF_ID)
    assert exact.distribution()[1][0] == 0.0  # the exact ids differ: no repeat found
    q, lam = keyed.distribution()
    assert lam[0] > 0 and q[0, on("NOTE_ON_64")] == 1.0  # what followed the first time
    assert V.MATCH_KEY_OF_ID[shift(50)] == V.MATCH_KEY_OF_ID[shift(52)]
    assert V.MATCH_KEY_OF_ID[shift(50)] != V.MATCH_KEY_OF_ID[shift(70)]
    assert V.MATCH_KEY_OF_ID[on("NOTE_ON_60")] != V.MATCH_KEY_OF_ID[on("NOTE_ON_61")]


def test_a_full_history_drops_its_oldest_half_and_keeps_matching():
    cache = PromptCache(np.array([[1, 2, 3, 4] * 4]), 6, CacheGate(min_match=3), max_history=16)
    cache.append([1])  # 17th token: the oldest 8 go
    assert cache.n == 9
    cache.append([2])
    cache.append([3])
    q, lam = cache.distribution()
    assert lam[0] > 0 and q[0, 4] == 1.0


def test_features_and_mixture_score_a_piece_like_the_cache_does(piano_tokens):
    ids = np.asarray(piano_tokens[:400], np.int64)
    gate = CacheGate(min_match=3)
    features = cache_features(ids, V.VOCAB_SIZE, gate, V.MATCH_KEY_OF_ID)
    model_lp = np.full(len(ids), math.log(1 / V.VOCAB_SIZE))
    mixed = mixture_log_probs(model_lp, features, gate)
    cache = PromptCache(ids[None, :1], V.VOCAB_SIZE, gate, key_of_id=V.MATCH_KEY_OF_ID)
    for i in range(1, len(ids)):
        q, lam = cache.distribution()
        expected = math.log((1 - lam[0]) / V.VOCAB_SIZE + lam[0] * q[0, ids[i]])
        assert mixed[i] == pytest.approx(expected, abs=1e-9)
        cache.append(ids[i : i + 1])
    # the mixture moves exactly the tokens that had an earlier match, and real piano has them
    matched = features["longest"] >= gate.min_match
    assert np.array_equal(mixed != model_lp, matched) and matched.sum() > 40


def test_naive_gate_is_the_fixed_half():
    cache = PromptCache(np.array([[5, 6, 7, 8, 5, 6, 7]]), 10, NAIVE_GATE)
    q, lam = cache.distribution()
    assert lam[0] == 0.5 and q[0, 8] == 1.0


@pytest.mark.parametrize("strength", [-0.1, 2.5, float("nan"), True])
def test_bad_strength_is_refused(strength):
    with pytest.raises(SamplingError, match="prompt_cache"):
        SamplingConfig(prompt_cache=strength)


def test_a_model_without_an_opinion_copies_the_repeated_passage():
    """Uniform logits (zero output head): greedy decoding is the cache's argmax, which continues
    the passage the prompt repeated; without the cache it is token 0 forever."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()  # tied output head: every logit 0
    passage = [7, 3, 9, 12, 30, 4, 41, 2, 18, 25]
    idx = torch.tensor([passage * 3 + passage[:4]])
    copied = generate(model, idx, 12, greedy=True, prompt_cache=1.0)[0, idx.shape[1] :].tolist()
    assert copied == (passage[4:] + passage)[:12]
    plain = generate(model, idx, 12, greedy=True)[0, idx.shape[1] :].tolist()
    assert plain == [0] * 12


def test_history_before_the_window_is_heard():
    """The passage lies only in `history` (before the model's window): the cache still copies it."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
    passage = [7, 3, 9, 12, 30, 4, 41, 2, 18, 25]
    history = torch.tensor([passage * 2])
    idx = torch.tensor([passage[:7]])  # a match of 7 tokens: past the default gate's 6
    out = generate(model, idx, 3, greedy=True, prompt_cache=1.0, history=history)[0, 7:].tolist()
    assert out == passage[7:10]
