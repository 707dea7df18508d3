"""Choosing the next token: small pure functions on (batch, vocab) logits.

The order, as `next_token` applies it:

    mask (grammar) -> temperature -> top-k -> top-p -> sample      (or greedy: mask -> argmax)

Filters return new logits with the removed tokens set to -inf; nothing is changed in place.
Temperature 0 means greedy decoding: `next_token` (and `generate`) take the argmax, since
dividing by zero has no useful limit other than that.

How the mask hands on the probability of the tokens it forbids matters for music. Plain masking
(`apply_mask`) renormalizes over everything still allowed, so the mass of forbidden tokens goes
to all the others in proportion. A performance grammar forbids most NOTE_OFFs (only sounding
pitches may end) and so gave their mass to NOTE_ON and TIME_SHIFT: notes were struck and hardly
ever released. `mask_per_group` keeps each group's (event type's) total mass and spreads it over
that group's allowed tokens instead; the grammar says which token is in which group.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from musicgpt.errors import MusicGPTError


class SamplingError(MusicGPTError, ValueError):
    """Sampling arguments that make no sense (top_p outside (0, 1], negative temperature, ...)."""


MASK_MODES = ("per_group", "spread", "renormalize")
# SamplingConfig.grid: at most this many subdivisions of a prompt's onset grid (4: 64ths on a grid of 16ths)
MAX_GRID_DIVISIONS = 4


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen; one value passed by name from the CLI down to `next_token`.

    temperature: 0 is greedy (the argmax), below 1 sharper, above 1 flatter.
    top_k, top_p: keep the k most likely tokens / the smallest nucleus of mass >= p (None: all).
    mask_mode: how a grammar's forbidden mass is handed on (see the module docstring):
        "per_group" keeps each token group's mass (the default; a mask without groups falls back
        to "renormalize"), "spread" keeps it too but hands a group's forbidden mass to its allowed
        tokens in the proportions the grammar gives (`LogitsMask.spread`; the performance grammar:
        to the notes sounding longest), "renormalize" spreads it over every allowed token.
    prompt_cache: how strongly the model's distribution is mixed with what followed the same
        recent tokens earlier in the prompt and the sample (`musicgpt.generation.prompt_cache`):
        0 never (the default here: the model's own distribution), 1 the weight fitted on held-out
        piano (the default of piano continuations, `generation.piano.PIANO_SAMPLING`), up to 2
        twice that. Applied first, before the mask: one more opinion, filtered like the model's.
    grid: music: snap time to the onset grid of a sequenced prompt (`musicgpt.generation.grid`),
        subdivided `grid` times: every note falls on a grid point, as in the file it continues.
        0 never (the default here), 1 the grid itself (the default of piano continuations). A
        prompt without a grid (a recorded performance) is never snapped.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    mask_mode: str = "per_group"
    prompt_cache: float = 0.0
    grid: int = 0

    def __post_init__(self) -> None:
        check_sampling_args(self.temperature, self.top_k, self.top_p)
        strength = self.prompt_cache
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 2:
            raise SamplingError(f"prompt_cache must be a number from 0 (off) to 2, got {strength!r}")
        if (
            isinstance(self.grid, bool)
            or not isinstance(self.grid, int)
            or not 0 <= self.grid <= MAX_GRID_DIVISIONS
        ):
            raise SamplingError(
                f"grid must be a whole number from 0 (off) to {MAX_GRID_DIVISIONS}, got {self.grid!r}"
            )
        if self.mask_mode not in MASK_MODES:
            raise SamplingError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def build(cls, base: SamplingConfig | None = None, **overrides: Any) -> SamplingConfig:
        """`base` (default: the defaults) with field overrides; `greedy=True` is `temperature=0`."""
        if overrides.pop("greedy", False):
            overrides["temperature"] = 0.0
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise SamplingError(f"unknown sampling setting(s) {unknown}; known: {sorted(fields)} and greedy")
        return dataclasses.replace(base or cls(), **overrides)


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise SamplingError for a negative or infinite temperature, top_k < 1 or top_p outside (0, 1]."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature < float("inf")  # also rejects NaN
    ):
        raise SamplingError(f"temperature must be >= 0 (0 means greedy) and finite, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise SamplingError(f"top_k must be an integer >= 1 (or None for no limit), got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise SamplingError(f"top_p must be in (0, 1] (or None for no limit), got {top_p!r}")


def apply_mask(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Forbid tokens: -inf where `allowed` (batch, vocab) bool is False. Every row must allow one."""
    if allowed.shape != logits.shape:
        raise SamplingError(
            f"mask of shape {tuple(allowed.shape)} does not match logits {tuple(logits.shape)}"
        )
    empty = ~allowed.any(dim=-1)
    if empty.any():
        rows = empty.nonzero().flatten().tolist()
        raise SamplingError(f"the logits mask allows no token at all in batch row(s) {rows}")
    return logits.masked_fill(~allowed.to(logits.device), float("-inf"))


