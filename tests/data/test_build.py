"""The data pipeline on real files: shards, index, split, skipped-file report, resume."""

import json
import shutil

import numpy as np
import pytest
from conftest import CORRUPTED_DIR, EMPTY_MIDI, PIANO_DIR

from musicgpt.cli import main
from musicgpt.data.build import build_dataset, read_manifest
from musicgpt.data.dataset import FixedWindows, RandomWindows, TokenShard
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

FILES = ["Maestro_1.mid", "Maestro_3.mid", "fur-elise.mid", "maple-leaf-rag.mid", "POP909_008.mid"]
# (RunTimeError_unexpected_EOF.mid, despite its name, is a whole file that every reader takes.)
BROKEN = ["ValueError_Control168.mid", "Issue104_Bizarre_Love_Triangle2.mid"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Five real piano files in nested folders, two corrupted files, a truncated one and an empty one."""
    src = tmp_path_factory.mktemp("corpus")
    for i, name in enumerate(FILES):
        (src / f"group{i % 2}").mkdir(exist_ok=True)
        shutil.copy(PIANO_DIR / name, src / f"group{i % 2}" / name)
    for name in BROKEN:
        shutil.copy(CORRUPTED_DIR / name, src / name)
    (src / "truncated.mid").write_bytes((PIANO_DIR / "solace.mid").read_bytes()[:3000])
    shutil.copy(EMPTY_MIDI, src / "empty.mid")
    (src / "notes.txt").write_text("not a MIDI file, and not .mid either: ignored")
    return src


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    report = build_dataset(corpus, out, "performance", workers=2, progress=False, log=lambda _: None)
    return out, report


def test_shards_hold_every_good_file_with_eos_after_each(built, corpus):
    out, report = built
    manifest = read_manifest(out)
    tok = PerformanceTokenizer()
    assert sorted(f["path"] for f in manifest["files"]) == sorted(
        f"group{i % 2}/{name}" for i, name in enumerate(FILES)
    )
    for split in ("train", "validation", "test"):
        shard = TokenShard(out, split)
        entries = [f for f in manifest["files"] if f["split"] == split]
        assert shard.n_pieces == len(entries) == report.pieces[split]
        for i, entry in enumerate(entries):
            piece = shard.piece(i)
            assert piece[-1] == V.EOS_ID
            np.testing.assert_array_equal(piece[:-1], tok.encode(corpus / entry["path"]))
    assert manifest["tokenizer"] == tok.to_dict()
    assert manifest["dtype"] == "uint16"


def test_bad_files_are_reported_and_skipped(built):
    out, report = built
    skipped = {s["path"]: s["reason"] for s in read_manifest(out)["skipped"]}
    assert sorted(skipped) == sorted(BROKEN + ["truncated.mid", "empty.mid"])
    assert skipped["empty.mid"] == "no notes (or no text): nothing to train on"
    assert all(reason for reason in skipped.values())
    assert report.skipped == read_manifest(out)["skipped"]


def test_split_by_file(built):
    out, _ = built
    splits = {f["path"]: f["split"] for f in read_manifest(out)["files"]}
    assert sorted(splits.values()).count("validation") == 1
    assert sorted(splits.values()).count("test") == 1


def test_second_run_reuses_the_cache_and_gives_identical_shards(built, corpus):
    out, _ = built
    before = {p.name: p.read_bytes() for p in out.glob("*.bin")}
    report = build_dataset(corpus, out, "performance", workers=1, progress=False, log=lambda _: None)
    assert report.from_cache == len(FILES)  # the broken files are tried again, the good ones are not
    assert {p.name: p.read_bytes() for p in out.glob("*.bin")} == before


def test_interrupted_build_continues(corpus, tmp_path):
    out = tmp_path / "out"
    build_dataset(corpus, out, "performance", workers=1, progress=False, log=lambda _: None)
    cached = sorted((out / "cache").glob("*.npy"))
    cached[0].unlink()  # as if the run was killed before this file was done
    (out / "manifest.json").unlink()
    report = build_dataset(corpus, out, "performance", workers=1, progress=False, log=lambda _: None)
    assert report.from_cache == len(FILES) - 1
    assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["pieces"] == 3


def test_cli_build_prints_the_report(corpus, tmp_path, capsys):
    assert main(["data", "build", str(corpus), "--out", str(tmp_path / "d"), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 4 file(s):" in printed
    assert "empty.mid: no notes" in printed


def test_cli_build_of_a_missing_folder_is_one_clear_line(tmp_path, capsys):
    assert main(["data", "build", str(tmp_path / "nope"), "--out", str(tmp_path / "d")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"musicgpt data build: error: argument src: {tmp_path / 'nope'}: no such file or folder "
        "(see musicgpt data build --help)"
    )


def test_windows(built):
    out, _ = built
    train = TokenShard(out, "train")
    windows = RandomWindows(train, block_size=64, samples=10, seed=3)
    x, y = windows[4]
    assert x.shape == y.shape == (64,)
    assert (x[1:] == y[:-1]).all()
    x2, _ = windows[4]
    assert (x == x2).all()  # item i is always the same window
    windows.set_epoch(1)
    assert not (windows[4][0] == x).all()

    val = FixedWindows(TokenShard(out, "validation"), block_size=64)
    assert len(val) == (len(val.shard) - 1) // 64
    x, y = val[1]
    np.testing.assert_array_equal(x.numpy(), val.shard.tokens[64:128])
    np.testing.assert_array_equal(y.numpy(), val.shard.tokens[65:129])


def test_augmented_windows_stay_in_range(built):
    out, _ = built
    from musicgpt.data.dataset import AugmentConfig

    windows = RandomWindows(TokenShard(out, "train"), block_size=128, samples=40, augment=AugmentConfig())
    for i in range(40):
        x, y = windows[i]
        assert x.shape == (128,)
        assert int(x.min()) >= 0 and int(x.max()) < V.VOCAB_SIZE
