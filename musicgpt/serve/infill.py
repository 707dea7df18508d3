"""The app's infill page: mark a span on a piece's piano roll, fill it, hear and keep each alternative.

    GET  /infill                          the page (assets/infill.html, infill.js)
    GET  /api/infill/pieces/{name}        a bundled piece's notes, its length, and whether the model infills
    POST /api/infill                      JSON {piece, start, end, numSamples, seed} -> the alternatives:
                                          each one's notes from 1 s before to 1 s after the span, and its MIDI
    GET  /api/infill/{id}/{k}.mid         alternative k (from 1): the whole piece with the span replaced

One request samples at a time (`musicgpt.generation.infill.infill_piano`, as `musicgpt infill`);
the last few results are kept for their downloads. Errors are JSON {"error"} with a 4xx code.
"""

from __future__ import annotations

import io
import re
import threading
import uuid
from collections import OrderedDict
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
    results: OrderedDict[str, tuple[str, list[bytes]]] = OrderedDict()

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
        midis, shown = [], []
        for whole in result.pieces():
            buffer = io.BytesIO()
            tokenizer.decode(whole).write(buffer)
            midis.append(buffer.getvalue())
            shown.append(_notes_json(tokenizer.decode_notes(whole), start - PLAY_MARGIN, end + PLAY_MARGIN))
        key = uuid.uuid4().hex[:12]
        results[key] = (label, midis)
        while len(results) > KEEP_RESULTS:
            results.popitem(last=False)
        base = f"/api/infill/{key}"
        return {
            "id": key,
            "start": start,
            "end": end,
            "from": max(0.0, start - PLAY_MARGIN),
            "to": end + PLAY_MARGIN,
            "samples": [{"midi": f"{base}/{k}.mid", "notes": s} for k, s in enumerate(shown, 1)],
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

    async def midi(request: Request) -> Response:
        key, k = request.path_params["id"], request.path_params["k"]
        if key not in results or not (k.isdecimal() and len(k) <= 2 and 1 <= int(k) <= len(results[key][1])):
            raise BadRequest(f"no infill result {key[:20]}/{k[:4]} (the server keeps only the latest)", 404)
        label, midis = results[key]
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", label.rsplit(".", 1)[0])[:60] or "piece"
        return Response(
            midis[int(k) - 1],
            media_type="audio/midi",
            headers={"Content-Disposition": f'attachment; filename="{stem}-infill{k}.mid"'},
        )

    return [
        Route("/infill", page),
        Route("/infill/infill.js", script),
        Route("/api/infill/pieces/{name}", piece),
        Route("/api/infill", create, methods=["POST"]),
        Route("/api/infill/{id}/{k}.mid", midi),
    ]
