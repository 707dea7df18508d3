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
from typing import Any, ClassVar

import numpy as np

from musicgpt.errors import ConfigError
from musicgpt.tokenizers import midi_io
from musicgpt.tokenizers import vocab as V

EVENT_NOTE_ON, EVENT_NOTE_OFF, EVENT_TIME_SHIFT, EVENT_VELOCITY, EVENT_EOS, EVENT_PAD = range(6)
# a sequence that has not set a velocity yet plays at bin 16 (velocity 61), near MIDI's default 64
DEFAULT_VELOCITY_BIN = int(V.velocity_to_bin(64))


@dataclass(frozen=True)
class DecodedNotes:
    """Notes decoded from ids; index i of every array is one note, in the order of their NOTE_ONs."""

    pitch: np.ndarray  # (N,) int64
    velocity: np.ndarray  # (N,) int64, the lowest velocity of the bin
    start: np.ndarray  # (N,) float64 seconds
    end: np.ndarray  # (N,) float64 seconds
    on_token: np.ndarray  # (N,) int64: index in ids of the NOTE_ON that started the note
    off_token: np.ndarray  # (N,) int64: index of the NOTE_OFF that ended it; -1 if closed at the end

    def __len__(self) -> int:
        return int(self.pitch.size)


@dataclass(frozen=True)
class PerformanceTokenizer:
    """MIDI <-> performance event ids. Settings are the dataclass fields; they save to JSON.

    include_drums:     keep drum tracks (merged with the rest); note-seq's pipelines drop them.
    programs:          GM programs (0-127) of the non-drum instruments to keep; None keeps all.
    max_note_seconds:  a note still open at the end of a decoded sequence lasts at most this
                       long, and the generation grammar ends any note that reaches it. 10 s holds
                       99.9% of the 88k notes of the MAESTRO files in data/midi/piano once the
                       pedal is applied (5 s would cut 0.5%: pedalled bass notes ring long).
                       Encoding never shortens notes.
    sustain_pedal:     apply CC64 before encoding (note-seq does, for MAESTRO and Music Transformer).
    max_polyphony:     the grammar's cap on notes sounding at once (pedalled MAESTRO passages reach
                       44; the cap only stops runaway generations that never end their notes).
    """

    include_drums: bool = False
    programs: tuple[int, ...] | None = None
    max_note_seconds: float = 10.0
    sustain_pedal: bool = True
    max_polyphony: int = 64

    name: ClassVar[str] = "performance"
    vocab_size: ClassVar[int] = V.VOCAB_SIZE
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

    @property
    def max_note_steps(self) -> int:
        return int(round(self.max_note_seconds * V.STEPS_PER_SECOND))

    # --- encoding --------------------------------------------------------------------------------

    def encode(self, source: Any) -> np.ndarray:
        """A MIDI path, `pretty_midi.PrettyMIDI` or `symusic.Score` -> int32 event ids (no EOS).

        A file that cannot be read raises MidiReadError naming it; one with no notes gives [].
        """
        parts = midi_io.select_parts(midi_io.read_parts(source), self.include_drums, self.programs)
        pitch, velocity, start, end, units_per_second = midi_io.pedal_notes(parts, self.sustain_pedal)
        return _emit(*_quantize(pitch, velocity, start, end, units_per_second))

    def encode_notes(self, pitch, velocity, start, end) -> np.ndarray:
        """Encode notes whose pedal (if any) is already applied: arrays of MIDI pitch, velocity and
        start / end in seconds. Steps 3-5 of the module docstring; times below 0 count as 0."""
        pitch = np.asarray(pitch, np.int64).reshape(-1)
        if pitch.size and (pitch.min() < 0 or pitch.max() > 127):
            raise ValueError(f"pitches must be 0-127, got {pitch.min()}..{pitch.max()}")
        if pitch.size == 0:
            return np.zeros(0, np.int32)
        return _emit(
            *_quantize(
                pitch,
                np.asarray(velocity, np.int64).reshape(-1),
                np.asarray(start, np.float64).reshape(-1),
                np.asarray(end, np.float64).reshape(-1),
            )
        )

    # --- decoding --------------------------------------------------------------------------------

    def decode_notes(self, ids) -> DecodedNotes:
        """Ids -> notes. Accepts any sequence of valid ids:

        * each pitch keeps its open notes first in first out; a NOTE_OFF with none open is ignored;
        * a note closed at its own onset step lasts one step (as the encoder's zero-length rule);
        * notes still open at the end close at the final time, lasting at least one step and at
          most `max_note_seconds`;
        * before any VELOCITY event notes play at bin 16 (velocity 61);
        * EOS and PAD are skipped: they neither move time nor close notes.
        Raises TokenIdError for an id outside 0..389.
        """
        ids = V.check_ids(ids)
        kind, value = V._TYPE_OF_ID[ids], V._VALUE_OF_ID[ids].astype(np.int64)
        clock = _clock_at(kind, value)
        final = int(clock[-1] + (value[-1] if kind[-1] == EVENT_TIME_SHIFT else 0)) if ids.size else 0

        positions = np.arange(ids.size)
        last_velocity = (
            np.maximum.accumulate(np.where(kind == EVENT_VELOCITY, positions, -1)) if ids.size else positions
        )
        vbin = np.where(last_velocity >= 0, value[np.maximum(last_velocity, 0)], DEFAULT_VELOCITY_BIN)

        on_token, off_token = _pair_fifo(kind, value)
        start = clock[on_token]
        closed = off_token >= 0
        end = np.where(
            closed, clock[np.maximum(off_token, 0)], np.clip(final, start + 1, start + self.max_note_steps)
        )
        end = np.maximum(end, start + 1)
        return DecodedNotes(
            pitch=value[on_token],
            velocity=V.bin_to_velocity(vbin[on_token]).astype(np.int64),
            start=start / V.STEPS_PER_SECOND,
            end=end / V.STEPS_PER_SECOND,
            on_token=on_token,
            off_token=off_token,
        )

    def decode(self, ids):
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
        ids = V.check_ids(ids)
        return _clock_at(V._TYPE_OF_ID[ids], V._VALUE_OF_ID[ids].astype(np.int64)) / V.STEPS_PER_SECOND

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
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"unknown performance tokenizer settings {unknown}; known: {sorted(fields)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        from musicgpt.io import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PerformanceTokenizer:
        import json

        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: cannot load tokenizer settings ({e})") from None

    def grammar(self, batch_size: int, max_note_tokens: int | None = None) -> PerformanceGrammar:
        """A LogitsMask that keeps generated sequences well formed (see PerformanceGrammar).

        `max_note_tokens`: end a note once its NOTE_ON is that many tokens back (pass the model's
        context: a note the model can no longer see begin is one it would never release).
        """
        return PerformanceGrammar(batch_size, self.max_note_steps, self.max_polyphony, max_note_tokens)


