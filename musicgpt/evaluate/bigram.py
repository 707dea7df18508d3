"""A bigram model of tokens, a language model the music sampler can run.

The floor of the continuation table: P(next token | previous token) counted on the training
split. It goes through `continue_piano`, the very sampler the GPT goes through (the same
grammar, the same stop rule, the same trimming to S seconds), so the only difference between
the two rows is the model. It implements `musicgpt.generation.protocol.SamplerModel`, what the
sampler needs of a model, and nothing else; a test runs it through `continue_piano`, so a sampler
that starts to need more fails there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from musicgpt.model.gpt import ModelInputError

# Add-alpha smoothing for sampling: just enough that every token the grammar allows after any
# token has some probability (a row of zeros under the mask could not be sampled), small enough
# that a rare previous token (a few dozen counts) still follows its counts rather than noise.
SAMPLING_ALPHA = 0.01


@dataclass(frozen=True)
class BigramConfig:
    vocab_size: int
    block_size: int = 2**20  # any length: only the last token is read; the caller's max_context decides
    relative: bool = False  # learned positions, as far as the sampler is concerned (there are none)


class BigramLM(nn.Module):
    """Logits at every position are log P(next | the token at that position); no cache needed."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        vocab_size = log_probs.shape[0]
        if log_probs.shape != (vocab_size, vocab_size):
            raise ValueError(f"log_probs must be (vocab, vocab), got {tuple(log_probs.shape)}")
        self.config = BigramConfig(vocab_size)
        # a row per previous token: the row *is* the next token's log-probabilities
        self.register_buffer("log_probs", log_probs.float())

    @property
    def device(self) -> torch.device:
        return self.log_probs.device

    @classmethod
    def count(cls, tokens: np.ndarray, vocab_size: int, alpha: float = SAMPLING_ALPHA) -> BigramLM:
        """Count (previous, next) pairs of `tokens` (pieces back to back, EOS between them)."""
        t = np.asarray(tokens, dtype=np.int64)
        counts = np.bincount(t[:-1] * vocab_size + t[1:], minlength=vocab_size * vocab_size)
        counts = counts.reshape(vocab_size, vocab_size).astype(np.float64) + alpha
        return cls(torch.from_numpy(np.log(counts / counts.sum(axis=1, keepdims=True))))

    def check_input(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.numel() == 0:
            raise ModelInputError("idx must be a non-empty (batch, T) tensor of token ids")
        if int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size:
            raise ModelInputError(f"token ids must be in 0..{self.config.vocab_size - 1}")

    def setup_cache(self, batch_size: int, max_seq_len: int, device=None, dtype=None) -> None:
        """Nothing to cache: the next token depends on the last one only."""

    def forward(
        self,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        validate: bool = True,
        last_only: bool = False,
        window: int | None = None,  # nothing to attend over: the last token is all it reads
    ) -> torch.Tensor:
        """idx (B, T) -> logits (B, T, vocab) (T = 1 with last_only): log P(next | each token)."""
        if validate:
            self.check_input(idx, input_pos)
        return self.log_probs[idx[:, -1:] if last_only else idx]
