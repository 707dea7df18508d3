"""Text mode on the same data builder, trainer and sampler: bytes and GPT-2 BPE, HF checkpoints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import GPT2_VOCAB_DIR, TEXT_DIR, shipped_config

from musicgpt.cli import main
from musicgpt.data.build import build_dataset, read_manifest
from musicgpt.data.dataset import TokenShard
from musicgpt.training.cli import train_cli

SHERLOCK = TEXT_DIR / "sherlock.txt"


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    build_dataset(SHERLOCK, out, "bytes", workers=1, progress=False, log=lambda _: None)
    return out


def test_one_document_is_split_by_position(text_data):
    raw = np.frombuffer(SHERLOCK.read_bytes(), dtype=np.uint8)
    pieces = [TokenShard(text_data, s).piece(0) for s in ("train", "validation", "test")]
    assert all(p[-1] == 256 for p in pieces)  # each part ends with <|endoftext|>
    np.testing.assert_array_equal(np.concatenate([p[:-1] for p in pieces]), raw)
    assert [p.size - 1 for p in pieces] == [
        round(raw.size * 0.8),
        round(raw.size * 0.9) - round(raw.size * 0.8),
        raw.size - round(raw.size * 0.9),
    ]
    assert read_manifest(text_data)["files"][0]["split"] == "by position"


def test_bad_text_files_are_reported_and_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SHERLOCK, src / "a.txt")
    (src / "latin1.txt").write_bytes("Caf\u00e9 cr\u00e8me".encode("latin-1"))
    (src / "empty.txt").write_text("")
    (src / "b.txt").write_text("A short second document.\n")
    report = build_dataset(src, tmp_path / "out", "gpt2-bpe", workers=1, progress=False, log=lambda _: None)
    skipped = {s["path"]: s["reason"] for s in report.skipped}
    assert set(skipped) == {"latin1.txt", "empty.txt"}
    assert "not UTF-8 at byte offset 3" in skipped["latin1.txt"]
    assert skipped["empty.txt"] == "no notes (or no text): nothing to train on"
    # the byte-level tokenizer takes any bytes
    report = build_dataset(src, tmp_path / "bytes", "bytes", workers=1, progress=False, log=lambda _: None)
    assert [s["path"] for s in report.skipped] == ["empty.txt"]


def test_config_and_data_must_agree_on_the_tokenizer(text_data, tmp_path, capsys):
    from musicgpt.data.datamodule import TokenDataModule
    from musicgpt.errors import ConfigError

    with pytest.raises(
        ConfigError, match="built with the 'bytes' tokenizer, but the config asks for 'gpt2-bpe'"
    ):
        TokenDataModule(text_data, tokenizer="gpt2-bpe")


def test_train_and_generate_text_with_the_shipped_config(text_data, tmp_path, capsys):
    model = dict(block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0)
    config = shipped_config(
        "text_bytes.yaml",
        tmp_path,
        text_data,
        model,
        {"max_val_windows": 4},
        max_steps=30,
        val_check_interval=30,
    )
    cli = train_cli(["--config", str(config)])
    assert float(cli.trainer.callback_metrics["val/loss"]) < np.log(257) - 1.5  # far below uniform bytes

    capsys.readouterr()
    args = [
        "generate",
        "--checkpoint",
        str(tmp_path / "model"),
        "--text",
        "Holmes said",
        "--max-new-tokens",
        "40",
        "--temperature",
        "0",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("Holmes said") and len(first) > len("Holmes said")
    assert main(args) == 0
    assert capsys.readouterr().out == first  # greedy is deterministic

    assert main(["generate", "--checkpoint", str(tmp_path / "model"), "--text", "x" * 64]) == 2
    assert "the prompt is 64 tokens; the model's context is 64" in capsys.readouterr().err


def test_huggingface_gpt2_directory_generates_what_transformers_generates(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    hf_dir = tmp_path / "hf"
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=50257)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(hf_dir)
    vocab_dir = tmp_path / "vocab"
    vocab_dir.mkdir()
    shutil.copy(GPT2_VOCAB_DIR / "encoder.json", vocab_dir / "vocab.json")
    shutil.copy(GPT2_VOCAB_DIR / "vocab.bpe", vocab_dir / "merges.txt")
    hf_tok = transformers.GPT2TokenizerFast.from_pretrained(vocab_dir)
    hf_tok.save_pretrained(hf_dir)

    prompt = "It was a dark and stormy night"
    ids = hf_tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=50256)
    expected_text = hf_tok.decode(expected[0, ids.shape[1] :].tolist())
    expected_text = expected_text.split("<|endoftext|>")[0]

    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(hf_dir),
                "--text",
                prompt,
                "--max-new-tokens",
                "24",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == prompt + expected_text + "\n"


@pytest.mark.parametrize("encoding", ["learned", "relative"])
def test_text_prompts_are_cut_to_the_models_real_context(tmp_path, capsys, encoding):
    """A relative model reads RELATIVE_CONTEXT_FACTOR training windows (as piano continuations do);
    a learned-position model reads exactly one. The prompt limit says which (was block_size for both)."""
    from musicgpt.generation.piano import RELATIVE_CONTEXT_FACTOR
    from musicgpt.model.gpt import GPT, GPTConfig
    from musicgpt.tokenizers.text import ByteTokenizer

    block = 32
    config = GPTConfig(
        block_size=block,
        vocab_size=257,
        n_layer=1,
        n_head=2,
        n_embd=16,
        dropout=0.0,
        position_encoding=encoding,
    )
    torch.manual_seed(0)
    GPT(config).save_pretrained(tmp_path)
    ByteTokenizer().save(tmp_path / "tokenizer.json")
    context = block * RELATIVE_CONTEXT_FACTOR if encoding == "relative" else block
    assert RELATIVE_CONTEXT_FACTOR > 1

    def generate(prompt: str) -> int:
        argv = [
            "generate",
            "--checkpoint",
            str(tmp_path),
            "--text",
            prompt,
            "--max-new-tokens",
            "4",
            "--temperature",
            "0",
        ]
        return main(argv)

    capsys.readouterr()
    assert generate("x" * (context - 1)) == 0
    assert capsys.readouterr().out.startswith("x" * (context - 1))
    assert generate("x" * context) == 2
    assert f"the prompt is {context} tokens; the model's context is {context}" in capsys.readouterr().err
