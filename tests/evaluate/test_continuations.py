"""The continuation protocol: segments, pieces, the bigram floor, and `musicgpt evaluate --continuations`."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import PIANO_DIR

from musicgpt.cli import main
from musicgpt.data.build import build_dataset, read_manifest
from musicgpt.errors import MusicGPTError
from musicgpt.evaluate import music
from musicgpt.evaluate.bigram import BigramLM
from musicgpt.evaluate.continuations import (
    ContinuationSettings,
    Piece,
    evaluate_continuations,
    load_pieces,
    measure,
    piece_seconds,
    segment,
    select_pieces,
)
from musicgpt.generation.piano import PianoPriors, continue_piano, cut_at_seconds
from musicgpt.generation.sampling import SamplingConfig
from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.text import ByteTokenizer

TOK = PerformanceTokenizer()
PIECES = ("fur-elise.mid", "maple-leaf-rag.mid", "solace.mid", "peacherine-rag.mid")
# small enough for tests: 2 s prompt, 2 samples of 2 s
QUICK = ["--prompt-seconds", "2", "--seconds", "2", "--num-samples", "2"]


@pytest.fixture
def model_dir(tiny_checkpoint):
    return tiny_checkpoint  # conftest's random music-tiny checkpoint (seed 0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Four real pieces: two train (fur-elise, solace), one validation (peacherine), one test (maple leaf)."""
    root = tmp_path_factory.mktemp("corpus")
    src = root / "src"
    src.mkdir()
    for name in PIECES:
        shutil.copy(PIANO_DIR / name, src / name)
    build_dataset(src, root / "data", workers=1, progress=False, log=lambda _: None)
    return root / "data"


def test_segment_keeps_struck_notes_and_carries_sounding_ones():
    # tokens: C4 from 0 to 3 s, E4 from 1 to 1.5 s, G4 from 2 to 2.5 s, C5 from 2.5 to 5 s
    ids = TOK.encode_notes([60, 64, 67, 72], [61] * 4, [0, 1, 2, 2.5], [3, 1.5, 2.5, 5])
    notes = TOK.decode_notes(ids)
    first = int(np.flatnonzero(ids == 67)[0])  # the NOTE_ON of G4 opens the segment at 2 s
    seg = segment(notes, first, len(ids), t0=2.0, seconds=2.0)
    assert seg.struck.pitch.tolist() == [67, 72]
    assert seg.struck.start.tolist() == [0.0, 0.5] and seg.struck.end.tolist() == [0.5, 2.0]  # C5 cut at 4 s
    # C4 still sounds (to 3 s): carried into the sounding notes; E4 ended before 2 s
    assert sorted(seg.sounding.pitch.tolist()) == [60, 67, 72]
    assert music.polyphony(seg.sounding) == (1.0 + 0.5 + 1.5) / 2.0


def test_pieces_of_a_built_split_are_the_manifest_files_in_order(data_dir):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    for split in ("train", "validation", "test"):
        pieces = load_pieces(data_dir, split, TOK)
        assert [p.name for p in pieces] == [f["path"] for f in manifest["files"] if f["split"] == split]
        for piece in pieces:  # the tokens are the file's, without the shard's EOS
            assert np.array_equal(piece.ids, TOK.encode(PIANO_DIR / piece.name))


def test_pieces_of_a_midi_folder_and_a_file(tmp_path):
    for name in ("fur-elise.mid", "empty.mid"):
        shutil.copy(PIANO_DIR / name, tmp_path / name)
    (tmp_path / "broken.mid").write_bytes(b"MThd not really")
    pieces = load_pieces(tmp_path, "validation", TOK)
    assert [p.name for p in pieces] == ["empty.mid", "fur-elise.mid"]  # the broken file is left out
    [one] = load_pieces(tmp_path / "fur-elise.mid", "validation", TOK)
    assert one.name == "fur-elise.mid" and np.array_equal(one.ids, pieces[1].ids)


