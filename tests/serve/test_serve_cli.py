"""`musicgpt serve` as a user starts it: a real process on a real port, always stopped at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from musicgpt.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(url)
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                pytest.fail(f"musicgpt serve exited with {proc.returncode}: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"musicgpt serve did not answer {url} within {timeout:g} s")
            time.sleep(0.2)


@pytest.fixture
def serve(tiny_checkpoint):
    """Start `musicgpt serve --checkpoint DIR --port N`; yields (process, base url); killed at the end."""
    procs = []

    def start(*extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "musicgpt.cli", "serve", "--checkpoint", str(tiny_checkpoint), *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        )
        return procs[-1]

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def test_serve_answers_on_the_port_it_was_given(serve):
    port = free_port()
    proc = serve("--port", str(port))
    status, page = wait_until_up(f"http://127.0.0.1:{port}/", proc)
    assert (
        status == 200 and 'id="generate-form"' in page and "<title>musicgpt: continue a piece</title>" in page
    )
    assert proc.stdout.readline().startswith(f"musicgpt serve: http://127.0.0.1:{port}/  (")
    info = json.loads(get(f"http://127.0.0.1:{port}/api/info")[1])
    assert len(info["pieces"]) == 24 and info["model"].endswith("2 layers, 256 tokens of context")
    assert get(f"http://127.0.0.1:{port}/no/such/page") == (404, '{"error":"nothing at /no/such/page"}')
    proc.send_signal(signal.SIGINT)  # Ctrl+C: a clean stop
    assert proc.wait(timeout=20) == 0


def test_serve_picks_a_free_port_by_default(serve):
    proc = serve()
    line = proc.stdout.readline()  # printed once the port is bound, before serving
    assert line.startswith("musicgpt serve: http://127.0.0.1:"), line
    url = line.split()[2]
    assert wait_until_up(url, proc)[0] == 200


def test_without_a_checkpoint_it_serves_the_shipped_model():
    from musicgpt.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.checkpoint == "piano-small"


def test_a_port_in_use_is_a_clear_error(tiny_checkpoint, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--checkpoint", str(tiny_checkpoint), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"musicgpt: error: cannot listen on 127.0.0.1:{port}: ") and "in use" in err


def test_bad_arguments(tiny_checkpoint, tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tiny_checkpoint), "--port", "70000"]) == 2
    assert "argument --port: must be in 0..65535, got 70000" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert f"argument --checkpoint: {tmp_path / 'nothing'}: no such file or folder, nor a shipped model" in (
        capsys.readouterr().err
    )
    assert main(["serve", "--checkpoint", str(tiny_checkpoint), "--pieces", str(tmp_path / "none")]) == 2
    assert f"argument --pieces: {tmp_path / 'none'}: no such file or folder" in capsys.readouterr().err
