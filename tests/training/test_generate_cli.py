"""`musicgpt generate` and `musicgpt evaluate` end to end, on a random-weight model and real MIDI."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.cli import main
from musicgpt.generation.piano import cut_at_seconds
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.models import bundled_models
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

PROMPT = PIANO_DIR / "fur-elise.mid"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("model")
    GPT(GPTConfig.preset("music-tiny")).save_pretrained(directory)
    PerformanceTokenizer().save(directory / "tokenizer.json")
    return directory


def notes_of(path) -> list[tuple[int, float, float, int]]:
    pm = pretty_midi.PrettyMIDI(str(path))
    notes = [n for inst in pm.instruments for n in inst.notes]
    return sorted((n.pitch, round(n.start, 3), round(n.end, 3), n.velocity) for n in notes)


def test_cut_at_seconds_keeps_exactly_the_opening():
    ids = PerformanceTokenizer().encode(PROMPT)
    cut = cut_at_seconds(ids, 4.0)
    assert V.shift_steps(cut).sum() <= 400
    assert (cut == ids[: len(cut)]).all()
    rest_time = V.shift_steps(ids[: len(cut) + 1]).sum()
    assert rest_time > 400 or ids[len(cut)] < 256  # the next token is past 4 s (or an event at 4 s)


def test_generate_writes_the_prompt_then_the_requested_seconds(model_dir, tmp_path):
    out = tmp_path / "cont.mid"
    args = [
        "generate",
        "--checkpoint",
        str(model_dir),
        "--prompt",
        str(PROMPT),
        "--prompt-seconds",
        "4",
        "--seconds",
        "6",
        "--out",
        str(out),
        "--seed",
        "7",
        "--num-samples",
        "2",
        "--top-k",
        "40",
    ]
    assert main(args) == 0
    tok = PerformanceTokenizer()
    prompt = cut_at_seconds(tok.encode(PROMPT), 4.0)
    prompt_seconds = V.shift_steps(prompt).sum() / 100
    for path in (tmp_path / "cont-1.mid", tmp_path / "cont-2.mid"):
        notes = notes_of(path)
        # the prompt's notes come back note for note (those that ended before the cut)
        prompt_notes = notes_of_ids(tok, prompt)
        finished = [n for n in prompt_notes if n[2] < prompt_seconds]
        assert set(finished) <= set(notes)
        # and the continuation is 6 s of music: no note starts after prompt + 6 s
        assert max(n[1] for n in notes) <= prompt_seconds + 6.0
        assert pretty_midi.PrettyMIDI(str(path)).get_end_time() <= prompt_seconds + 6.0 + 0.011
        assert any(n[1] > prompt_seconds for n in notes), "no new notes were generated"
    assert notes_of(tmp_path / "cont-1.mid") != notes_of(tmp_path / "cont-2.mid")


def notes_of_ids(tok, ids):
    pm = tok.decode(ids)
    return sorted((n.pitch, round(n.start, 3), round(n.end, 3), n.velocity) for n in pm.instruments[0].notes)


def test_same_seed_same_music(model_dir, tmp_path):
    for name in ("a.mid", "b.mid"):
        main(
            [
                "generate",
                "--checkpoint",
                str(model_dir),
                "--prompt",
                str(PROMPT),
                "--seconds",
                "3",
                "--out",
                str(tmp_path / name),
                "--seed",
                "3",
            ]
        )
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()


def test_generate_from_nothing(model_dir, tmp_path):
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(model_dir),
                "--seconds",
                "2",
                "--out",
                str(tmp_path / "x.mid"),
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert max(n[1] for n in notes_of(tmp_path / "x.mid")) <= 2.0


def test_generate_errors_are_one_line(model_dir, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "missing"), "--out", "x.mid"]) == 2
    shipped = ", ".join(bundled_models()) or "none ship yet"
    assert capsys.readouterr().err == (
        f"musicgpt generate: error: argument --checkpoint: {tmp_path / 'missing'}: no such file or folder, "
        f"nor a shipped model ({shipped}) (see musicgpt generate --help)\n"
    )
    args = [
        "generate",
        "--checkpoint",
        str(model_dir),
        "--prompt",
        str(PROMPT),
        "--out",
        str(tmp_path / "y.mid"),
    ]
    assert main([*args, "--top-p", "1.5"]) == 2
    assert "argument --top-p: must be in (0, 1], got 1.5" in capsys.readouterr().err


def test_evaluate_prints_model_and_baselines(model_dir, tmp_path, capsys):
    import shutil

    from musicgpt.data.build import build_dataset

    src = tmp_path / "src"
    src.mkdir()
    for name in ("fur-elise.mid", "maple-leaf-rag.mid", "solace.mid"):
        shutil.copy(PIANO_DIR / name, src / name)
    build_dataset(src, tmp_path / "data", workers=1, progress=False, log=lambda _: None)
    assert main(["evaluate", "--checkpoint", str(model_dir), "--data", str(tmp_path / "data")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["model", "nats/tok", "bits/tok", "tokens"]
    rows = {line.split()[0]: [float(x.replace(",", "")) for x in line.split()[1:]] for line in lines[2:]}
    assert set(rows) == {"model", "unigram", "bigram"}
    nats, bits, tokens = rows["model"]
    assert bits == pytest.approx(nats / np.log(2), abs=1e-3)
    assert rows["unigram"][2] == rows["bigram"][2] == tokens  # scored on the same tokens
    assert 5.5 < nats < 6.5  # random weights: about ln(390) = 5.97