def test_pieces_too_short_are_named_and_skipped():
    settings = ContinuationSettings(prompt_seconds=10, seconds=20)
    long = Piece("long.mid", TOK.encode(PIANO_DIR / "fur-elise.mid"))  # 165.6 s
    medium = Piece("medium.mid", cut_at_seconds(long.ids, 30.0))
    short = Piece("short.mid", cut_at_seconds(long.ids, 4.0))
    usable, skipped = select_pieces([short, long, medium], settings)
    assert usable == [long]
    assert [s["name"] for s in skipped] == ["short.mid", "medium.mid"]
    assert skipped[0]["reason"] == f"lasts {piece_seconds(short.ids):.1f} s, shorter than the 10 s prompt"
    assert (
        skipped[1]["reason"]
        == f"lasts {piece_seconds(medium.ids):.1f} s; needs 50 s (10 s prompt + 2 x 20 s)"
    )
    with pytest.raises(MusicGPTError, match=r"^no piece is long enough to evaluate: short\.mid lasts"):
        select_pieces([short], settings)
    two = ContinuationSettings(prompt_seconds=10, seconds=20, max_pieces=1)
    assert select_pieces([long, long, short], two)[0] == [long]


def test_bigram_counts_and_samples_under_the_grammar():
    ids = TOK.encode(PIANO_DIR / "fur-elise.mid").astype(np.int64)
    bigram = BigramLM.count(ids, TOK.vocab_size)
    pairs = np.bincount(ids[:-1] * TOK.vocab_size + ids[1:], minlength=TOK.vocab_size**2)
    row = pairs.reshape(TOK.vocab_size, TOK.vocab_size)[60] + 0.01
    expected = np.log(row / row.sum())
    logits = bigram(torch.tensor([[5, 60]]))
    assert logits.shape == (1, 2, TOK.vocab_size)
    assert torch.allclose(logits[0, 1], torch.from_numpy(expected).float())
    # through the music sampler: well-formed (the grammar) and exactly 3 s of music
    prompt = cut_at_seconds(ids, 3.0)
    result = continue_piano(bigram, TOK, prompt, 3.0, num_samples=3, seed=0)
    for sample in result.samples:
        assert piece_seconds(sample) == 3.0
        grammar = TOK.grammar(1)
        grammar.start(prompt[None])
        for token in sample:
            assert grammar.allowed()[0, token]
            grammar.advance(np.array([token]))


def test_protocol_end_to_end(model_dir, data_dir):
    from musicgpt.checkpoints import load_checkpoint

    model, tokenizer = load_checkpoint(model_dir)
    settings = ContinuationSettings(prompt_seconds=2, seconds=2, num_samples=2, seed=5)
    pieces = load_pieces(data_dir, "train", tokenizer)  # fur-elise and solace
    bigram = BigramLM.count(np.concatenate([p.ids for p in pieces]), tokenizer.vocab_size)
    seconds_seen = []
    report = evaluate_continuations(
        model, tokenizer, pieces, settings, bigram, on_progress=seconds_seen.append
    )
    assert [p.name for p in report.pieces] == ["fur-elise.mid", "solace.mid"]
    assert seconds_seen[-1] == 4.0  # two pieces of 2 s each
    for result in report.pieces:
        assert len(result.rows["generated"]) == len(result.rows["bigram"]) == 2
        assert (
            len(result.rows["ceiling"]) == len(result.rows["another piece"]) == len(result.rows["real"]) == 1
        )
    # the real continuation: the notes struck after the prompt's tokens, for 2 s from the prompt's
    # end, read off the whole file (notes at the prompt's last time step are the prompt's)
    fur = TOK.decode_notes(pieces[0].ids)
    prompt = cut_at_seconds(pieces[0].ids, 2.0)
    struck = (fur.on_token >= len(prompt)) & (fur.start < piece_seconds(prompt) + 2.0)
    assert ((fur.start >= piece_seconds(prompt)) & (fur.on_token < len(prompt))).sum() == 1  # such a note
    assert report.pieces[0].rows["real"][0]["notes"] == struck.sum()
    assert report.pieces[0].rows["real"][0]["note_density"] == struck.sum() / 2.0
    # "another piece" for fur-elise is solace's real continuation, measured against fur-elise's
    solace = report.pieces[1].rows["real"][0]
    assert report.pieces[0].rows["another piece"][0]["note_density"] == solace["note_density"]
    # row means are the mean over pieces of the mean over samples
    means = report.row_means()
    per_piece = [np.mean([s["pitch_oa"] for s in p.rows["generated"]]) for p in report.pieces]
    assert means["generated"]["pitch_oa"] == pytest.approx(np.mean(per_piece), abs=1e-12)
    assert set(means) == {"generated", "ceiling", "another piece", "bigram", "real"}
    # the same seed gives the same numbers; another seed other samples
    again = evaluate_continuations(model, tokenizer, pieces, settings, bigram)
    assert again.to_json() == report.to_json()
    other = evaluate_continuations(model, tokenizer, pieces, dataclasses.replace(settings, seed=6), bigram)
    assert other.pieces[0].rows["generated"] != report.pieces[0].rows["generated"]
    assert other.pieces[0].rows["ceiling"] == report.pieces[0].rows["ceiling"]
    # the sampling settings reach the model's samples; the floors keep theirs
    greedy = dataclasses.replace(settings, sampling=SamplingConfig(temperature=0))
    sharp = evaluate_continuations(model, tokenizer, pieces, greedy, bigram)
    assert sharp.pieces[0].rows["generated"][0] == sharp.pieces[0].rows["generated"][1]  # greedy: alike
    assert report.pieces[0].rows["generated"][0] != report.pieces[0].rows["generated"][1]
    assert sharp.pieces[0].rows["bigram"] == report.pieces[0].rows["bigram"]
    # so do the piano priors (here: none at all); the floor keeps the default ones
    bare = dataclasses.replace(settings, priors=PianoPriors(release=0, onset=0, pitch=0, length_draws=0))
    unprimed = evaluate_continuations(model, tokenizer, pieces, bare, bigram)
    assert unprimed.pieces[0].rows["generated"] != report.pieces[0].rows["generated"]
    assert unprimed.pieces[0].rows["bigram"] == report.pieces[0].rows["bigram"]


