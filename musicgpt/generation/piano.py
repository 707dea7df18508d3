"""Piano continuations: the opening of a MIDI file in, the same opening plus new music out.

This is the music side of generation; the sampler itself (`generate_stream`) knows nothing of
music. Here we cut the prompt at a time, keep the output well formed with the tokenizer's
grammar, and stop once each sample holds the requested seconds of new music.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from musicgpt.errors import MusicGPTError
from musicgpt.generation.decode import generate_stream
from musicgpt.generation.grid import (
    OnsetGrid,
    articulate,
    detect_grid,
    learn_articulation,
    note_spans,
    onset_clocks,
)
from musicgpt.generation.note_cache import NoteCache
from musicgpt.generation.sampling import SamplingConfig
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.base import MusicTokenizer
from musicgpt.tokenizers.grammar import IS_ONSET_TOKEN, MAX_GAP_STEPS, MIDDLE, PLAIN
from musicgpt.tokenizers.infill import prefix_last, prefix_of, suffix_of

# How piano continuations sample unless told otherwise: the model's distribution mixed with the
# prompt cache at its fitted weight (docs/model.md, "The prompt cache": continuations follow their
# prompt more closely, and the held-out loss of unseen pieces falls by 0.4-0.8 nats/token).
# Time snapped to a sequenced prompt's onset grid (`SamplingConfig.grid`, `generation.grid`): the
# rhythm of the file it continues (docs/model.md, "Onsets").
PIANO_SAMPLING = SamplingConfig(prompt_cache=1.0, grid=1)

# How strongly the piece's own note lengths press a sounding note to end (`PerformanceGrammar.
# release_bias`; 0: the model alone). Chosen by the continuation table (docs/model.md, "Note lengths").
RELEASE_PRIOR = 2.0
# How often the piece's own note lengths, not the model, decide how long a note sounds (per
# note, drawn when it is struck: `draw_length`; 0: never). The model holds the notes of a
# sequenced rag three times as long as the rag does, even 90 s in, and no prior on its logits
# moves it (docs/model.md, "Note lengths"). Chosen by the continuation table.
LENGTH_DRAWS = 0.5
# The same on a sequenced prompt's grid (`SamplingConfig.grid`): a sequencer gives each kind of
# note one length (pineapple-rag's eighths all last 26 steps), and the draws copy them all.
LENGTH_DRAWS_ON_GRID = 1.0
# Fewer notes (lengths) or onsets (gaps, chords) heard in the prompt than this, and the piece
# decides none.
LENGTH_DRAWS_MIN_NOTES = 16
NO_RELEASE = np.iinfo(np.int64).max // 2  # a note whose length no draw decided
# No note, drawn or the model's, outlasts the length by which all but this share of the prompt's
# notes have ended (`longest_length`; 0: no such end). The model holds some notes past anything
# its prompt holds: from 90 s into Maestro_2, whose last 20 s hold no note over 1.6 s, 0.2-1.6% of
# its notes sounded over 5 s, the real continuation's none (docs/model.md, "The longest note").
LONGEST_SHARE = 0.01
# How often the piece's own gaps between onsets, not the model, decide when the next note comes
# (per onset, drawn when one is struck: `_draw_onset`; 0: never). The model plays its corpus's
# pace: four times as many notes as a slow pedalled opening has, half a rag's.
# Chosen by the continuation table (docs/model.md, "Onsets and chords, drawn from the piece").
ONSET_DRAWS = 1.0
# How often the piece's own chords, not the model, decide how many notes an onset strikes (per
# onset, drawn with its first note: `_draw_chord`; 0: never). The model strikes a rag's stride
# chords one note at a time: 1.4 notes per onset against the rag's 2.4. Chosen by the same table.
CHORD_DRAWS = 1.0
# What the draws read: the prompt's notes, lengths, gaps and chords, each weighted by how recently
# it was heard (halved every this many seconds before the prompt's end), never the sample's own
# (the model's pace and lengths would feed back). A piece's pedalled opening is not how it goes
# on a minute later: Maestro_2's first 50 s hold 5% of notes over 5 s, its next 20 s none.
MEMORY_HALF_LIFE = 10.0
MAX_CHORD = 12  # notes struck at one time that a chord draw counts (more count as this many)
# How strongly the piece's own gaps between onsets say when the next note comes
# (`PerformanceGrammar.onset_bias`; 0: the model alone). Chosen by the continuation table
# (docs/model.md, "Onsets").
ONSET_PRIOR = 0.0
# How strongly the prompt's own pitches say which note is struck (`pitch_prior`; 0: the model
# alone). Chosen by the continuation table (docs/model.md, "Pitches").
PITCH_PRIOR = 0.5
# The pitch prior's histogram: the prompt's notes counted per pitch (not spread over neighbouring
# pitches: a neighbour is mostly out of the key, and a Gaussian of one semitone cost infilled spans
# 12 points of their pitch share, docs/model.md "Pitches, counted exactly"), a floor of this share
# of one pitch's mass for pitches the prompt never played, and no prior at all from fewer notes
# than this (a sparse opening says little about the register).
PITCH_PRIOR_FLOOR = 0.05
PITCH_PRIOR_MIN_NOTES = 16
# An infilled span's pitch prior: the music around the span, the prefix's last and the suffix's
# first INFILL_PITCH_SECONDS, and a stronger weight (a span of seconds is one passage: what sounds
# on both sides of it says more than a continuation's minutes of prompt say about the next 20 s).
# Chosen by the infill table (docs/model.md, "Pitches").
INFILL_PITCH_PRIOR = 1.0
INFILL_PITCH_SECONDS = 16.0
# The chord an infilled span leads into: in the span's last SUFFIX_PITCH_SECONDS, each pitch the
# suffix holds on that does not sound yet (the grammar has it sound at the end) gets this
# log-factor on its NOTE_ON. The model hardly reads a suffix that opens with NOTE_OFFs as "strike
# these": it struck a chord of its own there, then, in the last steps, the pitches the grammar
# demands, a burst of short notes (docs/model.md, "The chord a span leads into"). Chosen by the
# infill table there (2, 4, 8, 16: each better than the last); at e^16 a missing pitch comes
# before any other the model would strike, short of a rule.
SUFFIX_PITCH_PRIOR = 16.0
SUFFIX_PITCH_SECONDS = 1.0


@dataclass(frozen=True)
class PianoPriors:
    """The piece's own habits, as priors the sampler multiplies into the model's distribution:
    `release` its note lengths (`PerformanceGrammar.release_bias`), `onset` its gaps between
    onsets (`PerformanceGrammar.onset_bias`), `pitch` the prompt's pitches (`pitch_prior`); 0 turns
    one off; `infill_pitch` the pitch prior's weight in an infilled span, from the music around it
    (`pitches_around`); `suffix_pitches` the log-factor, in an infilled span's last second, on
    the pitches its suffix holds on that do not sound yet (`SUFFIX_PITCH_PRIOR`).
    `length_draws`: the share of notes whose length the prompt's note lengths
    decide outright (`draw_length`; `length_draws_on_grid` on a sequenced prompt's grid);
    `onset_draws` the share of onsets whose time its gaps between onsets decide, `chord_draws`
    the share whose number of notes its chords decide; `longest_share` the share of its notes
    that may outlast the length at which every note, drawn or the model's, ends (`longest_length`).
    Draws and that end, not factors on the logits: none in greedy decoding, and none where
    `evaluate --copy-gap` scores the sampler's distribution."""

    release: float = RELEASE_PRIOR
    onset: float = ONSET_PRIOR
    pitch: float = PITCH_PRIOR
    length_draws: float = LENGTH_DRAWS
    length_draws_on_grid: float = LENGTH_DRAWS_ON_GRID
    infill_pitch: float = INFILL_PITCH_PRIOR
    onset_draws: float = ONSET_DRAWS
    chord_draws: float = CHORD_DRAWS
    longest_share: float = LONGEST_SHARE
    suffix_pitches: float = SUFFIX_PITCH_PRIOR


def kaplan_meier(ended: np.ndarray, at_least: np.ndarray | None = None):
    """The Kaplan-Meier estimate of a length from histograms (per step) of the lengths heard to
    their end and of those still going at least so long: (at_risk, hazard, survival), at_risk[k]
    the weight of lengths that ended at k or later or go on k steps or more, survival[k] P(length
    > k)."""
    ended = np.asarray(ended, np.float64)
    at_least = np.zeros_like(ended) if at_least is None else np.asarray(at_least, np.float64)
    at_risk = np.cumsum((ended + at_least)[::-1])[::-1]
    hazard = np.divide(ended, at_risk, out=np.zeros_like(ended), where=at_risk > 0)
    return at_risk, hazard, np.cumprod(1 - hazard)


def draw_length(
    lengths_heard: np.ndarray, age: int, rng: np.random.Generator, at_least: np.ndarray | None = None
) -> int | None:
    """A note length (steps) from the piece's own, for a note now `age` steps old, drawn from the
    Kaplan-Meier estimate of the piece's lengths: the notes heard to their end
    (`lengths_heard[k]`: notes that lasted k steps, or their weights) and the notes still
    sounding, which lasted at least as long as they are old (`at_least[k]`: notes k steps old).
    Without the second, the lengths heard early in a piece are the short ones (a long note has
    not ended yet), and the draws of a 10 s opening are too short. The onset draws read gaps
    between onsets the same way.

    `age` where no note heard, ended or sounding, lasted longer (by the piece's lengths the note
    is over: it ends now); None where the estimate leaves it open (a note sounding now outlasted
    every ended one): the model decides."""
    ended = np.asarray(lengths_heard, np.float64)
    at_risk, hazard, survival = kaplan_meier(ended, at_least)
    if age + 1 >= len(ended) or at_risk[age + 1] <= 0:
        return age  # older than every note heard
    cumulative = np.cumsum(survival[age : len(ended) - 1] * hazard[age + 1 :])  # P(age < length <= k)
    u = rng.random() * survival[age]
    if u >= cumulative[-1]:  # past the longest ended note: the estimate leaves it open
        return None
    return age + 1 + int(np.searchsorted(cumulative, u, side="right"))


def longest_length(lengths_heard: np.ndarray, at_least: np.ndarray, share: float) -> int | None:
    """The length (steps) by which all but `share` of the notes heard have ended, by the same
    Kaplan-Meier estimate as `draw_length`; None where more than that share is left open (notes
    still sounding that outlasted every ended one), or for a share of 0."""
    _, _, survival = kaplan_meier(lengths_heard, at_least)
    below = np.flatnonzero(survival < share)
    return int(below[0]) if below.size and share > 0 else None


def heard_lengths(
    ids: np.ndarray, half_life_steps: float, max_steps: int, ahead: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The note lengths of `ids` as `draw_length` reads them, two (max_steps + 1,) histograms of
    steps: the notes that end in `ids`, each counted 0.5 ** (steps from its end to the end of
    `ids` / half_life_steps), and the notes still sounding at its end, at their age (at least
    that long). `ahead`: `ids` is music that comes after the notes drawn (an infilled span's
    suffix), each note counted by how soon it is struck: 0.5 ** (its onset / half_life_steps);
    its first NOTE_OFFs end notes it never heard begin, and count nothing."""
    ids = np.asarray(ids)
    clock = np.cumsum(V.shift_steps(ids))
    kind, value = V.TYPE_OF_ID[ids], V.VALUE_OF_ID[ids]
    struck_at = np.full(128, -1, np.int64)
    lengths, ends = [], []
    for i in np.flatnonzero(kind <= V.EventType.NOTE_OFF):
        pitch = int(value[i])
        if kind[i] == V.EventType.NOTE_ON:
            struck_at[pitch] = clock[i]
        elif struck_at[pitch] >= 0:
            lengths.append(clock[i] - struck_at[pitch])
            ends.append(clock[i])
            struck_at[pitch] = -1
    now = clock[-1] if clock.size else 0
    ended, at_least = np.zeros(max_steps + 1), np.zeros(max_steps + 1)
    sounding = struck_at[struck_at >= 0]
    if lengths:
        lengths, ends = np.asarray(lengths), np.asarray(ends)
        since = ends - lengths if ahead else now - ends
        np.add.at(ended, np.clip(lengths, 0, max_steps), 0.5 ** (since / half_life_steps))
    sounding_weights = 0.5 ** (sounding / half_life_steps) if ahead else np.ones(sounding.size)
    np.add.at(at_least, np.clip(now - sounding, 0, max_steps), sounding_weights)
    return ended, at_least


def heard_onsets(
    ids: np.ndarray, half_life_steps: float, ahead: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The onsets of `ids` as the onset and chord draws read them: (MAX_GAP_STEPS + 1,) the gaps
    (steps) between its distinct onset times, and (MAX_CHORD + 1,) how many of its onsets strike
    1, 2, ... notes; each counted 0.5 ** (steps from the onset to the end of `ids` /
    half_life_steps), or with `ahead` (`heard_lengths`) from the start of `ids` to the onset."""
    ids = np.asarray(ids)
    clock = np.cumsum(V.shift_steps(ids))
    onsets, per_onset = np.unique(clock[V.TYPE_OF_ID[ids] == V.EventType.NOTE_ON], return_counts=True)
    since = onsets if ahead else (clock[-1] if clock.size else 0) - onsets
    weights = 0.5 ** (since / half_life_steps)
    gaps = np.zeros(MAX_GAP_STEPS + 1)
    # a gap counts as its later onset does (ahead: as its earlier one, the one nearer the span)
    np.add.at(gaps, np.minimum(np.diff(onsets), MAX_GAP_STEPS), weights[:-1] if ahead else weights[1:])
    chords = np.zeros(MAX_CHORD + 1)
    np.add.at(chords, np.minimum(per_onset, MAX_CHORD), weights)
    return gaps, chords


def heard_around(row: np.ndarray, half_life_steps: float, max_steps: int):
    """What the draws read for one prompt: its `heard_lengths` and `heard_onsets`, each faded
    by how long before the model takes over; an infill prompt's prefix so, and its suffix by
    how long after the span (the music on both sides of a span is what it should sound like)."""
    prefix, suffix = prefix_of(row), suffix_of(row)
    lengths = heard_lengths(prefix, half_life_steps, max_steps)
    onsets = heard_onsets(prefix, half_life_steps)
    if suffix.size:
        after = heard_lengths(suffix, half_life_steps, max_steps, ahead=True)
        lengths = tuple(a + b for a, b in zip(lengths, after, strict=True))
        after = heard_onsets(suffix, half_life_steps, ahead=True)
        onsets = tuple(a + b for a, b in zip(onsets, after, strict=True))
    return lengths, onsets


def length_draws_rng(sampling: SamplingConfig, seed: int | None) -> np.random.Generator | None:
    """The generator of the piece's draws (lengths, onsets, chords), seeded like the sampler;
    None in greedy decoding, whose samples must stay alike (`PianoPriors.length_draws`)."""
    return np.random.default_rng(seed) if sampling.temperature > 0 else None


def pitch_prior(ids: np.ndarray, strength: float) -> np.ndarray:
    """(128,) log-factors on the NOTE_ONs: the prompt's pitches as a prior on which note is struck.

    The prompt's NOTE_ONs counted per pitch, as shares h(p); a pitch gets
    strength * log(88 * (h(p) + f) / (1 + 88 f)) with f = PITCH_PRIOR_FLOOR / 88: above 0 where the
    prompt plays more than an even share of the keyboard, far below where it never plays. Not
    renormalized within the NOTE_ONs: in the prompt's register a note is also likelier to be
    struck at all (measured: normalizing it away kept the pitch gain and lost the polyphony and
    density gains, docs/model.md "Pitches").
    Zeros from fewer than PITCH_PRIOR_MIN_NOTES notes.
    """
    ids = np.asarray(ids)
    pitches = V.VALUE_OF_ID[ids[V.TYPE_OF_ID[ids] == V.EventType.NOTE_ON]]
    if strength <= 0 or pitches.size < PITCH_PRIOR_MIN_NOTES:
        return np.zeros(128, np.float32)
    counts = np.bincount(pitches, minlength=128).astype(np.float64)
    share = counts / counts.sum()
    floor = PITCH_PRIOR_FLOOR / 88
    return (strength * np.log(88 * (share + floor) / (1 + 88 * floor))).astype(np.float32)


def last_seconds(ids: np.ndarray, seconds: float) -> np.ndarray:
    """The tokens of the last `seconds` of music: the events at or after that time."""
    clock_after = np.cumsum(V.shift_steps(ids))
    if clock_after.size == 0:
        return np.asarray(ids)
    start = clock_after[-1] - round(seconds * V.STEPS_PER_SECOND)
    return np.asarray(ids)[clock_after - V.shift_steps(ids) >= start]


def pitches_around(fim_prompt: np.ndarray) -> np.ndarray:
    """What an infilled span's pitch prior reads: the prefix's last and the suffix's first
    INFILL_PITCH_SECONDS of music (the whole prefix where those hold fewer than
    PITCH_PRIOR_MIN_NOTES notes)."""
    prefix = prefix_of(fim_prompt)
    around = np.concatenate(
        [
            last_seconds(prefix, INFILL_PITCH_SECONDS),
            cut_at_seconds(suffix_of(fim_prompt), INFILL_PITCH_SECONDS),
        ]
    )
    struck = int((V.TYPE_OF_ID[around] == V.EventType.NOTE_ON).sum())
    return around if struck >= PITCH_PRIOR_MIN_NOTES else prefix


# Dead air: a continuation may stay silent (no note sounding) for at most the prompt's longest
# silence plus DEAD_AIR_MARGIN_STEPS, and never less than DEAD_AIR_MIN_STEPS, before it must strike
# a note. Where the model wants to end the piece (EOS, which a continuation never allows) its mass
# went to 1 s shifts: about one sample in fifty of Für Elise fell silent for 5-9 s
# (docs/model.md, "Dead air").
DEAD_AIR_MIN_STEPS = 200
DEAD_AIR_MARGIN_STEPS = 100


def longest_silence_steps(ids: np.ndarray) -> tuple[int, int]:
    """(longest stretch with no note sounding between two of its notes, the silence at its end),
    in steps, of a token sequence; (0, its length) when it has no note."""
    ids = np.asarray(ids)
    total = int(V.shift_steps(ids).sum())
    _, onset, end, _ = note_spans(ids)
    if onset.size == 0:
        return 0, total
    order = np.argsort(onset, kind="stable")
    reach = np.maximum.accumulate(end[order])  # the latest end of the notes struck so far
    gaps = onset[order][1:] - reach[:-1]
    longest = int(max(gaps.max(initial=0), 0))
    return longest, max(total - int(reach[-1]), 0)


# A stuck loop: once a short figure (one key, two keys in turn) has come round a few times, a
# sample may keep going round it (pineapple-rag from 10 s: one key struck 70 times in a row, 9 s
# of it; capped, the same sample fell into two keys in turn for 10 s); keeping the note cache from
# matching a figure against itself did not stop it (docs/model.md). A figure of up to
# LOOP_MAX_PERIOD notes may come round at most LOOP_MIN_CYCLES times in a row, or the prompt's
# longest such run of it plus LOOP_MARGIN_CYCLES if that is more; then the note that would go
# round again is forbidden (docs/model.md, "A stuck loop"). The sampled loops ran 35-70 rounds;
# the bundled corpus's own pieces 2-5 in most, 8 strikes of one key in one MAESTRO performance,
# a trill of 14.5 rounds in another (a continuation may cut such a trill short unless its prompt
# had one: at 12 rounds the loops' samples were further from the real music, docs/model.md).
LOOP_MAX_PERIOD = 4
LOOP_MIN_CYCLES = 8
LOOP_MARGIN_CYCLES = 4


def onset_pitches(ids: np.ndarray) -> np.ndarray:
    """The pitch of every NOTE_ON of a token sequence, in order."""
    ids = np.asarray(ids)
    return ids[(ids >= V.NOTE_ON_OFFSET) & (ids < V.NOTE_ON_OFFSET + 128)] - V.NOTE_ON_OFFSET


def longest_loops(pitches: np.ndarray, max_period: int = LOOP_MAX_PERIOD) -> np.ndarray:
    """(max_period,): for each period d, the most notes in a row that repeat the note d before
    (plus the d they repeat: a key struck 5 times alone is 5 notes of period 1, two keys in turn
    for 6 notes are 6 of period 2); 0 where there is no repeat."""
    out = np.zeros(max_period, np.int64)
    for d in range(1, max_period + 1):
        same = np.r_[False, pitches[d:] == pitches[:-d], False] if pitches.size > d else np.zeros(2, bool)
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        runs = edges[1::2] - edges[::2]  # lengths of the runs of repeats
        out[d - 1] = runs.max() + d if runs.size else 0
    return out


def trailing_loop(pitches: list[int], period: int, limit: int) -> int:
    """How many notes at the end of `pitches` repeat the note `period` before them, plus the
    `period` they repeat (0 without a repeat); counted up to `limit`."""
    n, k = len(pitches), 0
    while k < limit and n - 1 - k - period >= 0 and pitches[n - 1 - k] == pitches[n - 1 - k - period]:
        k += 1
    return k + period if k else 0


_IS_SHIFT = V.STEPS_OF_ID > 0
_IS_NOTE_OFF = torch.from_numpy(V.TYPE_OF_ID == V.EventType.NOTE_OFF)
_IS_ONSET_TOKEN = torch.from_numpy(IS_ONSET_TOKEN)

# A guard on runaway sampling: dense piano music runs at ~50-100 tokens per second of music.
MAX_TOKENS_PER_SECOND = 400
# A relative model's continuations read this many times its training window (see docs/model.md
# for the loss at 1x-8x the window).
RELATIVE_CONTEXT_FACTOR = 2


def cut_at_seconds(ids: np.ndarray, seconds: float) -> np.ndarray:
    """The tokens of the first `seconds` of music: events before that time, shifts that end by it."""
    steps = V.shift_steps(ids)
    clock_after = np.cumsum(steps)
    limit = round(seconds * V.STEPS_PER_SECOND)
    past = np.where(steps > 0, clock_after > limit, clock_after >= limit)
    end = int(np.argmax(past)) if past.any() else len(ids)
    return np.asarray(ids[:end])


def default_context(model) -> int:
    """How many tokens a continuation lets the model read: its training window for learned
    positions; RELATIVE_CONTEXT_FACTOR times that where attention sees only distances (relative
    attention, rotary positions: `config.relative`), which reads further than it trained on, and
    the further it reads, the fewer sounding notes it cannot see."""
    block_size = model.config.block_size
    return block_size * RELATIVE_CONTEXT_FACTOR if model.config.relative else block_size


class PianoSamplingGrammar:
    """The performance grammar as piano sampling uses it: the LogitsMask of `generate_stream`,
    which also supplies the release prior (`logit_bias`), the note cache (`copy_cache`) and the
    moves of time (`fold_logits`: an infilled middle's end, a sequenced prompt's grid); EOS it
    never allows (a continuation lasts the seconds asked for).

    It starts on the whole prompt when the model sees only its last `default_context` tokens:
    notes that began before the model's window are still sounding, and the grammar must know them
    so that the continuation can (and eventually must) end them. `evaluate --copy-gap` scores
    held-out pieces through the same object (evaluate/copy_gap.py).
    """

    def __init__(
        self,
        grammar,
        whole_prompt: np.ndarray,
        priors: PianoPriors | None = None,
        grid: int = 0,
        rng: np.random.Generator | None = None,
    ):
        self.grammar, self.whole_prompt = grammar, whole_prompt
        self.priors = PianoPriors() if priors is None else priors
        self.grid_divisions = grid  # SamplingConfig.grid
        self.grids: list[OnsetGrid | None] = [None] * len(whole_prompt)
        self._allowed: np.ndarray | None = None
        self._pitch_bias = np.zeros((len(whole_prompt), 128), np.float32)  # set by start()
        self._max_silence = np.full(len(whole_prompt), DEAD_AIR_MIN_STEPS)
        self._last_sound = np.zeros(len(whole_prompt), np.int64)
        # a stuck loop: each row's struck pitches, how many notes a figure of each period may span,
        # and the keys that would go round once more (set when a row strikes, read every step)
        self._struck: list[list[int]] = [[] for _ in whole_prompt]
        self._max_loop = np.tile(LOOP_MIN_CYCLES * np.arange(1, LOOP_MAX_PERIOD + 1), (len(whole_prompt), 1))
        self._looping: list[list[int]] = [[] for _ in whole_prompt]
        # the piece's note lengths deciding releases (`PianoPriors.length_draws`): draws from `rng`
        # (None: no draws, as when evaluate/copy_gap.py scores the sampler's distribution); per
        # row and pitch, the clock at which the note a draw decided ends (NO_RELEASE: the model's)
        self.rng = rng
        self._release_at = np.full((len(whole_prompt), 128), NO_RELEASE, np.int64)
        # and the clock by which each sounding note ends however it was decided: struck plus the
        # row's longest length (`PianoPriors.longest_share`; NO_RELEASE: none)
        self._release_by = np.full((len(whole_prompt), 128), NO_RELEASE, np.int64)
        self._longest = np.full(len(whole_prompt), NO_RELEASE, np.int64)
        # a shift the model meant past a drawn release: the release comes, then the rest of it
        # (`_fold_past_the_end` keeps what each row meant this step; `advance` draws from it)
        self._meant: dict[int, tuple[int, np.ndarray]] = {}
        self._resume_at = np.zeros(len(whole_prompt), np.int64)  # clock the row's shift goes on to
        # what the draws read, per row (set by start): the prompt's lengths (`heard_lengths`),
        # gaps between onsets and chords (`heard_onsets`), and how many notes and onsets it has
        self._heard: list[tuple[np.ndarray, np.ndarray]] = []
        self._prompt_gaps = np.zeros((len(whole_prompt), MAX_GAP_STEPS + 1))
        self._prompt_chords = np.zeros((len(whole_prompt), MAX_CHORD + 1))
        self._prompt_notes = np.zeros(len(whole_prompt), np.int64)
        self._prompt_onsets = np.zeros(len(whole_prompt), np.int64)
        # the piece's gaps between onsets deciding when the next note comes (`PianoPriors.
        # onset_draws`): per row, the clock of the next onset a draw decided (NO_RELEASE: the model's)
        self._onset_at = np.full(len(whole_prompt), NO_RELEASE, np.int64)
        # the piece's chords deciding how many notes an onset strikes (`PianoPriors.chord_draws`):
        # per row, the clock of its last onset (both draws are made with its first note), the
        # notes struck then, and how many it must have (0: the model's)
        self._chord_clock = np.full(len(whole_prompt), -1, np.int64)
        self._chord_notes = np.zeros(len(whole_prompt), np.int64)
        self._chord_size = np.zeros(len(whole_prompt), np.int64)

    def start(self, prompt) -> None:
        self.grammar.start(self.whole_prompt)
        if self.grid_divisions > 0:
            # each row's grid from what it heard before the model writes: an infill prompt's prefix
            found = [detect_grid(onset_clocks(prefix_of(row))) for row in self.whole_prompt]
            self.grids = [g.subdivided(self.grid_divisions) if g is not None else None for g in found]
        # On a grid, a pianist's (and the model's) release of the old notes 10-30 ms after striking
        # the new ones has no short shift left to wait for: the old notes may end right after this
        # step's NOTE_ONs (`PerformanceGrammar.release_after_onsets`; continuations only), or they
        # would sound on to the next grid point and pile up (docs/model.md, "Onsets").
        self.grammar.release_after_onsets[:] = [g is not None for g in self.grids]
        self._allowed = None
        # the register of what each row heard before the model writes: a continuation's prompt,
        # the music around an infilled span
        self._pitch_bias = np.stack(
            [
                pitch_prior(row, self.priors.pitch)
                if len(prefix_of(row)) == len(row)
                else pitch_prior(pitches_around(row), self.priors.infill_pitch)
                for row in self.whole_prompt
            ]
        )
        # dead air: how long each row may stay silent, and since when it is (continuations only)
        heard = [longest_silence_steps(row) for row in self.whole_prompt]
        self._max_silence = np.array([max(DEAD_AIR_MIN_STEPS, h + DEAD_AIR_MARGIN_STEPS) for h, _ in heard])
        self._last_sound = self.grammar.clock - np.array([tail for _, tail in heard])
        # a stuck loop: how many notes a figure of each period may span, from the prompt's own
        self._struck = [onset_pitches(row).tolist() for row in self.whole_prompt]
        periods = np.arange(1, LOOP_MAX_PERIOD + 1)
        self._max_loop = np.stack(
            [
                np.maximum(
                    LOOP_MIN_CYCLES * periods, longest_loops(np.asarray(p)) + LOOP_MARGIN_CYCLES * periods
                )
                for p in self._struck
            ]
        )
        self._looping = [self._looping_keys(row) for row in range(len(self._struck))]
        # the notes sounding where the model takes over: lengths drawn for them too
        self._release_at[:], self._release_by[:] = NO_RELEASE, NO_RELEASE
        self._meant, self._resume_at[:] = {}, 0
        # what the draws read: the prompt's lengths, gaps and chords, faded by how long ago
        # (an infill prompt's prefix, and its suffix faded by how long after the span)
        half_life = MEMORY_HALF_LIFE * V.STEPS_PER_SECOND
        width = self.grammar.lengths_heard.shape[1] - 1
        around = [heard_around(row, half_life, width) for row in self.whole_prompt]
        self._heard = [lengths for lengths, _ in around]
        longest = [
            longest_length(ended, at_least, self.priors.longest_share) for ended, at_least in self._heard
        ]
        self._longest[:] = [NO_RELEASE if length is None else length for length in longest]
        self._prompt_notes = self.grammar.lengths_heard.sum(1)  # (unweighted)
        ages = self.grammar.ages()
        for row, pitch in zip(*np.nonzero(self.grammar.sounding), strict=True):
            self._draw_length(int(row), int(pitch), int(ages[row, pitch]))
        # and the gap open where the model takes over: when its next onset comes (from the
        # prompt's gaps alone: the sample's own, the model's pace among them, would feed back)
        self._prompt_gaps = np.stack([gaps for _, (gaps, _) in around])
        self._prompt_chords = np.stack([chords for _, (_, chords) in around])
        self._prompt_onsets = self.grammar.gaps_heard.sum(1) + 1  # (unweighted)
        # (a chord the prompt ends on is its own: notes may join it, and no draw sizes it)
        self._chord_clock[:] = np.where(self.grammar.clock == self.grammar.last_onset, self.grammar.clock, -1)
        self._chord_notes[:], self._chord_size[:], self._onset_at[:] = 0, 0, NO_RELEASE
        for row in np.flatnonzero(self.grammar.last_onset >= 0):
            self._draw_onset(int(row), int(self.grammar.clock[row] - self.grammar.last_onset[row]))

    def allowed(self):
        # once a step: the grid snap reads it before the sampler does (do not write into it)
        if self._allowed is None:
            self._allowed = self.grammar.allowed()
            # A continuation lasts the seconds asked for: the piece does not end in it. (EOS was
            # rare, 0.1-0.5% a step while nothing sounds, but over 20 s one sample in ten ended
            # early: 17-20 s of "silence" in the continuation table, docs/model.md "Onsets".)
            self._allowed[:, V.EOS_ID] = False
            # nor does it fall silent for longer than the prompt did: after that, a note
            grammar = self.grammar
            dead = (grammar.fim == PLAIN) & (grammar.n_sounding == 0) & ~grammar.after_velocity
            dead &= grammar.clock - self._last_sound >= self._max_silence
            if dead.any():
                self._allowed[dead, V.TIME_SHIFT_OFFSET : V.VELOCITY_OFFSET] = False
            # nor go round a short figure more often than the prompt did: another note (unless
            # that note is all the grammar allows: an infilled middle's last may have to be it)
            for row, keys in enumerate(self._looping):
                for key in keys:
                    if self._allowed[row].sum() > self._allowed[row, key]:
                        self._allowed[row, key] = False
            # the notes whose drawn lengths are over: their NOTE_OFFs first; and no time moves
            # past the next such release (`fold_logits` gives the longer shifts' mass to the one
            # that reaches it: the model meant nothing to happen before, and the release comes then)
            offs = self._allowed[:, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128]
            ending = self._due() & offs
            for row in np.flatnonzero(ending.any(1)):
                self._allowed[row] = False
                self._allowed[row, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128] = ending[row]
            to_release = self._steps_to_release()
            for row in np.flatnonzero((to_release > 0) & (to_release < V.MAX_SHIFT_STEPS)):
                self._allowed[row, V.shift_id(np.arange(to_release[row] + 1, V.MAX_SHIFT_STEPS + 1))] = False
            # the onsets whose drawn gap is not over: no note struck before it (a chord's notes
            # join it at once), and time goes straight there, stopping only for the drawn
            # releases on the way (the model's own releases come at those stops); there, a note
            to_onset = self._onset_at - grammar.clock
            drawn = (self._onset_at < NO_RELEASE) & (to_onset > 0) & ~ending.any(1)
            shifts = slice(V.TIME_SHIFT_OFFSET, V.VELOCITY_OFFSET)
            for row in np.flatnonzero(drawn):
                keep = self._allowed[row].copy()
                if grammar.clock[row] > grammar.last_onset[row]:
                    self._allowed[row, IS_ONSET_TOKEN] = False
                ok = np.flatnonzero(self._allowed[row, shifts])  # (shift k: index k - 1)
                if ok.size:
                    stop = min(int(to_onset[row]), int(ok.max()) + 1)
                    self._allowed[row, shifts] = False
                    self._allowed[row, V.shift_id(stop)] = True
                if not self._allowed[row].any():  # the grammar's rules come first
                    self._allowed[row], self._onset_at[row] = keep, NO_RELEASE
                self._resume_at[row] = 0
            due_onset = (self._onset_at == grammar.clock) & ~grammar.on_this_step & ~ending.any(1)
            for row in np.flatnonzero(due_onset):
                if (self._allowed[row] & IS_ONSET_TOKEN).any():
                    self._allowed[row, shifts] = False
                    self._resume_at[row] = 0
                else:
                    self._onset_at[row] = NO_RELEASE
            # the chord a draw sized: its notes before time moves, and no more than them
            in_chord = (self._chord_size > 0) & (self._chord_clock == grammar.clock) & ~ending.any(1)
            for row in np.flatnonzero(in_chord):
                keep = self._allowed[row].copy()
                if self._chord_notes[row] < self._chord_size[row]:
                    self._allowed[row, shifts] = False
                    self._resume_at[row] = 0
                    ok = (self._allowed[row] & IS_ONSET_TOKEN).any()  # (none: the chord is what it is)
                else:
                    self._allowed[row, IS_ONSET_TOKEN] = False
                    ok = self._allowed[row].any()
                if not ok:
                    self._allowed[row], self._chord_size[row] = keep, 0
            # after the releases a shift was stopped for, the rest of that shift and nothing else:
            # the model's timing of its next notes stands (stopping it there, the model took the
            # release for a beat and struck more notes: validation's onset OA fell 0.51 -> 0.47)
            waiting = (self._resume_at > grammar.clock) & ~ending.any(1)
            for row in np.flatnonzero(waiting):
                rest = int(self._resume_at[row] - grammar.clock[row])
                rest = min(rest, int(to_release[row])) if to_release[row] > 0 else rest
                shift = int(V.shift_id(min(rest, V.MAX_SHIFT_STEPS)))
                if self._allowed[row, shift]:
                    self._allowed[row] = False
                    self._allowed[row, shift] = True
                else:  # the grammar's rules (a note's deadline, the dead air) come first
                    self._resume_at[row] = 0
        return self._allowed

    def _looping_keys(self, row: int) -> list[int]:
        """The NOTE_ON ids that would take a figure of the row's last notes round once more than
        it may go (the loop only changes when the row strikes a note)."""
        struck, keys = self._struck[row], []
        for period in range(1, LOOP_MAX_PERIOD + 1):
            limit = int(self._max_loop[row, period - 1])
            if trailing_loop(struck, period, limit) >= limit:
                keys.append(V.NOTE_ON_OFFSET + struck[-period])
        return keys

    def advance(self, tokens) -> None:
        clock_before = self.grammar.clock.copy()
        self.grammar.advance(tokens)
        self._resume_shifts(np.asarray(tokens), clock_before)
        self._allowed = None
        kind = V.TYPE_OF_ID[np.asarray(tokens)]
        onset = kind == V.EventType.NOTE_ON
        sound = onset | (kind == V.EventType.NOTE_OFF)
        self._last_sound[sound] = self.grammar.clock[sound]
        for row in np.flatnonzero(onset):
            self._struck[row].append(int(tokens[row]) - V.NOTE_ON_OFFSET)
            self._looping[row] = self._looping_keys(row)
            if self.grammar.sounding[row, self._struck[row][-1]]:  # (not an infill's gap or suffix)
                self._draw_length(int(row), self._struck[row][-1], 0)
                if self._chord_clock[row] != self.grammar.clock[row]:
                    # the first note at this time: when the next onset comes, and how many notes this one has
                    self._chord_clock[row], self._chord_notes[row] = self.grammar.clock[row], 0
                    self._draw_onset(int(row), 0)
                    self._draw_chord(int(row))
                self._chord_notes[row] += 1
        self._release_at[~self.grammar.sounding] = NO_RELEASE
        self._release_by[~self.grammar.sounding] = NO_RELEASE

    def _resume_shifts(self, tokens: np.ndarray, clock_before: np.ndarray) -> None:
        """A row that took the shift stopping at a drawn release: how far the model meant to go,
        drawn from its probabilities of that shift and the longer ones (`_fold_past_the_end`),
        onto the grid if the row has one. Where it meant further, `allowed` lets time go on
        there once the release is done."""
        meant, self._meant = self._meant, {}
        for row, (stop, probs) in meant.items():
            if V.shift_steps(tokens[row : row + 1])[0] != stop:
                continue
            target = int(clock_before[row]) + stop + int(self.rng.choice(probs.size, p=probs / probs.sum()))
            grid = self.grids[row]
            if grid is not None:
                target = int(grid.nearest(np.array([target]))[0])
            if self.grammar.fim[row] == MIDDLE:
                target = min(target, int(self.grammar.end_clock[row]))
            if target > self.grammar.clock[row]:
                self._resume_at[row] = target

    def _draw_length(self, row: int, pitch: int, age: int) -> None:
        """With probability `length_draws` (`length_draws_on_grid` on a grid), the length of the
        note `pitch` of `row`, now `age` steps old, drawn from the prompt's (`draw_length` over
        `heard_lengths`): its NOTE_OFF comes then (not before: `logit_bias`; not after:
        `allowed`). Else the model decides. Per note: where the piece's lengths are all alike (a
        sequenced rag) its notes last them, where they spread (a performance) the model's own
        choices keep the rest. Drawn or not, the note ends by the row's longest length
        (`longest_length`, `PianoPriors.longest_share`). In an infilled middle: not the notes the
        suffix ends, nor past the middle's end."""
        grammar = self.grammar
        share = self.priors.length_draws if self.grids[row] is None else self.priors.length_draws_on_grid
        if self.rng is None or self._prompt_notes[row] < LENGTH_DRAWS_MIN_NOTES:
            return
        if grammar.fim[row] not in (PLAIN, MIDDLE) or (
            grammar.fim[row] == MIDDLE and grammar.expected[row, pitch]
        ):
            return
        if self._longest[row] < NO_RELEASE:  # drawn or not, it ends by the piece's longest
            self._release_by[row, pitch] = grammar.clock[row] - age + max(int(self._longest[row]), age)
        if share <= 0 or self.rng.random() >= share:
            return
        heard, at_least = self._heard[row]
        length = draw_length(heard, age, self.rng, at_least)
        if length is None:
            return  # longer than every note the piece ended: the model's to end
        end = grammar.clock[row] + length - age  # (length == age: over now)
        if grammar.fim[row] == MIDDLE and end >= grammar.end_clock[row]:
            return  # the middle's end rules it (`PerformanceGrammar`)
        self._release_at[row, pitch] = end

    def _draw_onset(self, row: int, age: int) -> None:
        """With probability `onset_draws`, when the row's next onset comes (its gap since the
        last, now `age` steps old, drawn from the prompt's: `draw_length` over `heard_onsets`):
        no note before it, time goes straight there, and a note is struck then (`allowed`). Else
        the model decides. On a grid, the drawn onset is its nearest point; in an infilled
        middle, none at or past the middle's end."""
        grammar, share = self.grammar, self.priors.onset_draws
        self._onset_at[row] = NO_RELEASE
        gaps = self._prompt_gaps[row]
        if self.rng is None or share <= 0 or self._prompt_onsets[row] < LENGTH_DRAWS_MIN_NOTES:
            return
        if grammar.fim[row] not in (PLAIN, MIDDLE) or self.rng.random() >= share:
            return
        gap = draw_length(gaps, age, self.rng)
        if gap is None or gap >= len(gaps) - 1:
            return  # longer than the gaps the piece ended (or than it counts): the model's
        at = int(grammar.clock[row]) + max(gap - age, 1 if age == 0 else 0)
        if self.grids[row] is not None:
            at = int(self.grids[row].nearest(np.array([at]))[0])
            at = max(at, int(grammar.clock[row]) + (1 if age == 0 else 0))
        if grammar.fim[row] == MIDDLE and at >= grammar.end_clock[row]:
            return
        self._onset_at[row] = at

    def _draw_chord(self, row: int) -> None:
        """With probability `chord_draws`, how many notes the onset the row just struck has,
        drawn from the prompt's (`heard_onsets`): no time moves until it has them, and no more
        are struck then (`allowed`). Else the model decides."""
        self._chord_size[row] = 0
        sizes = self._prompt_chords[row]
        if (
            self.rng is None
            or self.priors.chord_draws <= 0
            or self._prompt_onsets[row] < LENGTH_DRAWS_MIN_NOTES
        ):
            return
        if self.grammar.fim[row] not in (PLAIN, MIDDLE) or self.rng.random() >= self.priors.chord_draws:
            return
        self._chord_size[row] = int(self.rng.choice(sizes.size, p=sizes / sizes.sum()))

    def _ends(self) -> np.ndarray:
        """(batch, 128): the clock each sounding note ends by, its drawn length or the longest."""
        return np.where(self.grammar.sounding, np.minimum(self._release_at, self._release_by), NO_RELEASE)

    def _due(self) -> np.ndarray:
        """(batch, 128): the sounding notes whose drawn or longest length is over."""
        return self._ends() <= self.grammar.clock[:, None]

    def _steps_to_release(self) -> np.ndarray:
        """(batch,) steps until the next drawn (or longest) release of a sounding note; 0 where
        none is ahead."""
        ahead = self._ends().min(1) - self.grammar.clock
        return np.where((ahead > 0) & (ahead < NO_RELEASE // 2), ahead, 0)

    @property
    def group_of_id(self):
        return self.grammar.group_of_id

    def spread(self):
        return self.grammar.spread()

    @property
    def match_key_of_id(self):
        return self.grammar.match_key_of_id

    def logit_bias(self) -> np.ndarray:
        """What the sampler adds to the logits before it samples: the piece's note lengths as a
        prior on releases, its gaps between onsets as one on when to strike, the prompt's pitches
        as one on which note, and near an infilled span's end the pitches its suffix holds on
        (`PianoPriors`)."""
        bias = self.grammar.release_bias(self.priors.release)
        if self.priors.onset > 0:
            bias += self.grammar.onset_bias(self.priors.onset)
        bias[:, V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128] += self._pitch_bias
        if self.priors.suffix_pitches > 0:
            bias[:, V.NOTE_ON_OFFSET : V.NOTE_ON_OFFSET + 128][self._awaited()] += self.priors.suffix_pitches
        keeping = self.grammar.sounding & (self._release_at < NO_RELEASE) & ~self._due()
        if keeping.any():
            # the notes whose drawn length is not over: no NOTE_OFF (a factor of 0, so that their
            # share goes to every other event, not to other releases), unless such a release is
            # all the grammar allows (a note overdue)
            allowed = self.allowed()
            offs = bias[:, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128]
            kept = keeping & allowed[:, V.NOTE_OFF_OFFSET : V.NOTE_OFF_OFFSET + 128]
            rest = allowed.sum(1) > kept.sum(1)
            offs[kept & rest[:, None]] = -np.inf
        return bias

    def _awaited(self) -> np.ndarray:
        """(batch, 128): in an infilled middle's last SUFFIX_PITCH_SECONDS, the pitches the suffix
        holds on (`PerformanceGrammar.must_sound`) that do not sound yet."""
        grammar = self.grammar
        left = grammar.steps_to_middle_end()
        late = (grammar.fim == MIDDLE) & (left <= SUFFIX_PITCH_SECONDS * V.STEPS_PER_SECOND)
        return grammar.must_sound & ~grammar.sounding & late[:, None]

    def fold_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The sampler's TIME_SHIFT mass moved where the grammar's time rules say: shifts past
        an infilled middle's end or the next drawn release into the shift that reaches it
        (`_fold_past_the_end`), then every shift onto the prompt's onset grid, if it has one
        (`_snap_to_grid`)."""
        return self._snap_to_grid(self._fold_past_the_end(logits))

    def _steps_to_stop(self) -> np.ndarray:
        """(batch,) steps to where time must stop next: an infilled middle's end, a note's
        drawn release or a drawn onset, whichever comes first; 0 where none is ahead."""
        onset = self._onset_at - self.grammar.clock
        onset = np.where((onset > 0) & (self._onset_at < NO_RELEASE), onset, 0)
        stops = np.stack([self.grammar.steps_to_middle_end(), self._steps_to_release(), onset])
        first = np.where(stops > 0, stops, NO_RELEASE).min(0)
        return np.where(first < NO_RELEASE, first, 0)

    def _fold_past_the_end(self, logits: torch.Tensor) -> torch.Tensor:
        """The shifts past an infilled middle's end (or a drawn release), folded into the shift
        that reaches it.

        In the training windows a TIME_SHIFT that crosses the span's end is cut there, so the
        model's probability of every shift at least as long as the time left is the probability
        that nothing happens before the end. The mask forbids the longer ones; left alone, their
        mass would go to all shorter shifts alike, landing the row a few steps short of the end,
        where (no shift may follow a short one) it must strike a note: measured, a burst of notes
        in the span's last half second (docs/tokenizer.md, "Infilling"). A drawn release is such
        an end too: a shift the model meant to pass it stops there, the note ends, and time goes on.
        """
        left = self._steps_to_stop()
        rows = np.flatnonzero((left > 0) & (left < V.MAX_SHIFT_STEPS))
        if rows.size == 0:
            return logits
        logits = logits.float().clone()
        longest = int(V.shift_id(V.MAX_SHIFT_STEPS))
        releasing = self._steps_to_release()
        for row, to_end in zip(rows.tolist(), V.shift_id(left[rows]).tolist(), strict=True):
            past = logits[row, to_end : longest + 1]
            if left[row] == releasing[row] and torch.isfinite(past).any():
                self._meant[row] = (int(left[row]), past.softmax(-1).double().cpu().numpy())
            logits[row, to_end] = past.logsumexp(-1)
        return logits

    def _snap_to_grid(self, logits: torch.Tensor) -> torch.Tensor:
        """Each allowed TIME_SHIFT's mass moved to the allowed shift landing nearest to where it
        lands, among the grid's points (`generation.grid`) and, in an infilled middle, its end. A
        shift whose nearest landing is now, the row being on a grid point, gives its mass to the
        NOTE_OFFs allowed now (`PerformanceGrammar.release_after_onsets`), or where there are none to the other
        events (a rolled chord is struck at once). Off the grid (an infilled span starts
        anywhere) no note is struck before the next point. The 1 s shift snaps too: every onset
        falls on a grid point (a silence of over 1 s then needs a grid that divides 1 s, as no
        shift may follow a shorter one)."""
        fim = self.grammar.fim
        rows = [r for r, g in enumerate(self.grids) if g is not None and fim[r] in (PLAIN, MIDDLE)]
        if not rows:
            return logits
        allowed = self.allowed()
        to_end = self._steps_to_stop()
        logits = logits.float().clone()
        steps = np.arange(1, V.MAX_SHIFT_STEPS + 1)
        ids = V.shift_id(steps)
        for r in rows:
            clock, grid = int(self.grammar.clock[r]), self.grids[r]
            ok = allowed[r, ids]
            landing = clock + steps
            targets = ok & ((grid.nearest(landing) == landing) | (steps == to_end[r]))
            on_grid_now = grid.nearest(np.array([clock]))[0] == clock
            row = logits[r, ids].clone()
            out = torch.where(torch.from_numpy(ok), float("-inf"), row)  # forbidden ones: the mask's
            if not targets.any():
                # no point ahead may be reached before a note's deadline: from a grid point, the
                # release comes now. (An infilled middle that must still strike the notes its
                # suffix holds before it may end is left to the grammar's last steps.)
                if on_grid_now and fim[r] == PLAIN and (allowed[r] & ~_IS_SHIFT).any():
                    logits[r, ids] = out
                continue
            if not on_grid_now and not self.grammar.after_velocity[r]:
                # off the grid (an infilled span starts anywhere): no note before the next point
                logits[r, _IS_ONSET_TOKEN[: logits.shape[1]]] = float("-inf")
            # each allowed shift's landing: the nearest target, or now (0) from a grid point
            landings = np.concatenate([[0] if on_grid_now else [], steps[targets]]).astype(np.int64)
            dest = landings[np.abs(landings[None, :] - steps[:, None]).argmin(1)]
            moved = ok & (dest > 0)
            # per target, the logsumexp of the shifts moved onto it, all at once
            top = row[torch.from_numpy(moved)].max()
            sums = torch.zeros_like(row).index_add_(
                0, torch.from_numpy(dest[moved] - 1), (row[torch.from_numpy(moved)] - top).exp()
            )
            landed = torch.from_numpy(np.isin(steps, dest[moved]))
            out[landed] = sums[landed].log() + top
            now = torch.from_numpy(ok & (dest == 0))
            offs = _IS_NOTE_OFF[: logits.shape[1]] & torch.from_numpy(allowed[r, : logits.shape[1]])
            if bool(now.any()) and bool(offs.any()):
                # a shift too short to reach the next point mostly precedes a release (a pianist's
                # legato): its mass goes to ending a sounding note now, in the model's proportions
                log_offs = logits[r, offs].logsumexp(-1)
                if torch.isfinite(log_offs):
                    logits[r, offs] += torch.logaddexp(log_offs, row[now].logsumexp(-1)) - log_offs
            logits[r, ids] = out
        return logits

    def copy_cache(self, history: np.ndarray, strength: float) -> NoteCache:
        """The prompt cache of piano continuations: repeats found and copied note by note. An
        infill prompt is read suffix first, then the prefix the middle continues (`prefix_last`)."""
        rows = [prefix_last(row) for row in np.asarray(history)]
        width = max(len(row) for row in rows)  # (rows alike in layout have one length)
        heard = np.stack([np.concatenate([np.full(width - len(r), V.EOS_ID), r]) for r in rows])
        return NoteCache(heard, strength=strength)


@dataclass
class Continuation:
    prompt: np.ndarray  # the prompt's ids (the whole cut opening)
    samples: list[np.ndarray]  # per sample: the new ids only
    interrupted: bool = False  # Ctrl-C stopped the sampling: the samples hold what came before it

    def sequences(self) -> list[np.ndarray]:
        return [np.concatenate([self.prompt, s]) for s in self.samples]


def continue_piano(
    model,
    tokenizer: MusicTokenizer,
    prompt_ids: np.ndarray,
    seconds: float,
    num_samples: int = 1,
    sampling: SamplingConfig | None = None,
    seed: int | None = None,
    max_context: int | None = None,
    on_progress: Callable[[float], None] | None = None,
    priors: PianoPriors | None = None,
) -> Continuation:
    """Sample `num_samples` continuations of `seconds` of music each, in one batched call.

    sampling: how tokens are drawn (default `PIANO_SAMPLING`: the model's distribution mixed with
    the prompt cache, each event type keeping its mass under the grammar). max_context: the most tokens the model reads
    (default `default_context(model)`); the prompt's last `max_context - 1` tokens condition it,
    and longer continuations slide the window (see `generate_stream`). A note is ended once its
    NOTE_ON has left that window (the grammar's `max_note_tokens`). `on_progress(seconds)` gets
    the seconds of music every sample has reached so far. priors: how strongly the piece's own
    note lengths and gaps between onsets (prompt and sample so far) shape the sample (default
    `PianoPriors()`; `PianoPriors(0, 0)` leaves both to the model).
    """
    if not seconds > 0:
        raise MusicGPTError(f"--seconds must be positive, got {seconds}")
    context_len = max_context or default_context(model)
    prompt_ids = np.asarray(prompt_ids, dtype=np.int64)
    if prompt_ids.size == 0:
        # An empty prompt: start the piece from its beginning (an EOS is what precedes every piece).
        context = np.array([tokenizer.eos_id])
    else:
        context = prompt_ids[-(context_len - 1) :]
    device = model.device  # (generation/protocol.py)
    idx = torch.as_tensor(context, device=device).unsqueeze(0).repeat(num_samples, 1)
    # the prompt cache hears the whole prompt, also what lies before the model's window
    before = prompt_ids[: len(prompt_ids) - len(context)] if prompt_ids.size else prompt_ids
    history = torch.as_tensor(before, dtype=torch.long).unsqueeze(0).repeat(num_samples, 1)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    sampling = PIANO_SAMPLING if sampling is None else sampling
    grammar = PianoSamplingGrammar(
        tokenizer.grammar(num_samples, max_note_tokens=context_len),
        np.tile(prompt_ids, (num_samples, 1)),
        priors=priors,
        grid=sampling.grid,
        rng=length_draws_rng(sampling, seed),
    )

    limit = round(seconds * V.STEPS_PER_SECOND)
    clock = np.zeros(num_samples, dtype=np.int64)
    done = np.zeros(num_samples, dtype=bool)
    new_tokens: list[np.ndarray] = []
    stream = generate_stream(
        model,
        idx,
        max_new_tokens=int(seconds * MAX_TOKENS_PER_SECOND) + 1,
        sampling=sampling,
        stop_tokens=[tokenizer.eos_id],
        generator=generator,
        logits_mask=grammar,
        max_context=context_len,
        history=history,
    )
    interrupted = False
    try:
        for step in stream:
            tokens = step.cpu().numpy()
            # A sample that ended (time reached, or EOS) pads with EOS; dropped when decoding.
            tokens = np.where(done, tokenizer.eos_id, tokens)
            new_tokens.append(tokens)
            clock += V.shift_steps(tokens)
            done |= (clock >= limit) | (tokens == tokenizer.eos_id)
            if on_progress is not None:
                on_progress(min(float(clock.min()), limit) / V.STEPS_PER_SECOND)
            if done.all():
                break
    except KeyboardInterrupt:
        # Ctrl-C during a long request keeps the music sampled so far (the caller writes it).
        interrupted = True
    stream.close()
    table = np.stack(new_tokens, axis=1) if new_tokens else np.zeros((num_samples, 0), np.int64)
    samples = [_trim(row, limit, tokenizer.eos_id) for row in table]
    grid = grammar.grids[0]  # every row continues the same prompt
    if grid is not None and prompt_ids.size:
        samples = articulate_samples(samples, prompt_ids, grid, np.random.default_rng(seed))
    return Continuation(prompt=prompt_ids, samples=samples, interrupted=interrupted)


def articulate_samples(
    samples: list[np.ndarray], before: np.ndarray, grid: OnsetGrid, rng
) -> list[np.ndarray]:
    """Samples on a grid, each following `before` (a prompt, an infill's prefix), with their notes
    ended where `before` ends its notes (`generation.grid.articulate`): the snap lands every release
    on a grid point, where a sequenced file often ends its notes a few steps before one
    (pineapple-rag's eighths last 26 steps of 30). The model's choice of which notes end at which
    point is kept; only the step moves."""
    articulation = learn_articulation(before, grid)
    if articulation is None:
        return samples
    first = len(before)
    return [articulate(np.concatenate([before, s]), first, articulation, rng)[first:] for s in samples]


def _trim(row: np.ndarray, limit_steps: int, eos_id: int) -> np.ndarray:
    """Up to the first EOS, and exactly `limit_steps` of music when the sample got that far.

    The TIME_SHIFT that crosses the limit is shortened to end on it, so a 30 s request gives
    30 s of music, not up to 30.99.
    """
    ends = np.flatnonzero(row == eos_id)
    row = row[: ends[0]] if ends.size else row
    steps = V.shift_steps(row)
    clock = np.cumsum(steps)
    over = np.flatnonzero(clock >= limit_steps)
    if over.size == 0:
        return row
    last = over[0]
    row = row[: last + 1].copy()
    row[last] = V.shift_id(steps[last] - (clock[last] - limit_steps))
    return row
