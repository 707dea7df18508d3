"""One self-contained HTML page per attention view: no CDN, no URL, opens offline.

The static part (the piano roll, or the row of text tokens) is SVG written here, so the page
shows every note even before its script runs; `assets/attention.js` draws the arcs and the
heatmap from the data embedded as JSON, its arrays base64 (little-endian). CSS and JS are read
from `assets/` and inlined when the page is built (`assets/page.html`, a jinja2 template).
"""

from __future__ import annotations

import base64
import functools
import html
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from musicgpt.io import atomic_write_text
from musicgpt.tokenizers.notes import Notes
from musicgpt.viz.attention import AttentionData, CompactAttention, compact

# Tableau 10: distinct on a dark background; heads past ten get golden-angle hues
_TABLEAU = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
]
PITCH_NAMES = ["C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B"]
DEFAULT_ARCS = 6  # arcs drawn per head on opening (the page's "arcs per head")
MAX_TOP_K = 16  # keys kept per query row, when the page's budget allows
TOKEN_BUDGET = 2_000_000  # bytes (before base64) for the token matrices of all layers and heads
NOTE_BUDGET = 1_000_000  # the same for the note matrices


def head_colors(n_head: int) -> list[str]:
    """The colour of each head, the same in the page and the PNG."""
    colors = _TABLEAU[:n_head]
    for h in range(len(colors), n_head):
        hue = (h * 137.508) % 360
        colors.append(_hsl_to_hex(hue, 0.62, 0.62))
    return colors


def _hsl_to_hex(hue: float, s: float, lum: float) -> str:
    import colorsys

    r, g, b = colorsys.hls_to_rgb(hue / 360, lum, s)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (r, g, b)))


def pitch_name(p: int) -> str:
    return f"{PITCH_NAMES[p % 12]}{p // 12 - 1}"