def mask_per_group(logits: torch.Tensor, allowed: torch.Tensor, group_of_id: torch.Tensor) -> torch.Tensor:
    """Forbid tokens but keep each group's probability mass (a group: an event type of the grammar).

    logits (batch, vocab), allowed (batch, vocab) bool, group_of_id (vocab,) int64 in 0..G-1.
    With p = softmax(logits), an allowed token i of group g gets

        p'(i) = p(i) * P(g) / P_allowed(g),   P(g) = sum of p over g,  P_allowed(g) = over g's allowed,

    and forbidden tokens 0. A group with no allowed token loses its mass, which the final softmax
    spreads over the other groups in proportion. Works in log space (a group's allowed tokens may
    all be far below float32's smallest probability) and returns log p' (up to a constant per row).
    """
    if allowed.shape != logits.shape:
        raise SamplingError(
            f"mask of shape {tuple(allowed.shape)} does not match logits {tuple(logits.shape)}"
        )
    allowed = allowed.to(logits.device)
    groups = group_of_id.to(logits.device)
    n_groups = int(groups.max()) + 1
    logp = logits.float().log_softmax(dim=-1)
    log_mass = _group_logsumexp(logp, groups, n_groups)  # (B, G)
    log_allowed_mass = _group_logsumexp(logp.masked_fill(~allowed, float("-inf")), groups, n_groups)
    shifted = (
        logp + (log_mass - log_allowed_mass)[:, groups]
    )  # -inf - -inf = nan where a group is all forbidden
    return apply_mask(shifted.nan_to_num(nan=float("-inf")), allowed)


def mask_spread(
    logits: torch.Tensor, allowed: torch.Tensor, group_of_id: torch.Tensor, spread: torch.Tensor
) -> torch.Tensor:
    """Like `mask_per_group`, each group keeps its mass, but the mass of a group's forbidden tokens
    goes to its allowed tokens in proportion to `spread` (batch, vocab) >= 0 instead of to the
    model's own probabilities; where a group's allowed tokens have no spread (all 0, or negative:
    "no opinion"), it falls back to `mask_per_group`'s rule. Returns log p' (batch, vocab).

    Why: a model's probability for a forbidden token says how much it wants that kind of event
    now, not which allowed token it meant. The performance grammar's case: NOTE_OFF mass on pitches
    that are not sounding is the model mistaking which notes sound; the notes it has lost track of
    are the ones struck longest ago, so that mass goes to them (`PerformanceGrammar.spread`).
    """
    if allowed.shape != logits.shape or spread.shape != logits.shape:
        raise SamplingError(
            f"mask {tuple(allowed.shape)} and spread {tuple(spread.shape)} must match logits {tuple(logits.shape)}"
        )
    allowed = allowed.to(logits.device)
    groups = group_of_id.to(logits.device)
    n_groups = int(groups.max()) + 1
    B = logits.shape[0]
    p = logits.double().softmax(dim=-1)
    index = groups.expand(B, -1)

    def group_sum(x: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B, G)
        return torch.zeros(B, n_groups, dtype=x.dtype, device=x.device).scatter_add_(1, index, x)

    weights = spread.to(device=logits.device, dtype=torch.float64).clamp(min=0) * allowed
    forbidden_mass = group_sum(p * ~allowed)  # (B, G)
    weight_sum = group_sum(weights)
    has_spread = weight_sum > 0
    handed = forbidden_mass / weight_sum.where(has_spread, torch.ones_like(weight_sum))
    spread_p = (p + handed[:, groups] * weights) * allowed
    fallback = mask_per_group(logits, allowed, group_of_id).double().softmax(dim=-1)
    out = torch.where(has_spread[:, groups], spread_p, fallback)
    return apply_mask(out.log().float(), allowed)


