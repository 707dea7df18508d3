"""Text tokenizers: raw bytes, and GPT-2's byte-level BPE (through the `tokenizers` library).

Both follow `musicgpt.tokenizers.base.Tokenizer`. Conventions shared by the two:

- `encode(source)`: a `str` is the text itself (never a file name), `bytes` are taken as given,
  a `Path` is a file to read. Ids come back as a 1-D int32 array, as from the performance
  tokenizer; empty input gives an empty array.
- `decode(ids)` renders the end-of-text id as the literal text "<|endoftext|>", as GPT-2 does,
  so document boundaries stay visible; bytes that are not valid UTF-8 (a model can emit any
  sequence) become U+FFFD. `decode_bytes(ids)` gives the exact bytes, for streaming output
  through an incremental UTF-8 decoder.
- An id outside the vocabulary is an error that names the id.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from musicgpt.errors import ConfigError, MusicGPTError, check_known_keys
from musicgpt.io import atomic_write_json

EOS_TEXT = "<|endoftext|>"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MusicGPTError(f"{path}: no such file") from None
    except OSError as e:
        raise MusicGPTError(f"{path}: cannot read ({e.strerror or e})") from None


def _as_ids(ids: Any, tokenizer: Any) -> np.ndarray:
    """Any 1-D sequence of ints (list, numpy array, CPU tensor) -> int64 array, each id checked."""
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise MusicGPTError(
            f"{tokenizer.name}: decode expects a 1-D sequence of int ids, got {arr.dtype} {arr.shape}"
        )
    bad = (arr < 0) | (arr >= tokenizer.vocab_size)
    if bad.any():
        raise MusicGPTError(
            f"{tokenizer.name}: token id {int(arr[bad.argmax()])} is outside the vocabulary 0..{tokenizer.vocab_size - 1}"
        )
    return arr.astype(np.int64, copy=False)


def _readable(b: bytes) -> str:
    """Show a token's bytes as text, escaping what would not print (newline -> \\x0a, stray byte -> \\xe2)."""
    text = b.decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() else _escape(ord(c)) for c in text)


