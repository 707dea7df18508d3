"""Music statistics: small pure functions over note arrays, to tell music from noise.

Every function reads a note set: anything with `pitch`, `velocity`, `start` and `end` arrays
(seconds), index i being one note, as `PerformanceTokenizer().decode_notes(ids)` returns
(`musicgpt.tokenizers.notes.Notes`). Nothing here knows about tokens, models or files.

Definitions follow Yang & Lerch 2020 ("On the evaluation of generative models in music", the
mgeval toolbox) and MusPy (Dong et al. 2020) where they define the same thing; each docstring
says which. Where both define a measure on a beat grid (note-length classes, grooves), which
performed MIDI does not have, we use time in seconds on a logarithmic scale instead.

Conventions for an empty note set: counts are 0 (polyphony, density, range, entropy), means and
rates with nothing to average are NaN (velocity mean and std, scale consistency), and histograms
are all zeros. Two empty histograms overlap fully (1), an empty and a non-empty one not at all
(0): a continuation that stays silent where the real one plays shares nothing with it.
"""

from __future__ import annotations

import numpy as np

from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.notes import Notes

# Log-time bins for durations and inter-onset intervals: half-octave steps from 10 ms (one
# TIME_SHIFT step) to 40.96 s, bin k centred on 10 ms * 2**(k / 2). Edges fall between the
# centres, at irrational multiples of 10 ms, so times on the tokenizer's 10 ms grid never sit on
# an edge (float noise cannot move them across). Shorter and longer times go to the end bins.
LOG_TIME_BASE_SECONDS = 0.01
LOG_TIME_BINS_PER_OCTAVE = 2
LOG_TIME_NUM_BINS = 25
LOG_TIME_CENTERS = LOG_TIME_BASE_SECONDS * 2.0 ** (np.arange(LOG_TIME_NUM_BINS) / LOG_TIME_BINS_PER_OCTAVE)

# The 12 diatonic pitch-class sets: C major's, transposed. A natural minor scale uses the pitch
# classes of its relative major, so these 12 sets are MusPy's 24 major and minor scales.
_C_MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], bool)
DIATONIC_SETS = np.stack([np.roll(_C_MAJOR, root) for root in range(12)])  # (12 roots, 12 pitch classes)


# --- single note sets ----------------------------------------------------------------------------


def note_count(notes: Notes) -> int:
    return int(np.asarray(notes.pitch).size)


def polyphony(notes: Notes) -> float:
    """Mean number of notes sounding, over the time when at least one sounds (MusPy's `polyphony`).

    In continuous time: the summed note durations divided by the length of the union of the
    notes' intervals. MusPy counts pitches per time step of a piano roll, which is the same for
    notes that do not overlap on one pitch (the performance tokenizer guarantees that: one voice
    per pitch). 0 for no notes. Three notes of 1 s, two together and one alone later: 3 s / 2 s = 1.5.
    """
    start, end = np.asarray(notes.start, np.float64), np.asarray(notes.end, np.float64)
    if start.size == 0:
        return 0.0
    return float((end - start).sum() / sounding_seconds(start, end))


def sounding_seconds(start: np.ndarray, end: np.ndarray) -> float:
    """Length of the union of the intervals [start_i, end_i): the time when something sounds."""
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)  # the latest end among the notes so far
    # a note starts a new block of sound when it begins after everything before it has ended
    new_block = np.append(True, start[1:] > reach[:-1])
    first = np.flatnonzero(new_block)
    block_end = np.maximum.reduceat(end, first)
    return float((block_end - start[first]).sum())


def long_note_share(durations: np.ndarray, longer_than: float = 5.0) -> float:
    """The share of notes held longer than `longer_than` seconds (0 for no notes): stuck notes."""
    durations = np.asarray(durations, np.float64)
    return float((durations > longer_than).mean()) if durations.size else 0.0


def longest_silence(notes: Notes, seconds: float) -> float:
    """The longest stretch of [0, seconds) in which no note sounds, in seconds (dead air); the
    whole length for no notes. Silence before the first note and after the last one counts."""
    start = np.clip(np.asarray(notes.start, np.float64), 0, seconds)
    end = np.clip(np.asarray(notes.end, np.float64), 0, seconds)
    if start.size == 0:
        return float(seconds)
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)  # the latest end so far: a gap opens after it
    gaps = np.concatenate([[start[0]], start[1:] - reach[:-1], [seconds - reach[-1]]])
    return float(max(gaps.max(), 0.0))


def note_density(notes: Notes, seconds: float) -> float:
    """Notes struck per second over a stretch of `seconds` (onsets / seconds)."""
    if not seconds > 0:
        raise ValueError(f"note_density needs a positive length in seconds, got {seconds}")
    return note_count(notes) / seconds


def pitch_range(notes: Notes) -> int:
    """Highest minus lowest MIDI pitch, in semitones (mgeval's and MusPy's `pitch_range`); 0 for no notes."""
    pitch = np.asarray(notes.pitch)
    return int(pitch.max() - pitch.min()) if pitch.size else 0


def pitch_histogram(notes: Notes) -> np.ndarray:
    """(128,) notes per MIDI pitch (counts, not normalized)."""
    return np.bincount(np.asarray(notes.pitch, np.int64), minlength=128)[:128].astype(np.float64)


def pitch_class_histogram(notes: Notes) -> np.ndarray:
    """(12,) notes per pitch class, C = 0 (mgeval's `total_pitch_class_histogram`, before normalizing).

    Notes are counted, not weighted by duration (as mgeval and MusPy do), so that a pile of held
    notes shows in the duration statistics and not twice.
    """
    return np.bincount(np.asarray(notes.pitch, np.int64) % 12, minlength=12).astype(np.float64)


