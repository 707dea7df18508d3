"""MIDI piano performances <-> event tokens (Oore et al. 2018; the encoding of Music Transformer).

A performance is a stream of NOTE_ON / NOTE_OFF / TIME_SHIFT / VELOCITY events; the id layout is
the table in `musicgpt.tokenizers.vocab`. Encoding, in order (the rules of magenta's note-seq):

1. Notes of every non-drum instrument (or of the chosen GM programs; drums on request) are read.
2. The sustain pedal (CC64 >= 64) is applied per instrument (`midi_io.apply_sustain`): a note
   released while the pedal is down lasts until the pedal comes up; a pitch struck again while
   the pedal is down ends its earlier note at the new onset.
3. All notes merge into one piano part; times are quantized to 10 ms steps, rounding half up;
   a note that quantizes to zero length lasts one step.
4. One voice per pitch (the decoder pairs NOTE_OFFs with NOTE_ONs per pitch, first in first out,
   so overlapping notes of one pitch cannot survive a round trip): when a pitch starts while an
   earlier note of it still sounds, the earlier note ends there; of several notes of one pitch
   starting at the same step, the longest (then loudest) is kept.
5. Events in time order; at one step NOTE_OFFs come before NOTE_ONs, each group by pitch.
   A VELOCITY event precedes a NOTE_ON only when the velocity bin changes; gaps longer than
   1 s are several TIME_SHIFTs (100 steps each, then the rest).

Decoding reads any sequence of valid ids without raising; see `decode_notes`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from musicgpt.errors import ConfigError, MidiReadError, check_known_keys
from musicgpt.tokenizers import midi_io
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.grammar import PerformanceGrammar
from musicgpt.tokenizers.notes import Notes
from musicgpt.tokenizers.vocab import EventType

if TYPE_CHECKING:
    import pretty_midi

# a sequence that has not set a velocity yet plays at bin 16 (velocity 61), near MIDI's default 64
DEFAULT_VELOCITY_BIN = int(V.velocity_to_bin(64))


@dataclass(frozen=True)
class PerformanceTokenizer:
    """MIDI <-> performance event ids. Settings are the dataclass fields; they save to JSON.

    include_drums:     keep drum tracks (merged with the rest); note-seq's pipelines drop them.
    programs:          GM programs (0-127) of the non-drum instruments to keep; None keeps all.
    max_note_seconds:  a note still open at the end of a decoded sequence lasts at most this
                       long, and the generation grammar ends any note that reaches it. 10 s holds
                       99.9% of the 88k notes of the MAESTRO files in assets/piano once the
                       pedal is applied (5 s would cut 0.5%: pedalled bass notes ring long).
                       Encoding never shortens notes.
    sustain_pedal:     apply CC64 before encoding (note-seq does, for MAESTRO and Music Transformer).
    max_polyphony:     the grammar's cap on notes sounding at once (pedalled MAESTRO passages reach
                       44; the cap only stops runaway generations that never end their notes).
    max_piece_seconds: a file whose last event lies later than this is refused (MidiReadError)
                       before any per-step work: a tiny file can claim years of silence, and
                       every second costs a TIME_SHIFT. 2 hours; the longest MAESTRO piece is
                       under 40 minutes.
    max_silence_seconds: a file with a silence longer than this (the opening one included) is
                       refused rather than encoded as a run of TIME_SHIFTs: there is nothing to
                       learn from minutes of shifts, and such files are mostly broken. 5 minutes.
    """

    include_drums: bool = False
    programs: tuple[int, ...] | None = None
    max_note_seconds: float = 10.0
    sustain_pedal: bool = True
    max_polyphony: int = 64
    max_piece_seconds: float = 7200.0
    max_silence_seconds: float = 300.0

    name: ClassVar[str] = "performance"
    modality: ClassVar[Literal["music"]] = "music"
    suffixes: ClassVar[tuple[str, ...]] = (".mid", ".midi")  # what `musicgpt data build` reads
    vocab_size: ClassVar[int] = V.VOCAB_SIZE
    # the ids before the FIM tokens: a model trained on these alone (390) still continues
    base_vocab_size: ClassVar[int] = V.BASE_VOCAB_SIZE
    eos_id: ClassVar[int] = V.EOS_ID
    pad_id: ClassVar[int] = V.PAD_ID

    def __post_init__(self):
        if self.programs is not None:
            programs = tuple(int(p) for p in self.programs)
            if any(not 0 <= p <= 127 for p in programs):
                raise ConfigError(f"programs must be GM program numbers 0-127, got {list(programs)}")
            object.__setattr__(self, "programs", programs)
        if not self.max_note_seconds >= 1 / V.STEPS_PER_SECOND:
            raise ConfigError(f"max_note_seconds must be at least 0.01, got {self.max_note_seconds}")
        if not 1 <= self.max_polyphony <= 127:
            raise ConfigError(f"max_polyphony must be 1-127, got {self.max_polyphony}")
        for name in ("max_piece_seconds", "max_silence_seconds"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 1 <= value <= 10 * 24 * 3600
            ):
                raise ConfigError(
                    f"{name} must be a number of seconds from 1 to 864000 (10 days), got {value!r}"
                )

    @property
    def max_note_steps(self) -> int:
        return int(round(self.max_note_seconds * V.STEPS_PER_SECOND))

    # --- encoding --------------------------------------------------------------------------------

    def encode(self, source: Any) -> np.ndarray:
        """A MIDI path, `pretty_midi.PrettyMIDI` or `symusic.Score` -> int32 event ids (no EOS).

        A file that cannot be read raises MidiReadError naming it; one with no notes gives [].
        So does one longer than `max_piece_seconds` or with a silence over `max_silence_seconds`:
        work and memory stay proportional to the notes, checked before anything is allocated per step.
        """
        name = source if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"
        parts = midi_io.select_parts(midi_io.read_parts(source), self.include_drums, self.programs)
        self._check_length(midi_io.last_time(parts), name)
        pitch, velocity, start, end, units_per_second = midi_io.pedal_notes(parts, self.sustain_pedal)
        quantized = _quantize(pitch, velocity, start, end, units_per_second)
        self._check_silence(*quantized[:2], name)
        return _emit(*quantized)

    def why_empty(self, source: Any) -> str:
        """Why `source` encodes to no tokens, for a message: its drums, its programs, or no notes."""
        parts = [p for p in midi_io.read_parts(source) if p.pitch.size]
        if not parts:
            return "no notes"
        if not midi_io.select_parts(parts, self.include_drums, self.programs):
            if all(p.is_drum for p in parts):
                return "only drum tracks hold notes, and drums are left out (--include-drums keeps them)"
            return f"no notes in the chosen programs {list(self.programs or [])}"
        return "no notes"

    def _check_length(self, seconds: float, source) -> None:
        if seconds > self.max_piece_seconds:
            raise MidiReadError(
                source,
                f"its last event lies {_duration(seconds)} into the piece; the tokenizer reads pieces "
                f"of up to {_duration(self.max_piece_seconds)} (max_piece_seconds)",
            )

    def _check_silence(self, step_on: np.ndarray, step_off: np.ndarray, source) -> None:
        """The longest stretch with no event at all, from t=0 on, against max_silence_seconds."""
        if step_on.size == 0:
            return
        steps = np.unique(np.concatenate([[0], step_on, step_off]))
        gaps = np.diff(steps)
        if gaps.size and gaps.max() > self.max_silence_seconds * V.STEPS_PER_SECOND:
            at = int(steps[int(gaps.argmax())])
            raise MidiReadError(
                source,
                f"holds a silence of {_duration(gaps.max() / V.STEPS_PER_SECOND)} from "
                f"{_duration(at / V.STEPS_PER_SECOND)} on; the tokenizer refuses silences over "
                f"{_duration(self.max_silence_seconds)} (max_silence_seconds)",
            )

    def encode_notes(self, pitch, velocity, start, end) -> np.ndarray:
        """Encode notes whose pedal (if any) is already applied: arrays of MIDI pitch, velocity and
        start / end in seconds. Steps 3-5 of the module docstring; times below 0 count as 0."""
        pitch = np.asarray(pitch, np.int64).reshape(-1)
        if pitch.size and (pitch.min() < 0 or pitch.max() > 127):
            raise ValueError(f"pitches must be 0-127, got {pitch.min()}..{pitch.max()}")
        if pitch.size == 0:
            return np.zeros(0, np.int32)
        start, end = np.asarray(start, np.float64).reshape(-1), np.asarray(end, np.float64).reshape(-1)
        if not (np.isfinite(start).all() and np.isfinite(end).all()):
            raise ValueError("note times must be finite")
        self._check_length(float(max(start.max(), end.max(), 0.0)), "the notes")
        quantized = _quantize(pitch, np.asarray(velocity, np.int64).reshape(-1), start, end)
        self._check_silence(*quantized[:2], "the notes")
        return _emit(*quantized)

    # --- decoding --------------------------------------------------------------------------------

    def decode_notes(self, ids) -> Notes:
        """Ids -> notes. Accepts any sequence of valid ids:

        * each pitch keeps its open notes first in first out; a NOTE_OFF with none open is ignored;
        * a note closed at its own onset step lasts one step (as the encoder's zero-length rule);
        * notes still open at the end close at the final time, lasting at least one step and at
          most `max_note_seconds`;
        * before any VELOCITY event notes play at bin 16 (velocity 61);
        * EOS and PAD are skipped: they neither move time nor close notes;
        * the FIM tokens are skipped too (decode a spliced piece: `musicgpt.tokenizers.infill.splice`).
        Raises TokenIdError for an id outside 0..392.
        """
        ids = V.check_ids(ids)
        kind, value = V.TYPE_OF_ID[ids], V.VALUE_OF_ID[ids].astype(np.int64)
        steps = V.STEPS_OF_ID[ids]
        clock = np.cumsum(steps) - steps  # steps elapsed before each token
        final = int(steps.sum())

        positions = np.arange(ids.size)
        last_velocity = (
            np.maximum.accumulate(np.where(kind == EventType.VELOCITY, positions, -1))
            if ids.size
            else positions
        )
        vbin = np.where(last_velocity >= 0, value[np.maximum(last_velocity, 0)], DEFAULT_VELOCITY_BIN)

        on_token, off_token = _pair_fifo(kind, value)
        start = clock[on_token]
        closed = off_token >= 0
        end = np.where(
            closed, clock[np.maximum(off_token, 0)], np.clip(final, start + 1, start + self.max_note_steps)
        )
        end = np.maximum(end, start + 1)
        return Notes(
            pitch=value[on_token],
            velocity=V.bin_to_velocity(vbin[on_token]).astype(np.int64),
            start=start / V.STEPS_PER_SECOND,
            end=end / V.STEPS_PER_SECOND,
            on_token=on_token,
            off_token=off_token,
        )

    def decode(self, ids) -> pretty_midi.PrettyMIDI:
        """Ids -> a `pretty_midi.PrettyMIDI` with one piano (program 0), per `decode_notes`.

        The file uses 500 ticks per quarter at 120 bpm (1 tick = 1 ms), so a written file holds
        the 10 ms grid exactly.
        """
        import pretty_midi

        notes = self.decode_notes(ids)
        pm = pretty_midi.PrettyMIDI(resolution=500, initial_tempo=120.0)
        piano = pretty_midi.Instrument(program=0, name="piano")
        piano.notes = [
            pretty_midi.Note(velocity=int(v), pitch=int(p), start=float(s), end=float(e))
            for p, v, s, e in zip(notes.pitch, notes.velocity, notes.start, notes.end, strict=True)
        ]
        pm.instruments.append(piano)
        return pm

    def token_times(self, ids) -> np.ndarray:
        """(T,) float seconds: the performance clock when each token is read (before its own shift)."""
        steps = V.STEPS_OF_ID[V.check_ids(ids)]
        return (np.cumsum(steps) - steps) / V.STEPS_PER_SECOND

    # --- names, settings, grammar ----------------------------------------------------------------

    def id_to_event(self, i: int) -> V.Event:
        return V.id_to_event(i)

    def id_to_token(self, i: int) -> str:
        return V.id_to_name(i)

    def token_to_id(self, name: str) -> int:
        return V.name_to_id(name)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, **dataclasses.asdict(self)}
        d["programs"] = None if self.programs is None else list(self.programs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PerformanceTokenizer:
        d = dict(d)
        name = d.pop("name", cls.name)
        if name != cls.name:
            raise ConfigError(f"not a performance tokenizer config (name {name!r})")
        check_known_keys(d, [f.name for f in dataclasses.fields(cls)], "performance tokenizer settings")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        from musicgpt.io import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PerformanceTokenizer:
        from musicgpt.io import read_json_mapping

        settings = read_json_mapping(path, "tokenizer settings file")  # not JSON, not an object: one line
        try:
            return cls.from_dict(settings)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def grammar(self, batch_size: int, max_note_tokens: int | None = None) -> PerformanceGrammar:
        """A LogitsMask that keeps generated sequences well formed (see PerformanceGrammar).

        `max_note_tokens`: end a note once its NOTE_ON is that many tokens back (pass the model's
        context: a note the model can no longer see begin is one it would never release).
        """
        return PerformanceGrammar(batch_size, self.max_note_steps, self.max_polyphony, max_note_tokens)


# --- encoding helpers ----------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """A length for a message: '45 s', '12.5 minutes', '3.0 hours', '10.0 years'."""
    seconds = float(seconds)
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size or (unit == "hours" and seconds >= size):
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:g} s"


def _to_steps(t: np.ndarray, units_per_second: int | float) -> np.ndarray:
    """Times in 1/units_per_second s -> 10 ms steps, rounding half up (exactly, for integer times)."""
    t = np.maximum(t, 0)
    if np.issubdtype(t.dtype, np.integer):
        return (t * V.STEPS_PER_SECOND + units_per_second // 2) // units_per_second
    return np.floor(t * (V.STEPS_PER_SECOND / units_per_second) + 0.5).astype(np.int64)


def _quantize(pitch, velocity, start, end, units_per_second: int | float = 1.0):
    """Times -> 10 ms steps (half up), zero length -> one step, one voice per pitch."""
    if pitch.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    step_on = _to_steps(start, units_per_second)
    step_off = np.maximum(_to_steps(end, units_per_second), step_on + 1)
    vbin = V.velocity_to_bin(velocity)

    order = np.lexsort((vbin, step_off, step_on, pitch))
    pitch, step_on, step_off, vbin = pitch[order], step_on[order], step_off[order], vbin[order]
    # of notes sharing (pitch, onset), the last in this order (longest, then loudest) stays
    last_of_onset = np.append((pitch[1:] != pitch[:-1]) | (step_on[1:] != step_on[:-1]), True)
    pitch, step_on, step_off, vbin = (
        pitch[last_of_onset],
        step_on[last_of_onset],
        step_off[last_of_onset],
        vbin[last_of_onset],
    )
    # a later onset of the same pitch ends the note before it
    same_next = np.append(pitch[1:] == pitch[:-1], False)
    next_on = np.append(step_on[1:], 0)
    step_off = np.where(same_next, np.minimum(step_off, next_on), step_off)
    return step_on, step_off, pitch, vbin


def _emit(step_on, step_off, pitch, vbin) -> np.ndarray:
    """Quantized notes -> ids, vectorized: every event's tokens are [shifts..., velocity?, note]."""
    n = pitch.size
    if n == 0:
        return np.zeros(0, np.int32)
    step = np.concatenate([step_off, step_on])
    is_on = np.concatenate([np.zeros(n, bool), np.ones(n, bool)])
    pitches = np.concatenate([pitch, pitch])
    bins = np.concatenate([np.zeros(n, np.int64), vbin])
    order = np.lexsort((pitches, is_on, step))  # by step; offs before ons; then by pitch
    step, is_on, pitches, bins = step[order], is_on[order], pitches[order], bins[order]

    shift_ids, n_shift = V.split_gaps(np.diff(step, prepend=0))
    on_bins = bins[is_on]
    has_velocity = np.zeros(2 * n, bool)
    has_velocity[is_on] = on_bins != np.concatenate([[0], on_bins[:-1]])

    count = n_shift + has_velocity + 1
    end = np.cumsum(count)
    ids = np.empty(int(end[-1]), np.int32)
    is_shift = np.ones(ids.size, bool)
    velocity_at = (end - 2)[has_velocity]
    ids[velocity_at] = V.VELOCITY_OFFSET + bins[has_velocity] - 1
    ids[end - 1] = np.where(is_on, V.NOTE_ON_OFFSET, V.NOTE_OFF_OFFSET) + pitches
    is_shift[velocity_at] = is_shift[end - 1] = False
    ids[is_shift] = shift_ids  # the remaining slots, in order, are every event's shifts
    return ids


# --- decoding helpers ----------------------------------------------------------------------------


def _pair_fifo(kind: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Match NOTE_OFFs to NOTE_ONs per pitch, first in first out, ignoring offs with nothing open.

    Returns (on_token, off_token) per note in NOTE_ON order; off_token -1 where none matched.
    Vectorized: per pitch, W = running (#ons - #offs); an off finds nothing open exactly when W
    drops below its previous minimum (floored at 0). The m-th effective off closes the m-th on.
    """
    on_pos = np.flatnonzero(kind == EventType.NOTE_ON)
    off_pos = np.flatnonzero(kind == EventType.NOTE_OFF)
    if on_pos.size == 0:
        return on_pos, on_pos.copy()
    pos = np.concatenate([on_pos, off_pos])
    step = np.concatenate([np.ones(on_pos.size, np.int64), -np.ones(off_pos.size, np.int64)])
    pitch = value[pos]
    order = np.lexsort((pos, pitch))
    pos, step, pitch = pos[order], step[order], pitch[order]

    first = np.append(True, pitch[1:] != pitch[:-1])
    group_start = np.flatnonzero(first)
    group_of = np.cumsum(first) - 1
    total = np.cumsum(step)
    walk = total - (total[group_start] - step[group_start])[group_of]
    # running minimum per group: each later group is lowered by a large offset, so the minimum of
    # an earlier group never reaches into it
    big = 2 * pos.size + 2
    lifted = walk - group_of * big
    floor = np.minimum(np.minimum.accumulate(lifted) + group_of * big, 0)
    floor_before = np.where(first, 0, np.append(0, floor[:-1]))
    effective_off = (step < 0) & (floor >= floor_before)
    is_on = step > 0

    def rank(mask):  # index among the marked events of the same pitch
        c = np.cumsum(mask)
        return c - (c[group_start] - mask[group_start])[group_of] - 1

    on_key = (pitch * big + rank(is_on))[is_on]
    off_key = (pitch * big + rank(effective_off))[effective_off]
    on_at, off_at = pos[is_on], pos[effective_off]
    off_token = np.full(on_key.size, -1, np.int64)
    if off_key.size:  # every effective off's key is some on's key: look each on up among them
        k = np.minimum(np.searchsorted(off_key, on_key), off_key.size - 1)
        off_token = np.where(off_key[k] == on_key, off_at[k], -1)
    by_onset = np.argsort(on_at, kind="stable")
    return on_at[by_onset], off_token[by_onset]
