"""The prompt cache: copy what was heard. A copy mechanism beside the model, for any tokens.

Music repeats itself: a motif comes back, a bass pattern runs for bars, a phrase is answered by
itself. A small model reading a window of tokens under-uses that: mixing its next-token
distribution with "what followed the same events earlier in this piece" lowered the held-out loss
of unseen pieces by 0.2 nats/token (docs/model.md, "The prompt cache"). So the sampler does that
mixing itself, as the cache language models of Kuhn & De Mori (1990) and Grave et al. (2017) and
the context matching of PPM (Cleary & Witten, 1984) do:

    p(v) = (1 - lam) * p_model(v) + lam * q(v)

* q: at each step, every earlier place where the history's most recent tokens occurred before
  (a common suffix of at least `min_match` tokens) votes for the token that followed it there,
  with weight exp(length_weight * match length): longer matches count more, as in PPM's longest
  context first. Lengths are counted up to `max_match`.
* lam, how much to trust q: a logistic function of the longest match's length (log) and of the
  votes' agreement (q's largest probability), with coefficients fitted on held-out pieces
  (benchmarks/prompt_cache.py prints the fit). A short or contradictory match leaves the
  model alone; a long, consistent one (the piece repeats a passage) makes the sampler copy.

The history is every token the row has read: the whole prompt (also what lies before the model's
window) and what was sampled since, per row. Finding every match is one vectorized update per
step: `match[j]`, the length of the common suffix of history[:j + 1] and the whole history, grows
by one where history[j] equals the new token and drops to 0 elsewhere. Work per step is linear in
the history, which is capped at `max_history` tokens (the oldest are dropped).

Nothing here knows music: it runs on token ids, for text as for performances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CacheGate:
    """lam = strength * sigmoid(bias + length_coef * log(longest match) + agreement_coef * max q),
    0 where no earlier match is `min_match` tokens long. The default coefficients are the fit of
    benchmarks/prompt_cache.py on the bundled validation pieces with piano-small's probabilities."""

    min_match: int = 6
    max_match: int = 48
    length_weight: float = 0.15  # q's vote of a match of length m: exp(length_weight * m)
    bias: float = -3.03
    length_coef: float = 1.40
    agreement_coef: float = 1.17
    fixed: float | None = None  # a constant lam instead of the logistic (the naive reference cache)

    def weight(self, longest: np.ndarray, agreement: np.ndarray) -> np.ndarray:
        """(B,) longest match lengths, (B,) max q -> (B,) mixing weights before the strength."""
        found = longest >= self.min_match
        if self.fixed is not None:
            return np.where(found, self.fixed, 0.0)
        z = self.bias + self.length_coef * np.log(np.maximum(longest, 1)) + self.agreement_coef * agreement
        return np.where(found, 1.0 / (1.0 + np.exp(-z)), 0.0)


FITTED_GATE = CacheGate()  # the default gate, as a value (for argument defaults)

# The cache the issue that asked for this one measured against: what followed the same last 3-8
# tokens earlier in the piece, mixed in with weight 0.5 whenever there is such a match. Its gain on
# top of a model (the "copy gap", `musicgpt evaluate --copy-gap`) says how much copying a model
# still leaves on the table.
NAIVE_GATE = CacheGate(min_match=3, max_match=8, length_weight=0.0, fixed=0.5)

MAX_LAMBDA = 0.98  # the model always keeps some mass: a cache can be wrong, and -log 0 is infinite


