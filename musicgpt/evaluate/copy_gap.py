"""The copy gap: how much a naive cache of the piece so far still improves the model's loss.

A model that copies what it heard as well as it can gains nothing from a cache that proposes
"what followed the same last 3-8 events earlier in this piece" (`prompt_cache.NAIVE_GATE`); a
model that does not copy gains a lot. Per piece, scored as a continuation reads it (windows of
the model's continuation context):

    model            the model alone
    + prompt cache   the model mixed with the sampler's prompt cache (`SamplingConfig.prompt_cache`)
    + naive          the model with the naive cache
    copy gap         model - (model + naive): what the model leaves to copy
    gap with cache   (model + prompt cache) - (model + prompt cache + naive): what the sampler, as
                     it generates by default, still leaves

`musicgpt evaluate --copy-gap` prints the table; benchmarks/prompt_cache.py fits the cache's gate
with the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicgpt.evaluate.nll import token_log_probs
from musicgpt.generation.prompt_cache import (
    FITTED_GATE,
    NAIVE_GATE,
    CacheGate,
    cache_features,
    mixture_log_probs,
)


@dataclass(frozen=True)
class CopyGap:
    name: str
    tokens: int  # scored tokens (all but the first)
    model: float  # summed NLL in nats of each variant over those tokens
    cached: float
    naive: float
    both: float

    def row(self) -> str:
        n = max(self.tokens, 1)
        m, c, v, b = self.model / n, self.cached / n, self.naive / n, self.both / n
        return f"{self.name[:40]:<40} {self.tokens:>8,} {m:>7.3f} {c:>7.3f} {v:>7.3f} {m - v:>9.3f} {c - b:>11.3f}"


TABLE_HEADER = (
    f"{'piece':<40} {'tokens':>8} {'model':>7} {'+cache':>7} {'+naive':>7} {'copy gap':>9} {'with cache':>11}"
)


def copy_gap(
    model,
    ids: np.ndarray,
    context: int,
    name: str,
    gate: CacheGate = FITTED_GATE,
    strength: float = 1.0,
    key_of_id: np.ndarray | None = None,
) -> CopyGap:
    """The four losses of one piece (token ids without EOS)."""
    ids = np.asarray(ids, dtype=np.int64)
    lp = token_log_probs(model, ids, context)
    lp[0] = 0.0  # the first token has no context: not scored
    cached = mixture_log_probs(
        lp, cache_features(ids, model.config.vocab_size, gate, key_of_id), gate, strength
    )
    naive_features = cache_features(ids, model.config.vocab_size, NAIVE_GATE)
    naive = mixture_log_probs(lp, naive_features, NAIVE_GATE)
    both = mixture_log_probs(cached, naive_features, NAIVE_GATE)
    return CopyGap(name, len(ids) - 1, *(float(-x[1:].sum()) for x in (lp, cached, naive, both)))


def total(rows: list[CopyGap]) -> CopyGap:
    """Every piece together, per token (the last row of the table)."""
    return CopyGap(
        "all pieces (per token)",
        sum(r.tokens for r in rows),
        *(sum(getattr(r, k) for r in rows) for k in ("model", "cached", "naive", "both")),
    )
