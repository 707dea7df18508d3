"""What the sampler needs of a model: `SamplerModel`, a typing.Protocol.

`generate`, `generate_stream` and `continue_piano` run any model that has these, not only the
GPT: the bigram floor of the continuation table (evaluate/bigram.py) is the other one. Nothing
else of a model is read by the sampling path; a test runs the bigram model through it, so a
sampler that starts to need more fails there.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


class SamplerConfig(Protocol):
    """The three hyperparameters the sampler reads."""

    vocab_size: int
    block_size: int  # the default context, and the most a model with absolute positions can see
    relative: bool  # attention sees only distances: a ring-buffer cache, contexts past block_size


@runtime_checkable
class SamplerModel(Protocol):
    config: SamplerConfig
    training: bool

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are (the prompt and the generated tokens go there)."""
        ...

    def check_input(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None) -> None:
        """Raise a MusicGPTError unless `model(idx, input_pos)` can run."""
        ...

    def setup_cache(
        self,
        batch_size: int,
        max_seq_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Make room for `batch_size` rows of `max_seq_len` cached positions."""
        ...

    def __call__(
        self,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        validate: bool = True,
        last_only: bool = False,
        window: int | None = None,
    ) -> torch.Tensor:
        """idx (B, T) -> logits (B, T or 1, vocab_size); see `GPT.forward`."""
        ...

    def train(self, mode: bool = True) -> SamplerModel: ...

    def eval(self) -> SamplerModel: ...
