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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicgpt.tokenizers import vocab as V

# A grid is believed when at least MIN_ONSETS distinct onsets were heard and at least
# MIN_ON_GRID of them lie within TOLERANCE steps of it. Its spacing is searched from MAX_SPACING
# down to MIN_SPACING steps (a 16th at 240 bpm is 6.25 steps; a performance's spread gaps fit only
# spacings far below MIN_SPACING), in SEARCH_RESOLUTION steps, then fitted by least squares.
MIN_ONSETS = 16
MIN_ON_GRID = 0.95
TOLERANCE = 1.0
MIN_SPACING, MAX_SPACING, SEARCH_RESOLUTION = 6.0, 100.0, 0.05


@dataclass(frozen=True)
class OnsetGrid:
    """Grid points at clock `phase + k * spacing` (in steps; both fractional: a tempo's 16th is
    rarely a whole number of 10 ms steps), each rounded to the step the encoder would write."""

    spacing: float
    phase: float

    def nearest(self, clock: np.ndarray) -> np.ndarray:
        """The grid point nearest each clock, as an integer step."""
        k = np.rint((np.asarray(clock, np.float64) - self.phase) / self.spacing)
        return np.rint(self.phase + k * self.spacing).astype(np.int64)

    def subdivided(self, divisions: int) -> OnsetGrid:
        return OnsetGrid(self.spacing / divisions, self.phase)


def onset_clocks(ids: np.ndarray) -> np.ndarray:
    """The distinct onset times (in steps) of a token sequence, from its last EOS on."""
    ids = np.asarray(ids)
    ends = np.flatnonzero(ids == V.EOS_ID)
    ids = ids[ends[-1] + 1 :] if ends.size else ids
    clock_before = np.cumsum(V.shift_steps(ids)) - V.shift_steps(ids)
    return np.unique(clock_before[V.TYPE_OF_ID[ids] == V.EventType.NOTE_ON])


def detect_grid(onsets: np.ndarray) -> OnsetGrid | None:
    """The coarsest grid that holds MIN_ON_GRID of the onsets (distinct times, in steps), or None.

    Coarsest, because every finer subdivision of the true grid holds the onsets too; a grid twice
    too coarse misses about half of them.
    """
    onsets = np.unique(np.asarray(onsets, np.float64))
    if onsets.size < MIN_ONSETS:
        return None
    span = onsets - onsets[0]
    for spacing in np.arange(MAX_SPACING, MIN_SPACING - 1e-9, -SEARCH_RESOLUTION):
        k = np.rint(span / spacing)
        off = np.abs(span - k * spacing)
        on = off <= TOLERANCE
        if on.mean() < MIN_ON_GRID:
            continue
        # least squares over the onsets on it: onset = phase + k * spacing
        slope, intercept = np.polyfit(k[on], onsets[on], 1)
        return OnsetGrid(spacing=float(slope), phase=float(intercept))
    return None
