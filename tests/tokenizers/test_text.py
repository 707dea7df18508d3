"""Text tokenizers on real text: byte-level round trips, GPT-2 BPE ids against transformers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import GPT2_VOCAB_DIR, TEXT_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicgpt.errors import ConfigError, MusicGPTError
from musicgpt.tokenizers import load_tokenizer
from musicgpt.tokenizers.base import Tokenizer
from musicgpt.tokenizers.text import ByteTokenizer, GPT2BPETokenizer

SHERLOCK = TEXT_DIR / "sherlock.txt"
EOS = "<|endoftext|>"

# Text hypothesis draws from: any code point UTF-8 can carry (no lone surrogates), with the
# troublemakers made likely: NUL, combining marks, astral emoji, whitespace runs, GPT-2's eos text.
unicode_text = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x00", "\u0301", "\u20dd", "😀", "👍🏽", "𝄞", "  ", "\n\n", "\r\n", "'s", EOS]),
    ),
    max_size=60,
).map("".join)

# strings where GPT-2's pre-tokenizer regex and its special token matter
TRICKY = [
    "I'm sure you're right, they'll say we've done what he'd do; it's Holmes's, don't.",
    "I'M SHOUTING 'quoted' and O'Neil's",
    "   leading spaces",
    "trailing spaces   ",
    "a  b   c    d\t\te \t \n f",
    "\n\n\n\nparagraphs\n\n\n",
    "line\r\nbreaks\r\n",
    "emoji 😀👍🏽👨‍👩‍👧 and 𝄞 music",
    "café naïve e\u0301 Ὀδυσσεύς 東京 مرحبا",
    "numbers 12345 3.14159 1,000,000 2nd",
    "NUL\x00inside",
    EOS,
    f"one{EOS}two",
    f" {EOS} spaced {EOS}{EOS}",
    "<|endoftext",
    "",
]


@pytest.fixture(scope="module")
def sherlock_text() -> str:
    """The file's exact text: a BOM and CRLF line ends (read_text would turn them into LF)."""
    return SHERLOCK.read_bytes().decode("utf-8")


@pytest.fixture(scope="module")
def bpe() -> GPT2BPETokenizer:
    return GPT2BPETokenizer()


@pytest.fixture(scope="module")
def hf_vocab_dir(tmp_path_factory):
    """The project's GPT-2 files under Hugging Face's names: encoder.json IS vocab.json, vocab.bpe IS merges.txt."""
    d = tmp_path_factory.mktemp("hf_vocab")
    shutil.copy(GPT2_VOCAB_DIR / "encoder.json", d / "vocab.json")
    shutil.copy(GPT2_VOCAB_DIR / "vocab.bpe", d / "merges.txt")
    return d


@pytest.fixture(scope="module")
def hf_ref(hf_vocab_dir):
    """transformers' GPT-2 tokenizer from the same files, offline. (In transformers 5 the constructor's
    vocab_file= is silently ignored, giving an empty vocabulary; from_pretrained reads the files.)"""
    transformers = pytest.importorskip("transformers")
    ref = transformers.GPT2TokenizerFast.from_pretrained(str(hf_vocab_dir))
    assert len(ref) == 50257
    return ref


def non_utf8_copy(tmp_path, offset: int):
    """sherlock.txt with a Latin-1 'é' put at `offset`: 0xE9 then an ASCII byte is not UTF-8."""
    data = SHERLOCK.read_bytes()
    assert data[offset] < 0x80
    path = tmp_path / "latin1.txt"
    path.write_bytes(data[:offset] + b"\xe9" + data[offset:])
    return path, data[:offset] + b"\xe9" + data[offset:]


# ---------------------------------------------------------------- byte-level


def test_byte_vocab_and_protocol():
    tok = ByteTokenizer()
    assert (tok.name, tok.vocab_size, tok.eos_id) == ("bytes", 257, 256)
    assert isinstance(tok, Tokenizer)


