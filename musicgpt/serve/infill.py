"""The app's infill page: mark a span on a piece's piano roll, fill it, hear and keep each alternative.

    GET  /infill                          the page (assets/infill.html, infill.js)
    GET  /api/infill/pieces/{name}        a bundled piece's notes, its length, and whether the model infills
    POST /api/infill                      JSON {piece, start, end, numSamples, seed} -> the alternatives:
                                          each one's notes from 1 s before to 1 s after the span, and its MIDI
    GET  /api/infill/{id}/{k}.mid         alternative k (from 1): the whole piece with the span replaced
    GET  /api/infill/{id}/{k}/attention   its attention page: the model reading the infilled piece in
                                          order, over the block of tokens that ends a second after the span

One request samples at a time (`musicgpt.generation.infill.infill_piano`, as `musicgpt infill`);
the last few results are kept for their downloads. Errors are JSON {"error"} with a 4xx code.
"""

from __future__ import annotations

import io
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from musicgpt.errors import MusicGPTError
from musicgpt.serve.form import BadRequest

KEEP_RESULTS = 8  # results kept for their downloads
MAX_ALTERNATIVES = 8
MAX_SPAN_SECONDS = 30.0
PLAY_MARGIN = 1.0  # each alternative plays from a second before the span to a second after


@dataclass
class _Result:
    """One request's alternatives, kept for their downloads and attention pages."""

    label: str
    start: float
    end: float
    midis: list[bytes]
    wholes: list[np.ndarray]  # each alternative's ids: the whole piece with the span filled
    attention: list[str | None]  # each one's attention page, made on first request


def _asset(name: str) -> str:
    return resources.files("musicgpt.serve").joinpath("assets", name).read_text(encoding="utf-8")


def _notes_json(notes, t0: float = 0.0, t1: float = float("inf")) -> list[list[float]]:
    """[pitch, start, end, velocity] of the notes sounding in [t0, t1)."""
    keep = (notes.end > t0) & (notes.start < t1)
    return [
        [int(p), round(float(s), 3), round(float(e), 3), int(v)]
        for p, s, e, v in zip(
            notes.pitch[keep], notes.start[keep], notes.end[keep], notes.velocity[keep], strict=True
        )
    ]


def _number(body: dict, key: str, low: float, high: float, integer: bool = False) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise BadRequest(f"{key} must be {kind} from {low:g} to {high:g}, got {str(value)[:40]}")
    if integer and value != int(value):
        raise BadRequest(f"{key} must be an integer, got {value}")
    return int(value) if integer else float(value)


