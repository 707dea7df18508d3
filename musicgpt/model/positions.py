"""How attention learns where tokens are: relative attention's logits term and rotary positions.

GPT-2's learned table `wpe` is an embedding added to the tokens (in gpt.py); the two encodings
here act inside attention instead, and see only the distance i - j between a query and a key.
That is why a model with either of them runs on contexts longer than its training window, and
why its KV cache can be a ring buffer that forgets where the window started.

Relative attention (Music Transformer, Huang et al. 2018): each layer learns, per head, an
embedding E of every distance 0 .. R-1 (farther keys share the last one), and the logit of query
i and key j gains q_i · E[i - j]. For all pairs at once that is q Eᵀ "skewed" (`skew`), in
O(T · head_dim) memory for the embeddings instead of O(T² · head_dim).

Rotary positions (RoFormer, Su et al. 2021; Llama, GPT-NeoX and Aria use them): q and k are
rotated, pair of channels by pair, by an angle proportional to their position, so that q_i · k_j
depends on i - j alone. No parameters. The channel pairing is GPT-NeoX's "rotate half" (channel
c with c + head_dim/2), the one Hugging Face's Llama uses, so the two agree exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# --- relative attention ------------------------------------------------------------------------


def skew(x: torch.Tensor) -> torch.Tensor:
    """(..., T, W) whose column c holds distance W-1-c -> (..., T, W) whose [r, j] holds distance
    (W - T + r) - j: row r is the query at position W - T + r, column j the key at position j.

    Music Transformer's trick (tensor2tensor's `_relative_position_to_absolute_position_masked`)
    as a strided view, with no copy: row r of the result starts T-1-r elements into row r of x,
    that is, rows are W-1 elements apart in memory. (The pad-and-reshape form of the paper copies,
    and compiled, its index arithmetic does not vectorize: 2.5x slower in the training kernels.) Valid for j <= W - T + r (keys at or before
    the query, W >= T); above that the values are leftovers (the next row's start) that causal
    attention masks anyway.
    """
    *lead, T, W = x.shape
    if W == 1:
        return x
    flat = x.reshape(*lead, T * W)  # (a copy only if x is not contiguous)
    return flat[..., T - 1 :].unfold(-1, W, W - 1)  # windows of W, W-1 apart: T of them


def unskew(dy: torch.Tensor) -> torch.Tensor:
    """The adjoint of `skew` for a dy that is zero above the valid triangle (a gradient under a
    causal mask): (..., T, W) by key -> (..., T, W) by distance, farthest first.

    [r, c] = dy[r, c - (T-1-r)]: pad T zero columns on the left and read rows W+T+1 apart.
    """
    *lead, T, W = dy.shape
    flat = F.pad(dy, (T, 0)).reshape(*lead, T * (W + T))
    return flat[..., 1:].unfold(-1, W, W + T + 1)  # windows of W, W+T+1 apart: T of them


def relative_logits_causal(q: torch.Tensor, rel_emb: torch.Tensor, first: int = 0) -> torch.Tensor:
    """q (B, nh, T, hs) for the queries at positions first..first+T-1, rel_emb (nh, R, hs) ->
    (B, nh, T, first+T): [r, j] = q_r · E[min(first + r - j, R - 1)] for the keys j <= first + r.

    `first` > 0 is a block of queries against every key up to the block's end (the blockwise
    attention kernels); 0 is the whole causal square.
    """
    T, R = q.size(-2), rel_emb.size(1)
    W = first + T
    farthest_first = torch.arange(W - 1, -1, -1, device=q.device).clamp(max=R - 1)
    e = rel_emb[:, farthest_first].to(q.dtype)  # (nh, W, hs): distances W-1, ..., 1, 0
    return skew(q @ e.transpose(-1, -2))


def relative_logits_at(q: torch.Tensor, rel_emb: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """q (B, nh, T, hs), rel_emb (nh, R, hs), distance (T, L) -> (B, nh, T, L) q_i · E[clip(distance)].

    For queries against cached keys, whose distances are given (a ring buffer holds its keys in
    no particular order). Only the distances up to the largest one a cache of L slots can hold
    (L - 1) are multiplied, so a decode step costs in proportion to the tokens cached, not to R.
    Negative distances (keys after the query) give E[0]; mask them.
    """
    B, nh, T, _ = q.shape
    L = distance.size(-1)
    n = min(rel_emb.size(1), L)
    qe = q @ rel_emb[:, :n].to(q.dtype).transpose(-1, -2)  # (B, nh, T, n): q against distances 0..n-1
    index = distance.clamp(0, n - 1).expand(B, nh, T, L)
    return qe.gather(-1, index)


# --- rotary positions --------------------------------------------------------------------------


def rope_angles(
    positions: torch.Tensor, head_dim: int, base: float = 10000.0, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (T,) -> (cos, sin), each (T, head_dim) float32, for `apply_rope`.

    Channel pair c rotates by position / scale * base^(-2c / head_dim). `scale` > 1 is linear
    position interpolation (Chen et al. 2023): positions are squeezed so that a context `scale`
    times the training window spans the angles the model trained on.
    """
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (base**exponents)  # written as Llama's reference code has it, to the last bit
    angles = (positions.to(torch.float32) / scale)[:, None] * inv_freq[None, :]  # (T, head_dim/2)
    angles = torch.cat((angles, angles), dim=-1)  # channel c and c + head_dim/2 share an angle
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, nh, T, hs) by the angles of its T positions: x cos + rotate_half(x) sin."""
    half = x.size(-1) // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos.to(x.dtype) + rotated * sin.to(x.dtype)).to(x.dtype)
