"""`musicgpt evaluate --infill`: infilled spans against the real ones, as continuations are measured.

Per piece the span [P, P + S) is cut out (P = --prompt-seconds, S = --span-seconds) and K
samples fill it (`musicgpt.generation.infill.infill_piano`). Each is measured against the real
span with the continuation protocol's numbers (`musicgpt.evaluate.continuations.measure`), beside
a ceiling (the piece's own next S seconds) and a floor (another piece's span), plus:

- the **boundary**: the onset OA (inter-onset histograms' overlap) of the 2 s around each edge
  (1 s either side of P and of P + S) in the infilled piece against the real piece, and how
  many notes are struck twice at an edge (a pitch struck while it still sounds, within 1 s of
  either edge; the grammar makes it 0, the count shows it);
- the **infill loss**: nats per token of the real middle (and its FIM_END) given the FIM prompt,
  which needs no sampling (a model that never learned the format scores badly here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from musicgpt.evaluate import music
from musicgpt.evaluate.continuations import (
    TABLE_COLUMNS,
    ContinuationSettings,
    Piece,
    _finite,
    _format,
    _mean_dicts,
    describe,
    measure,
    seed_for,
    segment,
)
from musicgpt.generation.infill import CONTEXT_SHARE, infill_piano
from musicgpt.generation.piano import default_context
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.base import MusicTokenizer
from musicgpt.tokenizers.infill import cut_piece, fim_prompt
from musicgpt.tokenizers.notes import Notes
from musicgpt.tokenizers.performance import DEFAULT_VELOCITY_BIN

EDGE_SECONDS = 1.0  # either side of an edge: the boundary numbers read 2 s around it
ROWS = ("generated", "ceiling", "another piece", "real")
BOUNDARY_COLUMNS = (
    ("edge_onset_oa", "edge onset OA", 15, ".2f"),
    ("edge_double_strikes", "struck twice", 14, ".2f"),
)


def around(notes: Notes, t: float, seconds: float = EDGE_SECONDS) -> Notes:
    """The notes struck within `seconds` of time t, timed from t - seconds."""
    part = notes.take((notes.start >= t - seconds) & (notes.start < t + seconds))
    return dataclasses.replace(part, start=part.start - (t - seconds), end=part.end - (t - seconds))


def double_strikes(notes: Notes, edges: tuple[float, float], seconds: float = EDGE_SECONDS) -> int:
    """Notes struck while a note of their pitch still sounds, within `seconds` of an edge."""
    count = 0
    order = np.lexsort((notes.start, notes.pitch))
    pitch, start, end = notes.pitch[order], notes.start[order], notes.end[order]
    again = (pitch[1:] == pitch[:-1]) & (start[1:] < end[:-1] - 1e-9)
    for t in edges:
        count += int((again & (np.abs(start[1:] - t) <= seconds)).sum())
    return count


def boundary(infilled: Notes, real: Notes, edges: tuple[float, float]) -> dict[str, float]:
    """The edge numbers of one infilled piece against the real one."""
    oa = [
        music.overlapping_area(
            music.inter_onset_histogram(around(infilled, t)), music.inter_onset_histogram(around(real, t))
        )
        for t in edges
    ]
    return {
        "edge_onset_oa": float(np.nanmean(oa)),
        "edge_double_strikes": float(double_strikes(infilled, edges)),
    }


@torch.inference_mode()
def infill_nll(model, ids: np.ndarray, start: int, end: int) -> tuple[float, int]:
    """(total nats, tokens) of the real middle and its FIM_END, given the FIM prompt (prefix end,
    gap, suffix start) as `infill_piano` gives it."""
    cut = cut_piece(ids, start, end, DEFAULT_VELOCITY_BIN)
    keep = max(1, int(model.config.block_size * CONTEXT_SHARE))
    prompt = fim_prompt(cut.prefix[-keep:], end - start, cut.suffix[:keep])
    target = np.concatenate([cut.middle, [V.FIM_END_ID]])
    seq = np.concatenate([prompt, target])[-default_context(model) :]
    x = torch.as_tensor(seq[:-1], device=model.device)[None]
    logp = model(x).float().log_softmax(-1)[0, -len(target) :]
    y = torch.as_tensor(target, device=model.device)
    return float(-logp.gather(1, y[:, None]).sum()), len(target)


@dataclass
class InfillReport:
    settings: ContinuationSettings  # prompt_seconds: where the span starts; seconds: its length
    pieces: list[dict[str, Any]]  # name, rows (row -> per-sample dicts), infill_nats_per_token
    skipped: list[dict[str, str]] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)

    def row_means(self) -> dict[str, dict[str, float]]:
        means = {}
        for row in ROWS:
            per_piece = [_mean_dicts(p["rows"][row]) for p in self.pieces if p["rows"].get(row)]
            if per_piece:
                means[row] = _mean_dicts(per_piece)
        return means

    def nats_per_token(self) -> float:
        nats = sum(p["infill_nats"] for p in self.pieces)
        return nats / max(1, sum(p["infill_tokens"] for p in self.pieces))

    def table(self) -> list[str]:
        k, s = self.settings.num_samples, self.settings.seconds
        labels = {
            "generated": f"infilled ({k} sample{'s' if k > 1 else ''})",
            "ceiling": f"ceiling: the piece's next {s:g} s",
            "another piece": "floor: another piece",
            "real": "real span",
        }
        columns = TABLE_COLUMNS + BOUNDARY_COLUMNS
        lines = [f"{'':<32}" + "".join(f"{title:>{width}}" for _, title, width, _ in columns)]
        for row, values in self.row_means().items():
            cells = "".join(f"{_format(values.get(key), fmt):>{width}}" for key, _, width, fmt in columns)
            lines.append(f"{labels[row]:<32}{cells}")
        lines.append(f"infill loss of the real spans: {self.nats_per_token():.3f} nats/token")
        return lines

    def to_json(self) -> dict[str, Any]:
        return _finite(
            {
                "settings": dataclasses.asdict(self.settings),
                "rows": self.row_means(),
                "infill_nats_per_token": self.nats_per_token(),
                "pieces": self.pieces,
                "skipped": self.skipped,
                "remarks": self.remarks,
            }
        )


def evaluate_infill(
    model,
    tokenizer: MusicTokenizer,
    pieces: list[Piece],
    settings: ContinuationSettings,
    on_progress: Callable[[float], None] | None = None,
) -> InfillReport:
    """Run the protocol on pieces long enough (`select_pieces` with these settings: P + 2 S)."""
    p0, s = settings.prompt_seconds, settings.seconds
    start, end = round(p0 * V.STEPS_PER_SECOND), round((p0 + s) * V.STEPS_PER_SECOND)
    real_notes = [tokenizer.decode_notes(p.ids) for p in pieces]
    # token boundaries of each piece's span and of the S s after it (the ceiling)
    bounds = []
    for piece in pieces:
        clock_before = np.cumsum(V.shift_steps(piece.ids)) - V.shift_steps(piece.ids)
        a, b, c = np.searchsorted(clock_before, [start, end, end + (end - start)])
        bounds.append((int(a), int(b), int(c)))
    real = [segment(notes, a, b, p0, s) for notes, (a, b, _) in zip(real_notes, bounds, strict=True)]
    out = []
    for i, (piece, notes, (_, b, c)) in enumerate(zip(pieces, real_notes, bounds, strict=True)):

        def progress(reached: float, done: float = i * s) -> None:
            if on_progress is not None:
                on_progress(done + reached)

        result = infill_piano(
            model, tokenizer, piece.ids, p0, p0 + s, num_samples=settings.num_samples,
            sampling=settings.sampling, seed=seed_for(settings.seed, i, "model"), on_progress=progress,
            priors=settings.priors,
        )  # fmt: skip
        generated = []
        first = len(result.cut.prefix)
        for whole, middle in zip(result.pieces(), result.samples, strict=False):
            infilled = tokenizer.decode_notes(whole)
            seg = segment(infilled, first, first + len(middle), p0, s)
            generated.append({**measure(seg, real[i]), **boundary(infilled, notes, (p0, p0 + s))})
        nats, tokens = infill_nll(model, piece.ids, start, end)
        rows = {
            "generated": generated,
            "ceiling": [measure(segment(notes, b, c, p0 + s, s), real[i])],
            "real": [{**describe(real[i]), **boundary(notes, notes, (p0, p0 + s))}],
        }
        if len(pieces) > 1:
            rows["another piece"] = [measure(real[(i + 1) % len(pieces)], real[i])]
        out.append({"name": piece.name, "rows": rows, "infill_nats": nats, "infill_tokens": tokens})
    remarks = [] if len(pieces) > 1 else ["one piece only: no 'another piece' floor"]
    return InfillReport(settings, out, remarks=remarks)
