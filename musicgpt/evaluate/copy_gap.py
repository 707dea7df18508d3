"""The copy gap: how much a naive cache of the piece so far still improves the model's loss.

A model that copies what it heard as well as it can gains nothing from a cache that proposes
"what followed the same last 3-8 events earlier in this piece" (`prompt_cache.NAIVE_GATE`); a
model that does not copy gains a lot. Per piece, scored as a continuation reads it (windows of
the model's continuation context):

    model            the model alone
    sampler          the distribution the sampler draws from by default, scored on the real tokens
                     (teacher-forced; temperature 1, nothing truncated). Piano: the grammar with
                     the release prior and the note cache, exactly as `continue_piano` applies
                     them (`sampler_log_probs`); other tokenizers: the token prompt cache
                     (`SamplingConfig.prompt_cache`)
    + naive          the model with the naive cache
    copy gap         model - (model + naive): what the model leaves to copy
    gap w/ sampler   sampler - (sampler + naive): what the sampler, as it generates by default,
                     still leaves

`musicgpt evaluate --copy-gap` prints the table; benchmarks/prompt_cache.py fits the cache's gate
with the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from musicgpt.evaluate.nll import position_log_probs, token_log_probs
from musicgpt.generation.prompt_cache import (
    FITTED_GATE,
    NAIVE_GATE,
    CacheGate,
    cache_features,
    mixture_log_probs,
)
from musicgpt.tokenizers.base import is_music


@dataclass(frozen=True)
class CopyGap:
    name: str
    tokens: int  # scored tokens (all but the first)
    model: float  # summed NLL in nats of each variant over those tokens
    cached: float  # the sampler's default distribution
    naive: float
    both: float  # the sampler's with the naive cache
    off_grammar: int = 0  # real tokens the sampler's grammar forbids (scored by the model alone)

    def row(self) -> str:
        n = max(self.tokens, 1)
        m, c, v, b = self.model / n, self.cached / n, self.naive / n, self.both / n
        return f"{self.name[:40]:<40} {self.tokens:>8,} {m:>7.3f} {c:>7.3f} {v:>7.3f} {m - v:>9.3f} {c - b:>11.3f}"


TABLE_HEADER = f"{'piece':<40} {'tokens':>8} {'model':>7} {'sampler':>7} {'+naive':>7} {'copy gap':>9} {'w/ sampler':>11}"


def copy_gap(
    model,
    ids: np.ndarray,
    context: int,
    name: str,
    gate: CacheGate = FITTED_GATE,
    strength: float = 1.0,
    key_of_id: np.ndarray | None = None,
    tokenizer=None,
    priors=None,
) -> CopyGap:
    """The four losses of one piece (token ids without EOS). With a piano `tokenizer` the sampler
    is piano's (`sampler_log_probs`); without one, the model mixed with the token prompt cache."""
    ids = np.asarray(ids, dtype=np.int64)
    off_grammar = 0
    if tokenizer is not None and is_music(tokenizer):
        lp, cached, off_grammar = sampler_log_probs(model, tokenizer, ids, context, strength, priors)
    else:
        lp = token_log_probs(model, ids, context)
        lp[0] = 0.0  # the first token has no context: not scored
        cached = mixture_log_probs(
            lp, cache_features(ids, model.config.vocab_size, gate, key_of_id), gate, strength
        )
    naive_features = cache_features(ids, model.config.vocab_size, NAIVE_GATE)
    naive = mixture_log_probs(lp, naive_features, NAIVE_GATE)
    both = mixture_log_probs(cached, naive_features, NAIVE_GATE)
    return CopyGap(name, len(ids) - 1, *(float(-x[1:].sum()) for x in (lp, cached, naive, both)), off_grammar)


def sampler_log_probs(
    model, tokenizer, ids: np.ndarray, context: int, strength: float = 1.0, priors=None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Piano's sampler on a real piece, teacher-forced: (model log p, sampler log p, off-grammar).

    Every token i is scored under what `continue_piano` would draw it from after tokens[:i]
    (`sampler_distributions`). A real token the grammar forbids (a note held past `context`
    tokens, which the grammar ends) is scored by the model alone and counted. Index 0 has no
    context: 0 in both.
    """
    ids = np.asarray(ids, dtype=np.int64)
    model_lp, sampler_lp, off_grammar = np.zeros(len(ids)), np.zeros(len(ids)), 0
    for i, model_logp, sampler_logp in sampler_distributions(
        model, tokenizer, ids, context, strength, priors
    ):
        model_lp[i] = model_logp[ids[i]]
        sampler_lp[i] = sampler_logp[ids[i]]
        if not np.isfinite(sampler_lp[i]):
            sampler_lp[i] = model_lp[i]
            off_grammar += 1
    return model_lp, sampler_lp, off_grammar


def sampler_distributions(
    model, tokenizer, ids: np.ndarray, context: int, strength: float = 1.0, priors=None
):
    """Yield (i, model log p, sampler log p) over the vocabulary for every token i >= 1 of `ids`.

    The sampler's is what `continue_piano` draws token i from after tokens[:i]: the model read
    through windows of `context`, the release prior added to its logits, the note cache mixed in
    at `strength`, the grammar's mask with each event type keeping its mass; the same
    `PianoSamplingGrammar` and steps as generation/decode.py, before temperature and truncation.
    """
    from musicgpt.generation.decode import allowed_mask, make_prompt_cache, sampler_logits
    from musicgpt.generation.piano import PianoSamplingGrammar
    from musicgpt.generation.sampling import mask_per_group

    ids = np.asarray(ids, dtype=np.int64)
    rows = position_log_probs(model, ids, context)
    width = rows.shape[1]
    first = ids[None, :1]
    grammar = PianoSamplingGrammar(tokenizer.grammar(1, max_note_tokens=context), first, priors)
    grammar.start(first)
    cache = make_prompt_cache(grammar, first, strength, width) if strength > 0 else None
    groups = torch.as_tensor(np.asarray(grammar.group_of_id)[:width], dtype=torch.long)
    for i in range(1, len(ids)):
        logits = sampler_logits(torch.from_numpy(rows[i][None].copy()), grammar, cache)
        allowed = allowed_mask(grammar, logits)
        yield i, rows[i], mask_per_group(logits, allowed, groups).log_softmax(-1)[0].numpy()
        grammar.advance(ids[i : i + 1])
        if cache is not None:
            cache.append(ids[i : i + 1])


def total(rows: list[CopyGap]) -> CopyGap:
    """Every piece together, per token (the last row of the table)."""
    return CopyGap(
        "all pieces (per token)",
        sum(r.tokens for r in rows),
        *(sum(getattr(r, k) for r in rows) for k in ("model", "cached", "naive", "both")),
        sum(r.off_grammar for r in rows),
    )
