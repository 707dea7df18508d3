"""Training windows in the fill-in-the-middle format (docs/tokenizer.md, "Infilling").

`fim_window` turns a stretch of a shard (about twice a window) into one window of exactly
`length` tokens: prefix FIM_SUFFIX gap suffix FIM_MIDDLE middle FIM_END, for a span of a random
length in seconds that starts at a random 10 ms step (inside held notes, under the pedal: where
it falls). The middle is whole; the prefix keeps its end and the suffix its start, as much of
each as the window has room for.
"""

from __future__ import annotations

import numpy as np

from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.infill import Cut, cut_piece, fim_sequence

# the span's length in seconds: the app's and the command's use (a bar or a few of them)
FIM_SPAN_SECONDS = (1.0, 10.0)


def fim_window(
    stretch: np.ndarray,
    length: int,
    rng: np.random.Generator,
    span_seconds: tuple[float, float] = FIM_SPAN_SECONDS,
) -> np.ndarray | None:
    """A FIM window of exactly `length` tokens from `stretch` (performance ids, best ~2x `length`).

    None where the stretch cannot give one: it crosses a piece boundary (EOS), sets no velocity
    before the span's end, or is too short; the caller then keeps a plain window.
    """
    stretch = np.asarray(stretch, np.int64)
    n = stretch.size
    context = length // 4  # tokens the prefix and the suffix can at least draw from
    if n < 2 * context + 8 or (stretch >= V.EOS_ID).any():  # EOS (a piece boundary), PAD or FIM ids
        return None
    steps = V.shift_steps(stretch)
    clock_before = np.cumsum(steps) - steps
    lo, hi = int(clock_before[context]), int(clock_before[n - context])
    if hi - lo < 2:
        return None
    shortest, longest = (round(s * V.STEPS_PER_SECOND) for s in span_seconds)
    start = int(rng.integers(lo, hi - 1))
    end = min(start + int(rng.integers(shortest, longest + 1)), hi)
    # the middle must leave room for some prefix and suffix: shorten a span too dense to fit
    most_middle = length - 3 - len(V.split_gap(end - start)) - 2 * (length // 8)
    first = int(np.searchsorted(clock_before, start))
    if first + most_middle < n and clock_before[first + most_middle] < end:
        end = max(int(clock_before[first + most_middle]), start + 1)
    cut = cut_piece(stretch, start, end)
    if cut is None:
        return None
    room = length - 3 - len(V.split_gap(end - start)) - cut.middle.size
    if room < 2 or cut.prefix.size + cut.suffix.size < room:
        return None
    keep_suffix = min(cut.suffix.size, max(room - cut.prefix.size, round(room * rng.uniform(0.3, 0.7))))
    keep_suffix = max(keep_suffix, 1)  # its VELOCITY at least: it ends the gap's shifts
    keep_prefix = room - keep_suffix
    if keep_prefix > cut.prefix.size:
        return None
    window = fim_sequence(
        Cut(cut.prefix[cut.prefix.size - keep_prefix :], cut.middle, cut.suffix[:keep_suffix])
    )
    assert window.size == length, (window.size, length)
    return window
