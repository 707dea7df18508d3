"""The interfaces of tokenizers, and the one place that tells music from text.

The model, trainer and sampler only see token ids; everything that knows what an id *means*
sits behind these interfaces. Every tokenizer declares its `modality`; what only music has (notes,
a clock, a generation grammar) is the `MusicTokenizer` interface, what only text has is
`TextTokenizer`, and `is_music` / `require_music` are how the rest of the code asks which one it
holds: no module compares tokenizer names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeGuard, runtime_checkable

import numpy as np

from musicgpt.errors import MusicGPTError

if TYPE_CHECKING:
    import pretty_midi

    from musicgpt.tokenizers.notes import Notes

Modality = Literal["music", "text"]


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer offers, music or text."""

    name: str  # registry name, e.g. "performance", "bytes", "gpt2-bpe"
    modality: Modality  # what its ids stand for: "music" (a MusicTokenizer) or "text" (a TextTokenizer)
    vocab_size: int  # ids are 0 .. vocab_size-1
    eos_id: int  # ends a piece / document; shards put one after every piece
    suffixes: tuple[str, ...]  # the files `musicgpt data build` reads, e.g. (".mid", ".midi")

    def encode(self, source: Any) -> np.ndarray:
        """Source (file path or in-memory object) -> 1-D int array of ids."""

    def id_to_token(self, i: int) -> str:
        """A readable name for one id."""

    def to_dict(self) -> dict[str, Any]:
        """Settings, including "name", so that `load_tokenizer(d)` rebuilds an equal tokenizer."""

    def save(self, path) -> None: ...


@runtime_checkable
class MusicTokenizer(Tokenizer, Protocol):
    """A tokenizer of performances: its ids are notes and time, and it knows the clock."""

    modality: Literal["music"]

    def decode(self, ids: Any) -> pretty_midi.PrettyMIDI:
        """Ids -> a MIDI performance. Accepts any sequence of valid ids."""

    def decode_notes(self, ids: Any) -> Notes:
        """Ids -> the notes they play, each with the tokens that start and end it."""

    def token_times(self, ids: Any) -> np.ndarray:
        """(T,) seconds: the clock when each token is read."""

    def grammar(self, batch_size: int, max_note_tokens: int | None = None) -> LogitsMask:
        """A LogitsMask that keeps generated sequences well formed."""


@runtime_checkable
class TextTokenizer(Tokenizer, Protocol):
    """A tokenizer of text: its ids are bytes or pieces of words."""

    modality: Literal["text"]

    def decode(self, ids: Any) -> str:
        """Ids -> text. Accepts any sequence of valid ids (bytes that are not UTF-8 become U+FFFD)."""

    def decode_bytes(self, ids: Any) -> bytes:
        """Ids -> the exact bytes, for an incremental UTF-8 decoder (streaming)."""


def is_music(tokenizer: Tokenizer) -> TypeGuard[MusicTokenizer]:
    """Whether `tokenizer` reads music (a MusicTokenizer) rather than text."""
    return tokenizer.modality == "music"


def require_music(tokenizer: Tokenizer | None, what: str, source: str = "the model") -> MusicTokenizer:
    """`tokenizer` as a MusicTokenizer, else a MusicGPTError in one line.

    what: the command or option that needs music ("serve", "--continuations"); source: where the
    tokenizer came from (a checkpoint path). E.g. "runs/text/model is a text model (bytes):
    --continuations needs a music model".
    """
    if tokenizer is None:
        raise MusicGPTError(f"{source} has no tokenizer: {what} needs a music model")
    if not is_music(tokenizer):
        raise MusicGPTError(f"{source} is a text model ({tokenizer.name}): {what} needs a music model")
    return tokenizer


class LogitsMask(Protocol):
    """A grammar that forbids tokens during generation (see `musicgpt.generation`).

    The sampler calls `start` once with the prompt, then for every step `allowed()` before
    sampling and `advance(tokens)` with the tokens it chose. A mask may also have `group_of_id`,
    a (vocab_size,) int array: the sampler then keeps each group's probability mass under the
    mask instead of renormalizing over all allowed tokens (see `SamplingConfig.mask_mode`).
    Optional hooks the sampler uses where a mask has them (`generation.decode.sampler_logits`):
    `logit_bias()` a (batch, vocab) prior added to the logits, `copy_cache(history, strength)`
    the prompt cache to mix in, `fold_logits(logits)` moving the mass of tokens the grammar caps
    onto the cap (piano: `generation.piano.PianoSamplingGrammar`).
    """

    def start(self, prompt: np.ndarray) -> None:
        """prompt: (batch, T) ids."""

    def allowed(self) -> np.ndarray:
        """(batch, vocab_size) bool: True where a token may come next."""

    def advance(self, tokens: np.ndarray) -> None:
        """tokens: (batch,) ids just chosen."""
