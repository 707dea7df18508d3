"""The `musicgpt serve` web app: a small Starlette app with one page.

    GET  /                                   the page (assets/index.html)
    GET  /assets/{app.js,app.css,player.js}  its script and style; player.js is the attention page's synth
    GET  /api/info                           the model, the bundled pieces, the fields and their bounds
    POST /api/jobs                           multipart form: piece or midi (a file), and the fields of
                                             serve/form.py -> 202 {"id"}; 400/413/503 {"error"}
    GET  /api/jobs/{id}                      state, progress, and when done each sample's notes
    GET  /api/jobs/{id}/samples/{k}.mid      a sample as MIDI (k from 1)
    GET  /api/jobs/{id}/samples/{k}/attention   the attention page of a sample (made on first request)
    GET  /duet, WS /duet/ws, ...             the live duet (serve/duet.py)
    GET  /infill, /api/infill...             mark a span and infill it (serve/infill.py)

Every error is JSON {"error": message} with a 4xx code (5xx only for a bug), and the server goes on.
Uploads are written to a temporary folder only while they are read, and the folder is removed at
shutdown. Nothing is fetched from anywhere: the page, its script and its synth are package files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from musicgpt.errors import MidiReadError, MusicGPTError
from musicgpt.serve.duet import DuetEngine
from musicgpt.serve.duet_socket import duet_routes
from musicgpt.serve.form import MAX_UPLOAD_BYTES, BadRequest, limits, parse_request
from musicgpt.serve.infill import infill_routes
from musicgpt.serve.jobs import FINISHED, Job, JobState, Worker
from musicgpt.serve.security import SameOrigin, allowed_hosts
from musicgpt.serve.static import PackageFiles, page
from musicgpt.tokenizers import require_music
from musicgpt.tokenizers import vocab as V

# the multipart envelope and the number fields around an upload
FORM_OVERHEAD_BYTES = 64 * 1024
# uploads encoded at once; more wait their turn, and past MAX_WAITING_UPLOADS get a quick 503
ENCODING_SLOTS = 1
MAX_WAITING_UPLOADS = 4

log = logging.getLogger("musicgpt.serve")


def load_pieces(directory: Path | None, tokenizer) -> dict[str, np.ndarray]:
    """The bundled pieces that have notes, by file name, encoded once at start-up.

    A file that cannot be read, or that is over the tokenizer's caps, is left out with a one-line
    warning; a FIFO, socket or device is never opened (a FIFO would block the start for ever).
    """
    pieces = {}
    for path in sorted(directory.glob("*.mid")) if directory else []:
        try:
            if not stat.S_ISREG(path.stat().st_mode):
                raise MidiReadError(path, "not a regular file: not opened")
            ids = np.asarray(tokenizer.encode(path), dtype=np.int64)
        except MidiReadError as e:
            log.warning("musicgpt serve: left out %s", e)
            continue
        except OSError as e:  # a link to nothing
            log.warning("musicgpt serve: left out %s: %s", path, e.strerror or e)
            continue
        if ids.size:
            pieces[path.name] = ids
    return pieces


class LimitBody:
    """Refuse a request body over `max_bytes` with 413: at once when Content-Length says so, else
    as soon as the bytes received pass it (a chunked upload), before the form parser reads on.
    `max_bytes` is the upload limit plus room for the form around the file; the message names
    the upload limit, the number a user can act on."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = BadRequest(
            f"the request is larger than the {MAX_UPLOAD_BYTES // 2**20} MB upload limit", 413
        )
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await _error_response(too_large)(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise too_large
            return message

        await self.app(scope, limited, send)


def _error_response(e: Exception) -> Response:
    return JSONResponse({"error": str(e)}, status_code=getattr(e, "status", 400))


@dataclasses.dataclass
class Server:
    """What the routes share (`request.app.state.server`): the model's worker, the pieces, uploads."""

    worker: Worker
    tokenizer: object
    pieces: dict[str, np.ndarray]
    upload_dir: Path
    duet: DuetEngine
    tuner: object | None = None  # serve/finetune.py's FineTuner, when the app offers fine-tuning
    about: str = ""  # the model's name on the page (it changes when a fine-tuned model is used)
    encoding: asyncio.Semaphore = dataclasses.field(default_factory=lambda: asyncio.Semaphore(ENCODING_SLOTS))
    uploads_waiting: int = 0  # read only on the event loop's thread: no lock

    def close(self) -> None:
        if self.tuner is not None:
            self.tuner.close()
        self.worker.close()
        self.duet.close()
        shutil.rmtree(self.upload_dir, ignore_errors=True)


def _server(request: Request) -> Server:
    return request.app.state.server


async def index(request: Request) -> Response:
    return HTMLResponse(page("index.html"))


async def no_icon(request: Request) -> Response:
    return Response(status_code=204)  # browsers ask every page for one; "none" is not an error


async def info(request: Request) -> Response:
    server = _server(request)
    return JSONResponse({
        "model": server.about,
        "contextTokens": server.worker.model.config.block_size,
        "finetune": server.tuner is not None,
        "pieces": [{"name": n, "seconds": round(V.seconds_of(ids), 1)} for n, ids in server.pieces.items()],
        "fields": limits(),
        "maxUploadBytes": MAX_UPLOAD_BYTES,
    })  # fmt: skip


async def read_upload(server: Server, upload: UploadFile) -> tuple[np.ndarray, str]:
    label = Path(upload.filename or "upload.mid").name[:80]
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadRequest(f"{label} is larger than the {MAX_UPLOAD_BYTES // 2**20} MB upload limit", 413)
    # Encoding costs memory and CPU: one upload at a time, and none when no job could be
    # queued after it (a 503 at once, not after the work).
    server.worker.check_room()
    if server.uploads_waiting >= MAX_WAITING_UPLOADS:
        raise BadRequest(
            f"{server.uploads_waiting} uploads are already being read; try again in a moment", 503
        )
    server.uploads_waiting += 1
    path = server.upload_dir / f"{uuid.uuid4().hex}.mid"
    try:
        async with server.encoding:
            server.worker.check_room()
            path.write_bytes(data)
            ids = await run_in_threadpool(server.tokenizer.encode, path)
    except MidiReadError as e:
        raise BadRequest(f"{label} is not a MIDI file we can read: {e.problem}") from None
    except MemoryError:
        raise BadRequest(f"{label} is too large to read on this server") from None
    except OSError as e:  # the upload folder's disk is full
        raise BadRequest(f"the server cannot store {label} now ({e.strerror or e})", 503) from None
    finally:
        server.uploads_waiting -= 1
        path.unlink(missing_ok=True)
    return np.asarray(ids, dtype=np.int64), label


async def create_job(request: Request) -> Response:
    server = _server(request)
    server.worker.check_room()  # a full queue answers 503 before the body is even read
    async with request.form(max_files=1, max_fields=16, max_part_size=4096) as form:
        r = parse_request(form)
        upload = form.get("midi")
        if isinstance(upload, UploadFile) and upload.filename:
            ids, label = await read_upload(server, upload)
        elif form.get("piece"):
            label = str(form["piece"])
            if label not in server.pieces:
                raise BadRequest(f"no bundled piece is called {label[:80]!r}")
            ids = server.pieces[label]
        else:
            raise BadRequest("choose a piece, or upload a MIDI file")
    if ids.size == 0 or not V.strikes_a_note(ids):
        raise BadRequest(f"{label} has no notes to continue")
    prompt = ids[:0]
    if r.prompt_seconds > 0:
        from musicgpt.generation.piano import cut_at_seconds

        prompt = cut_at_seconds(ids, r.prompt_seconds)
        if not V.strikes_a_note(prompt):
            raise BadRequest(
                f"the first {r.prompt_seconds:g} s of {label} hold no notes: choose a longer prompt "
                "(or 0 s to start from nothing)"
            )
    job = server.worker.submit(prompt, label, r)
    return JSONResponse({"id": job.id}, status_code=202)


def find_job(request: Request) -> Job:
    job = _server(request).worker.get(request.path_params["job"])
    if job is None:
        raise HTTPException(404, "no such job (the server keeps only the latest ones)")
    return job


def find_sample(request: Request) -> tuple[Job, int]:
    job = find_job(request)
    view = job.view()
    k = request.path_params["k"]  # digits checked here: int() of 5,000 digits raises
    if view.state != JobState.DONE or not (
        k.isdecimal() and len(k) <= 4 and 1 <= int(k) <= len(view.samples)
    ):
        raise HTTPException(404, f"job {job.id} has no sample {k[:20]}")
    return job, int(k) - 1


async def job_status(request: Request) -> Response:
    job = find_job(request)
    if job.status_body is not None:  # a finished job's answer never changes: built once
        return Response(job.status_body, media_type="application/json")
    view = job.view()
    base = f"/api/jobs/{job.id}/samples"
    response = JSONResponse({
        "id": job.id,
        "label": job.label,
        "state": view.state,
        "position": _server(request).worker.position(job),
        "doneSeconds": round(view.done_seconds, 2),
        "seconds": job.request.seconds,
        "error": view.error,
        "elapsed": round(view.finished - view.started, 2) if view.finished and view.started else None,
        "samples": [
            {**s.summary, "midi": f"{base}/{k}.mid", "attention": f"{base}/{k}/attention"}
            for k, s in enumerate(view.samples, 1)
        ],
    })  # fmt: skip
    if view.state in FINISHED:
        job.status_body = response.body
    return response


async def midi(request: Request) -> Response:
    job, k = find_sample(request)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(job.label).stem)[:60] or "piece"
    name = f"{stem}-sample{k + 1}.mid"
    return Response(job.samples[k].midi, media_type="audio/midi",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


async def attention(request: Request) -> Response:
    job, k = find_sample(request)
    return HTMLResponse(await asyncio.wrap_future(_server(request).worker.attention_page(job, k)))


# the page, its assets and the generation API (the module docstring's table)
ROUTES = [
    Route("/", index),
    Mount("/assets", PackageFiles()),
    Route("/favicon.ico", no_icon),
    Route("/api/info", info),
    Route("/api/jobs", create_job, methods=["POST"]),
    Route("/api/jobs/{job}", job_status),
    Route("/api/jobs/{job}/samples/{k}.mid", midi),
    Route("/api/jobs/{job}/samples/{k}/attention", attention),
]


async def http_error(request: Request, e: HTTPException) -> Response:
    message = e.detail
    if e.status_code == 404 and message == "Not Found":  # the router's own words
        message = f"nothing at {request.url.path}"
    elif e.status_code == 405:
        # sorted: Starlette builds the header from a set
        allowed = ", ".join(sorted((e.headers or {}).get("Allow", "").split(", ")))
        message = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})"
    return JSONResponse({"error": message}, status_code=e.status_code, headers=e.headers)


