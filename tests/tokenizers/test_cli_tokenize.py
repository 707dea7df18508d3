"""`musicgpt tokenize` and `musicgpt detokenize` on real files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pretty_midi
from conftest import EMPTY_MIDI, MULTITRACK_FILES, PIANO_DIR

from musicgpt.cli import main
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.vocab import name_to_id

FUR_ELISE = PIANO_DIR / "fur-elise.mid"


def test_tokenize_prints_readable_wrapped_events(capsys):
    assert main(["tokenize", str(FUR_ELISE), "--width", "80"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("TIME_SHIFT_87 VELOCITY_9 NOTE_ON_76 TIME_SHIFT_22 NOTE_OFF_76 NOTE_ON_75")
    assert all(len(line) <= 80 for line in lines) and len(lines) > 100
    ids = [name_to_id(name) for name in out.split()]
    assert np.array_equal(ids, PerformanceTokenizer().encode(FUR_ELISE))


def test_tokenize_out_writes_ids_and_detokenize_writes_midi_back(tmp_path, capsys):
    npy, mid = tmp_path / "ids.npy", tmp_path / "back.mid"
    assert main(["tokenize", str(FUR_ELISE), "--out", str(npy)]) == 0
    assert capsys.readouterr().out == f"{FUR_ELISE}: 3831 tokens, 1041 notes -> {npy}\n"
    ids = np.load(npy)
    assert ids.dtype == np.int32 and np.array_equal(ids, PerformanceTokenizer().encode(FUR_ELISE))
    assert main(["detokenize", str(npy), str(mid)]) == 0
    assert capsys.readouterr().out.startswith(f"{npy}: 1041 notes, ")
    assert len(pretty_midi.PrettyMIDI(str(mid)).instruments[0].notes) == 1041
    assert np.array_equal(PerformanceTokenizer().encode(mid), ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.mid", "ids.npy"]  # no temporary files left


def test_instrument_options(tmp_path):
    song = MULTITRACK_FILES[2]  # Funkytown: bass (87), drums, strings (48) ...
    counts = {}
    for name, extra in {
        "all": [],
        "drums": ["--include-drums"],
        "bass": ["--programs", "87"],
        "raw": ["--no-sustain"],
    }.items():
        out = tmp_path / f"{name}.npy"
        assert main(["tokenize", str(song), "--out", str(out), *extra]) == 0
        counts[name] = int((np.load(out) < 128).sum())
    assert counts["drums"] > counts["all"] > counts["bass"] > 0
    assert counts["all"] == len(PerformanceTokenizer().decode_notes(PerformanceTokenizer().encode(song)))


def test_empty_midi(capsys):
    assert main(["tokenize", str(EMPTY_MIDI)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"musicgpt: error: {EMPTY_MIDI}: nothing to encode: no notes\n"


def test_drums_only_midi_says_so(tmp_path, capsys):
    from hostile_midi import write_hostile_files

    drums = write_hostile_files(tmp_path)["drums-only.mid"]
    assert main(["tokenize", str(drums)]) == 2
    assert capsys.readouterr().err == (
        f"musicgpt: error: {drums}: nothing to encode: only drum tracks hold notes, and drums are left "
        "out (--include-drums keeps them)\n"
    )
    assert main(["tokenize", str(drums), "--include-drums", "--out", str(tmp_path / "d.npy")]) == 0
    assert capsys.readouterr().out == f"{drums}: 201 tokens, 50 notes -> {tmp_path / 'd.npy'}\n"


def test_an_output_that_is_the_input_is_refused_before_work(tmp_path, capsys):
    song = tmp_path / "t.mid"
    song.write_bytes(FUR_ELISE.read_bytes())
    link = tmp_path / "link.mid"
    link.symlink_to(song)
    for out in (song, link):
        assert main(["tokenize", str(song), "--out", str(out)]) == 2
        assert capsys.readouterr().err == (
            f"musicgpt: error: --out {out} is the input MIDI file: writing it would destroy the input\n"
        )
    assert song.read_bytes() == FUR_ELISE.read_bytes()


def test_bad_programs_option(capsys):
    assert main(["tokenize", str(FUR_ELISE), "--programs", "300"]) == 2
    assert capsys.readouterr().err == (
        "musicgpt tokenize: error: argument --programs: must be in 0..127, got 300 (see musicgpt tokenize --help)\n"
    )


def test_tokenize_does_not_import_torch(tmp_path):
    code = (
        "import sys; from musicgpt.cli import main; "
        f"rc = main(['tokenize', {str(FUR_ELISE)!r}, '--out', {str(tmp_path / 'x.npy')!r}]); "
        f"rc |= main(['detokenize', {str(tmp_path / 'x.npy')!r}, {str(tmp_path / 'x.mid')!r}]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
