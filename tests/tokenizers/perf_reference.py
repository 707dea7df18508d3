"""An independent, deliberately plain reference for what a round trip must give back.

Written apart from the encoder: note-seq's `apply_sustain_control_changes` as its event loop
(not the encoder's vectorized form), then 10 ms rounding half up, the one-voice-per-pitch rule
and note-seq's velocity bins, with Python lists and dicts. Tests compare decode(encode(x))
against `reference_notes(x)` note for note.
"""

from __future__ import annotations

import math
from collections import defaultdict

# note-seq processes, at one instant: pedal down, pedal up, note-ons, note-offs
_SUSTAIN_ON, _SUSTAIN_OFF, _NOTE_ON, _NOTE_OFF = 0, 1, 2, 3


class RefNote:
    def __init__(self, pitch, velocity, start, end, instrument):
        self.pitch, self.velocity, self.start, self.end, self.instrument = (
            pitch,
            velocity,
            start,
            end,
            instrument,
        )


def sustain_notes(notes: list[RefNote], sustain: list[tuple[float, int, int]]) -> list[RefNote]:
    """note-seq's event loop. sustain: (time, value, instrument) CC64 events."""
    events = [(n.start, _NOTE_ON, n) for n in notes] + [(n.end, _NOTE_OFF, n) for n in notes]
    for time, value, instrument in sustain:
        events.append((time, _SUSTAIN_ON if value >= 64 else _SUSTAIN_OFF, instrument))
    events.sort(key=lambda e: (e[0], e[1]))  # stable: same instant and type keep list order

    active = defaultdict(list)
    pedal_down = defaultdict(bool)
    dropped = set()
    time = 0.0
    for time, kind, x in events:
        if kind == _SUSTAIN_ON:
            pedal_down[x] = True
        elif kind == _SUSTAIN_OFF:
            pedal_down[x] = False
            still = []
            for n in active[x]:
                if n.end < time:
                    n.end = time
                else:
                    still.append(n)
            active[x] = still
        elif kind == _NOTE_ON:
            if pedal_down[x.instrument]:
                still = []
                for n in active[x.instrument]:
                    if n.pitch == x.pitch:
                        n.end = time
                        if n.start == n.end:
                            dropped.add(id(n))
                    else:
                        still.append(n)
                active[x.instrument] = still
            active[x.instrument].append(x)
        elif not pedal_down[x.instrument]:
            active[x.instrument] = [n for n in active[x.instrument] if n is not x]
    for held in active.values():
        for n in held:
            n.end = time
    return [n for n in notes if id(n) not in dropped]


def to_step(t, units_per_second=None) -> int:
    """Round half up to 10 ms: float seconds, or exact integer time in 1/units_per_second s."""
    if units_per_second is None:
        return math.floor(max(t, 0.0) * 100 + 0.5)
    return (100 * t + units_per_second // 2) // units_per_second


def quantize(notes: list[RefNote], units_per_second=None) -> list[tuple[int, int, int, int]]:
    """-> sorted (pitch, start_step, end_step, velocity_bin), one voice per pitch."""
    by_onset = {}
    for n in notes:
        on = to_step(n.start, units_per_second)
        off = max(to_step(n.end, units_per_second), on + 1)
        vbin = (min(max(n.velocity, 1), 127) - 1) // 4 + 1
        key = (n.pitch, on)
        if key not in by_onset or (off, vbin) > by_onset[key]:
            by_onset[key] = (off, vbin)
    per_pitch = defaultdict(list)
    for (pitch, on), (off, vbin) in sorted(by_onset.items()):
        voice = per_pitch[pitch]
        if voice and voice[-1][1] > on:
            voice[-1][1] = on
        voice.append([on, off, vbin])
    return sorted((p, on, off, vbin) for p, voice in per_pitch.items() for on, off, vbin in voice)


def reference_notes(pm, include_drums=False, sustain_pedal=True) -> list[tuple[int, int, int, int]]:
    """A pretty_midi.PrettyMIDI -> the (pitch, start_step, end_step, velocity_bin) a round trip keeps."""
    notes, sustain = [], []
    for k, inst in enumerate(pm.instruments):
        if inst.is_drum and not include_drums:
            continue
        notes += [RefNote(n.pitch, n.velocity, n.start, n.end, k) for n in inst.notes]
        sustain += [(c.time, c.value, k) for c in inst.control_changes if c.number == 64]
    if sustain_pedal:
        notes = sustain_notes(notes, sustain)
    return quantize(notes)


def decoded_as_tuples(decoded) -> list[tuple[int, int, int, int]]:
    """Notes -> the same sorted (pitch, start_step, end_step, velocity_bin) form."""
    return sorted(
        (int(p), round(s * 100), round(e * 100), (int(v) - 1) // 4 + 1)
        for p, s, e, v in zip(decoded.pitch, decoded.start, decoded.end, decoded.velocity, strict=True)
    )
