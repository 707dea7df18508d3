"""Choosing the next token: small pure functions on (batch, vocab) logits.

The order, as `next_token` applies it:

    mask (grammar) -> temperature -> top-k -> top-p -> sample      (or greedy: mask -> argmax)

Filters return new logits with the removed tokens set to -inf; nothing is changed in place.
Temperature 0 means greedy decoding: `next_token` (and `generate`) take the argmax, since
dividing by zero has no useful limit other than that.
"""

from __future__ import annotations

import torch

from musicgpt.errors import MusicGPTError


class SamplingError(MusicGPTError, ValueError):
    """Sampling arguments that make no sense (top_p outside (0, 1], negative temperature, ...)."""


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise SamplingError for a negative temperature, top_k < 1 or top_p outside (0, 1]."""
    if not isinstance(temperature, (int, float)) or not temperature >= 0:  # also rejects NaN
        raise SamplingError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}")
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


_argmax = greedy  # `next_token` takes a `greedy` flag that shadows the function


def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, vocab) -> (batch,) one token per row drawn from softmax(logits)."""
    probs = logits.float().softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    allowed: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(batch, vocab) logits -> (batch,) tokens: mask -> temperature -> top-k -> top-p -> sample.

    `greedy` or temperature 0 takes the argmax of the masked logits (top-k and top-p never remove
    the most likely token, so they do not change it).
    """
    if allowed is not None:
        logits = apply_mask(logits, allowed)
    if greedy or temperature == 0:
        return _argmax(logits)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return sample(logits, generator)
