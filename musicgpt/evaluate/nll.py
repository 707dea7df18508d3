"""Held-out loss: mean negative log-likelihood per token, in nats and bits.

The model and the n-gram baselines are scored on exactly the same (context, target) pairs: the
fixed windows of `FixedWindows`, so their numbers can stand side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from musicgpt.data.dataset import FixedWindows, TokenShard


@dataclass(frozen=True)
class HeldOutLoss:
    name: str
    nats: float  # mean NLL per token
    tokens: int

    @property
    def bits(self) -> float:
        return self.nats / math.log(2)

    def row(self) -> str:
        return f"{self.name:<22} {self.nats:>8.4f} {self.bits:>8.4f} {self.tokens:>10,}"


TABLE_HEADER = f"{'model':<22} {'nats/tok':>8} {'bits/tok':>8} {'tokens':>10}"


@torch.inference_mode()
def model_loss(model, windows: FixedWindows, batch_size: int = 8, name: str = "model") -> HeldOutLoss:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = [windows[i] for i in range(start, min(start + batch_size, len(windows)))]
        x = torch.stack([b[0] for b in batch]).to(device)
        y = torch.stack([b[1] for b in batch]).to(device)
        logits = model(x).float()
        total += F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return HeldOutLoss(name, total / count, count)


def _targets(windows: FixedWindows) -> tuple[np.ndarray, np.ndarray]:
    """(previous token, target) for every scored position of the windows."""
    xs, ys = zip(*(windows[i] for i in range(len(windows))), strict=True)
    return torch.stack(xs).numpy().ravel(), torch.stack(ys).numpy().ravel()


def unigram_loss(
    train_tokens: np.ndarray, windows: FixedWindows, vocab_size: int, alpha: float = 0.5
) -> HeldOutLoss:
    """Token frequencies of the training split (add-alpha smoothing so unseen tokens cost finitely)."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size) + alpha
    log_p = np.log(counts / counts.sum())
    _, targets = _targets(windows)
    return HeldOutLoss("unigram", float(-log_p[targets].mean()), targets.size)


def bigram_loss(
    train_tokens: np.ndarray, windows: FixedWindows, vocab_size: int, alpha: float = 0.1
) -> HeldOutLoss:
    """P(next | previous) from training-split counts, add-alpha smoothed."""
    t = np.asarray(train_tokens, dtype=np.int64)
    counts = np.bincount(t[:-1] * vocab_size + t[1:], minlength=vocab_size * vocab_size)
    counts = counts.reshape(vocab_size, vocab_size).astype(np.float64) + alpha
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    previous, targets = _targets(windows)
    return HeldOutLoss("bigram", float(-log_p[previous, targets].mean()), targets.size)


def loss_table(
    model,
    data_dir: str | Path,
    split: str = "validation",
    max_windows: int | None = None,
    batch_size: int = 8,
    baselines: bool = True,
) -> list[str]:
    """The held-out loss table as lines of text: what was scored, the header, the model, then the
    unigram and bigram baselines counted on the train split (`musicgpt evaluate`, `musicgpt demo`)."""
    windows = FixedWindows(TokenShard(data_dir, split), model.config.block_size, max_windows)
    rows = [model_loss(model, windows, batch_size)]
    if baselines:
        train = TokenShard(data_dir, "train").tokens
        rows += [
            unigram_loss(train, windows, model.config.vocab_size),
            bigram_loss(train, windows, model.config.vocab_size),
        ]
    return [
        f"{split} split of {data_dir}: {len(windows)} windows of {model.config.block_size} tokens",
        TABLE_HEADER,
    ] + [r.row() for r in rows]


@torch.inference_mode()
def context_loss(
    model,
    tokens: np.ndarray,
    context: int,
    scored: int,
    first_target: int,
    batch_size: int = 4,
    name: str | None = None,
) -> HeldOutLoss:
    """Loss on fixed targets with `context` tokens of window: how much a longer view helps.

    The targets are tokens[first_target:], in chunks of `scored`; each chunk is the last `scored`
    positions of a window of `context` tokens, so every target sees at least `context - scored`
    tokens before it. Every context length scores the same tokens (first_target must be at least
    the longest context), so their losses compare directly. A relative-attention model can take
    contexts longer than its training window; a learned-position one cannot.
    """
    if not scored <= context <= first_target:
        raise ValueError(f"need scored <= context <= first_target, got {scored}, {context}, {first_target}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = np.asarray(tokens, dtype=np.int64)
    ends = range(first_target + scored, len(tokens) + 1, scored)  # exclusive end of each chunk of targets
    total, count = 0.0, 0
    ends = list(ends)
    for b in range(0, len(ends), batch_size):
        rows = [tokens[e - context - 1 : e] for e in ends[b : b + batch_size]]
        window = torch.as_tensor(np.stack(rows), device=device)
        logits = model(window[:, :-1]).float()[:, -scored:]
        targets = window[:, -scored:]
        total += F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
        ).item()
        count += targets.numel()
    model.train(was_training)
    return HeldOutLoss(name or f"context {context}", total / max(count, 1), count)


def _continuation_windows(model, tokens: np.ndarray, context: int):
    """Yield (first, end, logp): log-distributions (end - first, V) of tokens[first:end], each
    given the ones before it, read through windows of `context` tokens as a continuation reads
    them: token i sees the last context // 2 to context tokens (all of them near the start)."""
    device = next(model.parameters()).device
    N = len(tokens)
    stride = max(1, context // 2)
    # a window reads tokens[s : end] and scores the targets the previous window left (from `first`)
    for s in range(0, max(1, N - 1), stride):
        end = min(N, s + context + 1)
        first = 1 if s == 0 else s + context - stride + 1
        x = torch.as_tensor(tokens[s : end - 1], device=device)[None]
        logp = model(x).float().log_softmax(-1)[0]  # (T, V): position t predicts tokens[s + t + 1]
        yield first, end, logp[first - s - 1 :]
        if end == N:
            break


@torch.inference_mode()
def token_log_probs(model, tokens: np.ndarray, context: int) -> np.ndarray:
    """(N,) the model's log p of every token of one piece given the ones before it, read through
    windows of `context` tokens as a continuation reads them (`_continuation_windows`). Index 0
    has no context: NaN."""
    was_training = model.training
    model.eval()
    tokens = np.asarray(tokens, dtype=np.int64)
    out = np.full(len(tokens), np.nan)
    for first, end, logp in _continuation_windows(model, tokens, context):
        targets = torch.as_tensor(tokens[first:end], device=logp.device)
        out[first:end] = logp.gather(-1, targets[:, None])[:, 0].cpu().numpy()
    model.train(was_training)
    return out


@torch.inference_mode()
def position_log_probs(model, tokens: np.ndarray, context: int) -> np.ndarray:
    """(N, V) float32: the whole log-distribution of each token given the ones before it (windows
    as `token_log_probs` reads them), for a sampler to reshape. Row 0 has no context: NaN."""
    was_training = model.training
    model.eval()
    tokens = np.asarray(tokens, dtype=np.int64)
    out = np.full((len(tokens), model.config.vocab_size), np.nan, dtype=np.float32)
    for first, end, logp in _continuation_windows(model, tokens, context):
        out[first:end] = logp.cpu().numpy()
    model.train(was_training)
    return out
