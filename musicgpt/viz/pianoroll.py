"""A piano roll of a prompt and its continuations (`musicgpt generate --png`), matplotlib (Agg).

One panel per sample, all on one pitch and time axis, the prompt's notes in one colour and the
generated ones in another, the cut marked: what a user got is visible at once, including the
failures that matter most (notes piling up, prompt notes never released, silence).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musicgpt.tokenizers.notes import Notes
from musicgpt.viz.html import pitch_name
from musicgpt.viz.png import BG, MUTED, TEXT, _figure, _save, _style

PROMPT_COLOR = "#7aa2d6"  # calm blue: what was given
GENERATED_COLOR = "#f4a259"  # warm orange: what the model wrote
CUT_COLOR = "#e8ecf2"


def _shade(color: str, velocity: np.ndarray) -> np.ndarray:
    """RGBA per note: louder notes more opaque, so dynamics show without a second legend."""
    from matplotlib.colors import to_rgba

    rgba = np.tile(to_rgba(color), (velocity.size, 1))
    rgba[:, 3] = 0.35 + 0.65 * np.clip(velocity, 0, 127) / 127
    return rgba


def _draw_notes(ax, notes: Notes, prompt_tokens: int, is_given: np.ndarray | None = None) -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    is_prompt = notes.on_token < prompt_tokens if is_given is None else is_given
    for keep, color in ((is_prompt, PROMPT_COLOR), (~is_prompt, GENERATED_COLOR)):
        if not keep.any():
            continue
        rects = [
            Rectangle((s, p - 0.4), max(e - s, 0.015), 0.8)
            for s, e, p in zip(notes.start[keep], notes.end[keep], notes.pitch[keep], strict=True)
        ]
        ax.add_collection(
            PatchCollection(
                rects, facecolors=_shade(color, notes.velocity[keep]), edgecolors="none", zorder=2
            )
        )


def render_continuations_png(
    samples: Sequence[Notes],
    path: str | Path,
    *,
    prompt_tokens: int,
    cut_seconds: float,
    title: str | None = None,
    dpi: int = 110,
) -> int:
    """Draw each sample (prompt + continuation, decoded) in its own panel; returns the PNG's bytes.

    prompt_tokens: how many of each sequence's first ids are the prompt (its notes are drawn in
    the prompt's colour, also where they sound past the cut). cut_seconds: where the prompt ends.
    """
    if not samples:
        raise ValueError("render_continuations_png needs at least one sample")
    everything = [n for n in samples if len(n)]
    if everything:
        pitches = np.concatenate([n.pitch for n in everything])
        lo, hi = int(pitches.min()) - 2, int(pitches.max()) + 2
        t1 = max(float(n.end.max()) for n in everything)
    else:
        lo, hi, t1 = 58, 72, cut_seconds + 1
    t1 = max(t1, cut_seconds + 0.5)

    n = len(samples)
    panel_height = 2.3 if n <= 4 else 1.6
    fig = _figure(13, 0.9 + panel_height * n)
    top, bottom = 1 - 0.55 / fig.get_figheight(), 0.5 / fig.get_figheight()
    axes = fig.subplots(n, 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    fig.subplots_adjust(left=0.06, right=0.985, top=top, bottom=bottom, hspace=0.12)
    octaves = [p for p in range(lo, hi + 1) if p % 12 == 0]
    for i, (ax, notes) in enumerate(zip(axes, samples, strict=True)):
        _style(ax)
        ax.axvspan(0, cut_seconds, color=BG, alpha=0.35, zorder=0, lw=0)  # the prompt's side, dimmed
        for p in octaves:
            ax.axhline(p, color="#262b36", lw=0.6, zorder=1)
        if len(notes):
            _draw_notes(ax, notes, prompt_tokens)
        ax.axvline(cut_seconds, color=CUT_COLOR, lw=1.2, ls=(0, (4, 3)), zorder=3)
        label = f"sample {i + 1}" if n > 1 else "continuation"
        ax.text(0.005, 0.93, label, transform=ax.transAxes, ha="left", va="top", color=TEXT, fontsize=9,
                fontweight="bold", zorder=4)  # fmt: skip
    ax = axes[0]
    ax.set_xlim(0, t1 + 0.2)
    ax.set_ylim(lo, hi)
    ax.set_yticks(octaves, [pitch_name(p) for p in octaves])
    axes[-1].set_xlabel("time (s)", color=MUTED, fontsize=9)
    axes[0].annotate(
        f"cut at {cut_seconds:.2f} s", (cut_seconds, 1.0), xycoords=("data", "axes fraction"),
        xytext=(4, 3), textcoords="offset points", ha="left", va="bottom", color=CUT_COLOR, fontsize=8,
    )  # fmt: skip
    _legend(fig)
    fig.suptitle(title or "prompt and continuation", color=TEXT, fontsize=11, x=0.06, ha="left",
                 y=1 - 0.12 / fig.get_figheight(), va="top")  # fmt: skip
    _save(fig, path, dpi)
    return Path(path).stat().st_size


def render_infill_png(
    pieces: Sequence[Notes],
    path: str | Path,
    *,
    middles: Sequence[tuple[int, int]],
    span: tuple[float, float],
    margin: float = 4.0,
    title: str | None = None,
    dpi: int = 110,
) -> int:
    """Each infilled piece in its own panel, from `margin` seconds before the span to after it.

    middles: per piece, the token range [first, end) of its new middle (those notes are drawn as
    generated, the rest as given); span: (start, end) seconds, shaded. Returns the PNG's bytes."""
    if not pieces:
        raise ValueError("render_infill_png needs at least one piece")
    t0, t1 = max(0.0, span[0] - margin), span[1] + margin
    shown = [(n.end > t0) & (n.start < t1) for n in pieces]
    pitches = np.concatenate([n.pitch[k] for n, k in zip(pieces, shown, strict=True)])
    lo, hi = (int(pitches.min()) - 2, int(pitches.max()) + 2) if pitches.size else (58, 72)
    n = len(pieces)
    panel_height = 2.3 if n <= 4 else 1.6
    fig = _figure(13, 0.9 + panel_height * n)
    top, bottom = 1 - 0.55 / fig.get_figheight(), 0.5 / fig.get_figheight()
    axes = fig.subplots(n, 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    fig.subplots_adjust(left=0.06, right=0.985, top=top, bottom=bottom, hspace=0.12)
    octaves = [p for p in range(lo, hi + 1) if p % 12 == 0]
    for i, (ax, notes, (a, b)) in enumerate(zip(axes, pieces, middles, strict=True)):
        _style(ax)
        ax.axvspan(span[0], span[1], color=CUT_COLOR, alpha=0.08, zorder=0, lw=0)
        for p in octaves:
            ax.axhline(p, color="#262b36", lw=0.6, zorder=1)
        if len(notes):
            _draw_notes(ax, notes, 0, is_given=~((notes.on_token >= a) & (notes.on_token < b)))
        for t in span:
            ax.axvline(t, color=CUT_COLOR, lw=1.2, ls=(0, (4, 3)), zorder=3)
        ax.text(0.005, 0.93, f"sample {i + 1}" if n > 1 else "infilled", transform=ax.transAxes, ha="left",
                va="top", color=TEXT, fontsize=9, fontweight="bold", zorder=4)  # fmt: skip
    axes[0].set_xlim(t0, t1)
    axes[0].set_ylim(lo, hi)
    axes[0].set_yticks(octaves, [pitch_name(p) for p in octaves])
    axes[-1].set_xlabel("time (s)", color=MUTED, fontsize=9)
    _legend(fig)
    fig.suptitle(title or "infilled span", color=TEXT, fontsize=11, x=0.06, ha="left",
                 y=1 - 0.12 / fig.get_figheight(), va="top")  # fmt: skip
    _save(fig, path, dpi)
    return Path(path).stat().st_size


def _legend(fig) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=PROMPT_COLOR, label="prompt"), Patch(color=GENERATED_COLOR, label="generated")]
    leg = fig.legend(handles=handles, loc="upper right", ncol=2, fontsize=8, frameon=False,
                     bbox_to_anchor=(0.985, 1 - 0.05 / fig.get_figheight()))  # fmt: skip
    for t in leg.get_texts():
        t.set_color(TEXT)