# --- encoding helpers ----------------------------------------------------------------------------


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

    delta = np.diff(step, prepend=0)
    n_shift = (delta + V.MAX_SHIFT_STEPS - 1) // V.MAX_SHIFT_STEPS
    on_bins = bins[is_on]
    has_velocity = np.zeros(2 * n, bool)
    has_velocity[is_on] = on_bins != np.concatenate([[0], on_bins[:-1]])

    count = n_shift + has_velocity + 1
    end = np.cumsum(count)
    begin = end - count
    # every slot not written below is a full 1 s shift
    ids = np.full(int(end[-1]), V.TIME_SHIFT_OFFSET + V.MAX_SHIFT_STEPS - 1, np.int32)
    shifted = n_shift > 0
    rest = delta - V.MAX_SHIFT_STEPS * (n_shift - 1)
    ids[(begin + n_shift - 1)[shifted]] = V.TIME_SHIFT_OFFSET + rest[shifted] - 1
    ids[(begin + n_shift)[has_velocity]] = V.VELOCITY_OFFSET + bins[has_velocity] - 1
    ids[end - 1] = np.where(is_on, V.NOTE_ON_OFFSET, V.NOTE_OFF_OFFSET) + pitches
    return ids


# --- decoding helpers ----------------------------------------------------------------------------


