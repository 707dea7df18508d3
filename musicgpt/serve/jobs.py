"""Generations in a queue: one model, one worker thread, one job at a time.

Every call into the model (a generation, or the attention of a sample) runs on the same single
thread: the model keeps its KV cache between calls, so two at once would corrupt each other, and
two on a CPU would only each run at half speed. A request beyond `max_waiting` queued jobs is
refused rather than queued for ever; only the newest `keep` jobs' results are kept in memory.
"""

from __future__ import annotations

import enum
import io
import itertools
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from musicgpt.serve.form import BadRequest, GenerationRequest
from musicgpt.tokenizers import vocab as V


class _Stopped(Exception):
    """Raised inside a generation when the server shuts down."""


@dataclass
class Sample:
    ids: np.ndarray  # the whole sequence: prompt, then the continuation
    prompt_tokens: int
    midi: bytes
    summary: dict  # the notes and times, as the page draws them
    attention_html: str | None = None  # made on first request


class JobState(enum.StrEnum):
    """queued -> running -> done | failed. A str, so the status JSON and the page read "done"."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINISHED = (JobState.DONE, JobState.FAILED)


@dataclass
class Job:
    """One generation. The worker thread writes `state`, `done_seconds`, `error`, `samples`,
    `started` and `finished` through `start`/`progress`/`finish`, and the request handlers read
    them through `view()`: both under the job's lock, so a handler never sees a job "done" without
    its samples (or half-way between two fields)."""

    id: str
    label: str  # the piece's name, or the upload's
    request: GenerationRequest
    prompt: np.ndarray
    state: JobState = JobState.QUEUED
    done_seconds: float = 0.0  # music every sample has reached so far
    error: str | None = None
    samples: list[Sample] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    status_body: bytes | None = None  # the status JSON once finished (a dense one is megabytes)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def view(self) -> JobView:
        """The fields the worker writes, read at one moment."""
        with self._lock:
            return JobView(self.state, self.done_seconds, self.error, list(self.samples), self.started,
                           self.finished)  # fmt: skip

    def start(self) -> None:
        with self._lock:
            self.state, self.started = JobState.RUNNING, time.monotonic()

    def progress(self, seconds: float) -> None:
        with self._lock:
            self.done_seconds = seconds

    def finish(self, samples: list[Sample] | None = None, error: str | None = None) -> None:
        """Done with its samples, or failed with an error."""
        with self._lock:
            if error is None:
                self.state, self.samples = JobState.DONE, samples or []
            else:
                self.state, self.error = JobState.FAILED, error
            self.finished = time.monotonic()


@dataclass(frozen=True)
class JobView:
    state: JobState
    done_seconds: float
    error: str | None
    samples: list[Sample]
    started: float | None
    finished: float | None


def summarize(tokenizer, ids: np.ndarray, prompt_tokens: int) -> dict:
    """A sample's notes for the page: columns of numbers, and which notes the prompt played."""
    notes = tokenizer.decode_notes(ids)
    return {
        "notes": {
            "pitch": notes.pitch.tolist(),
            "velocity": notes.velocity.tolist(),
            "start": np.round(notes.start, 3).tolist(),
            "end": np.round(notes.end, 3).tolist(),
        },
        "fromPrompt": (notes.on_token < prompt_tokens).astype(int).tolist(),
        "promptEnd": V.seconds_of(ids[:prompt_tokens]),  # where the continuation starts
        "end": float(np.round(notes.end.max(), 3)) if len(notes.pitch) else 0.0,
    }