def infill_routes(model, tokenizer, pieces: dict[str, np.ndarray]) -> list[Route]:
    from musicgpt.generation.infill import can_infill, check_span, infill_piano

    able = can_infill(model, tokenizer)
    one_at_a_time = threading.Lock()
    results: OrderedDict[str, _Result] = OrderedDict()

    def piece_ids(name) -> np.ndarray:
        if not isinstance(name, str) or name not in pieces:
            raise BadRequest(f"no bundled piece is called {str(name)[:80]!r}")
        return pieces[name]

    async def page(request: Request) -> Response:
        return HTMLResponse(_asset("infill.html"))

    async def script(request: Request) -> Response:
        return Response(_asset("infill.js"), media_type="text/javascript; charset=utf-8")

    async def piece(request: Request) -> Response:
        ids = piece_ids(request.path_params["name"])
        notes = tokenizer.decode_notes(ids)
        from musicgpt.tokenizers import vocab as V

        return JSONResponse({"notes": _notes_json(notes), "seconds": V.seconds_of(ids), "canInfill": able})

    def run(ids, label, start, end, n, seed) -> dict:
        with one_at_a_time:
            result = infill_piano(model, tokenizer, ids, start, end, num_samples=n, seed=seed)
        midis, shown, wholes = [], [], result.pieces()
        for whole in wholes:
            buffer = io.BytesIO()
            tokenizer.decode(whole).write(buffer)
            midis.append(buffer.getvalue())
            shown.append(_notes_json(tokenizer.decode_notes(whole), start - PLAY_MARGIN, end + PLAY_MARGIN))
        key = uuid.uuid4().hex[:12]
        results[key] = _Result(label, start, end, midis, wholes, [None] * len(wholes))
        while len(results) > KEEP_RESULTS:
            results.popitem(last=False)
        base = f"/api/infill/{key}"
        return {
            "id": key,
            "start": start,
            "end": end,
            "from": max(0.0, start - PLAY_MARGIN),
            "to": end + PLAY_MARGIN,
            "samples": [
                {"midi": f"{base}/{k}.mid", "attention": f"{base}/{k}/attention", "notes": s}
                for k, s in enumerate(shown, 1)
            ],
        }

    async def create(request: Request) -> Response:
        if not able:
            raise BadRequest(
                "this model has no fill-in-the-middle tokens: it cannot infill (train one with data.fim_rate)"
            )
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the request must be JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the request must be a JSON object")
        label = body.get("piece")
        ids = piece_ids(label)
        start = _number(body, "start", 0, 1e6)
        end = _number(body, "end", 0, 1e6)
        if end - start > MAX_SPAN_SECONDS:
            raise BadRequest(f"a span lasts at most {MAX_SPAN_SECONDS:g} s here, got {end - start:.2f} s")
        n = _number(body, "numSamples", 1, MAX_ALTERNATIVES, integer=True)
        seed = _number(body, "seed", 0, 2**31 - 1, integer=True) if body.get("seed") is not None else None
        try:
            check_span(ids, start, end, label)
        except MusicGPTError as e:
            raise BadRequest(str(e)) from None
        return JSONResponse(await run_in_threadpool(run, ids, label, start, end, n, seed))

    def result_of(request: Request) -> tuple[_Result, int]:
        key, k = request.path_params["id"], request.path_params["k"]
        if key not in results or not (
            k.isdecimal() and len(k) <= 2 and 1 <= int(k) <= len(results[key].midis)
        ):
            raise BadRequest(f"no infill result {key[:20]}/{k[:4]} (the server keeps only the latest)", 404)
        return results[key], int(k)

    async def midi(request: Request) -> Response:
        result, k = result_of(request)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", result.label.rsplit(".", 1)[0])[:60] or "piece"
        return Response(
            result.midis[k - 1],
            media_type="audio/midi",
            headers={"Content-Disposition": f'attachment; filename="{stem}-infill{k}.mid"'},
        )

    def attention_html(result: _Result, k: int) -> str:
        from musicgpt.tokenizers import vocab as V
        from musicgpt.viz.attention import AttentionData
        from musicgpt.viz.html import attention_page

        with one_at_a_time:
            if result.attention[k - 1] is None:
                whole = result.wholes[k - 1]
                times = tokenizer.token_times(whole)
                # the block of the model's window that ends a second after the span: the filled
                # notes look back at what came before them, the notes after at the fill
                last = int(np.searchsorted(times, result.end + PLAY_MARGIN))
                first = last - model.config.block_size
                start = None if first <= 0 else float(times[first]) + 0.5 / V.STEPS_PER_SECOND
                data = AttentionData.from_music(model, whole, tokenizer, start, None)
                t0, t1 = data.token_times[0], data.token_times[-1]
                subtitle = (
                    f"the piece with the span {result.start:.2f}-{result.end:.2f} s filled, read in order: "
                    f"{data.n_tokens} tokens, {len(data.notes)} notes, {t0:.2f}-{t1:.2f} s · "
                    f"{model.config.n_layer} layers x {model.config.n_head} heads"
                )
                title = f"{result.label}: alternative {k}, attention"
                result.attention[k - 1] = attention_page(data, title=title, subtitle=subtitle)
            return result.attention[k - 1]

    async def attention(request: Request) -> Response:
        result, k = result_of(request)
        return HTMLResponse(await run_in_threadpool(attention_html, result, k))

    return [
        Route("/infill", page),
        Route("/infill/infill.js", script),
        Route("/api/infill/pieces/{name}", piece),
        Route("/api/infill", create, methods=["POST"]),
        Route("/api/infill/{id}/{k}.mid", midi),
        Route("/api/infill/{id}/{k}/attention", attention),
    ]
