"""A static key/value cache, one per attention layer (the gpt-fast recipe).

Buffers are allocated once for a batch size and a maximum length and written in place by
position, so a decode step allocates nothing and every step has the same shapes. The model
attends over the whole buffer with a causal mask: slots not yet written are masked out.
"""

from __future__ import annotations

import torch
from torch import nn


class KVCache(nn.Module):
    """Keys and values of one layer: two (batch, n_head, max_seq_len, head_dim) buffers."""

    def __init__(
        self,
        batch_size: int,
        n_head: int,
        max_seq_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        shape = (batch_size, n_head, max_seq_len, head_dim)
        # persistent=False: the cache is scratch space, never part of a checkpoint
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    @property
    def batch_size(self) -> int:
        return self.k.shape[0]

    @property
    def max_seq_len(self) -> int:
        return self.k.shape[2]

    def update(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hs) at positions `input_pos` (T,); return the whole buffers.

        The caller masks the slots that hold nothing (or stale entries from an earlier prompt).
        """
        self.k.index_copy_(2, input_pos, k)
        self.v.index_copy_(2, input_pos, v)
        return self.k, self.v
