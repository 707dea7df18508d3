"""Broken input gives one clear error naming the file and the problem, never a library traceback."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
from conftest import CORRUPTED_DIR, EMPTY_MIDI, PIANO_DIR

from musicgpt.cli import main
from musicgpt.errors import MidiReadError, MusicGPTError
from musicgpt.tokenizers.performance import PerformanceTokenizer

TOK = PerformanceTokenizer()
REAL = PIANO_DIR / "fur-elise.mid"


def expect_error(path, problem: str) -> MidiReadError:
    with pytest.raises(MidiReadError) as info:
        TOK.encode(path)
    e = info.value
    assert e.path == str(path) and str(e).startswith(f"{path}: ")
    assert problem in e.problem, e.problem
    assert e.__cause__ is None and e.__suppress_context__  # no chained library traceback
    return e


@pytest.mark.parametrize(
    "name, problem",
    [
        ("Issue104_Bizarre_Love_Triangle2.mid", "corrupt MIDI data: no chunk id after track 4"),
        ("ValueError_Control168.mid", "corrupt MIDI data: control value 168"),
    ],
)
def test_corrupted_files(name, problem):
    expect_error(CORRUPTED_DIR / name, problem)


def test_the_unexpected_eof_fixture_is_in_fact_a_complete_file():
    # Named after an old parser bug: every chunk is whole and ends with End of Track, and mido,
    # pretty_midi and symusic all read it. So it encodes, like pretty_midi's reading of it.
    path = CORRUPTED_DIR / "RunTimeError_unexpected_EOF.mid"
    ids = TOK.encode(path)
    pm = pretty_midi.PrettyMIDI(str(path))
    assert ids.size > 1000
    assert int((ids < 128).sum()) == len(TOK.decode_notes(TOK.encode(pm)))


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_copy_of_a_real_file(tmp_path, keep):
    data = REAL.read_bytes()
    path = tmp_path / "cut.mid"
    path.write_bytes(data[: int(len(data) * keep)])
    expect_error(path, "truncated: unexpected end of file in track")


def test_file_cut_inside_or_right_after_the_header(tmp_path):
    data = REAL.read_bytes()
    (tmp_path / "a.mid").write_bytes(data[:10])
    (tmp_path / "b.mid").write_bytes(data[:14])
    expect_error(tmp_path / "a.mid", "truncated: unexpected end of file inside the header")
    expect_error(tmp_path / "b.mid", "truncated: unexpected end of file (header announces")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.mid"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expect_error(path, "not a MIDI file (no MThd header)")


def test_zero_byte_file(tmp_path):
    (tmp_path / "zero.mid").write_bytes(b"")
    expect_error(tmp_path / "zero.mid", "empty file (0 bytes)")


def test_missing_path_and_directory(tmp_path):
    expect_error(tmp_path / "nope.mid", "no such file")
    expect_error(tmp_path, "is a directory")


def test_midi_without_notes_is_an_empty_sequence():
    assert TOK.encode(EMPTY_MIDI).shape == (0,)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    (tmp_path / "noise.mid").write_bytes(b"RIFF" + bytes(100))
    for path, prefix in (
        (tmp_path / "noise.mid", "musicgpt: error: "),
        (tmp_path / "missing.mid", "musicgpt tokenize: error: argument midi: "),  # found while parsing
        (CORRUPTED_DIR / "ValueError_Control168.mid", "musicgpt: error: "),
    ):
        assert main(["tokenize", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err.count("\n") == 1 and err.startswith(f"{prefix}{path}: ")
        assert "Traceback" not in err


def test_cli_detokenize_bad_ids(tmp_path, capsys):
    np.save(tmp_path / "ids.npy", np.array([60, 400, 188]))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "empty.npy").write_bytes(b"")
    cases = [
        (
            tmp_path / "ids.npy",
            "musicgpt: error: ",
            "token id 400 at position 1 is outside the performance vocabulary",
        ),
        (tmp_path / "junk.npy", "musicgpt: error: ", "not a .npy array of token ids"),
        (tmp_path / "empty.npy", "musicgpt: error: ", "not a .npy array of token ids (No data left in file)"),
        (tmp_path / "missing.npy", "musicgpt detokenize: error: argument ids: ", "no such file"),
    ]
    for path, prefix, problem in cases:
        assert main(["detokenize", str(path), str(tmp_path / "out.mid")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"{prefix}{path}: ") and problem in err
    assert not (tmp_path / "out.mid").exists()


def test_token_errors_are_value_errors_and_musicgpt_errors():
    with pytest.raises(ValueError, match="token id -3"):
        TOK.decode([-3])
    with pytest.raises(MusicGPTError, match="token id 393"):
        TOK.decode_notes(np.array([393]))