def _escape(o: int) -> str:
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def _source_bytes(source: str | bytes | Path) -> bytes:
    if isinstance(source, str):
        return source.encode("utf-8")
    if isinstance(source, Path):
        return _read_bytes(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    raise TypeError(f"encode takes str, bytes or Path, not {type(source).__name__}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(_read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MusicGPTError(f"{path}: not a JSON tokenizer file ({e})") from None


class _TextTokenizer(ABC):
    """What the two text tokenizers share: settings as a dict, save/load, readable ids."""

    name: str
    modality: ClassVar[Literal["text"]] = "text"
    suffixes: ClassVar[tuple[str, ...]] = (".txt", ".md")  # what `musicgpt data build` reads
    vocab_size: int
    eos_id: int
    _settings: frozenset[str] = frozenset()  # keys that to_dict adds beside "name"
    _source: dict[str, str] = {}
    _id_bytes: list[bytes]  # id -> the bytes it stands for

    @abstractmethod
    def decode_bytes(self, ids: Any) -> bytes:
        """Ids -> the exact bytes they stand for."""

    def decode(self, ids: Any) -> str:
        """Ids -> text; invalid UTF-8 becomes U+FFFD (as in transformers' GPT-2 decode), each eos id
        becomes "<|endoftext|>"."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def id_to_token(self, i: int) -> str:
        """The token's bytes, readable: ' the', '\\x0a', '\\xf0\\x9f' (part of an emoji), '<|endoftext|>'."""
        if not 0 <= i < self.vocab_size:
            raise MusicGPTError(
                f"{self.name}: token id {i} is outside the vocabulary 0..{self.vocab_size - 1}"
            )
        return _readable(self._id_bytes[i])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self._source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        if d.get("name") != cls.name:
            raise ConfigError(f"not a {cls.name!r} tokenizer: {d!r}")
        check_known_keys(set(d) - {"name"}, cls._settings, "settings", f"{cls.name} tokenizer: ")
        return cls(**{k: v for k, v in d.items() if k != "name"})

    def save(self, path: str | Path) -> None:
        """Write the settings as JSON (atomically); `load_tokenizer(path)` reads them back."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path):
        return cls.from_dict(_read_json(Path(path)))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._source or ''})"


class ByteTokenizer(_TextTokenizer):
    """Ids 0-255 are the bytes themselves, 256 is <|endoftext|>. Takes any input, even non-UTF-8."""

    name = "bytes"
    vocab_size = 257
    eos_id = 256
    _id_bytes = [bytes([i]) for i in range(256)] + [EOS_TEXT.encode()]

    def encode(self, source: str | bytes | Path) -> np.ndarray:
        """Text (UTF-8 encoded), raw bytes, or a file's bytes -> ids. "<|endoftext|>" in the input is
        just 13 bytes here: only the data builder puts eos ids between documents."""
        return np.frombuffer(_source_bytes(source), dtype=np.uint8).astype(np.int32)

    def decode_bytes(self, ids: Any) -> bytes:
        """Ids -> the exact bytes; each eos id becomes b"<|endoftext|>"."""
        arr = _as_ids(ids, self)
        eos_at = np.flatnonzero(arr == self.eos_id)
        pieces = np.split(arr, eos_at)  # every piece after the first starts with one eos id
        parts = [pieces[0]] + [p[1:] for p in pieces[1:]]
        return EOS_TEXT.encode().join(p.astype(np.uint8).tobytes() for p in parts)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's vocabulary spells each byte with one printable char; this maps the char back."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in kept]  # control chars and space move to 256+
    return {chr(b): b for b in kept} | {chr(256 + n): b for n, b in enumerate(shifted)}


def _files_model(vocab: Path, merges: Path):
    from tokenizers import models

    for p in (vocab, merges):
        if not p.is_file():  # our one-line error, not the Rust one
            raise MusicGPTError(f"{p}: no such file")
    try:
        return models.BPE.from_file(str(vocab), str(merges))
    except Exception as e:
        raise MusicGPTError(f"{vocab} + {merges}: not a GPT-2 vocabulary ({e})") from None


def _hf_dir_model(d: Path):
    if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        return _files_model(d / "vocab.json", d / "merges.txt")
    from tokenizers import models

    if not (d / "tokenizer.json").is_file():  # transformers 5 saves only tokenizer.json
        raise MusicGPTError(
            f"{d}: no vocab.json + merges.txt, nor tokenizer.json: not a Hugging Face GPT-2 directory"
        )
    model = _read_json(d / "tokenizer.json").get("model", {})
    if model.get("type") != "BPE":
        raise MusicGPTError(f"{d / 'tokenizer.json'}: not a BPE tokenizer (model type {model.get('type')!r})")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return models.BPE(vocab=model["vocab"], merges=merges)


class GPT2BPETokenizer(_TextTokenizer):
    """GPT-2's byte-level BPE (50,257 ids, <|endoftext|> = 50256), run by Hugging Face `tokenizers`.

    Build it with `from_files(encoder.json, vocab.bpe)` (OpenAI's names), `from_hf_dir(dir)`, or
    with no argument for the copy the package carries (musicgpt/assets/gpt2, see
    `musicgpt.resources`). Ids equal GPT2TokenizerFast's.
    """

    name = "gpt2-bpe"
    _settings = frozenset({"vocab_file", "merges_file", "hf_dir"})

    def __init__(
        self, vocab_file: str | None = None, merges_file: str | None = None, hf_dir: str | None = None
    ):
        """Prefer the named constructors. No argument means the bundled copy (`to_dict` then records
        no file, so the settings load on any machine that has musicgpt)."""
        from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers

        if hf_dir is not None and vocab_file is None and merges_file is None:
            self._source = {"hf_dir": str(hf_dir)}
            model = _hf_dir_model(Path(hf_dir))
        elif hf_dir is None and (vocab_file is None) == (merges_file is None):
            if vocab_file is None:
                from musicgpt.resources import gpt2_vocabulary

                self._source = {}
                model = _files_model(*gpt2_vocabulary())
            else:
                self._source = {"vocab_file": str(vocab_file), "merges_file": str(merges_file)}
                model = _files_model(Path(vocab_file), Path(merges_file))
        else:
            raise ConfigError("gpt2-bpe: give vocab_file and merges_file, or hf_dir, or nothing")
        self._tok = Tokenizer(model)
        self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self._tok.decoder = decoders.ByteLevel()
        self._tok.add_special_tokens([AddedToken(EOS_TEXT, special=True, normalized=False)])
        eos = self._tok.token_to_id(EOS_TEXT)
        if eos is None:
            raise MusicGPTError(f"{self._source}: the vocabulary has no {EOS_TEXT} token")
        self.eos_id: int = eos
        self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> GPT2BPETokenizer:
        """OpenAI's `encoder.json` + `vocab.bpe` (the same files as HF's vocab.json + merges.txt)."""
        return cls(str(Path(encoder_json).resolve()), str(Path(vocab_bpe).resolve()))

    @classmethod
    def from_hf_dir(cls, directory: str | Path) -> GPT2BPETokenizer:
        """A Hugging Face GPT-2 directory: vocab.json + merges.txt, or else tokenizer.json."""
        return cls(hf_dir=str(Path(directory).resolve()))

    def encode(self, source: str | bytes | Path, allow_special: bool = True) -> np.ndarray:
        """Text, UTF-8 bytes or a UTF-8 file -> ids.

        With `allow_special` (the default, as in GPT2TokenizerFast) a literal "<|endoftext|>" in the
        text becomes the eos id; without it, it is spelled as ordinary text (tiktoken's default).
        """
        if not isinstance(source, str):
            data = _source_bytes(source)
            try:
                source = data.decode("utf-8")
            except UnicodeDecodeError as e:
                what = source if isinstance(source, Path) else "input bytes"
                raise MusicGPTError(
                    f"{what}: not UTF-8 at byte offset {e.start} ({e.reason}); "
                    "GPT-2 BPE reads UTF-8 text (the 'bytes' tokenizer takes any file)"
                ) from None
        tok = self._tok if allow_special else self._plain_tok
        return np.array(tok.encode(source, add_special_tokens=False).ids, dtype=np.int32)

    @cached_property
    def _plain_tok(self):
        """A twin that reads "<|endoftext|>" as text; a flag on the shared one would race between threads."""
        from tokenizers import Tokenizer

        plain = Tokenizer.from_str(self._tok.to_str())
        plain.encode_special_tokens = True
        return plain

    @cached_property
    def _id_bytes(self) -> list[bytes]:
        to_byte = _byte_decoder()
        table = [b""] * self.vocab_size
        for token, i in self._tok.get_vocab(with_added_tokens=False).items():
            table[i] = bytes(to_byte[c] for c in token)
        table[self.eos_id] = EOS_TEXT.encode()
        return table

    def decode_bytes(self, ids: Any) -> bytes:
        """Ids -> the exact bytes (a token may end inside a multi-byte character)."""
        table = self._id_bytes
        return b"".join([table[i] for i in _as_ids(ids, self).tolist()])


class TextStream:
    """Text of a token stream as it grows, at a constant cost per token.

    A UTF-8 character (and so a BPE token's text) may span tokens: each token's bytes go through
    an incremental UTF-8 decoder, which returns the characters completed so far and keeps the
    bytes of an unfinished one for the next token. Invalid bytes become U+FFFD, as in `decode`.
    """

    def __init__(self, tokenizer: _TextTokenizer):
        import codecs

        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        """The text that `token` completes (often "" inside a multi-byte character)."""
        return self._decoder.decode(self.tokenizer.decode_bytes([token]))

    def finish(self) -> str:
        """What is left at the end (U+FFFD for a character cut off by the end of the stream)."""
        return self._decoder.decode(b"", final=True)
