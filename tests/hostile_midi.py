"""Extreme MIDI files, written byte by byte: each is small (or merely large) on disk but claims
a huge or degenerate performance. Issue 24's list; tests/test_hostile_midi.py runs every command on
them. Raw bytes rather than mido: 1M notes written in numpy take a fraction of a second.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAX_DELTA = 0x0FFFFFFF  # the largest variable-length quantity MIDI allows (4 bytes)
LONGEST_TEMPO = 0xFFFFFF  # microseconds per quarter: 16.7 s per beat


def vlq(n: int) -> bytes:
    """MIDI's variable-length quantity: 7 bits per byte, high bit set on all but the last."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def tempo(mspq: int, delta: int = 0) -> bytes:
    return vlq(delta) + b"\xff\x51\x03" + mspq.to_bytes(3, "big")


def note(pitch: int, on_delta: int, length: int, velocity: int = 80) -> bytes:
    return vlq(on_delta) + bytes([0x90, pitch, velocity]) + vlq(length) + bytes([0x80, pitch, 0])


def midi_file(events: bytes, ticks_per_beat: int = 480, *, channel9: bool = False) -> bytes:
    track = events + b"\x00\xff\x2f\x00"  # end of track
    if channel9:  # every channel-voice status byte moved to channel 10 (drums)
        track = track.replace(b"\x90", b"\x99").replace(b"\x80", b"\x89")
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_beat)
    return header + b"MTrk" + struct.pack(">I", len(track)) + track


def _many_notes(n: int, delta: int) -> bytes:
    """n short notes, each `delta` ticks after the last, pitches cycling over the piano."""
    # each note: delta(1) 90 p 64, delta(1) 80 p 00 (deltas < 128 are one byte)
    assert 0 < delta < 128
    pitch = (np.arange(n) % 60 + 30).astype(np.uint8)
    rows = np.empty((n, 8), np.uint8)
    rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = delta, 0x90, pitch, 64
    rows[:, 4], rows[:, 5], rows[:, 6], rows[:, 7] = 1, 0x80, pitch, 0
    return rows.tobytes()


def hostile_files() -> dict[str, bytes]:
    """name -> file content. Each either has a sensible result or deserves a one-line refusal."""
    return {
        # 3,000 notes each MAX_DELTA ticks of 16.7 s apart: 33 KB claiming ~10^12 years
        "huge-deltas.mid": midi_file(
            tempo(LONGEST_TEMPO) + b"".join(note(60, MAX_DELTA, 1) for _ in range(3000)), ticks_per_beat=1
        ),
        # the 44-byte file of the issue: ticks-per-beat 1, longest tempo, one note ten years in
        "ten-years.mid": midi_file(tempo(LONGEST_TEMPO) + note(60, 18_900_000, 1), ticks_per_beat=1),
        # 1 microsecond per beat: 2,000 notes a beat apart last 2 ms in all
        "tempo-1us.mid": midi_file(tempo(1) + b"".join(note(60 + i % 12, 480, 240) for i in range(2000))),
        "tpb-1.mid": midi_file(b"".join(note(60 + i % 12, 1, 1) for i in range(200)), ticks_per_beat=1),
        "tpb-0.mid": midi_file(b"".join(note(60, 10, 10) for _ in range(10)), ticks_per_beat=0),
        # one note held 10 hours (120 bpm, 480 ticks per beat: 1 ms a tick)
        "note-10-hours.mid": midi_file(note(60, 0, 34_560_000)),
        # silence for 3 hours, then a short phrase
        "first-note-3-hours.mid": midi_file(
            note(60, 10_368_000, 480) + b"".join(note(62 + i, 0, 480) for i in range(4))
        ),
        # a million notes, 4 ms apart (over an hour of music), 8 MB
        "million-notes.mid": midi_file(_many_notes(1_000_000, 4)),
        # 300,000 tempo changes a tick apart around a few notes
        "300k-tempos.mid": midi_file(
            note(60, 0, 480)
            + b"".join(tempo(400_000 + (i % 7) * 1000, 1) for i in range(300_000))
            + note(64, 0, 480)
        ),
        # only a drum track: nothing to encode unless drums are asked for
        "drums-only.mid": midi_file(b"".join(note(36 + i % 10, 240, 120) for i in range(50)), channel9=True),
    }


def write_hostile_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in hostile_files().items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths
