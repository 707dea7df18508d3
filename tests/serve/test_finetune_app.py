"""The app's fine-tuning routes (serve/finetune.py) on a tiny model: upload, watch, use, generate on."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from conftest import CORRUPTED_FILES, PIANO_DIR
from starlette.testclient import TestClient

from musicgpt.checkpoints import load_checkpoint
from musicgpt.serve.app import create_app
from musicgpt.serve.finetune import midi_files

QUICK = ["--max-steps", "2", "--steps-per-check", "1", "--batch-size", "2", "--precision", "32-true"]
RAGS = ["maple-leaf-rag.mid", "peacherine-rag.mid", "pineapple-rag.mid"]


def upload(names):
    return [("files", (n, (PIANO_DIR / n).read_bytes(), "audio/midi")) for n in names]


@pytest.fixture()
def client(tiny_checkpoint, tmp_path):
    model, tokenizer = load_checkpoint(tiny_checkpoint)
    app = create_app(model, tokenizer, about="tiny", checkpoint=str(tiny_checkpoint),
                     finetune_dir=tmp_path / "runs", finetune_args=QUICK)  # fmt: skip
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        yield c


def wait_done(client, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = client.get("/api/finetune").json()
        if st["state"] in ("done", "failed"):
            return st
        time.sleep(0.3)
    raise AssertionError(f"the fine-tune did not end in {timeout} s: {st}")


def test_midi_files_opens_zips_and_refuses_others():
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("rags/a.mid", b"MThd1")
        f.writestr("rags/notes.txt", b"skip me")
        f.writestr("../evil name.midi", b"MThd2")
    files = midi_files([("mine.zip", z.getvalue()), ("a.mid", b"MThd3")])
    assert files == [("a.mid", b"MThd1"), ("evil_name.mid", b"MThd2"), ("a-2.mid", b"MThd3")]
    with pytest.raises(Exception, match="send .mid or .midi files"):
        midi_files([("notes.txt", b"x")])
    with pytest.raises(Exception, match="not a zip file"):
        midi_files([("bad.zip", b"not a zip")])
    with pytest.raises(Exception, match="no MIDI files"):
        midi_files([])


def test_finetune_watch_use_and_generate(client):
    assert client.get("/api/info").json()["finetune"] is True
    assert client.get("/api/finetune").json() == {"state": "idle", "model": None}
    assert client.post("/api/finetune/use").status_code == 409
    r = client.post("/api/finetune", files=upload(RAGS) + [("files", ("broken.mid", CORRUPTED_FILES[0].read_bytes()))],
                    data={"minutes": "3"})  # fmt: skip
    assert r.status_code == 202, r.text
    assert r.json()["files"] == 4
    busy = client.post("/api/finetune", files=upload(RAGS[:1]))
    assert busy.status_code == 409 and "already running" in busy.json()["error"]
    st = wait_done(client)
    assert st["state"] == "done", st
    assert [h["step"] for h in st["history"]] == [0, 1, 2] and st["best"]["val_loss"] <= st["history"][0][
        "val_loss"
    ]
    r = client.post("/api/finetune/use")
    assert r.status_code == 200 and "fine-tuned on 4 file(s)" in r.json()["model"]
    assert client.get("/api/info").json()["model"] == r.json()["model"]
    assert client.get("/api/finetune").json()["used"] is True
    # generation goes on, with the new model and its corpus index (the folder's training pieces)
    job = client.post("/api/jobs", data={"piece": "", "prompt_seconds": "4", "seconds": "2", "num_samples": "1", "seed": "1"},
                      files={"midi": ("p.mid", (PIANO_DIR / RAGS[0]).read_bytes(), "audio/midi")}).json()  # fmt: skip
    deadline = time.monotonic() + 120
    while (s := client.get(f"/api/jobs/{job['id']}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert s["state"] == "done", s
    copy = s["samples"][0]["copy"]
    assert set(copy) == {"seconds", "notes", "piece", "start", "flagged", "line"}


def test_bad_uploads_are_400(client):
    r = client.post("/api/finetune", files=[("files", ("x.txt", b"hello"))])
    assert r.status_code == 400 and "send .mid or .midi" in r.json()["error"]
    r = client.post("/api/finetune", files=upload(RAGS[:1]), data={"minutes": "900"})
    assert r.status_code == 400 and "minutes: must be between" in r.json()["error"]
    assert client.post("/api/finetune/stop").status_code == 409
    # every file broken: the run fails with the builder's one-line reason
    r = client.post("/api/finetune", files=[("files", ("broken.mid", CORRUPTED_FILES[0].read_bytes()))])
    assert r.status_code == 202
    st = wait_done(client)
    assert st["state"] == "failed" and "could be tokenized" in st["error"]
