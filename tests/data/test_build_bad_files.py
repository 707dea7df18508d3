"""`data build` reports and skips every bad file, and stops in one line on a full disk (issue 24)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal

import pytest
from conftest import PIANO_DIR
from hostile_midi import write_hostile_files

from musicgpt.cli import main

GOOD = ("fur-elise.mid", "maple-leaf-rag.mid", "solace.mid")


def good_corpus(src):
    src.mkdir()
    for name in GOOD:
        shutil.copy(PIANO_DIR / name, src / name)
    return src


def test_special_files_links_and_undecodable_names_are_listed_never_opened(tmp_path, capsys):
    src = good_corpus(tmp_path / "src")
    os.mkfifo(src / "pipe.mid")  # opening it would block the build for ever
    (src / "gone.mid").symlink_to(tmp_path / "nowhere.mid")
    bad_name = os.fsdecode(b"caf\xe9.mid")  # Latin-1 bytes: not UTF-8
    shutil.copy(PIANO_DIR / "fur-elise.mid", os.path.join(os.fsencode(src), os.fsencode(bad_name)))
    (src / "sub").mkdir()
    (src / "sub" / "loop").symlink_to(src)  # a link to a parent folder is not followed
    out = tmp_path / "data"
    assert main(["data", "build", str(src), "--out", str(out), "--workers", "1"]) == 0
    summary = capsys.readouterr().out
    passed_over = [
        {"path": "caf\\xe9.mid", "reason": "its name is not valid UTF-8 (rename it to read it)"},
        {"path": "gone.mid", "reason": f"a link to nothing ({tmp_path / 'nowhere.mid'})"},
        {"path": "pipe.mid", "reason": "not a regular file (a FIFO): not opened"},
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == passed_over
    assert sorted(f["path"] for f in manifest["files"]) == list(GOOD)
    assert summary.endswith(
        "  passed over 3 path(s):\n" + "".join(f"    {s['path']}: {s['reason']}\n" for s in passed_over)
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file and folder")
def test_unreadable_files_and_folders_are_skipped(tmp_path, capsys):
    src = good_corpus(tmp_path / "src")
    shutil.copy(PIANO_DIR / "fur-elise.mid", src / "locked.mid")
    (src / "locked.mid").chmod(0)
    (src / "closed").mkdir()
    (src / "closed").chmod(0)
    try:
        assert main(["data", "build", str(src), "--out", str(tmp_path / "data"), "--workers", "1"]) == 0
    finally:
        (src / "closed").chmod(0o755)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert {"path": "locked.mid", "reason": "cannot read (Permission denied)"} in manifest["skipped"]
    assert {"path": "closed", "reason": "a folder that cannot be listed (Permission denied)"} in manifest[
        "skipped"
    ]


def test_hostile_files_are_skipped_with_their_reason(tmp_path, capsys):
    src = good_corpus(tmp_path / "src")
    hostile = write_hostile_files(tmp_path / "hostile")
    for name in ("ten-years.mid", "tpb-0.mid", "huge-deltas.mid", "drums-only.mid"):
        shutil.copy(hostile[name], src / name)
    out = tmp_path / "data"
    assert main(["data", "build", str(src), "--out", str(out), "--workers", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {
        "drums-only.mid": "no notes (or no text): nothing to train on",
        "huge-deltas.mid": (
            "its events lie more than 2^31 ticks into the piece (deltas that add up past what a MIDI reader "
            "counts): far longer than any performance"
        ),
        "ten-years.mid": (
            "its last event lies 10.0 years into the piece; the tokenizer reads pieces of up to 2.0 hours "
            "(max_piece_seconds)"
        ),
        "tpb-0.mid": "its header gives 0 ticks per beat: no event can have a time",
    }
    assert sum(manifest["splits"][s]["tokens"] for s in manifest["splits"]) < 100_000


def test_a_full_disk_stops_the_build_in_one_line(tmp_path, capsys):
    src = good_corpus(tmp_path / "src")
    out = tmp_path / "data"
    # a file-size limit below the first cache file: the write fails as on a full disk (EFBIG)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        code = main(["data", "build", str(src), "--out", str(out), "--workers", "1"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert code == 2
    err = capsys.readouterr().err.splitlines()[-1:]  # after the progress bar
    assert err[0].startswith(f"musicgpt: error: {out / 'cache'}/")
    assert err[0].endswith(
        f".npy: cannot write: file too large (nothing was written); stopped. 0 file(s) tokenized so far are "
        f"kept in {out / 'cache'}: free some space and run the command again to continue, or delete "
        f"{out / 'cache'} to give their space back"
    )
    assert os.listdir(out / "cache") == [] and not (out / "manifest.json").exists()