def pitch_class_entropy(notes: Notes) -> float:
    """Shannon entropy in bits of the normalized pitch-class histogram (MusPy's `pitch_class_entropy`).

    0 for one pitch class (or none), log2(12) = 3.585 when all twelve are equally common; tonal
    music sits in between (a C major scale, each degree once: log2(7) = 2.807).
    """
    return _entropy_bits(pitch_class_histogram(notes))


def _entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def scale_consistency(notes: Notes) -> float:
    """The largest fraction of notes that fit one major or minor scale (MusPy's `scale_consistency`).

    Over the 12 major scales (the natural minor scales have the same pitch-class sets), the
    fraction of notes whose pitch class is in the scale, maximized. 1.0 for music in one key;
    NaN for no notes.
    """
    counts = pitch_class_histogram(notes)
    if counts.sum() == 0:
        return float("nan")
    return float((DIATONIC_SETS @ counts).max() / counts.sum())


def velocity_mean(notes: Notes) -> float:
    """Mean MIDI velocity (1-127); NaN for no notes."""
    velocity = np.asarray(notes.velocity, np.float64)
    return float(velocity.mean()) if velocity.size else float("nan")


def velocity_std(notes: Notes) -> float:
    """Standard deviation of MIDI velocity (population, ddof 0): how much the dynamics vary; NaN for no notes."""
    velocity = np.asarray(notes.velocity, np.float64)
    return float(velocity.std()) if velocity.size else float("nan")


def velocity_histogram(notes: Notes) -> np.ndarray:
    """(32,) notes per velocity bin of the tokenizer (bin 1 = velocities 1-4, ..., bin 32 = 125-127).

    The tokenizer's own bins: decoded velocities are the lowest of their bin, so finer bins would
    only show which values a bin decodes to.
    """
    bins = V.velocity_to_bin(np.asarray(notes.velocity, np.int64))
    return np.bincount(bins - 1, minlength=V.NUM_VELOCITY_BINS).astype(np.float64)


def log_time_bin(seconds: np.ndarray) -> np.ndarray:
    """Index of the log-time bin (see LOG_TIME_CENTERS) of each time, clipped to the end bins."""
    seconds = np.maximum(np.asarray(seconds, np.float64), LOG_TIME_BASE_SECONDS / 4)
    k = np.rint(LOG_TIME_BINS_PER_OCTAVE * np.log2(seconds / LOG_TIME_BASE_SECONDS))
    return np.clip(k, 0, LOG_TIME_NUM_BINS - 1).astype(np.int64)


def log_time_histogram(seconds: np.ndarray) -> np.ndarray:
    """(LOG_TIME_NUM_BINS,) counts of times (seconds) per half-octave bin."""
    return np.bincount(log_time_bin(seconds), minlength=LOG_TIME_NUM_BINS).astype(np.float64)


def note_durations(notes: Notes) -> np.ndarray:
    """end - start of every note, in seconds."""
    return np.asarray(notes.end, np.float64) - np.asarray(notes.start, np.float64)


def duration_histogram(notes: Notes) -> np.ndarray:
    """Note durations in half-octave log-time bins.

    mgeval's `note_length_hist` classes notes by their length in beats (whole, half, dotted ...);
    performances have no reliable beat, and a log scale in seconds separates a 30 ms grace note
    from a 3 s pedalled chord as well as it separates 0.3 s from 0.6 s.
    """
    return log_time_histogram(note_durations(notes))


def inter_onset_intervals(notes: Notes) -> np.ndarray:
    """Seconds between consecutive distinct onset times (the gaps mgeval's `avg_IOI` averages).

    Notes struck together (a chord on the 10 ms grid) are one onset, so every interval is
    positive and has a place on a log scale; mgeval would also count the zero gaps inside chords.
    """
    onsets = np.unique(np.asarray(notes.start, np.float64))
    return np.diff(onsets)


def inter_onset_histogram(notes: Notes) -> np.ndarray:
    """Inter-onset intervals in half-octave log-time bins."""
    return log_time_histogram(inter_onset_intervals(notes))


# --- comparing two note sets ---------------------------------------------------------------------


def overlapping_area(a: np.ndarray, b: np.ndarray) -> float:
    """Overlapping area of two histograms on the same bins: sum_i min(p_i, q_i) of the normalized ones.

    1 for the same distribution (whatever the counts), 0 when no bin holds both; equal to
    1 - total variation distance. mgeval computes the OA of kernel density estimates of a
    feature's distance distributions; with the bins fixed here the histogram is the estimate,
    and there is no bandwidth to choose. Two empty histograms give 1, one empty one gives 0.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"histograms must share their bins, got shapes {a.shape} and {b.shape}")
    total_a, total_b = a.sum(), b.sum()
    if total_a == 0 or total_b == 0:
        return float(total_a == total_b)
    return float(np.minimum(a / total_a, b / total_b).sum())


def pitch_class_similarity(a: Notes, b: Notes) -> float:
    """Cosine similarity of the two pitch-class histograms (the "chroma similarity" of FIGARO and others).

    1 for the same proportions of pitch classes, 0 when they share none. Cosine rather than
    1 - half L1 (which is the overlapping area of the two histograms): it is dominated by the
    most used pitch classes, the tonic and dominant of the key, so it asks "the same key and
    harmony?" and forgives a few passing notes; the OA columns already measure exact overlap.
    Two empty note sets give 1, one empty one gives 0.
    """
    x, y = pitch_class_histogram(a), pitch_class_histogram(b)
    norm = np.linalg.norm(x) * np.linalg.norm(y)
    if norm == 0:
        return float(x.sum() == y.sum())
    return float(x @ y / norm)
