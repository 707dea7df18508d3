"""Fine-tuning from the app: upload a handful of MIDI files (or a zip), watch the loss, use the model.

    POST /api/finetune        multipart: files (MIDI files or zips of them), minutes -> 202; 409 while one runs
    GET  /api/finetune        state, the validation losses so far, time used and left, the model when done
    POST /api/finetune/stop   end training now; the best model so far is kept
    POST /api/finetune/use    switch the app's generations to the fine-tuned model
    GET  /assets/finetune.js  the page's fine-tuning panel

One fine-tune at a time, run as a `musicgpt finetune` process: the app's own worker thread keeps
generating meanwhile (both share the CPU), a crash in training cannot take the server down, and
stopping it is Ctrl-C's SIGINT (the best model so far stays). Its progress is the run's
progress.json, which `musicgpt finetune` rewrites at every validation.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from musicgpt.serve.form import MAX_UPLOAD_BYTES, BadRequest

MAX_FILES = 300
MINUTES = (0.5, 60.0, 10.0)  # min, max, default
MIDI_SUFFIXES = (".mid", ".midi")


def _safe_name(name: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:60].strip("._") or "piece"
    candidate, k = f"{stem}.mid", 1
    while candidate in taken:
        k += 1
        candidate = f"{stem}-{k}.mid"
    taken.add(candidate)
    return candidate


def midi_files(uploads: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The MIDI files among the uploads, zips opened (their MIDI members only), names made safe."""
    out, taken = [], set()
    for name, data in uploads:
        if name.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    members = [
                        m
                        for m in z.infolist()
                        if not m.is_dir() and m.filename.lower().endswith(MIDI_SUFFIXES)
                    ]
                    if sum(m.file_size for m in members) > 4 * MAX_UPLOAD_BYTES:
                        raise BadRequest(
                            f"{name}: its MIDI files unpack to more than {4 * MAX_UPLOAD_BYTES // 2**20} MB",
                            413,
                        )
                    out += [(_safe_name(m.filename, taken), z.read(m)) for m in members]
            except zipfile.BadZipFile:
                raise BadRequest(f"{name} is not a zip file we can read") from None
        elif name.lower().endswith(MIDI_SUFFIXES):
            out.append((_safe_name(name, taken), data))
        else:
            raise BadRequest(f"{name}: send .mid or .midi files, or a .zip of them")
        if len(out) > MAX_FILES:
            raise BadRequest(
                f"more than {MAX_FILES} MIDI files: fine-tune on a folder with `musicgpt finetune`"
            )
    if not out:
        raise BadRequest("no MIDI files in the upload")
    return out


@dataclass
class Run:
    directory: Path
    minutes: float
    files: int
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    stopping: bool = False
    used: bool = False


