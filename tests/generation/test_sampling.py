"""The sampling steps on hand-made logits, where the right answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from musicgpt.errors import MusicGPTError
from musicgpt.generation.sampling import (
    SamplingConfig,
    SamplingError,
    apply_mask,
    apply_temperature,
    check_sampling_args,
    greedy,
    mask_per_group,
    mask_spread,
    next_token,
    sample,
    top_k_filter,
    top_p_filter,
)

NEG_INF = float("-inf")


def kept(logits: torch.Tensor) -> list[list[int]]:
    return [row.isfinite().nonzero().flatten().tolist() for row in logits]


def logits_of(*probs: float) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]])


def test_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.tensor([[1.0, 5.0, 3.0, 5.0, -2.0, 4.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    out = top_k_filter(logits, 3)
    assert kept(out)[0] == [1, 3, 5]
    assert len(kept(out)[1]) == 3  # six-way tie: still exactly three
    two = top_k_filter(logits, 2)
    assert kept(two)[0] == [1, 3]
    one = kept(top_k_filter(logits, 1))
    assert one[0] in ([1], [3]) and len(one[1]) == 1
    assert torch.equal(out[0, [1, 3, 5]], logits[0, [1, 3, 5]])  # survivors keep their values
    assert torch.equal(top_k_filter(logits, 6), logits)
    assert torch.equal(top_k_filter(logits, 100), logits)


def test_top_p_keeps_the_smallest_nucleus():
    logits = logits_of(0.1, 0.5, 0.05, 0.3, 0.05)  # ranked: 1 (0.5), 3 (0.3), 0 (0.1), then 2 and 4
    assert kept(top_p_filter(logits, 0.4)) == [[1]]
    assert kept(top_p_filter(logits, 0.7)) == [[1, 3]]
    assert kept(top_p_filter(logits, 0.85)) == [[0, 1, 3]]
    assert len(kept(top_p_filter(logits, 0.93))[0]) == 4  # 0.9 is not enough; one 0.05 token is added
    assert kept(top_p_filter(logits, 0.97)) == [[0, 1, 2, 3, 4]]  # 0.95 is not enough either
    assert kept(top_p_filter(logits, 1.0)) == [[0, 1, 2, 3, 4]]
    assert kept(top_p_filter(logits, 1e-9)) == [[1]]  # the top token always survives


def test_top_p_works_row_by_row_and_respects_masked_tokens():
    logits = torch.cat([logits_of(0.6, 0.3, 0.1), logits_of(0.2, 0.2, 0.6)])
    logits[1, 2] = NEG_INF  # masked: rows renormalise over what is left (0.5, 0.5)
    assert kept(top_p_filter(logits, 0.8)) == [[0, 1], [0, 1]]


def test_temperature_scales_and_zero_means_greedy():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert torch.equal(apply_temperature(logits, 0.5), logits * 2)
    assert apply_temperature(logits, 1.0) is logits
    with pytest.raises(SamplingError, match="use greedy"):
        apply_temperature(logits, 0)
    assert next_token(torch.tensor([[0.0, 3.0, 2.9]]), SamplingConfig(temperature=0)).tolist() == [1]


def test_mask_forbids_tokens_and_refuses_an_empty_row():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    allowed = torch.tensor([[False, True, True], [True, False, False]])
    assert kept(apply_mask(logits, allowed)) == [[1, 2], [0]]
    assert greedy(apply_mask(logits, allowed)).tolist() == [1, 0]
    with pytest.raises(SamplingError, match=r"allows no token at all in batch row\(s\) \[1\]"):
        apply_mask(logits, torch.tensor([[True, True, True], [False, False, False]]))
    with pytest.raises(SamplingError, match="does not match logits"):
        apply_mask(logits, torch.ones(2, 4, dtype=torch.bool))


def test_sample_follows_the_seed_and_never_picks_removed_tokens():
    logits = torch.zeros(4, 50)
    logits = top_k_filter(logits + torch.arange(50.0) / 10, 5)  # only 45..49 survive
    draws = [sample(logits, torch.Generator().manual_seed(s)) for s in range(40)]
    assert all(((d >= 45) & (d <= 49)).all() for d in draws)
    assert len({tuple(d.tolist()) for d in draws}) > 1  # seeds differ, so do the draws
    again = sample(logits, torch.Generator().manual_seed(3))
    assert torch.equal(again, draws[3])


def test_sample_frequencies_follow_the_probabilities():
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().expand(20000, 3)
    counts = torch.bincount(sample(logits, torch.Generator().manual_seed(0)), minlength=3) / 20000
    assert torch.allclose(counts, probs, atol=0.015)


def test_next_token_applies_the_documented_order():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    allowed = torch.tensor([[False, True, True, True]])
    # mask first: token 0 is gone, so top_k=1 keeps token 1 and every draw is token 1
    for seed in range(5):
        tok = next_token(
            logits, SamplingConfig(top_k=1), allowed=allowed, generator=torch.Generator().manual_seed(seed)
        )
        assert tok.tolist() == [1]
    assert next_token(logits, SamplingConfig.build(greedy=True), allowed=allowed).tolist() == [1]


@pytest.mark.parametrize(
    "temperature, top_k, top_p, message",
    [
        (-0.5, None, None, "temperature must be >= 0"),
        (float("nan"), None, None, "temperature must be >= 0"),
        (1.0, 0, None, "top_k must be an integer >= 1"),
        (1.0, 2.5, None, "top_k must be an integer >= 1"),
        (1.0, None, 0.0, r"top_p must be in \(0, 1\]"),
        (1.0, None, 1.5, r"top_p must be in \(0, 1\]"),
        (1.0, None, -0.1, r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_sampling_arguments(temperature, top_k, top_p, message):
    with pytest.raises(SamplingError, match=message) as info:
        check_sampling_args(temperature, top_k, top_p)
    assert isinstance(info.value, MusicGPTError) and isinstance(info.value, ValueError)


def test_filters_check_their_own_argument():
    with pytest.raises(SamplingError, match="top_k must be"):
        top_k_filter(torch.zeros(1, 4), 0)
    with pytest.raises(SamplingError, match="top_p must be"):
        top_p_filter(torch.zeros(1, 4), 2.0)


def test_mask_per_group_keeps_each_groups_mass():
    # groups: {0, 1} and {2, 3}; p = (0.1, 0.3, 0.2, 0.4). Forbid token 1: group 0 keeps its 0.4
    # on token 0 alone, group 1 keeps 0.6 as it was. Plain masking would give (0.14, 0, 0.29, 0.57).
    probs = torch.tensor([[0.1, 0.3, 0.2, 0.4]])
    allowed = torch.tensor([[True, False, True, True]])
    groups = torch.tensor([0, 0, 1, 1])
    out = mask_per_group(probs.log(), allowed, groups).softmax(-1)
    assert torch.allclose(out, torch.tensor([[0.4, 0.0, 0.2, 0.4]]), atol=1e-6)
    plain = apply_mask(probs.log(), allowed).softmax(-1)
    assert torch.allclose(plain, torch.tensor([[0.1, 0.0, 0.2, 0.4]]) / 0.7, atol=1e-6)


def test_mask_per_group_drops_a_group_with_nothing_allowed_and_survives_underflow():
    # group 0 all forbidden: its mass goes to the others in proportion (as plain masking would)
    probs = torch.tensor([[0.5, 0.2, 0.3]])
    out = mask_per_group(probs.log(), torch.tensor([[False, True, True]]), torch.tensor([0, 1, 2])).softmax(
        -1
    )
    assert torch.allclose(out, torch.tensor([[0.0, 0.4, 0.6]]), atol=1e-6)
    # the only allowed token of a group is far below float32's smallest probability: it still
    # gets the group's whole mass
    logits = torch.tensor([[0.0, -200.0, 0.0]])
    out = mask_per_group(logits, torch.tensor([[False, True, True]]), torch.tensor([0, 0, 1])).softmax(-1)
    assert torch.allclose(out, torch.tensor([[0.0, 0.5, 0.5]]), atol=1e-6)
    with pytest.raises(SamplingError, match="allows no token"):
        mask_per_group(logits, torch.zeros(1, 3, dtype=torch.bool), torch.tensor([0, 0, 1]))


def test_sampling_config_builds_by_name_and_checks_its_fields():
    assert SamplingConfig.build(greedy=True).greedy
    assert SamplingConfig.build(SamplingConfig(top_k=5), top_p=0.9) == SamplingConfig(top_k=5, top_p=0.9)
    with pytest.raises(SamplingError, match=r"unknown sampling setting\(s\) \['topk'\]"):
        SamplingConfig.build(topk=5)
    with pytest.raises(SamplingError, match="mask_mode must be one of"):
        SamplingConfig(mask_mode="sometimes")
    for bad in (float("inf"), float("nan"), -1.0, True):
        with pytest.raises(SamplingError, match="temperature must be >= 0"):
            SamplingConfig(temperature=bad)


def test_mask_spread_hands_forbidden_mass_where_the_spread_says():
    # group 0: ids 0-2, group 1: ids 3-5; row 0 forbids id 4 and spreads it 3:1 over ids 3 and 5
    probs = [0.1, 0.2, 0.05, 0.25, 0.3, 0.1]
    logits = torch.tensor([[math.log(p) for p in probs]] * 2)
    allowed = torch.tensor([[1, 0, 1, 1, 0, 1], [1, 1, 0, 0, 1, 1]], dtype=torch.bool)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    spread = torch.tensor([[-1, -1, -1, 3.0, 0, 1.0], [-1, -1, -1, 0, 0, 0]])
    out = mask_spread(logits, allowed, groups, spread).softmax(-1)
    # row 0, group 1 (spread): 0.25 + 0.3 * 3/4, 0.1 + 0.3 * 1/4; group 0 (no spread): per group
    expected0 = [0.1 * 0.35 / 0.15, 0.0, 0.05 * 0.35 / 0.15, 0.25 + 0.225, 0.0, 0.1 + 0.075]
    torch.testing.assert_close(out[0], torch.tensor(expected0), atol=1e-6, rtol=0)
    # row 1: no group has a spread: exactly mask_per_group
    torch.testing.assert_close(out[1], mask_per_group(logits, allowed, groups).softmax(-1)[1])


def test_next_token_uses_the_spread_only_in_spread_mode():
    logits = torch.tensor([[0.0, 0.0, 5.0, 0.0]])  # the model wants id 2, which is forbidden
    allowed = torch.tensor([[True, True, False, True]])
    groups = torch.tensor([0, 0, 0, 1])
    spread = torch.tensor([[0.0, 1.0, 0.0, -1.0]])  # group 0's forbidden mass all to id 1
    greedy_spread = SamplingConfig(temperature=0, mask_mode="spread")
    assert next_token(logits, greedy_spread, allowed, groups, spread=spread).tolist() == [1]
    # per_group: id 2's mass goes to ids 0 and 1 alike; the tie is broken towards id 0
    assert next_token(logits, SamplingConfig(temperature=0), allowed, groups, spread=spread).tolist() == [0]
