"""The onset grid of a sequenced prompt, and the sampler's snapping of time to it.

A MIDI file written in a sequencer (most ragtime and pop files, unlike a recorded performance)
strikes every note on a grid: pineapple-rag's onsets all lie 15 or 30 steps (10 ms each) apart.
The model, trained mostly on performances, spreads its chords over 10-30 ms and drifts off such a
grid, and that is most of the rhythm its continuations miss (docs/model.md, "Onsets"). A prior on
*when* to strike held notes back to a later grid point and thinned the music; here the sampler
moves *time* instead: each TIME_SHIFT's probability goes to the shift that lands on the grid point
nearest to where it would have landed, so a note the model wanted a little early or late comes on
the nearest point; a shift too short to reach the next point (a rolled chord's 10-30 ms) is taken
away, and the row does something else at this moment. A performance has no such grid
(`detect_grid` finds none) and is left alone. The snap itself lives with the rest of piano
sampling (`generation.piano.PianoSamplingGrammar`); the numbers that chose it are in docs/model.md.

The snap lands releases on grid points too, where a sequencer often ends its notes a few steps
before one: the prompt's habit is learned per note length (`learn_articulation`) and each release
the sampler made on a point is moved back to it (`articulate`), after sampling, the model's
choices kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicgpt.tokenizers import vocab as V

# A grid is believed when at least MIN_ONSETS distinct onsets were heard and at least
# MIN_ON_GRID of them lie within TOLERANCE steps of it. Its spacing is searched from MAX_SPACING
# down to MIN_SPACING steps (a 16th at 240 bpm is 6.25 steps; a performance's spread gaps fit only
# spacings far below MIN_SPACING), finely enough that the true spacing's onsets stay within
# TOLERANCE of a candidate's points over the whole stretch (a tempo's 16th is rarely a round
# number of steps: POP909_022's is 21.43), then fitted by least squares. Only the last
# RECENT_ONSETS onsets are read: a sequenced file's tempo changes (POP909_022 goes from 70 to 69
# bpm and back, solace.mid's rubato is written as tempo changes), and what a continuation goes on
# from is the tempo it has reached.
MIN_ONSETS = 16
MIN_ON_GRID = 0.95
TOLERANCE = 1.0
MIN_SPACING, MAX_SPACING = 6.0, 100.0
RECENT_ONSETS = 64


@dataclass(frozen=True)
class OnsetGrid:
    """Grid points at clock `phase + k * spacing` (in steps; both fractional: a tempo's 16th is
    rarely a whole number of 10 ms steps), each rounded to the step the encoder would write.
    `since`: the first onset it was fitted on (earlier music may lie on another tempo's grid)."""

    spacing: float
    phase: float
    since: int = 0

    def nearest(self, clock: np.ndarray) -> np.ndarray:
        """The grid point nearest each clock, as an integer step."""
        k = np.rint((np.asarray(clock, np.float64) - self.phase) / self.spacing)
        return np.rint(self.phase + k * self.spacing).astype(np.int64)

    def subdivided(self, divisions: int) -> OnsetGrid:
        return OnsetGrid(self.spacing / divisions, self.phase, self.since)


def onset_clocks(ids: np.ndarray) -> np.ndarray:
    """The distinct onset times (in steps) of a token sequence, from its last EOS on."""
    ids = np.asarray(ids)
    ends = np.flatnonzero(ids == V.EOS_ID)
    ids = ids[ends[-1] + 1 :] if ends.size else ids
    clock_before = np.cumsum(V.shift_steps(ids)) - V.shift_steps(ids)
    return np.unique(clock_before[V.TYPE_OF_ID[ids] == V.EventType.NOTE_ON])


def detect_grid(onsets: np.ndarray) -> OnsetGrid | None:
    """The coarsest grid that holds MIN_ON_GRID of the last RECENT_ONSETS onsets (distinct times,
    in steps), or None. Coarsest, because every finer subdivision of the true grid holds the
    onsets too; a grid twice too coarse misses about half of them.
    """
    onsets = np.unique(np.asarray(onsets, np.float64))[-RECENT_ONSETS:]
    if onsets.size < MIN_ONSETS:
        return None
    # candidates a factor (1 - TOLERANCE / span) apart: between two of them, the points of the
    # true spacing drift at most TOLERANCE / 2 from the nearer candidate's over the whole span,
    # so the search admits onsets within 1.5 TOLERANCE and the fitted grid is held to TOLERANCE
    ratio = 1 - TOLERANCE / max(onsets[-1] - onsets[0], 2 * TOLERANCE)
    count = int(np.ceil(np.log(MIN_SPACING / MAX_SPACING) / np.log(ratio))) + 1
    spacings = MAX_SPACING * ratio ** np.arange(count)
    chunks = np.array_split(spacings, max(1, count // 1024))
    # measured from one of the first onsets: the first few may be off the grid (a grace note)
    for reference in onsets[: int(np.floor((1 - MIN_ON_GRID) * onsets.size)) + 1]:
        span = onsets - reference
        for chunk in chunks:
            off = np.abs(span[None, :] - np.rint(span[None, :] / chunk[:, None]) * chunk[:, None])
            for spacing in chunk[(off <= 1.5 * TOLERANCE).mean(1) >= MIN_ON_GRID]:
                k = np.rint(span / spacing)
                near = np.abs(span - k * spacing) <= 1.5 * TOLERANCE
                # least squares over the onsets near it: onset = phase + k * spacing
                slope, intercept = np.polyfit(k[near], onsets[near], 1)
                on = np.abs(onsets - (intercept + k * slope)) <= TOLERANCE
                if on.mean() >= MIN_ON_GRID:
                    return OnsetGrid(spacing=float(slope), phase=float(intercept), since=int(onsets[0]))
    return None


# --- articulation: where between grid points a sequenced file ends its notes ---------------------

# An articulation is believed from this many prompt notes ended on or just before a grid point.
MIN_RELEASES = 16


@dataclass(frozen=True)
class Articulation:
    """How a sequenced prompt ends its notes: for a note lasting k grid steps (onset to the grid
    point nearest its end), the offsets (steps, <= 0) from that point at which the prompt's notes
    of that length end, and how many ended at each. pineapple-rag's eighths (2 steps of 15) end
    4 steps early, its sixteenths on the point or 2 steps early; most files end every note on a
    point (no articulation: `learn_articulation` returns None)."""

    grid: OnsetGrid
    by_length: dict[int, tuple[np.ndarray, np.ndarray]]  # k -> (offsets, counts)

    def offsets_for(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The offsets of the nearest length the prompt has (the shorter on a tie)."""
        known = np.array(sorted(self.by_length))
        return self.by_length[int(known[np.abs(known - k).argmin()])]


def note_spans(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pitch, onset clock, end clock, index of the NOTE_OFF) of every note a token sequence ends,
    clocks in steps from its first token; a note struck again while sounding ends there."""
    ids = np.asarray(ids)
    steps = V.shift_steps(ids)
    clock = np.cumsum(steps)
    struck: dict[int, int] = {}
    out = []
    for i in np.flatnonzero(V.TYPE_OF_ID[ids] != V.EventType.TIME_SHIFT).tolist():
        kind, pitch = V.TYPE_OF_ID[ids[i]], int(V.VALUE_OF_ID[ids[i]])
        if kind == V.EventType.NOTE_ON:
            struck[pitch] = int(clock[i])
        elif kind == V.EventType.NOTE_OFF and pitch in struck:
            out.append((pitch, struck.pop(pitch), int(clock[i]), i))
        elif ids[i] == V.EOS_ID:
            struck.clear()
    if not out:
        return tuple(np.zeros(0, np.int64) for _ in range(4))
    return tuple(np.array(col, np.int64) for col in zip(*out, strict=True))


def learn_articulation(ids: np.ndarray, grid: OnsetGrid) -> Articulation | None:
    """The articulation of a prompt on its grid, or None when its notes end on the points.

    Counted over the notes that end on a point or less than half a spacing before one; ends just
    after a point (a performer's overlap) count as on it.
    """
    _, onset, end, _ = note_spans(ids)
    fitted = onset >= grid.since  # notes struck before lie on an earlier tempo's grid
    onset, end = onset[fitted], end[fitted]
    if onset.size == 0:
        return None
    point = grid.nearest(end)
    offset = np.minimum(end - point, 0)
    k = np.rint((point - onset) / grid.spacing).astype(np.int64)
    keep = (k >= 1) & (offset > -grid.spacing / 2)
    if keep.sum() < MIN_RELEASES or not (offset[keep] < 0).any():
        return None
    by_length = {}
    for length in np.unique(k[keep]).tolist():
        values, counts = np.unique(offset[keep & (k == length)], return_counts=True)
        by_length[length] = (values, counts)
    return Articulation(grid, by_length)


def articulate(
    ids: np.ndarray, first: int, articulation: Articulation, rng: np.random.Generator
) -> np.ndarray:
    """ids with each note ended on a grid point from index `first` on ended where the prompt
    would end it: a few steps before the point (`Articulation`), drawn per note from the prompt's
    offsets for a note of its length. A release moves only into the silence before its point
    (never before the last event or the note's onset, nor before ids[first]); the sequence keeps
    its events' order and its total time."""
    ids = np.asarray(ids, np.int64)
    steps = V.shift_steps(ids)
    clock = np.cumsum(steps)
    is_event = steps == 0
    time = clock.copy()
    grid = articulation.grid
    floor = int(clock[first - 1]) if first > 0 else 0
    event_clocks = clock[is_event]
    _, onset, end, off_index = note_spans(ids)
    for start, stop, i in zip(onset.tolist(), end.tolist(), off_index.tolist(), strict=True):
        if i < first or int(grid.nearest(np.array([stop]))[0]) != stop:
            continue
        k = int(round((stop - start) / grid.spacing))
        if k < 1:
            continue
        offsets, counts = articulation.offsets_for(k)
        moved = stop + int(rng.choice(offsets, p=counts / counts.sum()))
        before = np.searchsorted(event_clocks, stop)  # events strictly before the point
        last = int(event_clocks[before - 1]) if before else -1
        if moved < stop and moved > max(last, start) and moved >= floor:
            time[i] = moved
    if (time == clock).all():
        return ids
    events = np.flatnonzero(is_event[first:]) + first
    order = events[np.argsort(time[events], kind="stable")]
    out, now = ids[:first].tolist(), floor
    for i in order.tolist():
        if time[i] > now:
            out.extend(V.split_gap(int(time[i] - now)).tolist())
            now = int(time[i])
        out.append(int(ids[i]))
    if clock[-1] > now:
        out.extend(V.split_gap(int(clock[-1] - now)).tolist())
    return np.array(out, np.int64)