class Worker:
    """Runs jobs (and attention pages) one at a time on a single thread, in the order submitted."""

    def __init__(self, model, tokenizer, *, max_waiting: int = 4, keep: int = 16, index=None):
        self.model, self.tokenizer = model, tokenizer
        self.index = index  # the model's corpus index (musicgpt.evaluate.copying), or None
        self.max_waiting, self.keep = max_waiting, keep
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="musicgpt-model")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # --- jobs ---------------------------------------------------------------------------------

    def check_room(self) -> None:
        """A 503 BadRequest when `max_waiting` jobs already wait (before a request costs anything)."""
        with self._lock:
            self._check_room()

    def _check_room(self) -> None:  # with self._lock held
        waiting = sum(j.view().state == JobState.QUEUED for j in self._jobs.values())
        if waiting >= self.max_waiting:
            raise BadRequest(
                f"{waiting} generations are already waiting; try again when one has finished", 503
            )

    def submit(self, prompt: np.ndarray, label: str, request: GenerationRequest) -> Job:
        with self._lock:
            self._check_room()
            # unguessable: a job's notes and MIDI are read by id, and ids in order would let any
            # client (or a page that reached the server) read every other user's jobs
            job = Job(id=secrets.token_urlsafe(16), label=label, request=request, prompt=prompt)
            self._jobs[job.id] = job
            self._forget_old()
        self._pool.submit(self._run, job)
        return job

    def job_ids(self) -> list[str]:
        """The ids of the jobs kept, oldest first."""
        with self._lock:
            return list(self._jobs)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """Jobs ahead of this one (the running one included); 0 once it runs."""
        if job.view().state != JobState.QUEUED:
            return 0
        with self._lock:
            ahead = itertools.takewhile(lambda j: j is not job, self._jobs.values())
            return sum(j.view().state not in FINISHED for j in ahead)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.view().state in FINISHED]
        for j in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[j.id]

    def _run(self, job: Job) -> None:
        job.start()
        try:
            job.finish(self._generate(job))
        except _Stopped:
            job.finish(error="the server is shutting down")
        except Exception as e:  # a bug or a model failure: the job reports it, the worker goes on
            job.finish(error=f"{type(e).__name__}: {e}")

    def _generate(self, job: Job) -> list[Sample]:
        from musicgpt.generation.piano import continue_piano
        from musicgpt.generation.sampling import SamplingConfig

        r = job.request

        def progress(seconds: float) -> None:
            if self._stopping.is_set():
                raise _Stopped
            job.progress(seconds)

        result = continue_piano(
            self.model,
            self.tokenizer,
            prompt_ids=job.prompt,
            seconds=r.seconds,
            num_samples=r.num_samples,
            sampling=SamplingConfig(
                temperature=r.temperature, top_p=r.top_p, prompt_cache=r.prompt_cache, grid=r.grid
            ),
            seed=r.seed,
            on_progress=progress,
        )
        samples = []
        for ids in result.sequences():
            midi = io.BytesIO()
            self.tokenizer.decode(ids).write(midi)
            n = len(result.prompt)
            summary = summarize(self.tokenizer, ids, n)
            summary["copy"] = self._copy_report(ids, n)
            samples.append(Sample(ids, n, midi.getvalue(), summary))
        return samples

    def _copy_report(self, ids: np.ndarray, prompt_tokens: int) -> dict | None:
        """The sample's longest stretch of the training corpus (None: the model carries no index)."""
        from musicgpt.evaluate.copying import sequence_report

        if self.index is None:
            return None
        report = sequence_report(self.index, self.tokenizer, ids, prompt_tokens)
        return {**report.to_dict(), "line": report.line()}

    def replace_model(self, model, tokenizer, index=None) -> None:
        """Generate with another model from the next job on: the swap waits on the model's thread
        for the jobs already queued, so no job changes model midway."""

        def swap() -> None:
            self.model, self.tokenizer, self.index = model, tokenizer, index

        self._pool.submit(swap).result()

    # --- attention ----------------------------------------------------------------------------

    def attention_page(self, job: Job, k: int) -> Future:
        """A Future of sample k's attention page (HTML), made on the model's thread once."""
        sample = job.samples[k]
        if sample.attention_html is not None:
            done: Future = Future()
            done.set_result(sample.attention_html)
            return done
        return self._pool.submit(self._attention, job, k)

    def _attention(self, job: Job, k: int) -> str:
        from musicgpt.viz.attention import AttentionData
        from musicgpt.viz.html import attention_page

        sample = job.samples[k]
        if sample.attention_html is None:
            ids, block = sample.ids, self.model.config.block_size
            times = self.tokenizer.token_times(ids)
            # The last block of tokens, where the continuation looks back at the prompt; the
            # excerpt starts just after a clock tick so that it runs to the very end.
            first = len(ids) - block
            start = None if first <= 0 else float(times[first]) + 0.5 / V.STEPS_PER_SECOND
            data = AttentionData.from_music(self.model, ids, self.tokenizer, start, None)
            t0, t1 = data.token_times[0], data.token_times[-1]
            prompt_end = sample.summary["promptEnd"]
            subtitle = (
                f"{data.n_tokens} tokens, {len(data.notes)} notes, {t0:.2f}-{t1:.2f} s; the prompt ends at "
                f"{prompt_end:.2f} s · {self.model.config.n_layer} layers x {self.model.config.n_head} heads"
            )
            title = f"{job.label}: sample {k + 1}, attention"
            sample.attention_html = attention_page(data, title=title, subtitle=subtitle)
        return sample.attention_html

    def close(self) -> None:
        """Stop the running generation at its next step, drop the queued ones, wait for the thread."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
