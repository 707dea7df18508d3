"""`musicgpt attention` end to end, with random weights and with a saved checkpoint."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import CORRUPTED_FILES, EMPTY_MIDI, PIANO_DIR

from musicgpt.cli import main
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.text import ByteTokenizer

MIDI = str(PIANO_DIR / "Maestro_6.mid")


def page_data(path) -> dict:
    page = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'id="attention-data">(.*?)</script>', page, re.DOTALL).group(1))


def test_random_init_music_page_and_pngs(tmp_path, capsys):
    out, png = tmp_path / "page.html", tmp_path / "view.png"
    argv = ["attention", "--random-init", "music-tiny", "--midi", MIDI, "--out", str(out), "--png", str(png),
            "--start", "15", "--seconds", "4", "--layer", "0", "--head", "1", "--note", "5",
            "--arcs-per-head", "3"]  # fmt: skip
    assert main(argv) == 0
    d = page_data(out)
    init = {"layer": 0, "heads": [1], "hmHead": 1, "item": 5, "perHead": 3}
    assert d["mode"] == "music" and d["init"] == init
    assert all(15.0 <= s < 19.0 for s in d["notes"]["start"]) and len(d["notes"]["start"]) > 10
    assert png.stat().st_size > 20_000 and (tmp_path / "view-heads.png").stat().st_size > 20_000
    printed = capsys.readouterr()
    assert f"wrote {out}" in printed.out and "notes, 15.0" in printed.out and printed.err == ""


def test_a_long_excerpt_is_cut_to_the_context_with_a_message(tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["attention", "--random-init", "music-tiny", "--midi", MIDI, "--out", str(out)]) == 0
    assert page_data(out)["nTokens"] == 256
    assert "cut to the model's context of 256 tokens" in capsys.readouterr().err


def test_checkpoint_directory_without_tokenizer_reads_midi(tmp_path):
    torch.manual_seed(1)
    GPT(GPTConfig.preset("music-tiny", n_layer=1, n_head=4)).save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "page.html"
    assert main(["attention", "--checkpoint", str(tmp_path / "ckpt"), "--midi", MIDI, "--out", str(out),
                 "--seconds", "3", "--top-k", "5", "--precision", "float16"]) == 0  # fmt: skip
    d = page_data(out)
    assert (d["nLayer"], d["nHead"], d["tok"]["k"], d["tok"]["dtype"]) == (1, 4, 5, "float16")


def test_text_mode_with_the_checkpoint_tokenizer(tmp_path):
    torch.manual_seed(1)
    ckpt = tmp_path / "ckpt"
    GPT(GPTConfig.preset("music-tiny", vocab_size=257)).save_pretrained(ckpt)
    ByteTokenizer().save(ckpt / "tokenizer.json")
    out, png = tmp_path / "text.html", tmp_path / "text.png"
    argv = ["attention", "--checkpoint", str(ckpt), "--text", "You see, but you do not observe.",
            "--out", str(out), "--png", str(png)]  # fmt: skip
    assert main(argv) == 0
    d = page_data(out)
    assert d["mode"] == "text" and d["tokens"][:3] == ["Y", "o", "u"] and d["init"]["item"] == 31
    assert png.exists() and (tmp_path / "text-heads.png").exists()
    # the same model cannot read MIDI: its tokenizer is a text one
    assert main(["attention", "--checkpoint", str(ckpt), "--midi", MIDI, "--out", str(out)]) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--midi", str(EMPTY_MIDI)], "empty.mid: no notes to draw"),
        (["--midi", str(CORRUPTED_FILES[0])], CORRUPTED_FILES[0].name),
        (["--midi", MIDI, "--start", "5000"], "no tokens from 5000 s"),
        (["--midi", MIDI, "--layer", "2"], "--layer 2 does not exist: choose 0..1"),
        (["--midi", MIDI, "--head", "-1"], "argument --head: must be at least 0, got -1"),
        (["--midi", MIDI, "--seconds", "2", "--note", "999"], "--note 999 does not exist"),
        (["--midi", MIDI, "--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
        (["--midi", MIDI, "--arcs-per-head", "0"], "argument --arcs-per-head: must be at least 1, got 0"),
        (["--midi", MIDI, "--seconds", "nan"], "argument --seconds: expected a finite number, got 'nan'"),
        (["--text", "hello"], "--text needs a text tokenizer"),
        (["--midi", str(PIANO_DIR / "missing.mid")], "missing.mid: no such file or folder"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, extra, message):
    argv = ["attention", "--random-init", "music-tiny", "--out", str(tmp_path / "p.html"), *extra]
    if extra[0] == "--text":
        argv += ["--tokenizer", "performance"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    # found while parsing ("musicgpt attention: error: argument ...") or once the model is loaded
    assert err.startswith(("musicgpt: error: ", "musicgpt attention: error: "))
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "p.html").exists()


def test_a_tokenizer_larger_than_the_model(tmp_path, capsys):
    argv = [
        "attention",
        "--random-init",
        "music-tiny",
        "--text",
        "hi",
        "--tokenizer",
        "gpt2-bpe",
        "--out",
        str(tmp_path / "p.html"),
    ]
    assert main(argv) == 2
    assert "the gpt2-bpe tokenizer has 50257 ids; the model reads only 390" in capsys.readouterr().err