class FineTuner:
    """At most one `musicgpt finetune` process; its status; the switch to its model."""

    def __init__(self, worker, base_checkpoint: str, runs_dir: Path, extra_args: list[str] | None = None):
        self.worker, self.base = worker, str(base_checkpoint)
        self.runs_dir, self.extra_args = Path(runs_dir), list(extra_args or [])
        self.run: Run | None = None
        self.model_name: str | None = None  # set once the app uses a fine-tuned model
        self._lock = threading.Lock()

    def running(self) -> bool:
        return self.run is not None and self.run.process.poll() is None

    def start(self, files: list[tuple[str, bytes]], minutes: float) -> Run:
        with self._lock:
            if self.running():
                raise BadRequest("a fine-tune is already running: stop it or wait for it to end", 409)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            directory = self.runs_dir / f"finetune-{stamp}"
            k = 1
            while directory.exists():
                k += 1
                directory = self.runs_dir / f"finetune-{stamp}-{k}"
            folder = directory / "folder"
            folder.mkdir(parents=True)
            for name, data in files:
                (folder / name).write_bytes(data)
            log = open(directory / "log.txt", "wb")  # noqa: SIM115 (the process owns it until it ends)
            command = [sys.executable, "-m", "musicgpt.cli", "finetune", str(folder), "--out", str(directory),
                       "--checkpoint", self.base, "--minutes", f"{minutes:g}", *self.extra_args]  # fmt: skip
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            log.close()
            self.run = Run(directory, minutes, len(files), process)
            return self.run

    def stop(self) -> None:
        if not self.running():
            raise BadRequest("no fine-tune is running", 409)
        self.run.stopping = True
        self.run.process.send_signal(signal.SIGINT)  # as Ctrl-C: the best model so far is kept

    def status(self) -> dict:
        run = self.run
        if run is None:
            return {"state": "idle", "model": self.model_name}
        code = run.process.poll()
        progress = _read_json(run.directory / "progress.json") or {}
        model_dir = run.directory / "model"
        has_model = (model_dir / "model.safetensors").exists() and (model_dir / "corpus_index.npz").exists()
        if code is None:
            state = "stopping" if run.stopping else progress.get("state", "building")
        elif code in (0, 130) and has_model:
            state = "done"
        else:
            state = "failed"
        history = progress.get("history", [])
        elapsed = time.monotonic() - run.started
        return {
            "state": state,
            "folder": str(run.directory / "folder"),
            "files": run.files,
            "minutes": run.minutes,
            "elapsed": round(elapsed, 1),
            "left": round(max(0.0, run.minutes * 60 - progress.get("elapsed_s", 0.0)), 1)
            if progress.get("state") == "training"
            else None,
            "step": progress.get("step", 0),
            "trainLoss": progress.get("train_loss"),
            "history": history,
            "best": min(history, key=lambda h: h["val_loss"]) if history else None,
            "stopped": progress.get("stopped"),
            "modelDir": str(model_dir) if state == "done" else None,
            "used": run.used,
            "model": self.model_name,
            "error": _last_error(run.directory / "log.txt") if state == "failed" else None,
        }

    def use(self) -> str:
        """Load the finished run's model and hand it to the worker (between two generations)."""
        from musicgpt.checkpoints import load_checkpoint
        from musicgpt.evaluate.copying import index_for

        status = self.status()
        if status["state"] != "done":
            raise BadRequest("no finished fine-tune to use", 409)
        model_dir = Path(status["modelDir"])
        model, tokenizer = load_checkpoint(model_dir)
        device = next(self.worker.model.parameters()).device
        self.worker.replace_model(model.to(device), tokenizer, index_for(model_dir))
        self.run.used = True
        self.model_name = f"fine-tuned on {self.run.files} file(s): {model_dir}"
        return self.model_name

    def close(self) -> None:
        """At shutdown: stop a running fine-tune (its best model stays on disk)."""
        if self.running():
            self.run.process.send_signal(signal.SIGINT)
            try:
                self.run.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.run.process.kill()
                self.run.process.wait()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _last_error(log: Path) -> str:
    try:
        lines = [
            line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
        ]
    except OSError:
        return "the fine-tune ended without a model"
    errors = [line for line in lines if line.startswith("musicgpt: error:")]
    return (errors or lines or ["the fine-tune ended without a model"])[-1].removeprefix("musicgpt: error: ")


def routes(tuner: FineTuner, on_use=None) -> list[Route]:
    """The fine-tuning routes; `on_use(name)` is told the new model's name when the app switches."""

    async def start(request: Request) -> Response:
        async with request.form(max_files=MAX_FILES, max_fields=8, max_part_size=4096) as form:
            minutes = _minutes(form.get("minutes"))
            uploads = []
            for upload in form.getlist("files"):
                if isinstance(upload, UploadFile) and upload.filename:
                    uploads.append((Path(upload.filename).name[:120], await upload.read()))
        run = tuner.start(midi_files(uploads), minutes)
        return JSONResponse({"folder": str(run.directory), "files": run.files}, status_code=202)

    async def status(request: Request) -> Response:
        return JSONResponse(tuner.status())

    async def stop(request: Request) -> Response:
        tuner.stop()
        return JSONResponse(tuner.status())

    async def use(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        name = await run_in_threadpool(tuner.use)
        if on_use is not None:
            on_use(name)
        return JSONResponse({"model": name})

    return [
        Route("/api/finetune", start, methods=["POST"]),
        Route("/api/finetune", status, methods=["GET"]),
        Route("/api/finetune/stop", stop, methods=["POST"]),
        Route("/api/finetune/use", use, methods=["POST"]),
    ]


def _minutes(value) -> float:
    low, high, default = MINUTES
    if value in (None, ""):
        return default
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"minutes: {str(value)[:20]!r} is not a number") from None
    if not low <= minutes <= high:
        raise BadRequest(f"minutes: must be between {low:g} and {high:g}, got {minutes:g}")
    return minutes