class PromptCache:
    """The copy distribution and its mixing weight, for a batch of rows decoded in lockstep.

    `PromptCache(history)` with history (B, T) int ids, then per step `mix(logits)` and
    `append(tokens)`. `distribution()` gives (q, lam) for the next token, for analysis and tests.
    """

    def __init__(
        self,
        history: np.ndarray,
        vocab_size: int,
        gate: CacheGate = FITTED_GATE,
        strength: float = 1.0,
        max_history: int = 4096,
        key_of_id: np.ndarray | None = None,
    ):
        """key_of_id: (V,) what two tokens must share to match (default: the id itself). A music
        tokenizer maps every VELOCITY to one key and TIME_SHIFTs to buckets of about +-10%, so a
        passage played back a little louder or slower still counts as a repeat; the vote is
        always for the exact token that followed."""
        history = np.asarray(history, dtype=np.int64)
        if history.ndim != 2:
            raise ValueError(f"history must be (batch, T), got shape {history.shape}")
        self.vocab_size, self.gate, self.strength = vocab_size, gate, strength
        self.max_history = max_history
        self.key_of_id = np.arange(vocab_size) if key_of_id is None else np.asarray(key_of_id, np.int64)
        B = history.shape[0]
        self.tokens = np.zeros((B, max_history), np.int64)
        self.keys = np.zeros((B, max_history), np.int64)
        # match[:, j]: common suffix length of tokens[:, :j + 1] and tokens[:, :n], for j < n - 1
        self.match = np.zeros((B, max_history), np.int32)
        self.n = 0
        for t in range(history.shape[1]):
            self.append(history[:, t])

    def append(self, tokens) -> None:
        """Read the next token of every row (B,)."""
        t = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if self.n == self.max_history:  # drop the oldest half; matches into it go with it
            keep = self.max_history // 2
            self.tokens[:, :keep] = self.tokens[:, -keep:]
            self.keys[:, :keep] = self.keys[:, -keep:]
            self.match[:, :keep] = self.match[:, -keep:]
            self.n = keep
        n = self.n
        if n:
            grown = np.empty((len(t), n), np.int32)
            grown[:, 0] = 1
            np.add(self.match[:, : n - 1], 1, out=grown[:, 1:])
            np.minimum(grown, self.gate.max_match, out=grown)
            grown[self.keys[:, :n] != self.key_of_id[t][:, None]] = 0
            self.match[:, :n] = grown
        self.tokens[:, n] = t
        self.keys[:, n] = self.key_of_id[t]
        self.n = n + 1

    def votes(self) -> tuple[np.ndarray, np.ndarray]:
        """(q (B, V) float64, longest (B,) int): the copy distribution of the next token and the
        longest match behind it (0, and q all 0, for a row with no match of `min_match`)."""
        B, V, n = self.tokens.shape[0], self.vocab_size, self.n
        q = np.zeros((B, V))
        longest = np.zeros(B, np.int64)
        if n < 2:
            return q, longest
        match = self.match[:, : n - 1]  # places j whose follower tokens[:, j + 1] is known
        for b in range(B):
            places = np.flatnonzero(match[b] >= self.gate.min_match)
            if places.size == 0:
                continue
            lengths = match[b, places]
            longest[b] = lengths.max()
            votes = np.exp(self.gate.length_weight * (lengths - longest[b]))  # relative: no overflow
            q[b] = np.bincount(self.tokens[b, places + 1], weights=votes, minlength=V)[:V]
            q[b] /= q[b].sum()
        return q, longest

    def distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """(q (B, V) float64, lam (B,)): the copy distribution of the next token and its weight."""
        q, longest = self.votes()
        return q, np.minimum(self.strength * self.gate.weight(longest, q.max(axis=1)), MAX_LAMBDA)

    def mix(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V) logits -> log((1 - lam) * softmax(logits) + lam * q), rows without a match unchanged."""
        q, lam = self.distribution()
        if not lam.any():
            return logits
        logp = logits.float().log_softmax(dim=-1)
        q_t = torch.as_tensor(q, dtype=torch.float32, device=logits.device)
        lam_t = torch.as_tensor(lam, dtype=torch.float32, device=logits.device)[:, None]
        # logsumexp of the two log terms: exact where either probability underflows float32
        mixed = torch.logaddexp(logp + torch.log1p(-lam_t), torch.log(q_t) + torch.log(lam_t))
        return torch.where(lam_t > 0, mixed, logits.float())


def cache_features(
    tokens: np.ndarray, vocab_size: int, gate: CacheGate, key_of_id: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Run the cache along one piece: for every token i >= 1 (predicted from tokens[:i]), the
    longest match, the votes' agreement (max q) and q(tokens[i]); (N,) arrays, 0 at i = 0."""
    tokens = np.asarray(tokens, dtype=np.int64)
    N = len(tokens)
    longest, agreement, q_target = np.zeros(N, np.int64), np.zeros(N), np.zeros(N)
    cache = PromptCache(tokens[:1][None], vocab_size, gate, max_history=max(N, 2), key_of_id=key_of_id)
    for i in range(1, N):
        q, best = cache.votes()
        if best[0]:
            longest[i], agreement[i], q_target[i] = best[0], q[0].max(), q[0, tokens[i]]
        cache.append(tokens[i : i + 1])
    return {"longest": longest, "agreement": agreement, "q_target": q_target}


def mixture_log_probs(
    model_log_probs: np.ndarray, features: dict[str, np.ndarray], gate: CacheGate, strength: float = 1.0
) -> np.ndarray:
    """The log p of each token under the mixture, from the model's (N,) log p and `cache_features`."""
    lam = np.minimum(strength * gate.weight(features["longest"], features["agreement"]), MAX_LAMBDA)
    p = (1 - lam) * np.exp(model_log_probs) + lam * features["q_target"]
    return np.log(np.maximum(p, 1e-300))
