"""`musicgpt evaluate --infill`: the infilled span against the real one, and the edges."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.cli import main
from musicgpt.evaluate.infill import double_strikes
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.notes import Notes
from musicgpt.tokenizers.performance import PerformanceTokenizer


def hand_notes(rows) -> Notes:
    pitch, start, end = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    n = len(rows)
    return Notes(
        pitch=pitch.astype(np.int64), velocity=np.full(n, 64), start=start, end=end,
        on_token=np.arange(n), off_token=np.arange(n),
    )  # fmt: skip


def test_double_strikes_counts_a_pitch_struck_while_it_sounds_near_an_edge():
    notes = hand_notes(
        [(60, 0.0, 5.0), (60, 4.5, 6.0), (62, 1.0, 2.0), (62, 2.0, 3.0), (64, 0.0, 9.0), (64, 8.0, 9.5)]
    )
    # 60 struck again at 4.5 while sounding (within 1 s of the edge at 5); 62 ends then starts: fine;
    # 64 struck twice at 8, far from both edges
    assert double_strikes(notes, (5.0, 20.0)) == 1
    assert double_strikes(notes, (1.0, 2.0)) == 0


@pytest.fixture(scope="module")
def fim_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("fim-eval-model")
    config = GPTConfig(
        vocab_size=V.VOCAB_SIZE, block_size=96, n_layer=1, n_head=2, n_embd=32,
        position_encoding="relative", max_relative_distance=64,
    )  # fmt: skip
    GPT(config).save_pretrained(directory)
    PerformanceTokenizer().save(directory / "tokenizer.json")
    return directory


def test_evaluate_infill_prints_the_table_and_writes_the_report(fim_dir, tmp_path, capsys):
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    for name in ["fur-elise.mid", "POP909_008.mid"]:
        shutil.copy(PIANO_DIR / name, pieces / name)
    report = tmp_path / "report.json"
    code = main(
        ["evaluate", "--infill", "--checkpoint", str(fim_dir), "--data", str(pieces), "--prompt-seconds", "3",
         "--span-seconds", "1.5", "--num-samples", "2", "--report", str(report)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "the span 3-4.5 s, 2 samples each" in out and "edge onset OA" in out
    data = json.loads(report.read_text())
    rows = data["rows"]
    assert set(rows) == {"generated", "ceiling", "another piece", "real"}
    assert rows["generated"]["edge_double_strikes"] == 0  # the grammar's doing
    assert rows["real"]["edge_onset_oa"] == 1.0  # the real piece against itself
    assert 4.0 < data["infill_nats_per_token"] < 8.0  # random weights: about ln(393) = 5.97
    assert [len(p["rows"]["generated"]) for p in data["pieces"]] == [2, 2]


def test_evaluate_infill_refuses_a_model_without_fim_tokens_and_mixed_flags(tiny_checkpoint, capsys):
    piece = str(PIANO_DIR / "fur-elise.mid")
    assert main(["evaluate", "--infill", "--checkpoint", str(tiny_checkpoint), "--data", piece]) == 2
    assert "without the fill-in-the-middle tokens" in capsys.readouterr().err
    assert main(["evaluate", "--infill", "--continuations", "--data", piece]) == 2
    assert "are separate evaluations" in capsys.readouterr().err
    assert main(["evaluate", "--span-seconds", "3", "--data", piece]) == 2
    assert "--span-seconds goes with --infill" in capsys.readouterr().err
