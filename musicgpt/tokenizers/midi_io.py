"""Reading MIDI into note arrays and applying the sustain pedal, note-seq's way; writing MIDI files.

Files are parsed with symusic (a C++ parser, ~200x faster than pretty_midi) in ticks, and the
ticks become exact integer times: microseconds x ticks-per-quarter, the sum over the tempo map
of ticks x microseconds-per-quarter. Rounding to 10 ms steps is then exact integer arithmetic,
so "half up" really is half up (float seconds put many x.xx5 s onsets of a 100 bpm file on
either side of the boundary). pretty_midi objects are accepted too, in float seconds.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicgpt.errors import MidiReadError

SUSTAIN_CC = 64
SUSTAIN_THRESHOLD = 64  # CC64 value >= 64 is "pedal down" (note-seq, General MIDI)
DEFAULT_MSPQ = 500_000  # 120 bpm, the MIDI default when a file sets no tempo


@dataclass
class Part:
    """The notes and sustain-pedal events of one instrument (one symusic track / pretty_midi instrument)."""

    pitch: np.ndarray  # (N,) int64
    velocity: np.ndarray  # (N,) int64
    start: (
        np.ndarray
    )  # (N,) times in units of 1 / units_per_second s: int64 from files, float64 seconds from pretty_midi
    end: np.ndarray  # (N,)
    sustain_time: np.ndarray  # (C,) times of the CC64 events, in file order
    sustain_value: np.ndarray  # (C,) int64
    program: int
    is_drum: bool
    units_per_second: int | float = 1.0


# --- reading -------------------------------------------------------------------------------------


def _check_chunks(data: bytes) -> None:
    """Raise ValueError with a readable problem if the chunk structure is broken.

    symusic reads a file cut right after its header as an empty score; walking the chunk
    lengths catches that (and names the problem better than the parser's message).
    """
    if len(data) == 0:
        raise ValueError("empty file (0 bytes)")
    if data[:4] != b"MThd":
        raise ValueError("not a MIDI file (no MThd header)")
    if len(data) < 14:
        raise ValueError(f"truncated: unexpected end of file inside the header ({len(data)} bytes)")
    header_len = struct.unpack(">I", data[4:8])[0]
    n_tracks = struct.unpack(">H", data[10:12])[0]
    pos, found = 8 + header_len, 0
    while found < n_tracks:
        if pos + 8 > len(data):
            raise ValueError(
                f"truncated: unexpected end of file (header announces {n_tracks} tracks, file holds {found})"
            )
        chunk_id = data[pos : pos + 4]
        if not all(0x20 < b < 0x7F for b in chunk_id):  # the spec: four ASCII letters
            raise ValueError(
                f"corrupt MIDI data: no chunk id after track {found} "
                f"(bytes {chunk_id.hex(' ')} at byte {pos} where MTrk belongs)"
            )
        length = struct.unpack(">I", data[pos + 4 : pos + 8])[0]
        if pos + 8 + length > len(data):
            raise ValueError(
                f"truncated: unexpected end of file in track {found + 1} of {n_tracks} "
                f"({len(data) - pos - 8} of its {length} bytes present)"
            )
        if chunk_id == b"MTrk":
            found += 1
        pos += 8 + length


def _parser_problem(e: Exception) -> str:
    msg = str(e).replace("MiniMidi: ", "").replace(": iostream error", "").strip()
    out_of_range = re.fullmatch(r"Get (\w+)=(\d+)", msg)  # symusic's word for a data byte > 127
    if out_of_range:
        name, value = out_of_range.groups()
        return f"corrupt MIDI data: {name.replace('_', ' ')} {value} (MIDI data bytes are 0-127)"
    if "header" in msg.lower():
        return "not a MIDI file (no MThd header)"
    if "length" in msg.lower() or "eof" in msg.lower() or "end of" in msg.lower():
        return f"truncated: unexpected end of file ({msg})"
    return f"corrupt MIDI data ({msg})"


def read_score(path: str | Path):
    """Parse a MIDI file with symusic (ticks); every failure becomes a MidiReadError naming the file."""
    import symusic

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MidiReadError(path, "no such file") from None
    except IsADirectoryError:
        raise MidiReadError(path, "is a directory, not a MIDI file") from None
    except PermissionError:
        raise MidiReadError(path, "cannot read: permission denied") from None
    except OSError as e:
        raise MidiReadError(path, f"cannot read: {e.strerror or e}") from None
    try:
        _check_chunks(data)
    except ValueError as e:
        raise MidiReadError(path, str(e)) from None
    try:
        return symusic.Score.from_midi(data)
    except Exception as e:  # symusic raises RuntimeError/ValueError with terse messages
        raise MidiReadError(path, _parser_problem(e)) from None


def ticks_to_units(ticks: np.ndarray, tempo_ticks: np.ndarray, tempo_mspq: np.ndarray) -> np.ndarray:
    """Ticks -> exact int64 time in microseconds x ticks-per-quarter (the tempo map: changes at
    `tempo_ticks`, in microseconds per quarter). Divide by 1e6 * tpq for seconds."""
    tempo_ticks = np.asarray(tempo_ticks, np.int64)
    tempo_mspq = np.asarray(tempo_mspq, np.int64)
    if tempo_ticks.size == 0 or tempo_ticks[0] > 0:
        tempo_ticks = np.concatenate([[0], tempo_ticks])
        tempo_mspq = np.concatenate([[DEFAULT_MSPQ], tempo_mspq])
    # several changes at one tick: the last one holds
    last = np.append(tempo_ticks[1:] != tempo_ticks[:-1], True)
    tempo_ticks, tempo_mspq = tempo_ticks[last], tempo_mspq[last]
    seg_start = np.concatenate([[0], np.cumsum(np.diff(tempo_ticks) * tempo_mspq[:-1])])
    k = np.searchsorted(tempo_ticks, ticks, side="right") - 1
    return seg_start[k] + (ticks - tempo_ticks[k]) * tempo_mspq[k]


def parts_from_score(score, source: str | Path = "<score>") -> list[Part]:
    """One Part per symusic track, in exact integer time units.

    A header with 0 ticks per beat (every note would sit at t=0), and times past symusic's 32-bit
    ticks (a file of maximal deltas: they wrap to negative), are a MidiReadError naming `source`.
    """
    if str(score.ttype).lower() != "tick":
        score = score.to("tick")
    if score.ticks_per_quarter <= 0:
        raise MidiReadError(
            source, f"its header gives {score.ticks_per_quarter} ticks per beat: no event can have a time"
        )
    tempos = score.tempos.numpy()
    if tempos["time"].size and tempos["time"].min() < 0:
        raise MidiReadError(source, _TOO_MANY_TICKS)
    order = np.argsort(tempos["time"], kind="stable")

    def units(t):
        return ticks_to_units(t.astype(np.int64), tempos["time"][order], tempos["mspq"][order])

    parts = []
    for track in score.tracks:
        n = track.notes.numpy()
        c = track.controls.numpy()
        sus = c["number"] == SUSTAIN_CC
        start_tick = n["time"].astype(np.int64)
        end_tick = start_tick + n["duration"]
        if (start_tick.size and min(start_tick.min(), end_tick.min()) < 0) or (
            c["time"].size and c["time"].min() < 0
        ):
            raise MidiReadError(source, _TOO_MANY_TICKS)
        parts.append(
            Part(
                pitch=n["pitch"].astype(np.int64),
                velocity=n["velocity"].astype(np.int64),
                start=units(start_tick),
                end=units(end_tick),
                sustain_time=units(c["time"][sus]),
                sustain_value=c["value"][sus].astype(np.int64),
                program=int(track.program),
                is_drum=bool(track.is_drum),
                units_per_second=1_000_000 * score.ticks_per_quarter,
            )
        )
    return parts


_TOO_MANY_TICKS = (
    "its events lie more than 2^31 ticks into the piece (deltas that add up past what a MIDI "
    "reader counts): far longer than any performance"
)


def parts_from_pretty_midi(pm) -> list[Part]:
    """One Part per pretty_midi instrument (its times are already seconds)."""
    parts = []
    for inst in pm.instruments:
        notes = np.array([(n.pitch, n.velocity, n.start, n.end) for n in inst.notes], np.float64).reshape(
            -1, 4
        )
        ccs = np.array(
            [(c.time, c.value) for c in inst.control_changes if c.number == SUSTAIN_CC], np.float64
        ).reshape(-1, 2)
        parts.append(
            Part(
                pitch=notes[:, 0].astype(np.int64),
                velocity=notes[:, 1].astype(np.int64),
                start=notes[:, 2].copy(),
                end=notes[:, 3].copy(),
                sustain_time=ccs[:, 0].copy(),
                sustain_value=ccs[:, 1].astype(np.int64),
                program=int(inst.program),
                is_drum=bool(inst.is_drum),
            )
        )
    return parts


def read_parts(source: Any) -> list[Part]:
    """A path, a `pretty_midi.PrettyMIDI` or a `symusic.Score` -> its Parts."""
    if isinstance(source, (str, Path)):
        return parts_from_score(read_score(source), source)
    module = type(source).__module__
    if module.startswith("pretty_midi"):
        return parts_from_pretty_midi(source)
    if module.startswith("symusic"):
        return parts_from_score(source)
    raise TypeError(
        f"expected a MIDI path, pretty_midi.PrettyMIDI or symusic.Score, got {type(source).__name__}"
    )


def last_time(parts: list[Part]) -> float:
    """Seconds from 0 to the last note-off or pedal event of `parts` (0 when they hold none).

    Read before any per-step work: what a file claims, bounded before it costs anything."""
    last = 0.0
    for p in parts:
        for t in (p.start, p.end, p.sustain_time):
            if t.size:
                last = max(last, float(t.max()) / p.units_per_second)
    return last


def select_parts(parts: list[Part], include_drums: bool, programs: tuple[int, ...] | None) -> list[Part]:
    """Drums only if asked; other instruments all, or those whose GM program is in `programs`."""
    keep = []
    for part in parts:
        if part.is_drum:
            if include_drums:
                keep.append(part)
        elif programs is None or part.program in programs:
            keep.append(part)
    return keep


# --- the sustain pedal ---------------------------------------------------------------------------


def apply_sustain(part: Part, last_time: float) -> tuple[np.ndarray, np.ndarray]:
    """note-seq's `apply_sustain_control_changes` for one instrument, vectorized.

    note-seq walks all events in time order; at one instant pedal-down events come first, then
    pedal-up events, then note-ons, then note-offs, and notes at one instant keep their order.
    Its outcome, per note:
      * a note released while the pedal is down lasts until the next pedal-up, or until the
        end of the piece (`last_time`: the last note-off or pedal event) if none comes;
      * a note ends early if its pitch is struck again while the pedal is down and the note
        still sounds (held or sustained): it ends at the new onset;
      * a note struck again at its own onset (same pitch, same instant, pedal down) is dropped.
    Returns (new_end, keep).
    """
    n = part.pitch.size
    keep = np.ones(n, bool)
    if n == 0 or part.sustain_time.size == 0:
        return part.end.copy(), keep

    # Pedal state after each instant with pedal events: up if any pedal-up event happens then.
    times, inv = np.unique(part.sustain_time, return_inverse=True)
    up_at = np.bincount(inv, weights=part.sustain_value < SUSTAIN_THRESHOLD, minlength=times.size) > 0
    up_times = np.append(times[up_at], last_time)  # never lifted again: held to the end of the piece

    def pedal_down_at(t: np.ndarray) -> np.ndarray:
        k = np.searchsorted(times, t, side="right") - 1
        return (k >= 0) & ~up_at[np.maximum(k, 0)]

    # Released under the pedal: held until the next pedal-up (strictly later; one at the same
    # instant came first and already lifted the pedal).
    sustained = pedal_down_at(part.end)
    release = up_times[np.minimum(np.searchsorted(up_times, part.end, side="right"), up_times.size - 1)]
    natural_end = np.where(sustained, release, part.end)

    # Re-strike: the next onset of the same pitch, in event order, that happens with the pedal down.
    order = np.lexsort((np.arange(n), part.start, part.pitch))
    pitch, start = part.pitch[order], part.start[order]
    strikes = np.where(pedal_down_at(start), np.arange(n), n)
    next_strike = np.append(np.minimum.accumulate(strikes[::-1])[::-1][1:], n)  # first index > i
    nxt = np.minimum(next_strike, n - 1)
    has = (next_strike < n) & (pitch[nxt] == pitch)
    restrike = np.where(has, start[nxt], np.inf)

    new_end = natural_end.copy()
    new_end[order] = np.minimum(natural_end[order], restrike)
    keep[order] = ~(has & (restrike == start))
    return new_end, keep


def pedal_notes(parts: list[Part], sustain_pedal: bool = True) -> tuple:
    """Merge the parts (of one score) into one note list, the pedal applied per part.

    Returns (pitch, velocity, start, end, units_per_second).
    """
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty, 1
    # note-seq's "end of piece" is the last event it walked: a note-off or a pedal event, any part
    last_time = max(
        [p.end.max() for p in parts if p.end.size]
        + [p.sustain_time.max() for p in parts if p.sustain_time.size],
        default=0,
    )
    pitch, velocity, start, end = [], [], [], []
    for part in parts:
        if sustain_pedal:
            new_end, keep = apply_sustain(part, last_time)
        else:
            new_end, keep = part.end, np.ones(part.pitch.size, bool)
        pitch.append(part.pitch[keep])
        velocity.append(part.velocity[keep])
        start.append(part.start[keep])
        end.append(new_end[keep])
    joined = [np.concatenate(x) for x in (pitch, velocity, start, end)]
    return (*joined, parts[0].units_per_second)


def write_midi(pm, path: str | Path) -> Path:
    """Write a `pretty_midi.PrettyMIDI` to `path` atomically (a reader never sees half a file)."""
    from musicgpt.io import atomic_open

    path = Path(path)
    with atomic_open(path, "wb") as f:
        pm.write(f)
    return path
