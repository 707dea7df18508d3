"""`musicgpt demo`, the README's main command, end to end on the bundled corpus (a few steps)."""

from __future__ import annotations

import json

import pretty_midi
import yaml

import musicgpt.commands.demo as demo
from musicgpt.cli import main


def _run_demo(tmp_path, capsys, *extra: str) -> str:
    code = main(["demo", "--max-steps", "3", "--seconds", "2", "--run-dir", str(tmp_path / "run"), *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def _trained_precision(run_dir) -> str:
    (config,) = run_dir.glob("logs/*/config.yaml")
    return yaml.safe_load(config.read_text())["trainer"]["precision"]


def test_demo_builds_trains_evaluates_and_writes_a_continuation(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _run_demo(tmp_path, capsys)
    run = tmp_path / "run"
    assert "from 25 files" in out
    assert "  train: 18 pieces, 372,831 tokens" in out
    assert "empty.mid: no notes (or no text): nothing to train on" in out  # reported, and skipped
    assert "trained to step 3" in out
    # the held-out table: the model's row beside the two baselines, on the same tokens
    rows = [
        line.split() for line in out.splitlines() if line.split()[:1] in (["model"], ["unigram"], ["bigram"])
    ]
    assert [r[0] for r in rows[-3:]] == ["model", "unigram", "bigram"]
    assert len({r[-1] for r in rows[-3:]}) == 1  # same token count
    # three steps end before the first validation: the final weights are exported all the same
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    assert metrics == {"val/loss": None, "step": 3}
    midi = pretty_midi.PrettyMIDI(str(run / "continuation.mid"))
    assert midi.instruments[0].notes and midi.get_end_time() > 10.0  # the 10 s prompt, then more
    assert _trained_precision(run) == "bf16-mixed" or not demo.cpu_has_bf16_matmul()


def test_demo_trains_in_fp32_on_a_cpu_without_bf16_units(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "cpu_has_bf16_matmul", lambda: False)
    out = _run_demo(tmp_path, capsys)
    assert "this CPU has no bf16 matrix units (AVX512-BF16 or AMX): training in fp32 instead" in out
    assert _trained_precision(tmp_path / "run") == "32-true"