def _group_logsumexp(x: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(B, V), (V,) -> (B, G): logsumexp of x over each group's columns (-inf for an all -inf group)."""
    B = x.shape[0]
    index = groups.expand(B, -1)
    peak = torch.full((B, n_groups), float("-inf"), device=x.device).scatter_reduce(
        1, index, x, reduce="amax"
    )
    safe_peak = peak.nan_to_num(neginf=0.0)  # an all -inf group: exp(-inf - 0) = 0 below
    total = torch.zeros(B, n_groups, device=x.device).index_add_(
        1, groups, torch.exp(x - safe_peak[:, groups])
    )
    return total.log() + safe_peak


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by `temperature` > 0: below 1 sharpens, above 1 flattens. (0 is greedy, handled by the caller.)"""
    if not temperature > 0:
        raise SamplingError(
            f"apply_temperature needs temperature > 0, got {temperature!r}; use greedy() for 0"
        )
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the k highest logits of each row; -inf elsewhere.

    Ties at the k-th value are broken by `torch.topk`'s choice, so exactly k survive, never more.
    Tokens already at -inf stay there (a row with fewer than k finite logits keeps fewer).
    """
    check_sampling_args(1.0, k, None)
    if k >= logits.shape[-1]:
        return logits
    values, indices = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter_(-1, indices, values)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability mass is >= p.

    A token is kept when the mass of the tokens ranked strictly above it is < p, so the most likely
    token is always kept. Ties in probability are ranked by the sort's order.
    """
    check_sampling_args(1.0, None, p)
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.float().softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked before each one
    keep_sorted = mass_above < p
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """(batch, vocab) -> (batch,) the most likely token of each row (the first one on ties)."""
    return logits.argmax(dim=-1)


def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, vocab) -> (batch,) one token per row drawn from softmax(logits)."""
    probs = logits.float().softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def next_token(
    logits: torch.Tensor,
    sampling: SamplingConfig = SamplingConfig(),
    allowed: torch.Tensor | None = None,
    group_of_id: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    spread: torch.Tensor | None = None,
) -> torch.Tensor:
    """(batch, vocab) logits -> (batch,) tokens: mask -> temperature -> top-k -> top-p -> sample.

    `allowed` (batch, vocab) bool is the grammar's mask; with `group_of_id` and the "per_group"
    mask mode each group keeps its mass (`mask_per_group`); "spread" with the grammar's `spread`
    hands a group's forbidden mass on as the grammar says (`mask_spread`); else the rest renormalizes.
    Greedy (temperature 0) takes the argmax of the masked logits (top-k and top-p never remove
    the most likely token, so they do not change it).
    """
    if allowed is not None:
        if group_of_id is not None and sampling.mask_mode == "spread" and spread is not None:
            logits = mask_spread(logits, allowed, group_of_id, spread)
        elif group_of_id is not None and sampling.mask_mode in ("per_group", "spread"):
            logits = mask_per_group(logits, allowed, group_of_id)
        else:
            logits = apply_mask(logits, allowed)
    if sampling.greedy:
        return greedy(logits)
    logits = apply_temperature(logits, sampling.temperature)
    if sampling.top_k is not None:
        logits = top_k_filter(logits, sampling.top_k)
    if sampling.top_p is not None:
        logits = top_p_filter(logits, sampling.top_p)
    return sample(logits, generator)