def test_measure_of_a_segment_against_itself_is_perfect():
    ids = TOK.encode(PIANO_DIR / "solace.mid")
    seg = segment(TOK.decode_notes(ids), 0, len(cut_at_seconds(ids, 20.0)), 0.0, 20.0)
    numbers = measure(seg, seg)
    for key in ("duration_oa", "ioi_oa", "pitch_oa", "velocity_oa", "pitch_class_similarity"):
        assert numbers[key] == pytest.approx(1.0, abs=1e-12)


def test_cli_prints_the_table_and_writes_the_report(model_dir, data_dir, tmp_path, capsys):
    report = tmp_path / "out" / "report.json"
    args = ["evaluate", "--checkpoint", str(model_dir), "--data", str(data_dir), "--continuations"]
    args += ["--split", "train"]
    assert main([*args, *QUICK, "--seed", "3", "--report", str(report)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"continuations of 2 pieces from the train split of {data_dir}: 2 s prompt, 2 x 2 s"
    assert out[1].split() == (
        "duration OA onset OA pitch OA PC sim polyphony notes/s notes >5 s silence s".split()
    )
    labels = [line[:30].strip() for line in out[2:7]]
    assert labels == [
        "generated (2 samples)",
        "ceiling: the piece's next 2 s",
        "floor: another piece",
        "floor: bigram sampler",
        "real continuation",
    ]
    assert out[6].split()[2:6] == ["—"] * 4  # the real continuation is not compared with itself
    written = json.loads(report.read_text())  # strict JSON: NaN written as null
    assert written["settings"]["seed"] == 3 and written["split"] == "train"
    assert [p["name"] for p in written["pieces"]] == ["fur-elise.mid", "solace.mid"]
    first = report.read_bytes()
    assert main([*args, *QUICK, "--seed", "3", "--report", str(report)]) == 0
    assert report.read_bytes() == first  # the same seed: the same report, byte for byte


def test_cli_on_a_midi_folder_names_skipped_pieces(model_dir, tmp_path, capsys):
    for name in ("fur-elise.mid", "maple-leaf-rag.mid"):
        shutil.copy(PIANO_DIR / name, tmp_path / name)
    opening = cut_at_seconds(TOK.encode(PIANO_DIR / "fur-elise.mid"), 3.0)
    TOK.decode(opening).write(str(tmp_path / "short.mid"))
    short_seconds = piece_seconds(TOK.encode(tmp_path / "short.mid"))
    assert 2.0 < short_seconds < 3.0
    args = ["evaluate", "--checkpoint", str(model_dir), "--data", str(tmp_path), "--continuations", *QUICK]
    report = tmp_path / "report.json"
    assert main([*args, "--max-pieces", "1", "--report", str(report)]) == 0
    captured = capsys.readouterr()
    assert (
        f"skipped short.mid: lasts {short_seconds:.1f} s; needs 6 s (2 s prompt + 2 x 2 s)\n" in captured.err
    )
    lines = captured.out.splitlines()
    assert lines[0].startswith("continuations of 1 piece from ")
    assert "(one piece only: no 'another piece' floor)" in lines
    assert "(no bigram floor: --data is not a built dataset; give --bigram-data DIR to count one)" in lines
    written = json.loads(report.read_text())
    assert written["skipped"] == [
        {"name": "short.mid", "reason": f"lasts {short_seconds:.1f} s; needs 6 s (2 s prompt + 2 x 2 s)"}
    ]
    assert [p["name"] for p in written["pieces"]] == ["fur-elise.mid"]
    assert set(written["rows"]) == {"generated", "ceiling", "real"}


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    return captured.err.strip()


def test_cli_errors_are_one_line(model_dir, data_dir, tmp_path, capsys):
    base = ["evaluate", "--checkpoint", str(model_dir), "--continuations", *QUICK]
    # a data dir without that split: no shard file at all, or a split with no pieces
    partial = tmp_path / "partial"
    shutil.copytree(data_dir, partial, ignore=shutil.ignore_patterns("cache"))
    test_bin = read_manifest(partial)["splits"]["test"]["bin"]
    (partial / test_bin).unlink()
    err = one_line_error(capsys, [*base, "--data", str(partial), "--split", "test"])
    assert err == (
        f"musicgpt: error: {partial}: {test_bin} is missing; "
        f"build it again with `musicgpt data build SRC --out {partial}`"
    )
    two = tmp_path / "two"
    two.mkdir()
    for name in PIECES[:2]:
        shutil.copy(PIANO_DIR / name, two / name)
    build_dataset(two, tmp_path / "two-data", workers=1, progress=False, log=lambda _: None)
    err = one_line_error(capsys, [*base, "--data", str(tmp_path / "two-data")])
    assert err == f"musicgpt: error: {tmp_path / 'two-data'}: the validation split has no pieces"
    # a MIDI shorter than the prompt
    err = one_line_error(
        capsys, [*base, "--data", str(PIANO_DIR / "fur-elise.mid"), "--prompt-seconds", "500"]
    )
    assert err == (
        "musicgpt: error: no piece is long enough to evaluate: "
        "fur-elise.mid lasts 165.6 s, shorter than the 500 s prompt"
    )
    # a text checkpoint
    text_model = tmp_path / "text-model"
    GPT(GPTConfig.preset("music-tiny", vocab_size=257)).save_pretrained(text_model)
    ByteTokenizer().save(text_model / "tokenizer.json")
    err = one_line_error(
        capsys, ["evaluate", "--checkpoint", str(text_model), "--data", str(data_dir), "--continuations"]
    )
    assert err == (
        f"musicgpt: error: {text_model} is a text model (bytes): --continuations needs a music model"
    )
    # a report that cannot be written: said before anything is generated
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    err = one_line_error(capsys, [*base, "--data", str(data_dir), "--report", str(blocker / "r.json")])
    assert err == (
        f"musicgpt evaluate: error: argument --report: {blocker / 'r.json'}: {blocker} is a file, not a folder "
        "(see musicgpt evaluate --help)"
    )
    err = one_line_error(capsys, [*base, "--data", str(data_dir), "--top-p", "1.5"])
    assert "argument --top-p: must be in (0, 1], got 1.5" in err
    # a flag of --continuations without it is not silently ignored
    loss_only = ["evaluate", "--checkpoint", str(model_dir), "--data", str(data_dir), "--report", "r.json"]
    assert one_line_error(capsys, loss_only) == "musicgpt: error: --report goes with --continuations"