def test_byte_round_trip_sherlock(sherlock_text):
    tok = ByteTokenizer()
    data = SHERLOCK.read_bytes()
    ids = tok.encode(SHERLOCK)
    assert ids.dtype == np.int32 and ids.shape == (len(data),)
    assert ids[:3].tolist() == list(data[:3])
    assert np.array_equal(ids, tok.encode(sherlock_text))
    assert np.array_equal(ids, tok.encode(data))
    assert tok.decode_bytes(ids) == data
    assert tok.decode(ids) == sherlock_text
    assert tok.decode(torch.from_numpy(ids[:1000])) == tok.decode(
        ids[:1000].tolist()
    )  # as a sampler gives them


@settings(max_examples=300, deadline=None)
@given(unicode_text)
def test_byte_round_trip_random_unicode(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_byte_any_bytes_decode_exactly(data):
    tok = ByteTokenizer()
    ids = tok.encode(data)
    assert tok.decode_bytes(ids) == data
    assert tok.decode(ids) == data.decode("utf-8", errors="replace")


def test_byte_takes_a_file_that_is_not_utf8(tmp_path):
    path, data = non_utf8_copy(tmp_path, 1000)
    tok = ByteTokenizer()
    ids = tok.encode(path)
    assert ids[1000] == 0xE9 and len(ids) == len(data)
    assert tok.decode_bytes(ids) == data
    # what a model's invalid UTF-8 looks like as text
    assert tok.decode(ids) == data[:1000].decode() + "\ufffd" + data[1001:].decode()


def test_byte_eos_decodes_to_its_text():
    tok = ByteTokenizer()
    assert tok.decode([72, 105, 256, 256, 33]) == f"Hi{EOS}{EOS}!"
    assert tok.decode_bytes([256]) == EOS.encode()
    assert 256 not in tok.encode(EOS).tolist()  # in text it is 13 ordinary bytes
    assert len(tok.encode(EOS)) == 13


def test_byte_id_to_token():
    tok = ByteTokenizer()
    names = [tok.id_to_token(i) for i in (0, 10, 32, 65, 92, 0x7F, 0xE9, 256)]
    assert names == ["\\x00", "\\x0a", " ", "A", "\\", "\\x7f", "\\xe9", EOS]
    assert len({tok.id_to_token(i) for i in range(257)}) == 257


def test_byte_empty_and_missing(tmp_path):
    tok = ByteTokenizer()
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    for source in ("", b"", empty):
        ids = tok.encode(source)
        assert ids.shape == (0,) and ids.dtype == np.int32
    assert tok.decode([]) == "" and tok.decode(np.zeros(0, dtype=np.int64)) == ""
    with pytest.raises(MusicGPTError, match=r"nope\.txt: no such file"):
        tok.encode(tmp_path / "nope.txt")


@pytest.mark.parametrize("bad", [257, -1, 1000])
def test_byte_ids_outside_vocab(bad):
    tok = ByteTokenizer()
    with pytest.raises(MusicGPTError, match=rf"token id {bad} is outside the vocabulary 0\.\.256"):
        tok.decode([65, bad, 66])
    with pytest.raises(MusicGPTError, match=rf"token id {bad} "):
        tok.id_to_token(bad)


def test_byte_save_load(tmp_path):
    tok = ByteTokenizer()
    tok.save(tmp_path / "tok.json")
    assert json.loads((tmp_path / "tok.json").read_text()) == {"name": "bytes"}
    for loaded in (load_tokenizer(tmp_path / "tok.json"), ByteTokenizer.load(tmp_path / "tok.json")):
        assert isinstance(loaded, ByteTokenizer) and loaded == tok
    assert load_tokenizer({"name": "bytes"}) == tok and load_tokenizer("bytes") == tok
    with pytest.raises(ConfigError, match="unknown settings"):
        ByteTokenizer.from_dict({"name": "bytes", "lowercase": True})


# ---------------------------------------------------------------- GPT-2 BPE


def test_bpe_vocab_and_protocol(bpe):
    assert (bpe.name, bpe.vocab_size, bpe.eos_id) == ("gpt2-bpe", 50257, 50256)
    assert isinstance(bpe, Tokenizer)
    assert bpe.to_dict() == {"name": "gpt2-bpe"}  # the bundled vocabulary: no file named


def test_bpe_matches_transformers_on_sherlock(bpe, hf_ref, sherlock_text):
    ids = bpe.encode(SHERLOCK)
    assert ids.dtype == np.int32
    assert ids.tolist() == hf_ref(sherlock_text)["input_ids"]
    assert len(ids) == 163643  # the file as it is: BOM and CRLF line ends included
    assert bpe.decode(ids) == sherlock_text
    assert bpe.decode_bytes(ids) == SHERLOCK.read_bytes()


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_matches_transformers_on_tricky_text(bpe, hf_ref, text):
    ids = bpe.encode(text)
    assert ids.tolist() == hf_ref(text)["input_ids"]
    assert bpe.decode(ids) == text
    assert bpe.decode_bytes(ids) == text.encode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=unicode_text)