async def user_error(request: Request, e: MusicGPTError) -> Response:
    return _error_response(e)


async def disconnected(request: Request, e: ClientDisconnect) -> Response:
    log.warning(
        "musicgpt serve: a client left during %s %s; nothing was done", request.method, request.url.path
    )
    return Response(status_code=400)  # nobody reads it


def create_app(
    model,
    tokenizer,
    *,
    pieces_dir: Path | None = None,
    about: str = "",
    host: str = "127.0.0.1",
    allow_hosts: Iterable[str] = (),
    checkpoint: str | None = None,
    finetune_dir: Path | None = None,
    finetune_args: list[str] | None = None,
) -> Starlette:
    """The app around a loaded music model. `pieces_dir`: MIDI files offered as prompts.

    `host`: the address served; requests must name it (or localhost, or one of `allow_hosts`) in
    their Host header (see serve/security.py). `checkpoint`: where the model came from; with it
    the app offers fine-tuning (serve/finetune.py, runs written under `finetune_dir`) and the copy
    report of the index the model carries.
    """
    from musicgpt.evaluate.copying import index_for
    from musicgpt.serve import finetune

    tokenizer = require_music(tokenizer, "serve")
    worker = Worker(model, tokenizer, index=index_for(checkpoint) if checkpoint else None)
    server = Server(
        worker=worker,
        tokenizer=tokenizer,
        pieces=load_pieces(pieces_dir, tokenizer),
        upload_dir=Path(tempfile.mkdtemp(prefix="musicgpt-serve-")),
        duet=DuetEngine(model, tokenizer),  # the live duet page (serve/duet.py)
        about=about,
    )
    if checkpoint is not None:
        server.tuner = finetune.FineTuner(worker, checkpoint, finetune_dir or Path("runs"), finetune_args)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            await run_in_threadpool(server.close)

    # each module's routes (a module adds its own line)
    routes = [
        *ROUTES,  # the page and the generation API (above)
        *duet_routes(server.duet, about=about),  # serve/duet_socket.py
        *infill_routes(model, tokenizer, server.pieces),  # the infill page (serve/infill.py)
    ]
    if server.tuner is not None:  # serve/finetune.py
        routes += finetune.routes(server.tuner, on_use=lambda name: setattr(server, "about", name))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SameOrigin, hosts=allowed_hosts(host, allow_hosts)),
            Middleware(LimitBody, max_bytes=MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES),
        ],
        exception_handlers={
            HTTPException: http_error,
            MusicGPTError: user_error,
            ClientDisconnect: disconnected,
        },
        lifespan=lifespan,
    )
    app.state.server = server
    # for tests
    app.state.worker, app.state.upload_dir, app.state.duet = worker, server.upload_dir, server.duet
    app.state.tuner = server.tuner
    return app
