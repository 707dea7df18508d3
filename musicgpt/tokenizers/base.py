"""The small interface every tokenizer offers, music or text.

The model, trainer and sampler only see token ids; everything that knows what an id *means*
sits behind this interface.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Tokenizer(Protocol):
    name: str  # registry name, e.g. "performance", "bytes", "gpt2-bpe"
    vocab_size: int  # ids are 0 .. vocab_size-1
    eos_id: int  # ends a piece / document; shards put one after every piece

    def encode(self, source: Any) -> np.ndarray:
        """Source (file path or in-memory object) -> 1-D int array of ids."""

    def decode(self, ids: Any) -> Any:
        """Ids -> a PrettyMIDI (music) or a str (text). Accepts any sequence of valid ids."""

    def id_to_token(self, i: int) -> str:
        """A readable name for one id."""

    def to_dict(self) -> dict[str, Any]:
        """Settings, including "name", so that `load_tokenizer(d)` rebuilds an equal tokenizer."""

    def save(self, path) -> None: ...


class LogitsMask(Protocol):
    """A grammar that forbids tokens during generation (see `musicgpt.generation`).

    The sampler calls `start` once with the prompt, then for every step `allowed()` before
    sampling and `advance(tokens)` with the tokens it chose. A mask may also have `group_of_id`,
    a (vocab_size,) int array: the sampler then keeps each group's probability mass under the
    mask instead of renormalizing over all allowed tokens (see `SamplingConfig.mask_mode`).
    """

    def start(self, prompt: np.ndarray) -> None:
        """prompt: (batch, T) ids."""

    def allowed(self) -> np.ndarray:
        """(batch, vocab_size) bool: True where a token may come next."""

    def advance(self, tokens: np.ndarray) -> None:
        """tokens: (batch,) ids just chosen."""
