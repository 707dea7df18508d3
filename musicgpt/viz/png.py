"""Static PNGs of the attention view (matplotlib, Agg): one query's arcs, and a grid of heads.

The same picture as the HTML page, for a README or a paper: arcs from the query note to the
earlier notes it attends to (colour by head, width by weight, the strongest labelled), and a
heatmap per head of the T x T token matrix with the masked triangle in grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musicgpt.io import atomic_write_bytes
from musicgpt.viz.attention import AttentionData, strongest_keys
from musicgpt.viz.html import DEFAULT_ARCS, default_query_note, head_colors, pitch_name

BG, PANEL, TEXT, MUTED, SELECTED = "#0f1115", "#171a21", "#d7dce3", "#8a93a3", "#ffd166"
MASKED = "#2c3038"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # a Figure not owned by pyplot: no global state, no GUI

    fig = Figure(figsize=(width, height), facecolor=BG)
    return fig


def _style(ax) -> None:
    ax.set_facecolor(PANEL)
    ax.tick_params(colors=MUTED, labelsize=8)
    for side in ax.spines.values():
        side.set_color("#262b36")


def _save(fig, path: str | Path, dpi: int) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    atomic_write_bytes(path, buf.getvalue())


def _arcs(
    ax, points: np.ndarray, query: int, arcs: list[tuple[int, int, float]], colors: list[str], rise: float
):
    """Quadratic curves from each key point to the query point, bowing up by `rise` per unit of x."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MPath

    if not arcs:
        return 0.0
    wmax = max(w for _, _, w in arcs)
    xq, yq = points[query]
    peak = 0.0
    for h, j, w in sorted(arcs, key=lambda a: a[2]):  # strongest drawn last, on top
        xk, yk = points[j]
        lift = rise * (abs(xq - xk) ** 0.7) + 2.0
        ctrl = (xk + xq) / 2, max(yk, yq) + 2 * lift
        peak = max(peak, (max(yk, yq) + ctrl[1]) / 2)
        path = MPath([(xk, yk), ctrl, (xq, yq)], [MPath.MOVETO, MPath.CURVE3, MPath.CURVE3])
        ax.add_patch(
            PathPatch(path, fill=False, edgecolor=colors[h], lw=0.8 + 4.5 * w / wmax, alpha=0.8, zorder=3)
        )
        ax.plot([xk], [yk], "o", ms=3.5, color=colors[h], mec=BG, mew=0.6, zorder=4)
    for rank, (h, j, _) in enumerate(arcs[:3], start=1):  # arcs come strongest first
        ax.annotate(
            str(rank), points[j], xytext=(-4, 5), textcoords="offset points", ha="right", color=colors[h],
            fontsize=9, fontweight="bold", zorder=5, path_effects=[_halo()],
        )  # fmt: skip
    return peak


def _halo():
    from matplotlib import patheffects

    return patheffects.withStroke(linewidth=2.5, foreground=BG)


def _strongest(ax, arcs: list[tuple[int, int, float]], colors: list[str], name) -> None:
    """The numbered strongest arcs, spelled out in the top right corner."""
    for rank, (h, j, w) in enumerate(arcs[:3], start=1):
        ax.text(
            0.995, 0.975 - 0.055 * (rank - 1), f"{rank}  head {h}  {w:.3f}  → {name(j)}", transform=ax.transAxes,
            ha="right", va="top", color=colors[h], fontsize=8, fontweight="bold", path_effects=[_halo()], zorder=6,
        )  # fmt: skip


def _legend(ax, heads: list[int], colors: list[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[h], lw=3, label=f"head {h}") for h in heads]
    leg = ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=min(len(heads), 8), frameon=True)
    leg.get_frame().set_facecolor(BG)
    leg.get_frame().set_edgecolor("#262b36")
    for t in leg.get_texts():
        t.set_color(TEXT)


def render_arcs_png(
    data: AttentionData,
    path: str | Path,
    *,
    query: int | None = None,
    layer: int | None = None,
    heads: list[int] | None = None,
    per_head: int = DEFAULT_ARCS,
    threshold: float = 0.0,
    title: str | None = None,
    window: int = 48,
    dpi: int = 120,
) -> int:
    """The arcs of one query over the excerpt of `data`; returns the PNG's bytes.

    Music (`AttentionData.from_music`): the piano roll, arcs from the query note (default three
    quarters into the excerpt) to the notes it attends to. Text: the last `window` tokens up to
    the query token (default the last) in a row. layer defaults to the last, heads to all; keys
    below `threshold` are not drawn.
    """
    layer = data.n_layer - 1 if layer is None else layer
    heads = list(range(data.n_head)) if heads is None else heads
    colors = head_colors(data.n_head)
    draw = _note_arcs if data.music else _token_arcs
    fig, default_title, x = draw(data, query, layer, heads, per_head, threshold, colors, window)
    fig.suptitle(title or default_title, color=TEXT, fontsize=11, x=x, ha="left")
    _save(fig, path, dpi)
    return Path(path).stat().st_size


