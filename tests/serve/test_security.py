"""The app answers only its own pages (issue 24): Host checked, cross-site requests that change
state refused (HTTP and WebSocket), job ids unguessable, bad inputs one line each."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time

import pytest
from conftest import PIANO_DIR
from hostile_midi import write_hostile_files
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from musicgpt.checkpoints import load_checkpoint
from musicgpt.cli import main
from musicgpt.serve.app import create_app
from musicgpt.serve.security import SameOrigin, allowed_hosts, host_name
from musicgpt.tokenizers.performance import PerformanceTokenizer

TOK = PerformanceTokenizer()
ORIGIN = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)[0]


@pytest.fixture(scope="module")
def client(model):
    app = create_app(model, TOK, pieces_dir=PIANO_DIR)
    with TestClient(app, base_url=ORIGIN) as c:
        yield c


def test_host_names():
    assert host_name("127.0.0.1:8000") == "127.0.0.1"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("LocalHost") == "localhost"
    assert host_name("x:notaport") is None
    assert allowed_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("192.168.1.5", ["music.lan"]) == {
        "localhost",
        "127.0.0.1",
        "::1",
        "192.168.1.5",
        "music.lan",
    }


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "127.0.0.1.evil.example", ""])
def test_a_foreign_host_is_refused_on_every_request(client, host):
    expected = {
        "error": f"this server answers only to 127.0.0.1, ::1, localhost; the request was for {host!r}"
    }
    for method, path in (("GET", "/"), ("GET", "/api/info"), ("POST", "/api/jobs")):
        r = client.request(method, path, headers={"host": host})
        assert (r.status_code, r.json()) == (403, expected)


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"])
def test_our_own_names_are_served(client, host):
    assert client.get("/api/info", headers={"host": host}).status_code == 200


def test_state_changes_from_another_origin_are_refused(client):
    form = {"piece": "fur-elise.mid", "seconds": "1", "num_samples": "1", "prompt_seconds": "2"}
    for origin in ("http://attacker.example", "null", "http://127.0.0.1:9999", "file://"):
        r = client.post("/api/jobs", data=form, headers={"origin": origin})
        assert r.status_code == 403
        assert r.json() == {"error": f"a request from another site ({origin}) may not change anything here"}
    r = client.post("/api/jobs", data=form, headers={"sec-fetch-site": "cross-site"})
    assert (r.status_code, r.json()) == (
        403,
        {"error": "a request from another site may not change anything here"},
    )
    # the page's own requests, and clients that are no browser (no Origin), go through
    first = client.post("/api/jobs", data=form, headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"})
    second = client.post("/api/jobs", data=form)
    assert first.status_code == second.status_code == 202
    # a cross-origin GET is harmless (the browser keeps the answer from the other page)
    assert client.get("/api/info", headers={"origin": "http://attacker.example"}).status_code == 200


def test_job_ids_are_unguessable(client):
    form = {"piece": "fur-elise.mid", "seconds": "1", "num_samples": "1", "prompt_seconds": "2"}
    ids = [client.post("/api/jobs", data=form).json()["id"] for _ in range(2)]
    assert ids[0] != ids[1] and all(len(i) >= 20 for i in ids)
    assert client.get("/api/jobs/1").status_code == 404


def test_a_sample_index_of_5000_digits_is_a_404(client):
    form = {"piece": "fur-elise.mid", "seconds": "1", "num_samples": "1", "prompt_seconds": "2"}
    job = client.post("/api/jobs", data=form).json()["id"]
    for k in ("9" * 5000, "0", "-1", "1e3"):
        r = client.get(f"/api/jobs/{job}/samples/{k}.mid")
        assert r.status_code == 404 and r.json()["error"] == f"job {job} has no sample {k[:20]}"


def _socket_app():
    async def echo(ws: WebSocket):
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.close()

    return Starlette(
        routes=[WebSocketRoute("/ws", echo)],
        middleware=[Middleware(SameOrigin, hosts=allowed_hosts("127.0.0.1"))],
    )


def test_websockets_from_our_page_pass_and_from_other_sites_are_refused():
    client = TestClient(_socket_app(), base_url=ORIGIN)
    with client.websocket_connect("ws://127.0.0.1:8000/ws", headers={"origin": ORIGIN}) as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
    with client.websocket_connect("ws://127.0.0.1:8000/ws") as ws:  # no Origin: no browser
        ws.send_text("hi")
        assert ws.receive_text() == "hi"
    for headers in ({"origin": "http://attacker.example"}, {"host": "attacker.example:8000"}):
        with (
            pytest.raises(WebSocketDisconnect) as e,
            client.websocket_connect("ws://127.0.0.1:8000/ws", headers=headers),
        ):
            pass
        assert e.value.code == 1008


def test_an_empty_host_is_refused(capsys):
    assert main(["serve", "--host", "", "--port", "0"]) == 2
    assert capsys.readouterr().err == (
        "musicgpt serve: error: argument --host: an empty address would listen on every interface: give "
        "0.0.0.0 to mean that, or 127.0.0.1 (the default) for this machine only (see musicgpt serve --help)\n"
    )


def test_a_client_that_leaves_mid_upload_is_one_log_line(model, caplog):
    app = create_app(model, TOK, pieces_dir=None)
    messages = iter([
        {"type": "http.request", "body": b"--x\r\nContent-Disposition: form-data; name=\"midi\"; filename=\"a.mid\"\r\n\r\nMThd", "more_body": True},
        {"type": "http.disconnect"},
    ])  # fmt: skip
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/api/jobs", "raw_path": b"/api/jobs", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"multipart/form-data; boundary=x")],
        "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "root_path": "",
        "http_version": "1.1", "asgi": {"version": "3.0"},
    }  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="musicgpt.serve"):
        asyncio.run(app(scope, receive, send))
    assert [r.getMessage() for r in caplog.records] == [
        "musicgpt serve: a client left during POST /api/jobs; nothing was done"
    ]
    assert all(r.exc_info is None for r in caplog.records)
    shutil.rmtree(app.state.upload_dir)
    app.state.worker.close()


def test_the_pieces_folder_leaves_out_bad_files_with_a_warning(model, tmp_path, caplog):
    folder = tmp_path / "pieces"
    folder.mkdir()
    shutil.copy(PIANO_DIR / "fur-elise.mid", folder / "fur-elise.mid")
    os.mkfifo(folder / "pipe.mid")  # opening it would hang the start for ever
    hostile = write_hostile_files(tmp_path / "hostile")
    for name in ("huge-deltas.mid", "ten-years.mid", "tpb-0.mid"):
        shutil.copy(hostile[name], folder / name)
    with caplog.at_level(logging.WARNING, logger="musicgpt.serve"):
        app = create_app(model, TOK, pieces_dir=folder)
    with TestClient(app, base_url=ORIGIN) as c:
        assert [p["name"] for p in c.get("/api/info").json()["pieces"]] == ["fur-elise.mid"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4
    assert f"musicgpt serve: left out {folder / 'pipe.mid'}: not a regular file: not opened" in warnings
    assert (
        f"musicgpt serve: left out {folder / 'tpb-0.mid'}: its header gives 0 ticks per beat: no event can have a time"
        in warnings
    )


def test_a_finished_jobs_status_is_built_once(client):
    form = {"piece": "fur-elise.mid", "seconds": "1", "num_samples": "2", "prompt_seconds": "2"}
    job_id = client.post("/api/jobs", data=form).json()["id"]
    deadline = time.monotonic() + 60
    while (first := client.get(f"/api/jobs/{job_id}")).json()["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = client.app.state.worker.get(job_id)
    assert first.json()["state"] == "done" and job.status_body == first.content
    job.samples[0].summary["notes"]["pitch"][0] = -1  # were it rebuilt, the answer would show this
    again = client.get(f"/api/jobs/{job_id}")
    assert again.content == first.content and again.headers["content-type"] == "application/json"


def test_uploads_are_encoded_one_at_a_time_and_refused_quickly_when_full(model):
    import threading

    import httpx

    class Counting(PerformanceTokenizer):
        """Records how many encodes run at once."""

        def encode(self, source):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.2)
            try:
                return super().encode(source)
            finally:
                with lock:
                    running[0] -= 1

    lock, running, most = threading.Lock(), [0], [0]
    app = create_app(model, Counting(), pieces_dir=None)
    data = (PIANO_DIR / "fur-elise.mid").read_bytes()
    form = {"prompt_seconds": "2", "seconds": "30", "num_samples": "1"}

    async def upload_many(n):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            requests = [
                client.post("/api/jobs", data=form, files={"midi": ("a.mid", data)}) for _ in range(n)
            ]
            return await asyncio.gather(*requests)

    try:
        answers = asyncio.run(upload_many(10))
    finally:
        app.state.worker.close()
        shutil.rmtree(app.state.upload_dir)
    codes = sorted(r.status_code for r in answers)
    assert most[0] == 1
    assert set(codes) == {202, 503} and codes.count(202) <= 5  # 4 waiting + 1 running at most
    assert all(set(r.json()) == ({"id"} if r.status_code == 202 else {"error"}) for r in answers)
