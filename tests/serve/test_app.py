"""The app's HTTP API through Starlette's TestClient, on real pieces and a tiny random model."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pretty_midi
import pytest
from conftest import PIANO_DIR
from starlette.testclient import TestClient

from musicgpt.checkpoints import load_checkpoint
from musicgpt.generation.piano import cut_at_seconds
from musicgpt.serve.app import create_app
from musicgpt.serve.form import MAX_UPLOAD_BYTES
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer
from musicgpt.tokenizers.text import ByteTokenizer

TOK = PerformanceTokenizer()
PIECE = "fur-elise.mid"


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    model, tokenizer = load_checkpoint(tiny_checkpoint)
    assert tokenizer.name == "performance"
    return model


@pytest.fixture
def app(model):
    return create_app(model, TOK, pieces_dir=PIANO_DIR, about="tiny")


@pytest.fixture
def client(app):
    with TestClient(
        app, base_url="http://127.0.0.1:8000"
    ) as c:  # runs the lifespan: the worker and the upload folder close at the end
        yield c


def wait_done(client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in ("done", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def midi_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    out = io.BytesIO()
    pm.write(out)
    return out.getvalue()


def note_set(pitch, velocity, start, end) -> list[tuple]:
    return sorted(zip(np.asarray(pitch).tolist(), np.asarray(velocity).tolist(),
                      np.round(start, 3).tolist(), np.round(end, 3).tolist(), strict=True))  # fmt: skip


def test_page_assets_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert 'id="generate-form"' in page.text and '<script src="/assets/player.js">' in page.text
    for name, kind in [
        ("app.js", "text/javascript"),
        ("player.js", "text/javascript"),
        ("app.css", "text/css"),
    ]:
        r = client.get(f"/assets/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert "://" not in r.text and "cdn" not in r.text.lower()  # nothing fetched from elsewhere
    assert "AudioContext" in client.get("/assets/player.js").text
    info = client.get("/api/info").json()
    names = [p["name"] for p in info["pieces"]]
    expected = sorted(p.name for p in PIANO_DIR.glob("*.mid") if p.name != "empty.mid")  # no notes: left out
    assert names == expected
    fur = next(p for p in info["pieces"] if p["name"] == PIECE)
    assert fur["seconds"] == round(V.seconds_of(TOK.encode(PIANO_DIR / PIECE)), 1)
    assert info["maxUploadBytes"] == MAX_UPLOAD_BYTES == 5 * 2**20
    assert info["fields"]["seconds"]["max"] == 60 and info["contextTokens"] == 256


def test_a_bundled_piece_is_continued(client):
    r = client.post("/api/jobs", data={"piece": PIECE, "prompt_seconds": "4", "seconds": "3", "num_samples": "2",
                                       "seed": "7", "temperature": "0.9", "top_p": "0.9"})  # fmt: skip
    assert r.status_code == 202
    status = wait_done(client, r.json()["id"])
    assert status["state"] == "done" and status["error"] is None and status["label"] == PIECE
    assert status["doneSeconds"] == 3.0 and len(status["samples"]) == 2
    prompt = cut_at_seconds(TOK.encode(PIANO_DIR / PIECE), 4.0)
    prompt_notes = TOK.decode_notes(prompt)
    for k, sample in enumerate(status["samples"], 1):
        assert sample["midi"] == f"/api/jobs/{status['id']}/samples/{k}.mid"
        assert sample["promptEnd"] == V.seconds_of(prompt) == 3.95  # the last shift that ends by 4 s
        # the prompt's notes are the piece's own (their ends may fall in the continuation)
        flags = np.array(sample["fromPrompt"], bool)
        notes = sample["notes"]
        assert np.array(notes["pitch"])[flags].tolist() == prompt_notes.pitch.tolist()
        assert np.array(notes["start"])[flags].tolist() == np.round(prompt_notes.start, 3).tolist()
        assert (~flags).sum() > 0  # and new notes follow
        assert min(np.array(notes["start"])[~flags]) >= sample["promptEnd"]

        download = client.get(sample["midi"])
        assert download.status_code == 200 and download.headers["content-type"] == "audio/midi"
        assert download.headers["content-disposition"] == f'attachment; filename="fur-elise-sample{k}.mid"'
        ids = TOK.encode(pretty_midi.PrettyMIDI(io.BytesIO(download.content)))
        decoded = TOK.decode_notes(ids)  # the file holds exactly the notes drawn (chords in its own order)
        assert note_set(decoded.pitch, decoded.velocity, decoded.start, decoded.end) == note_set(
            notes["pitch"], notes["velocity"], notes["start"], notes["end"]
        )
        # 3 s of new music at most
        assert V.shift_steps(ids).sum() <= round(100 * (sample["promptEnd"] + 3.0))


def test_the_same_seed_gives_the_same_samples(client):
    form = {"piece": "bethena.mid", "prompt_seconds": "3", "seconds": "2", "num_samples": "1", "seed": "1"}
    a, b = (wait_done(client, client.post("/api/jobs", data=form).json()["id"]) for _ in range(2))
    assert a["samples"][0]["notes"] == b["samples"][0]["notes"]
    assert client.get(a["samples"][0]["midi"]).content == client.get(b["samples"][0]["midi"]).content


def test_an_upload_is_read_and_removed(client, app):
    data = (PIANO_DIR / "Maestro_2.mid").read_bytes()
    r = client.post("/api/jobs", data={"prompt_seconds": "2", "seconds": "1", "num_samples": "1"},
                    files={"midi": ("my piece.mid", data, "audio/midi")})  # fmt: skip
    assert r.status_code == 202
    status = wait_done(client, r.json()["id"])
    assert status["state"] == "done" and status["label"] == "my piece.mid"
    prompt = cut_at_seconds(TOK.encode(PIANO_DIR / "Maestro_2.mid"), 2.0)
    assert sum(status["samples"][0]["fromPrompt"]) == len(TOK.decode_notes(prompt).pitch)
    assert list(app.state.upload_dir.iterdir()) == []  # read once, deleted
    page = client.get(status["samples"][0]["attention"])
    assert page.status_code == 200 and "AudioContext" in page.text
    assert "my piece.mid: sample 1, attention" in page.text
    assert (
        client.get(status["samples"][0]["midi"])
        .headers["content-disposition"]
        .endswith('filename="my_piece-sample1.mid"')
    )


def test_upload_folder_goes_at_shutdown(model):
    app = create_app(model, TOK, pieces_dir=None)
    with TestClient(app, base_url="http://localhost") as c:
        assert app.state.upload_dir.is_dir()
        assert c.get("/api/info").json()["pieces"] == []  # no folder: uploads only
    assert not app.state.upload_dir.exists()


def late_start_midi() -> bytes:
    """A real piece shifted 3 s later: its first 2 s are silence."""
    pm = pretty_midi.PrettyMIDI(str(PIANO_DIR / "fur-elise.mid"))
    for inst in pm.instruments:
        for note in inst.notes:
            note.start += 3.0
            note.end += 3.0
    return midi_bytes(pm)


@pytest.mark.parametrize(
    ("form", "files", "status", "message"),
    [
        ({"piece": PIECE, "temperature": "3"}, None, 400, "temperature must be between 0 and 2, got 3"),
        ({"piece": PIECE, "seconds": "x"}, None, 400, "continuation seconds must be a number, got 'x'"),
        ({}, None, 400, "choose a piece, or upload a MIDI file"),
        ({"piece": "../../etc/passwd"}, None, 400, "no bundled piece is called '../../etc/passwd'"),
        ({"piece": "empty.mid"}, None, 400, "no bundled piece is called 'empty.mid'"),
        ({}, {"midi": ("noise.mid", bytes(range(256)) * 4)}, 400,
         "noise.mid is not a MIDI file we can read: not a MIDI file (no MThd header)"),
        ({}, {"midi": ("empty.mid", (PIANO_DIR / "empty.mid").read_bytes())}, 400, "empty.mid has no notes to continue"),
        ({"prompt_seconds": "2"}, {"midi": ("late.mid", late_start_midi())}, 400,
         "the first 2 s of late.mid hold no notes: choose a longer prompt (or 0 s to start from nothing)"),
        ({}, {"midi": ("big.mid", b"MThd" + bytes(MAX_UPLOAD_BYTES))}, 413,
         "big.mid is larger than the 5 MB upload limit"),
        ({}, {"midi": ("huge.mid", bytes(MAX_UPLOAD_BYTES + 2**17))}, 413,
         "the request is larger than the 5 MB upload limit"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_message_and_the_server_goes_on(client, app, form, files, status, message):
    r = client.post("/api/jobs", data=form, files=files)
    assert (r.status_code, r.json()) == (status, {"error": message})
    assert list(app.state.upload_dir.iterdir()) == []
    ok = client.post(
        "/api/jobs", data={"piece": PIECE, "seconds": "1", "num_samples": "1", "prompt_seconds": "1"}
    )
    assert ok.status_code == 202 and wait_done(client, ok.json()["id"])["state"] == "done"


def test_a_body_without_length_is_cut_at_the_limit(client):
    def chunks():  # chunked transfer: no Content-Length to refuse it by
        for _ in range(7):
            yield bytes(2**20)

    r = client.post(
        "/api/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert (r.status_code, r.json()) == (413, {"error": "the request is larger than the 5 MB upload limit"})


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/nope", 404, "nothing at /nope"),
        ("GET", "/assets/app.py", 404, "no asset 'app.py'"),
        ("GET", "/assets/../serve/app.py", 404, "nothing at /serve/app.py"),
        ("GET", "/api/jobs/12345", 404, "no such job (the server keeps only the latest ones)"),
        ("GET", "/api/jobs/12345/samples/1.mid", 404, "no such job (the server keeps only the latest ones)"),
        ("GET", "/api/jobs", 405, "GET is not allowed on /api/jobs (allowed: POST)"),
        ("DELETE", "/api/jobs", 405, "DELETE is not allowed on /api/jobs (allowed: POST)"),
        ("POST", "/", 405, "POST is not allowed on / (allowed: GET, HEAD)"),
        ("PUT", "/api/info", 405, "PUT is not allowed on /api/info (allowed: GET, HEAD)"),
    ],
)
def test_unknown_paths_and_methods_get_4xx(client, method, path, status, message):
    r = client.request(method, path)
    assert (r.status_code, r.json()) == (status, {"error": message})


def test_a_sample_that_does_not_exist(client):
    job = wait_done(
        client,
        client.post("/api/jobs", data={"piece": PIECE, "seconds": "1", "num_samples": "1"}).json()["id"],
    )
    assert client.get(f"/api/jobs/{job['id']}/samples/2.mid").json() == {
        "error": f"job {job['id']} has no sample 2"
    }
    assert client.get(f"/api/jobs/{job['id']}/samples/0/attention").status_code == 404


def test_jobs_queue_and_run_one_at_a_time(client, app):
    worker = app.state.worker
    gate = threading.Event()
    worker._pool.submit(gate.wait)  # hold the model's thread: every job stays queued
    form = {"piece": PIECE, "seconds": "1", "num_samples": "1", "prompt_seconds": "2"}
    ids = [client.post("/api/jobs", data=form).json()["id"] for _ in range(worker.max_waiting)]
    assert [client.get(f"/api/jobs/{i}").json()["position"] for i in ids] == [0, 1, 2, 3]
    full = client.post("/api/jobs", data=form)
    assert (full.status_code, full.json()) == (
        503,
        {"error": "4 generations are already waiting; try again when one has finished"},
    )
    gate.set()
    for i in ids:
        assert wait_done(client, i)["state"] == "done"
    jobs = [worker.get(i) for i in ids]
    for before, after in zip(jobs, jobs[1:], strict=False):  # in order, never two at once
        assert before.finished <= after.started


def test_a_job_is_read_at_one_moment():
    """The worker thread moves a job through its states; a handler's view has the state and the
    fields that go with it together (a "done" job with its samples, a "failed" one with its error)."""
    from musicgpt.serve.form import parse_request
    from musicgpt.serve.jobs import Job, JobState

    job = Job(id="j", label="x.mid", request=parse_request({}), prompt=np.zeros(0, dtype=np.int64))
    assert job.view().state is JobState.QUEUED and job.view().started is None
    job.start()
    job.progress(1.5)
    view = job.view()
    assert (view.state, view.done_seconds, view.samples) == (JobState.RUNNING, 1.5, [])
    assert view.started is not None and view.finished is None
    job.finish(["sample"])
    view = job.view()
    assert (view.state, view.samples, view.error) == (JobState.DONE, ["sample"], None)
    assert view.finished >= view.started
    assert JobState.DONE == "done"  # the JSON the page reads

    failed = Job(id="k", label="y.mid", request=parse_request({}), prompt=np.zeros(0, dtype=np.int64))
    failed.start()
    failed.finish(error="the server is shutting down")
    assert (failed.view().state, failed.view().error) == (JobState.FAILED, "the server is shutting down")


def test_a_text_model_is_refused(model):
    from musicgpt.errors import MusicGPTError

    with pytest.raises(MusicGPTError, match="serve needs a music model"):
        create_app(model, ByteTokenizer())


def test_the_app_and_musicgpt_generate_write_the_same_file(client, tiny_checkpoint, tmp_path):
    from musicgpt.cli import main

    form = {"piece": PIECE, "prompt_seconds": "3", "seconds": "2", "num_samples": "1", "seed": "5",
            "temperature": "0.8", "top_p": "0.9"}  # fmt: skip
    job = wait_done(client, client.post("/api/jobs", data=form).json()["id"])
    out = tmp_path / "cli.mid"
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--prompt", str(PIANO_DIR / PIECE),
                 "--prompt-seconds", "3", "--seconds", "2", "--seed", "5", "--temperature", "0.8",
                 "--top-p", "0.9", "--out", str(out)]) == 0  # fmt: skip
    assert client.get(job["samples"][0]["midi"]).content == out.read_bytes()