def _note_arcs(data, note, layer, heads, per_head, threshold, colors, window):
    """The piano roll with the arcs of one query note: (figure, its default title, title x)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    notes = data.notes
    if len(notes) == 0:
        raise ValueError("render_arcs_png needs AttentionData with notes; this excerpt has none")
    note = default_query_note(len(notes)) if note is None else note
    row = data.note_attention()[layer, :, note, :]  # (H, N)
    arcs = strongest_keys(row, note, heads, per_head, threshold)

    fig = _figure(14, 6)
    ax = fig.add_axes((0.06, 0.1, 0.92, 0.8))
    _style(ax)
    shade = np.array([to_rgba("#c9d4e3", 0.3 + 0.7 * v / 127) for v in notes.velocity])
    shade[note] = to_rgba(SELECTED)
    rects = [
        Rectangle((s, p - 0.42), max(e - s, 0.02), 0.84)
        for s, e, p in zip(notes.start, notes.end, notes.pitch, strict=True)
    ]
    ax.add_collection(PatchCollection(rects, facecolors=shade, edgecolors="none", zorder=2))
    points = np.stack([notes.start, notes.pitch.astype(np.float64)], axis=1)
    t0, t1 = float(notes.start.min()), float(notes.end.max())
    lo, hi = int(notes.pitch.min()) - 2, int(notes.pitch.max()) + 2
    peak = _arcs(ax, points, note, arcs, colors, rise=(hi - lo) * 0.35 / max(t1 - t0, 1e-3) ** 0.7)
    ax.set_xlim(t0 - 0.2, t1 + 0.2)
    ax.set_ylim(lo, max(hi, peak + 2) + 0.15 * (hi - lo))  # headroom for the legend
    ax.set_yticks(
        [p for p in range(lo, hi + 1) if p % 12 == 0],
        [pitch_name(p) for p in range(lo, hi + 1) if p % 12 == 0],
    )
    ax.set_xlabel("time (s)", color=MUTED, fontsize=9)
    _strongest(ax, arcs, colors, lambda j: f"{pitch_name(int(notes.pitch[j]))} at {notes.start[j]:.2f} s")
    ax.grid(axis="y", color="#262b36", lw=0.6, zorder=1)
    _legend(ax, heads, colors)
    q = f"{pitch_name(int(notes.pitch[note]))} at {notes.start[note]:.2f} s (note {note})"
    return fig, f"layer {layer}: what {q} attends to", 0.06


def _token_arcs(data, token, layer, heads, per_head, threshold, colors, window):
    """The last `window` tokens up to the query in a row, with its arcs: (figure, title, title x)."""
    token = data.n_tokens - 1 if token is None else token
    first = max(0, token - window + 1)
    row = data.attention[layer, :, token, first : token + 1]  # (H, window): only keys in view
    arcs = strongest_keys(row, token - first, heads, per_head, threshold)
    n = token - first + 1
    fig = _figure(max(6.0, 0.32 * n + 1), 3.6)
    ax = fig.add_axes((0.02, 0.25, 0.96, 0.62))
    _style(ax)
    points = np.stack([np.arange(n, dtype=np.float64), np.zeros(n)], axis=1)
    peak = _arcs(ax, points, n - 1, arcs, colors, rise=0.45)
    shown = [data.token_names[first + i].replace(" ", "·").replace("\n", "↵") for i in range(n)]
    upright = max(len(s) for s in shown) <= 2  # short tokens (bytes) read best upright
    for i, s in enumerate(shown):
        ax.text(i, -0.4, s, rotation=0 if upright else 90, ha="center", va="top", fontsize=8, family="monospace",
                color=SELECTED if i == n - 1 else TEXT)  # fmt: skip
    _strongest(ax, arcs, colors, lambda j: f"{data.token_names[first + j]!r} (token {first + j})")
    ax.set_xlim(-1, n)
    ax.set_ylim(-0.2, max(peak, 1.0) * 1.25 + 1)
    ax.set_xticks([])
    ax.set_yticks([])
    _legend(ax, heads, colors)
    return fig, f"layer {layer}: what token {token} attends to", 0.02


def _max_pool(a: np.ndarray, size: int) -> np.ndarray:
    """(T, T) -> at most (size, size), each pixel the strongest weight it covers (as the page draws)."""
    t = a.shape[-1]
    if t <= size:
        return a
    edges = (np.arange(size) * t) // size
    return np.maximum.reduceat(np.maximum.reduceat(a, edges, axis=0), edges, axis=1)


def render_heads_png(
    data: AttentionData,
    path: str | Path,
    *,
    layers: list[int] | None = None,
    dpi: int = 110,
    pixels: int = 256,
) -> int:
    """A grid of heatmaps, one per (layer, head): log10 weight, the masked triangle grey. Returns bytes."""
    from matplotlib import colormaps

    layers = list(range(data.n_layer)) if layers is None else layers
    nh = data.n_head
    cell = 1.9 if nh <= 8 else 1.4
    fig = _figure(cell * nh + 1.6, cell * len(layers) + 0.7)
    cmap = colormaps["magma"].with_extremes(bad=MASKED)
    t = data.n_tokens
    above = np.triu(np.ones((t, t), dtype=bool), 1)
    image = None
    for r, layer in enumerate(layers):
        for h in range(nh):
            ax = fig.add_subplot(len(layers), nh, r * nh + h + 1)
            _style(ax)
            a = _max_pool(data.attention[layer, h], pixels)
            masked = _max_pool(above.astype(np.uint8), pixels).astype(bool) & (a == 0)
            img = np.ma.masked_array(np.log10(np.maximum(a, 1e-12)), mask=masked)
            image = ax.imshow(img, cmap=cmap, vmin=-4, vmax=0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"layer {layer} · head {h}", color=head_colors(nh)[h], fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.84, top=0.9, bottom=0.03, wspace=0.08, hspace=0.25)
    bar = fig.colorbar(image, cax=fig.add_axes((0.86, 0.15, 0.015, 0.7)))
    bar.set_label("log10 weight (query row → key column)", color=MUTED, fontsize=8)
    bar.ax.tick_params(colors=MUTED, labelsize=7)
    fig.suptitle(f"attention per head, {t} tokens", color=TEXT, fontsize=10)
    _save(fig, path, dpi)
    return Path(path).stat().st_size