def auto_top_k(n_matrices: int, n_rows: int, budget: int) -> int:
    """Keys per row that keep `n_matrices` compacted matrices within `budget` bytes: 4 to MAX_TOP_K.

    Each kept key costs 3 bytes (uint16 position, uint8 weight). A 2-layer, 2-head model keeps
    16 keys per row of a 2,048-token excerpt; a 6-layer, 8-head one keeps 6.
    """
    return int(np.clip(budget // (3 * n_matrices * max(n_rows, 1)), 4, MAX_TOP_K))


def default_query_note(n_notes: int) -> int:
    """Three quarters into the excerpt: late enough to have a past worth attending to."""
    return max(0, (3 * (n_notes - 1)) // 4)


# --- data -----------------------------------------------------------------------------------------


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(
        np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    ).decode("ascii")


def _compact_json(c: CompactAttention) -> dict[str, Any]:
    index_bytes = c.index.dtype.itemsize
    weight = c.weight if c.weight.dtype == np.uint8 else c.weight.view(np.uint16)
    return {
        "k": c.k,
        "rows": c.index.shape[-2],
        "indexBytes": index_bytes,
        "index": _b64(c.index, f"u{index_bytes}"),
        "dtype": "uint8" if c.weight.dtype == np.uint8 else "float16",
        "weight": _b64(weight, weight.dtype.str[1:]),
        "scale": _b64(c.scale, "f4"),
    }


def _init(
    data: AttentionData, layer: int | None, head: int | None, item: int | None, n_items: int, per_head: int
) -> dict:
    layer = data.n_layer - 1 if layer is None else layer
    if not 0 <= layer < data.n_layer:
        raise ValueError(f"layer {layer} does not exist: the model has layers 0..{data.n_layer - 1}")
    if head is not None and not 0 <= head < data.n_head:
        raise ValueError(f"head {head} does not exist: the model has heads 0..{data.n_head - 1}")
    if item is not None and not 0 <= item < n_items:
        raise ValueError(f"item {item} does not exist: there are {n_items}")
    return {
        "layer": layer,
        "heads": list(range(data.n_head)) if head is None else [head],
        "hmHead": 0 if head is None else head,
        "item": item,
        "perHead": per_head,
    }


# --- the static SVG ------------------------------------------------------------------------------

ROLL_LEFT, ROLL_TOP, ROLL_BOTTOM = 44, 80, 26  # room for pitch names, arcs above, time labels


def piano_roll_svg(notes: Notes, t0: float, t1: float) -> str:
    """Time across, pitch up, velocity as shade; every note a <rect data-i> with its arc anchor."""
    duration = max(t1 - t0, 1e-3)
    pps = float(np.clip(1800.0 / duration, 40.0, 200.0))  # pixels per second
    lo, hi = (int(notes.pitch.min()) - 2, int(notes.pitch.max()) + 2) if len(notes) else (58, 70)
    rh = float(np.clip(440.0 / (hi - lo + 1), 4.0, 14.0))  # pixels per semitone
    width = ROLL_LEFT + duration * pps + 20
    height = ROLL_TOP + (hi - lo + 1) * rh + ROLL_BOTTOM

    def y(p: float) -> float:
        return ROLL_TOP + (hi - p) * rh

    # data-*: how the page's player maps a time to x (the playhead)
    out = [
        f'<svg id="roll" width="{width:.0f}" height="{height:.0f}" role="img" aria-label="piano roll" '
        f'data-t0="{t0:.3f}" data-t1="{t1:.3f}" data-pps="{pps:.4f}" data-x0="{ROLL_LEFT}">'
    ]
    for p in range(lo, hi + 1):  # black keys as darker bands, a line and a name at every C
        if p % 12 in (1, 3, 6, 8, 10):
            out.append(
                f'<rect class="band" x="{ROLL_LEFT}" y="{y(p):.1f}" width="{width - ROLL_LEFT:.0f}" height="{rh:.1f}"/>'
            )
        if p % 12 == 0:
            out.append(
                f'<line class="cline" x1="{ROLL_LEFT}" x2="{width:.0f}" y1="{y(p) + rh:.1f}" y2="{y(p) + rh:.1f}"/>'
            )
            out.append(f'<text x="4" y="{y(p) + rh:.1f}">{pitch_name(p)}</text>')
    step = next(s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120) if s * pps >= 70)
    base = y(lo - 1)
    for t in np.arange(np.ceil(t0 / step) * step, t1 + 1e-9, step):
        x = ROLL_LEFT + (t - t0) * pps
        out.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{ROLL_TOP:.0f}" y2="{base + 4:.1f}"/>')
        out.append(f'<text x="{x + 2:.1f}" y="{base + 16:.1f}">{t:g} s</text>')
    out.append('<g class="notes">')
    for i in range(len(notes)):
        p, v = int(notes.pitch[i]), int(notes.velocity[i])
        x = ROLL_LEFT + (notes.start[i] - t0) * pps
        w = max((min(notes.end[i], t1) - notes.start[i]) * pps, 2.0)
        top = y(p)
        tip = f"{pitch_name(p)} ({p}), {notes.start[i]:.2f}-{notes.end[i]:.2f} s, velocity {v}, note {i}"
        out.append(
            f'<rect class="note-r" data-i="{i}" data-cx="{x:.1f}" data-cy="{top + rh / 2:.1f}" x="{x:.1f}" '
            f'y="{top + 0.5:.1f}" width="{w:.1f}" height="{max(rh - 1, 2):.1f}" rx="1" '
            f'fill-opacity="{0.3 + 0.7 * v / 127:.2f}"><title>{html.escape(tip)}</title></rect>'
        )
    out.append("</g>")
    out.append(
        f'<line id="playhead" x1="{ROLL_LEFT}" x2="{ROLL_LEFT}" y1="{ROLL_TOP - 6:.0f}" y2="{base + 4:.1f}"/>'
    )
    out.append('<g id="arcs"></g></svg>')
    return "\n".join(out)


def _shown(token: str) -> str:
    shown = token.replace(" ", "·").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
    return shown if len(shown) <= 24 else shown[:23] + "…"


def token_row_svg(names: list[str]) -> str:
    """The text tokens side by side, each a <g data-i> box; arcs rise above the row."""
    char_w, arc_room, box_h, pad = 7.8, 240, 24, 8  # 13 px monospace is about 7.8 px a character
    x, parts = pad, []
    for i, name in enumerate(names):
        shown = _shown(name)
        w = max(len(shown) * char_w + 10, 18)
        parts.append(
            f'<g class="tok" data-i="{i}" data-cx="{x + w / 2:.1f}" data-cy="{arc_room:.0f}">'
            f'<rect x="{x:.1f}" y="{arc_room}" width="{w:.1f}" height="{box_h}" rx="3"/>'
            f'<text x="{x + 5:.1f}" y="{arc_room + 17}">{html.escape(shown)}</text>'
            f"<title>{html.escape(repr(name))} (token {i})</title></g>"
        )
        x += w + 3
    width, height = x + pad, arc_room + box_h + 12
    head = f'<svg id="roll" width="{width:.0f}" height="{height}" role="img" aria-label="tokens">'
    return "\n".join([head, *parts, '<g id="arcs"></g></svg>'])


# --- pages ---------------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return resources.files("musicgpt.viz").joinpath("assets", name).read_text(encoding="utf-8")


@functools.cache
def _templates() -> jinja2.Environment:
    """assets/page.html's environment: every value HTML-escaped unless marked `| safe` (the CSS, the
    scripts and the SVG, all made here); `tojson` embeds the data compactly, with <, >, & and '
    escaped, so nothing in it can close the <script> that holds it."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("musicgpt.viz", "assets"), autoescape=True, keep_trailing_newline=True
    )
    env.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "ensure_ascii": True}
    return env


def _page(
    *, mode: str, title: str, subtitle: str, item: str, explain: str, top_k: int, view: str, payload: dict
) -> str:
    music = mode == "music"
    return _templates().get_template("page.html").render(
        mode=mode, music=music, title=title, subtitle=subtitle, item=item, explain=explain, top_k=top_k,
        view=view, payload=payload, css=_asset("attention.css"), js=_asset("attention.js"),
        player=_asset("player.js") if music else "",
    )  # fmt: skip


def _common_payload(data: AttentionData, mode: str, top_k: int, precision: str) -> dict[str, Any]:
    return {
        "topK": top_k,
        "mode": mode,
        "nLayer": data.n_layer,
        "nHead": data.n_head,
        "nTokens": data.n_tokens,
        "tokens": list(data.token_names),
        "headColors": head_colors(data.n_head),
        "tok": _compact_json(compact(data.attention, top_k, precision)),
    }


@dataclass(frozen=True)
class _View:
    """What tells the piano-roll page from the token-row page, as data."""

    mode: str  # "music" or "text": the page's script reads it
    item: str  # what a query is: "note" or "token"
    n_items: int
    default_item: int | None  # the query chosen on opening when none is asked for
    explain: str
    svg: str  # the static drawing: the piano roll, or the row of tokens
    payload: dict[str, Any]  # what only this view embeds


def _note_view(data: AttentionData, top_k: int | None, precision: str) -> _View:
    """The piano roll: a query is a note (its NOTE_ON token)."""
    notes, times = data.notes, data.token_times
    if notes is None or times is None:
        raise ValueError("a piano-roll page needs AttentionData with notes (AttentionData.from_music)")
    n = len(notes)
    note_attn = data.note_attention()
    note_k = top_k or auto_top_k(data.n_layer * data.n_head, n, NOTE_BUDGET)
    share = np.clip(np.rint(note_attn.sum(-1) * 255), 0, 255).astype(np.uint8)  # (L, H, N)
    payload = {
        "items": _compact_json(compact(note_attn, note_k, precision)) if n else None,
        "noteShare": _b64(share, "u1"),
        "notes": {
            "pitch": notes.pitch.tolist(),
            "velocity": notes.velocity.tolist(),
            "start": np.round(notes.start, 3).tolist(),
            "end": np.round(notes.end, 3).tolist(),
            "onToken": notes.on_token.tolist(),
        },
    }
    t0 = float(times[0])
    t1 = float(max(times[-1], notes.start.max() if n else 0.0)) + 0.5  # pedalled tails cut here
    explain = (
        "A note is its NOTE_ON token: an arc shows the weight the chosen note's NOTE_ON gives an earlier "
        "note's NOTE_ON. Weight on NOTE_OFF, VELOCITY and TIME_SHIFT tokens is not drawn (see the heatmap). "
        "Width by weight, the widest being the strongest arc shown."
    )
    default = default_query_note(n) if n else None
    return _View("music", "note", n, default, explain, piano_roll_svg(notes, t0, t1), payload)


def _token_view(data: AttentionData) -> _View:
    """The tokens in a row: a query is a token."""
    explain = "Each arc: the weight the chosen token's query gives an earlier token. Width by weight."
    n = data.n_tokens
    return _View("text", "token", n, n - 1, explain, token_row_svg(data.token_names), {})


def attention_page(
    data: AttentionData,
    *,
    title: str,
    subtitle: str = "",
    layer: int | None = None,
    head: int | None = None,
    query: int | None = None,
    top_k: int | None = None,
    precision: str = "uint8",
    per_head: int = DEFAULT_ARCS,
) -> str:
    """The attention page as a string; see `render_html`."""
    view = _note_view(data, top_k, precision) if data.music else _token_view(data)
    token_k = top_k or auto_top_k(data.n_layer * data.n_head, data.n_tokens, TOKEN_BUDGET)
    payload = _common_payload(data, view.mode, token_k, precision)
    payload["init"] = _init(
        data, layer, head, view.default_item if query is None else query, view.n_items, per_head
    )
    payload.update(view.payload)
    return _page(
        mode=view.mode, title=title, subtitle=subtitle, item=view.item, explain=view.explain,
        top_k=token_k, view=view.svg, payload=payload,
    )  # fmt: skip


def render_html(data: AttentionData, path: str | Path, **options: Any) -> int:
    """Write the attention page for `data`; returns its bytes.

    Music (`AttentionData.from_music`): the piano roll, arcs from the chosen note to the notes it
    attends to. Text (`AttentionData.from_model`): the tokens in a row, arcs between them.

    Options: title, subtitle, layer (default the last), head (default all shown), query (the note,
    or the token, chosen on opening; default three quarters into the notes, or the last token),
    top_k (keys kept per query row; default `auto_top_k` within TOKEN_BUDGET / NOTE_BUDGET),
    precision ("uint8" or "float16"), per_head (arcs per head on opening).
    """
    options.setdefault("title", "attention")
    page = attention_page(data, **options)
    atomic_write_text(path, page)
    return len(page.encode("utf-8"))
