"""The copy report: the corpus index of the shipped model, what is flagged and what is not.

piano-small does not recite: prompted with the first 10 s of a training piece (the-easy-winners,
fur-elise) and decoded greedily, its continuations share no 9-note n-gram with the corpus
(measured while building this; see docs/finetune.md). So the flagged cases are a continuation
equal to the training piece's real next seconds, and a tiny model fitted to that piece until it
recites it, decoded greedily through `musicgpt generate`.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from musicgpt.data.build import build_dataset
from musicgpt.data.splits import hash_splits
from musicgpt.evaluate.copying import (
    FLAG_SECONDS,
    INDEX_FILE,
    NGRAM,
    CorpusIndex,
    copy_report,
    index_for,
    main,
    ngram_hashes,
    sequence_report,
    transitions,
)
from musicgpt.generation.piano import cut_at_seconds
from musicgpt.models import bundled_model_dir
from musicgpt.tokenizers.performance import PerformanceTokenizer
from tests.conftest import CORRUPTED_FILES, PIANO_DIR, PIANO_FILES

TOK = PerformanceTokenizer()


@pytest.fixture(scope="module")
def shipped_index() -> CorpusIndex:
    index = index_for("piano-small")
    assert index is not None
    return index


def notes_of(name: str):
    return TOK.decode_notes(TOK.encode(PIANO_DIR / name))


def continuation(name: str, prompt_seconds: float, seconds: float) -> tuple[np.ndarray, int]:
    """The piece's real ids up to prompt + seconds, and the prompt's length in tokens."""
    ids = np.asarray(TOK.encode(PIANO_DIR / name), np.int64)
    prompt = cut_at_seconds(ids, prompt_seconds)
    return cut_at_seconds(ids, prompt_seconds + seconds), len(prompt)


def test_transitions_ignore_transposition_and_chord_order():
    notes = notes_of("maple-leaf-rag.mid")
    keys, onsets = transitions(notes.pitch, notes.start)
    assert keys.size == len(notes) - 1 and np.all(np.diff(onsets) >= 0)
    up = transitions(notes.pitch + 5, notes.start)[0]
    np.testing.assert_array_equal(up, keys)
    # the order a chord's notes were struck in (a few ms apart) changes nearly nothing
    jitter = np.where(np.arange(len(notes)) % 2 == 0, 0.0, 0.012)
    struck = transitions(notes.pitch, notes.start + jitter)[0]
    assert struck.size == keys.size and np.mean(struck == keys) > 0.9
    # a real change of rhythm is seen
    assert np.mean(transitions(notes.pitch, notes.start * 1.5)[0] == keys) < 0.7


def test_ngram_hashes_count_and_stability():
    keys = np.arange(20, dtype=np.int64)
    h = ngram_hashes(keys)
    assert h.dtype == np.uint32 and h.size == 20 - NGRAM + 1
    assert ngram_hashes(keys[: NGRAM - 1]).size == 0
    # the hash of an n-gram depends on its keys only, not on where it stands
    np.testing.assert_array_equal(ngram_hashes(keys[3 : 3 + NGRAM]), h[3:4])
    assert len(set(h.tolist())) == h.size


def test_shipped_index_is_the_recipe_training_split(shipped_index):
    """piano-small's index: the 18 training pieces of its recipe's split, small enough for the wheel."""
    names = [p.name for p in sorted(PIANO_DIR.glob("*.mid")) if p.name != "empty.mid"]
    train = sorted(n for n, split in hash_splits(names, 0.1, 0.1).items() if split == "train")
    assert sorted(shipped_index.names) == train and len(train) == 18
    assert "pineapple-rag.mid" not in shipped_index.names
    size = (bundled_model_dir("piano-small") / INDEX_FILE).stat().st_size
    assert size < 400 * 1024
    assert np.all(np.diff(shipped_index.hashes.astype(np.int64)) >= 0)


def test_the_training_piece_next_seconds_are_flagged(shipped_index):
    """A continuation that plays the training piece on after its first 10 s: flagged, and named."""
    ids, n = continuation("the-easy-winners.mid", 10.0, 20.0)
    report = sequence_report(shipped_index, TOK, ids, n)
    assert report.piece == "the-easy-winners.mid"
    assert report.flagged and report.seconds >= FLAG_SECONDS and report.notes >= 30
    assert 10.0 <= report.start < 30.0


@pytest.mark.parametrize(
    "name", ["maple-leaf-rag.mid", "pineapple-rag.mid", "peacherine-rag.mid", "Maestro_2.mid"]
)
def test_held_out_pieces_are_not_flagged(shipped_index, name):
    """The real continuations of held-out pieces (test and validation split, rags among them)."""
    ids, n = continuation(name, 10.0, 20.0)
    report = sequence_report(shipped_index, TOK, ids, n)
    assert not report.flagged and report.seconds < FLAG_SECONDS


def test_copying_the_prompt_is_not_flagged(shipped_index):
    """The same notes are flagged after a short prompt, and not when the prompt holds them."""
    notes = notes_of("the-easy-winners.mid")
    later = notes.take((notes.start >= 10.0) & (notes.start < 25.0))
    assert copy_report(shipped_index, later, notes.take(notes.start < 10.0)).flagged
    report = copy_report(shipped_index, later, notes.take(notes.start < 25.0))
    assert report.piece is None and report.seconds == 0 and not report.flagged


def test_index_round_trip_and_union(tmp_path):
    a = CorpusIndex.build([("maple", notes_of("maple-leaf-rag.mid"))])
    b = CorpusIndex.build(
        [("fur", notes_of("fur-elise.mid")), ("bach", notes_of("bach-prelude-c-major-bwv846.mid"))]
    )
    a.save(tmp_path / "a.npz")
    back = CorpusIndex.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(back.hashes, a.hashes)
    np.testing.assert_array_equal(back.pieces, a.pieces)
    assert back.names == ["maple"]
    both = a.union(b)
    assert both.names == ["maple", "fur", "bach"] and both.hashes.size == a.hashes.size + b.hashes.size
    fur = notes_of("fur-elise.mid")
    report = copy_report(both, fur.take(fur.start < 20.0))
    assert report.piece == "fur" and report.flagged


def test_a_file_that_is_not_an_index_is_one_error(tmp_path):
    from musicgpt.errors import MusicGPTError

    bad = tmp_path / "corpus_index.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(MusicGPTError, match="not a corpus index"):
        CorpusIndex.load(bad)


def test_index_entry_point(tmp_path, tiny_checkpoint, capsys):
    """`python -m musicgpt.evaluate.copying MODEL_DIR --data DATA` (what ship.py runs)."""
    import shutil

    src = tmp_path / "midi"
    src.mkdir()
    for p in PIANO_FILES[:3] + CORRUPTED_FILES[:1]:
        shutil.copy(p, src / p.name)
    build_dataset(src, tmp_path / "data", "performance", workers=1, progress=False, log=lambda m: None)
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    assert main([str(model), "--data", str(tmp_path / "data")]) == 0
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    train = [f["path"] for f in manifest["files"] if f["split"] == "train"]
    assert index_for(model).names == train
    assert main([str(tmp_path), "--data", str(tmp_path / "data")]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_report_fields():
    index = CorpusIndex.build([("maple", notes_of("maple-leaf-rag.mid"))])
    notes = notes_of("maple-leaf-rag.mid")
    report = copy_report(index, notes.take(notes.start < 8.0))
    d = report.to_dict()
    assert set(d) == {"seconds", "notes", "piece", "start", "flagged"}
    assert dataclasses.replace(report, flagged=False).line().endswith("not flagged")
    assert "FLAGGED" in report.line() or report.seconds < FLAG_SECONDS


def test_generate_prints_and_writes_the_report(tmp_path, tiny_checkpoint, capsys):
    """`musicgpt generate --report`: one entry per sample; a model without an index says so."""
    import shutil

    from musicgpt.cli import main as cli

    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    CorpusIndex.build([("maple-leaf-rag.mid", notes_of("maple-leaf-rag.mid"))]).save(model / INDEX_FILE)
    args = ["generate", "--checkpoint", str(model), "--prompt", str(PIANO_DIR / "maple-leaf-rag.mid"),
            "--prompt-seconds", "5", "--seconds", "2", "--num-samples", "2", "--seed", "0"]  # fmt: skip
    assert cli([*args, "--out", str(tmp_path / "g.mid"), "--report", str(tmp_path / "r.json")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        str(tmp_path / "g-1.mid"),
        str(tmp_path / "g-2.mid"),
        str(tmp_path / "r.json"),
    ]
    assert [line.split(": ")[1] for line in err.splitlines() if line.startswith("copy report:")] == [
        str(tmp_path / "g-1.mid"), str(tmp_path / "g-2.mid")]  # fmt: skip
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["index"] is True and report["corpus_pieces"] == 1 and report["flag_seconds"] == FLAG_SECONDS
    assert [s["midi"] for s in report["samples"]] == [str(tmp_path / "g-1.mid"), str(tmp_path / "g-2.mid")]
    assert all(set(s) == {"midi", "seconds", "notes", "piece", "start", "flagged"} for s in report["samples"])
    # the same model without its index
    (model / INDEX_FILE).unlink()
    assert cli([*args, "--out", str(tmp_path / "h.mid"), "--num-samples", "1"]) == 0
    assert "carries no corpus index" in capsys.readouterr().err


@pytest.mark.slow
def test_piano_small_continuing_a_held_out_rag_is_not_flagged(shipped_index):
    """What piano-small samples after the first 10 s of pineapple-rag (a test piece)."""
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.generation.piano import continue_piano

    model, tok = load_checkpoint("piano-small")
    ids, n = continuation("pineapple-rag.mid", 10.0, 0.0)
    result = continue_piano(model, tok, ids[:n], 8.0, num_samples=2, seed=0)
    for seq in result.sequences():
        report = sequence_report(shipped_index, tok, seq, len(result.prompt))
        assert not report.flagged and report.seconds < FLAG_SECONDS


def test_a_model_that_recites_is_flagged(tmp_path, shipped_index, capsys):
    """The issue's case with a model that really recites: a tiny GPT fitted to the first 25 s of
    the-easy-winners (a piece of piano-small's corpus) until it knows them by heart, prompted with
    their first 10 s and decoded greedily by `musicgpt generate --temperature 0` with the
    default piano sampling. piano-small itself does not recite (the module docstring)."""
    import torch
    import torch.nn.functional as F

    from musicgpt.cli import main as cli
    from musicgpt.model.gpt import GPT, GPTConfig

    ids, _ = continuation("the-easy-winners.mid", 25.0, 0.0)  # 443 tokens: one window
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(GPTConfig.preset("music-tiny"), block_size=512))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    x, y = torch.as_tensor(ids[None, :-1]), torch.as_tensor(ids[None, 1:])
    for _ in range(100):
        loss = F.cross_entropy(model(x)[0], y[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05  # by heart
    directory = tmp_path / "reciter"
    model.save_pretrained(directory)
    TOK.save(directory / "tokenizer.json")
    shipped_index.save(directory / INDEX_FILE)

    args = ["generate", "--checkpoint", str(directory), "--prompt", str(PIANO_DIR / "the-easy-winners.mid"),
            "--prompt-seconds", "10", "--seconds", "15", "--temperature", "0",
            "--out", str(tmp_path / "g.mid"), "--report", str(tmp_path / "r.json")]  # fmt: skip
    assert cli(args) == 0
    err = capsys.readouterr().err
    (sample,) = json.loads((tmp_path / "r.json").read_text())["samples"]
    assert sample["piece"] == "the-easy-winners.mid" and sample["flagged"]
    assert sample["seconds"] >= FLAG_SECONDS and sample["notes"] >= 30
    assert "FLAGGED" in err