def test_bpe_matches_transformers_on_random_unicode(bpe, hf_ref, text):
    ids = bpe.encode(text)
    assert ids.tolist() == hf_ref(text)["input_ids"]
    assert bpe.decode(ids) == text


def test_bpe_eos_in_text(bpe, hf_ref):
    text = f"The end.{EOS}Chapter"
    ids = bpe.encode(text)
    assert ids.tolist().count(50256) == 1
    plain = bpe.encode(text, allow_special=False)
    assert 50256 not in plain.tolist()
    assert plain.tolist() == hf_ref(text, split_special_tokens=True)["input_ids"]
    assert bpe.decode(plain) == text == bpe.decode(ids)
    assert bpe.encode(text).tolist() == ids.tolist()  # the plain twin left the shared one alone


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(
        st.one_of(st.integers(0, 50256), st.sampled_from([30325, 222, 171, 119, 123, 13])), max_size=12
    )
)
def test_bpe_decode_matches_transformers_on_any_ids(bpe, hf_ref, ids):
    """Model output need not be UTF-8: the emoji/BOM byte pieces above, out of order, must read alike."""
    assert bpe.decode(ids) == hf_ref.decode(ids)


def test_bpe_tokens_split_inside_a_character(bpe):
    ids = bpe.encode("😀")
    assert len(ids) == 2  # GPT-2 spells this emoji with two byte pieces
    assert [bpe.decode_bytes([i]) for i in ids] == [b"\xf0\x9f\x98", b"\x80"]
    assert bpe.decode(ids[:1]) == "\ufffd"  # a lone piece is not UTF-8 text
    assert bpe.id_to_token(int(ids[0])) == "\\xf0\\x9f\\x98"


def test_bpe_id_to_token(bpe):
    assert [bpe.id_to_token(i) for i in (262, 198, 628, 0, 50256)] == [
        " the",
        "\\x0a",
        "\\x0a\\x0a",
        "!",
        EOS,
    ]
    assert bpe.decode([15496, 995]) == "Hello world"


def test_bpe_non_utf8_file_names_the_offset(bpe, tmp_path):
    path, data = non_utf8_copy(tmp_path, 1000)
    with pytest.raises(MusicGPTError, match=rf"{path.name}: not UTF-8 at byte offset 1000 "):
        bpe.encode(path)
    with pytest.raises(MusicGPTError, match=r"input bytes: not UTF-8 at byte offset 1000 "):
        bpe.encode(data)
    assert ByteTokenizer().decode_bytes(ByteTokenizer().encode(path)) == data  # bytes take it


