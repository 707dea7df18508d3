"""Piano infilling: a span of a piece sampled again, the rest kept note for note.

The one library function that `musicgpt infill`, `musicgpt evaluate --infill` and the app call.
The piece is cut at the span (`musicgpt.tokenizers.infill.cut_piece`), the model reads the end of
the prefix, the gap and the start of the suffix in the fill-in-the-middle format, and writes the
middle under the grammar, which ends it exactly at the span's end with the notes the suffix
holds on sounding (docs/tokenizer.md, "Infilling"). Each sample spliced back is the whole piece.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from musicgpt.errors import MusicGPTError
from musicgpt.generation import piano
from musicgpt.generation.decode import generate_stream
from musicgpt.generation.piano import (
    MAX_TOKENS_PER_SECOND,
    PIANO_SAMPLING,
    PianoSamplingGrammar,
    default_context,
)
from musicgpt.generation.sampling import SamplingConfig
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.base import MusicTokenizer
from musicgpt.tokenizers.infill import Cut, cut_piece, fim_prompt, splice
from musicgpt.tokenizers.performance import DEFAULT_VELOCITY_BIN

# Of the model's training window, the share the prefix and the suffix may each fill: the rest is
# for the middle, as in the training windows (docs/training.md, `data.fim_rate`).
CONTEXT_SHARE = 1 / 3
# tokens a middle may take beyond MAX_TOKENS_PER_SECOND per second: ending and striking notes at its edges
EDGE_TOKENS = 256


@dataclass
class Infill:
    cut: Cut  # the piece's prefix, its real middle, and its suffix (velocity stated)
    start: int  # the span in 10 ms steps
    end: int
    samples: list[np.ndarray]  # per sample: the new middle's ids (empty where it did not finish)
    finished: list[bool]  # whether each sample reached its FIM_END (all do unless interrupted)
    interrupted: bool = False

    def pieces(self) -> list[np.ndarray]:
        """Each finished sample spliced into the piece: prefix, new middle, suffix."""
        return [
            splice(self.cut.prefix, m, self.cut.suffix)
            for m, ok in zip(self.samples, self.finished, strict=False)
            if ok
        ]


def can_infill(model, tokenizer: MusicTokenizer) -> bool:
    """Whether the model reads the FIM tokens (a model trained before them reads 390 ids)."""
    return getattr(tokenizer, "vocab_size", 0) >= V.VOCAB_SIZE and model.config.vocab_size >= V.VOCAB_SIZE


def require_infill(model, tokenizer: MusicTokenizer, source: str = "this model") -> None:
    """A one-line MusicGPTError naming `source` unless the model reads the FIM tokens."""
    if not can_infill(model, tokenizer):
        raise MusicGPTError(
            f"{source}: the model reads {model.config.vocab_size} token ids, without the "
            "fill-in-the-middle tokens: it cannot infill (train one with data.fim_rate: docs/training.md)"
        )


def check_span_order(start: float, end: float) -> tuple[int, int]:
    """(start, end) in 10 ms steps, or a one-line MusicGPTError for an empty or reversed span."""
    s, e = round(start * V.STEPS_PER_SECOND), round(end * V.STEPS_PER_SECOND)
    if e <= s:
        what = "empty (shorter than 10 ms)" if e == s else "reversed"
        raise MusicGPTError(f"the span {start:g}-{end:g} s is {what}: --end must come after --start")
    return s, e


def check_span(ids: np.ndarray, start: float, end: float, source: str = "the piece") -> tuple[int, int]:
    """(start, end) in steps, or a one-line MusicGPTError: an empty or reversed span, or one
    that does not lie inside the piece (its last event ends it)."""
    s, e = check_span_order(start, end)
    length = int(V.shift_steps(ids).sum())
    if s < 0 or e > length:
        raise MusicGPTError(
            f"{source}: the span {start:g}-{end:g} s lies outside the piece, which lasts "
            f"{length / V.STEPS_PER_SECOND:.2f} s"
        )
    return s, e


def infill_piano(
    model,
    tokenizer: MusicTokenizer,
    ids: np.ndarray,
    start: float,
    end: float,
    num_samples: int = 1,
    sampling: SamplingConfig | None = None,
    seed: int | None = None,
    on_progress: Callable[[float], None] | None = None,
    priors: piano.PianoPriors | None = None,
) -> Infill:
    """Sample `num_samples` new middles for the span `start`-`end` (seconds) of `ids`, batched.

    Every finished middle lasts exactly the span (to the 10 ms step) and leaves the notes the
    suffix holds on sounding, those it does not end ended. `on_progress(seconds)` gets the seconds of the span
    every sample has filled so far. Ctrl-C stops the sampling: the samples that finished are kept
    (`interrupted`), the others are marked unfinished. priors: the piece's habits the sampler
    follows, as for continuations (default `PianoPriors()`).
    """
    require_infill(model, tokenizer)
    ids = np.asarray(ids, np.int64)
    s, e = check_span(ids, start, end)
    cut = cut_piece(ids, s, e, DEFAULT_VELOCITY_BIN)
    gap = e - s
    # the model reads the end of the prefix and the start of the suffix, as in training
    keep = max(1, int(model.config.block_size * CONTEXT_SHARE))
    kept = cut.prefix[-keep:]
    prompt = fim_prompt(kept, gap, cut.suffix[:keep])
    # the grammar reads all of both: notes struck long before the span still sound in it, and a
    # note the suffix ends far into it must still sound when the middle ends
    whole = fim_prompt(cut.prefix, gap, cut.suffix)
    context = default_context(model)
    if prompt.size >= context:
        raise MusicGPTError(f"the infill prompt is {prompt.size} tokens; the model's context is {context}")
    device = model.device
    idx = torch.as_tensor(prompt, device=device).unsqueeze(0).repeat(num_samples, 1)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    sampling = PIANO_SAMPLING if sampling is None else sampling
    grammar = PianoSamplingGrammar(
        tokenizer.grammar(num_samples),
        np.tile(whole, (num_samples, 1)),
        priors=priors,
        grid=sampling.grid,
        rng=piano.length_draws_rng(sampling, seed),
    )
    budget = int(gap / V.STEPS_PER_SECOND * MAX_TOKENS_PER_SECOND) + EDGE_TOKENS
    stream = generate_stream(
        model,
        idx,
        max_new_tokens=budget,
        sampling=sampling,
        stop_tokens=[V.FIM_END_ID],
        generator=generator,
        logits_mask=grammar,
        max_context=context,
        # the prompt cache hears the whole prefix, also what lies before the model's window
        history=torch.as_tensor(cut.prefix[: len(cut.prefix) - len(kept)], dtype=torch.long)
        .unsqueeze(0)
        .repeat(num_samples, 1),
    )
    rows: list[np.ndarray] = []
    clock = np.zeros(num_samples, np.int64)
    done = np.zeros(num_samples, bool)
    interrupted = False
    try:
        for step in stream:
            tokens = np.where(done, V.FIM_END_ID, step.cpu().numpy())
            rows.append(tokens)
            clock += V.shift_steps(tokens)
            done |= tokens == V.FIM_END_ID
            if on_progress is not None:
                on_progress(float(clock.min()) / V.STEPS_PER_SECOND)
            if done.all():
                break
    except KeyboardInterrupt:
        interrupted = True
    stream.close()
    table = np.stack(rows, axis=1) if rows else np.zeros((num_samples, 0), np.int64)
    samples, finished = [], []
    for row in table:
        ends = np.flatnonzero(row == V.FIM_END_ID)
        finished.append(bool(ends.size))
        samples.append(row[: ends[0]] if ends.size else row)
    if not interrupted and not all(finished):
        # the grammar makes every middle end; only a budget too small for it could stop one
        raise MusicGPTError(
            f"{finished.count(False)} of {num_samples} samples did not end within {budget} tokens"
        )
    grid = grammar.grids[0]  # every row fills the same span
    if grid is not None:
        samples = piano.articulate_samples(samples, cut.prefix, grid, np.random.default_rng(seed))
    return Infill(cut, s, e, samples, finished, interrupted)