def _clock_at(kind: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Steps elapsed before each token."""
    shift = np.where(kind == EVENT_TIME_SHIFT, value, 0)
    return np.cumsum(shift) - shift


def _pair_fifo(kind: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Match NOTE_OFFs to NOTE_ONs per pitch, first in first out, ignoring offs with nothing open.

    Returns (on_token, off_token) per note in NOTE_ON order; off_token -1 where none matched.
    Vectorized: per pitch, W = running (#ons - #offs); an off finds nothing open exactly when W
    drops below its previous minimum (floored at 0). The m-th effective off closes the m-th on.
    """
    on_pos = np.flatnonzero(kind == EVENT_NOTE_ON)
    off_pos = np.flatnonzero(kind == EVENT_NOTE_OFF)
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


# --- the generation grammar ----------------------------------------------------------------------

# per-id lookups, so that a grammar step is a few gathers instead of comparisons
_SHIFT_STEPS_OF_ID = np.where(V._TYPE_OF_ID == EVENT_TIME_SHIFT, V._VALUE_OF_ID, 0).astype(np.int64)
_IS_SHORT_SHIFT = (_SHIFT_STEPS_OF_ID > 0) & (_SHIFT_STEPS_OF_ID < V.MAX_SHIFT_STEPS)


class PerformanceGrammar:
    """A LogitsMask keeping generated performances well formed, batch-wise in numpy.

    After `advance`, for each row the next token may be:
    * NOTE_ON of a pitch not sounding (one voice per pitch, as the encoder), while fewer than
      `max_polyphony` notes sound;
    * NOTE_OFF of a sounding pitch, but not at the step where a NOTE_ON already came (the
      encoder puts offs first; this also rules out zero-length notes);
    * TIME_SHIFT, not right after a shift shorter than 1 s (the encoder writes 100, ..., rest),
      and no longer than lets every sounding note stay within `max_note_steps`;
    * VELOCITY of a bin other than the current one, and then only a NOTE_ON may follow;
    * EOS when no note sounds (and not right after VELOCITY); it resets the row's state;
    * never PAD.
    When a note has sounded for `max_note_steps`, or (with `max_note_tokens`) its NOTE_ON lies that
    many tokens back, only NOTE_OFFs of such overdue notes are allowed. The second rule is for
    notes the model cannot see: it reads a window of the last tokens, and a note struck before
    the window began sounds on with nothing in view to end it; the grammar ends it instead. Some token is always allowed. In the prompt, tokens the grammar would forbid are
    taken as they come (a NOTE_OFF with nothing open changes nothing). About 10-20 us a step
    for batch 8: per-row state lives in (batch, 128) arrays, nothing loops over the vocabulary.
    """

    # token -> its event type: the sampler keeps each type's probability mass under this mask
    # (`musicgpt.generation.sampling.mask_per_group`), so forbidding the NOTE_OFFs of silent
    # pitches does not hand their mass to NOTE_ON and TIME_SHIFT
    group_of_id = V._TYPE_OF_ID.astype(np.int64)
    _SHIFT_STEPS = np.arange(1, V.MAX_SHIFT_STEPS + 1)
    _BINS = np.arange(1, V.NUM_VELOCITY_BINS + 1)
    _NEVER = np.iinfo(np.int64).max // 2  # the deadline of a pitch that is not sounding

    def __init__(
        self, batch_size: int, max_note_steps: int, max_polyphony: int, max_note_tokens: int | None = None
    ):
        if max_note_tokens is not None and max_note_tokens < 1:
            raise ValueError(f"max_note_tokens must be >= 1 or None, got {max_note_tokens!r}")
        self.batch_size = batch_size
        self.max_note_steps = max_note_steps
        self.max_polyphony = max_polyphony
        self.max_note_tokens = max_note_tokens
        self._rows = np.arange(batch_size)
        b = batch_size
        self.sounding = np.zeros((b, 128), bool)
        self.deadline = np.full((b, 128), self._NEVER, np.int64)  # step by which a sounding note must end
        self.n_sounding = np.zeros(b, np.int64)
        self.clock = np.zeros(b, np.int64)  # steps since the start (or the last EOS)
        self.n_tokens = 0  # tokens seen (prompt and generated), the same for every row
        self.on_token = np.zeros((b, 128), np.int64)  # n_tokens at each sounding note's NOTE_ON
        self.velocity_bin = np.zeros(b, np.int64)  # 0: none yet
        self.after_velocity = np.zeros(b, bool)
        self.on_this_step = np.zeros(b, bool)
        self.after_short_shift = np.zeros(b, bool)

    def _reset(self, rows: np.ndarray) -> None:
        self.sounding[rows] = False
        self.deadline[rows] = self._NEVER
        for state in (
            self.n_sounding,
            self.clock,
            self.velocity_bin,
            self.after_velocity,
            self.on_this_step,
            self.after_short_shift,
        ):
            state[rows] = 0

    def start(self, prompt: np.ndarray) -> None:
        prompt = np.asarray(prompt)
        if prompt.ndim != 2 or prompt.shape[0] != self.batch_size:
            raise ValueError(f"prompt must be (batch={self.batch_size}, T), got shape {prompt.shape}")
        V.check_ids(prompt.reshape(-1))
        self._reset(self._rows)
        self.n_tokens = 0
        for t in range(prompt.shape[1]):
            self.advance(prompt[:, t])

    def allowed(self) -> np.ndarray:
        mask = np.empty((self.batch_size, V.VOCAB_SIZE), bool)
        sounding, after_velocity = self.sounding, self.after_velocity
        next_deadline = self.deadline.min(1)
        overdue = self.clock >= next_deadline
        out_of_view = None
        if self.max_note_tokens is not None:
            out_of_view = sounding & (self.on_token <= self.n_tokens - self.max_note_tokens)
            overdue = overdue | out_of_view.any(1)
        crowded = self.n_sounding >= self.max_polyphony

        can_on = ~(overdue | (crowded & ~after_velocity))
        np.greater(can_on[:, None], sounding, out=mask[:, V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128])
        can_off = ~(self.on_this_step | after_velocity)
        offs = mask[:, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128]
        np.logical_and(sounding, can_off[:, None], out=offs)
        if overdue.any():
            due = sounding[overdue] & (self.deadline[overdue] <= self.clock[overdue, None])
            if out_of_view is not None:
                due |= out_of_view[overdue]
            offs[overdue] = due
        longest = np.where(overdue | after_velocity | self.after_short_shift, 0, next_deadline - self.clock)
        np.less_equal(
            self._SHIFT_STEPS, longest[:, None], out=mask[:, V.TIME_SHIFT_OFFSET : V.VELOCITY_OFFSET]
        )
        velocities = mask[:, V.VELOCITY_OFFSET : V.EOS_ID]
        np.not_equal(self._BINS, self.velocity_bin[:, None], out=velocities)
        velocities &= ~(overdue | after_velocity | crowded)[:, None]
        mask[:, V.EOS_ID] = (self.n_sounding == 0) & ~after_velocity
        mask[:, V.PAD_ID] = False
        return mask

    def advance(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens).reshape(-1)
        kind = V._TYPE_OF_ID[tokens]
        value = V._VALUE_OF_ID[tokens]
        notes = kind <= EVENT_NOTE_OFF
        if notes.any():
            on = kind == EVENT_NOTE_ON
            r, p = self._rows[notes], value[notes]
            was = self.sounding[r, p]
            now = on[notes]
            self.n_sounding[r] += now.astype(np.int64) - was
            self.sounding[r, p] = now
            # a NOTE_ON of a sounding pitch (prompts only) restarts its clock; a stray NOTE_OFF changes nothing
            self.deadline[r, p] = np.where(now, self.clock[r] + self.max_note_steps, self._NEVER)
            self.on_token[r, p] = self.n_tokens
            self.on_this_step |= on
        shift = _SHIFT_STEPS_OF_ID[tokens]
        self.clock += shift
        self.on_this_step &= shift == 0
        self.after_velocity = velocity = kind == EVENT_VELOCITY
        self.velocity_bin = np.where(velocity, value, self.velocity_bin)
        self.after_short_shift = _IS_SHORT_SHIFT[tokens]
        self.n_tokens += 1
        if (tokens == V.EOS_ID).any():
            self._reset(tokens == V.EOS_ID)