def test_bpe_empty_and_missing(bpe, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    for source in ("", b"", empty):
        ids = bpe.encode(source)
        assert ids.shape == (0,) and ids.dtype == np.int32
    assert bpe.decode([]) == ""
    with pytest.raises(MusicGPTError, match=r"nope\.txt: no such file"):
        bpe.encode(tmp_path / "nope.txt")


@pytest.mark.parametrize("bad", [50257, -1])
def test_bpe_ids_outside_vocab(bpe, bad):
    with pytest.raises(MusicGPTError, match=rf"token id {bad} is outside the vocabulary 0\.\.50256"):
        bpe.decode([464, bad])
    with pytest.raises(MusicGPTError, match=rf"token id {bad} "):
        bpe.id_to_token(bad)


def test_bpe_from_files_save_load(bpe, hf_vocab_dir, tmp_path, sherlock_text):
    tok = GPT2BPETokenizer.from_files(hf_vocab_dir / "vocab.json", hf_vocab_dir / "merges.txt")
    assert tok.to_dict() == {
        "name": "gpt2-bpe",
        "vocab_file": str(hf_vocab_dir / "vocab.json"),
        "merges_file": str(hf_vocab_dir / "merges.txt"),
    }
    tok.save(tmp_path / "tok.json")
    loaded = load_tokenizer(tmp_path / "tok.json")
    assert isinstance(loaded, GPT2BPETokenizer) and loaded == tok and loaded != bpe
    chunk = sherlock_text[:20000]
    assert loaded.encode(chunk).tolist() == bpe.encode(chunk).tolist()


def test_bpe_project_copy_loads_from_any_working_dir(bpe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bpe.save("tok.json")
    assert (
        load_tokenizer("tok.json")
        == bpe
        == load_tokenizer({"name": "gpt2-bpe"})
        == load_tokenizer("gpt2-bpe")
    )


def test_bpe_from_hf_dir_saved_by_transformers(bpe, hf_ref, hf_vocab_dir, tmp_path, sherlock_text):
    hf_ref.save_pretrained(tmp_path / "saved")  # transformers 5 writes tokenizer.json, 4.x also vocab.json
    chunk = sherlock_text[100000:140000] + "".join(TRICKY)
    for d in (tmp_path / "saved", hf_vocab_dir):
        tok = GPT2BPETokenizer.from_hf_dir(d)
        assert (tok.vocab_size, tok.eos_id) == (50257, 50256)
        assert tok.encode(chunk).tolist() == bpe.encode(chunk).tolist() == hf_ref(chunk)["input_ids"]
        assert tok.to_dict() == {"name": "gpt2-bpe", "hf_dir": str(d)}
        assert load_tokenizer(tok.to_dict()) == tok


def test_bpe_only_tokenizer_json(bpe, hf_ref, tmp_path):
    hf_ref.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):  # as transformers 5 leaves it
        (tmp_path / name).unlink(missing_ok=True)
    tok = GPT2BPETokenizer.from_hf_dir(tmp_path)
    assert tok.encode(TRICKY[0]).tolist() == bpe.encode(TRICKY[0]).tolist()


def test_bpe_missing_vocabulary(tmp_path):
    with pytest.raises(MusicGPTError, match=r"missing\.json: no such file"):
        GPT2BPETokenizer.from_files(tmp_path / "missing.json", GPT2_VOCAB_DIR / "vocab.bpe")
    with pytest.raises(MusicGPTError, match=r"^data/gpt2/missing\.json: no such file$"):
        GPT2BPETokenizer(vocab_file="data/gpt2/missing.json", merges_file="data/gpt2/vocab.bpe")
    with pytest.raises(MusicGPTError, match="nor tokenizer.json: not a Hugging Face GPT-2 directory"):
        GPT2BPETokenizer.from_hf_dir(tmp_path)
    with pytest.raises(ConfigError, match="give vocab_file and merges_file"):
        GPT2BPETokenizer.from_dict({"name": "gpt2-bpe", "vocab_file": "data/gpt2/encoder.json"})
