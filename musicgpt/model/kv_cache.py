"""A static key/value cache for every attention layer (the gpt-fast recipe), and where its tokens sit.

Buffers are allocated once for a batch size and a number of slots and written in place, so a
decode step allocates nothing. The cache owns the bookkeeping as well: which position each slot
holds (-1: nothing yet). A forward through the cache goes in two moves:

    read = cache.book(input_pos)                           # once: slots, mask, distances
    k, v, mask, distance = cache.update(layer, read, k, v) # in each layer: write, then read

Learned positions put the token at position p in slot p (positions never pass the slots).
A model whose attention sees only distances (relative attention, rotary positions) may run
past the slots: `ring=True` puts position p in slot p % slots, so the cache holds the last
`slots` tokens, in no particular order, and `distance` (query position - slot position) tells
attention how far back each one lies.

`mask` (T, L) is True where a query may look: slots written (this prompt, not a stale one) and at
or before the query. Eager, only the first L = (slots written so far) are read; under
torch.compile every slot is, so that each decode step has the same shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class CacheRead(NamedTuple):
    """What one forward reads from the cache, worked out once for all layers by `KVCache.book`."""

    slots: torch.Tensor  # (T,) where the new tokens' keys and values go
    kv_len: int  # how many slots to read (the first kv_len)
    mask: torch.Tensor | None  # (T, kv_len) bool, True where a query may look; None: everywhere
    distance: torch.Tensor | None  # (T, kv_len) query position - slot position (ring caches only)


class KVCache(nn.Module):
    """Keys and values of all layers, (n_layer, batch, n_head, slots, head_dim), and each slot's position."""

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        max_seq_len: int,
        head_dim: int,
        ring: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.ring = ring
        shape = (n_layer, batch_size, n_head, max_seq_len, head_dim)
        # persistent=False: the cache is scratch space, never part of a checkpoint
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer(
            "pos", torch.full((max_seq_len,), -1, dtype=torch.long, device=device), persistent=False
        )

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_seq_len(self) -> int:
        return self.k.shape[3]

    def book(self, input_pos: torch.Tensor, need_mask: bool = True) -> CacheRead:
        """Record that positions `input_pos` (T,), increasing, are being written; say what to read.

        A prefill from position 0 forgets what the cache held. `need_mask=False` is a hint that
        one query at the newest position needs no mask if it may see every slot written so far
        (learned positions, eager): the per-step mask work is then skipped.
        """
        n_slots = self.max_seq_len
        slots = input_pos % n_slots if self.ring else input_pos
        compiling = torch.compiler.is_compiling()
        if not compiling and int(input_pos[0]) == 0:
            self.pos.fill_(-1)  # a prefill from the start: what the cache held is stale
        self.pos.index_copy_(0, slots, input_pos)
        # eager: the slots written so far (positions increase, so the last one is the furthest)
        kv_len = n_slots if compiling else min(int(input_pos[-1]) + 1, n_slots)
        if not (compiling or need_mask or self.ring):
            return CacheRead(slots, kv_len, None, None)
        pos = self.pos[None, :kv_len]
        distance = input_pos[:, None] - pos  # (T, kv_len)
        mask = (distance >= 0) & (pos >= 0)
        return CacheRead(slots, kv_len, mask, distance if self.ring else None)

    def update(
        self, layer: int, read: CacheRead, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Write one layer's new k, v (B, nh, T, hs) at `read.slots`; return the (k, v) to attend
        over, (B, nh, kv_len, hs) each, with the mask and distances that go with them."""
        self.k[layer].index_copy_(2, read.slots, k)
        self.v[layer].index_copy_(2, read.slots, v)
        return (
            self.k[layer, :, :, : read.kv_len],
            self.v[layer, :, :, : read.kv_len],
            read.mask,
            read.distance,
        )
