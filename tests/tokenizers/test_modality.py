"""Music or text: each tokenizer declares it, and one predicate reads it."""

from __future__ import annotations

import pytest

from musicgpt.errors import MusicGPTError
from musicgpt.tokenizers import (
    TOKENIZERS,
    MusicTokenizer,
    TextTokenizer,
    Tokenizer,
    is_music,
    load_tokenizer,
    require_music,
    tokenizer_class,
)


@pytest.mark.parametrize(
    "name, modality", [("performance", "music"), ("bytes", "text"), ("gpt2-bpe", "text")]
)
def test_every_tokenizer_declares_its_modality(name, modality):
    assert set(TOKENIZERS) == {"performance", "bytes", "gpt2-bpe"}
    cls = tokenizer_class(name)
    assert cls.modality == modality and is_music(cls) == (modality == "music")  # without building one
    tok = load_tokenizer(name)
    assert isinstance(tok, Tokenizer) and is_music(tok) == (modality == "music")
    # the typed interface matches the declaration
    assert isinstance(tok, MusicTokenizer if modality == "music" else TextTokenizer)
    assert tok.suffixes == ((".mid", ".midi") if modality == "music" else (".txt", ".md"))


def test_require_music_says_what_needs_it_and_why():
    music = load_tokenizer("performance")
    assert require_music(music, "serve") is music
    with pytest.raises(MusicGPTError, match=r"^m/text is a text model \(bytes\): serve needs a music model$"):
        require_music(load_tokenizer("bytes"), "serve", "m/text")
    with pytest.raises(MusicGPTError, match="has no tokenizer: --continuations needs a music model"):
        require_music(None, "--continuations")
