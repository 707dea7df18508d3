"""The duet's WebSocket protocol through Starlette's TestClient: an answer streamed note by note,
an interruption, the session's MIDI and attention page; and bad input (a flood of notes, a phrase
of ten minutes, a socket closed mid-answer, malformed messages) that never stops the server or
another session."""

from __future__ import annotations

import io
import json
import time

import pretty_midi
import pytest
from conftest import PIANO_DIR
from starlette.testclient import TestClient

from musicgpt.checkpoints import load_checkpoint
from musicgpt.serve import duet as D
from musicgpt.serve.app import create_app


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    model, tokenizer = load_checkpoint(tiny_checkpoint)
    app = create_app(model, tokenizer, pieces_dir=PIANO_DIR, about="tiny random model")
    # the Host a browser sends to `musicgpt serve` (the app answers only its own names)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        yield c


WS = "ws://127.0.0.1:8000/duet/ws"  # (websocket_connect ignores base_url)


def phrase(t0: float, pitches=(60, 62, 64, 65, 67)) -> tuple[list, float]:
    events, t = [], t0
    for p in pitches:
        events += [[t, p, 80], [t + 200, p, 0]]
        t += 250
    return events, t - 50


def receive_answer(ws, k: int) -> list[dict]:
    """Messages up to answer k's "end" (or "cut")."""
    out = []
    while True:
        m = ws.receive_json()
        assert m["type"] != "error", m
        out.append(m)
        if m["type"] in ("end", "cut") and m["answer"] == k:
            return out


def closed_session(client, sid: str):
    """The session once the server has closed it (its handler ends just after the client's)."""
    deadline = time.monotonic() + 10
    while True:
        session = client.app.state.duet.get(sid)
        if session.closed and sid not in client.app.state.duet.live or time.monotonic() > deadline:
            return session
        time.sleep(0.01)


def duet(client, seconds=1.0):
    """One call and answer; the session's id and the answer's messages."""
    with client.websocket_connect(WS) as ws:
        ready = ws.receive_json()
        events, last = phrase(1000.0)
        ws.send_json({"type": "notes", "events": events})
        ws.send_json({"type": "answer", "time": last + 1000, "seconds": seconds})
        return ready, receive_answer(ws, 1)


def test_a_call_is_answered_note_by_note_and_saved(client):
    ready, out = duet(client, seconds=1.5)
    assert ready["type"] == "ready" and ready["model"] == "tiny random model"
    assert ready["midi"] == f"/duet/{ready['session']}/session.mid" and len(ready["session"]) >= 16
    ons = [m for m in out if m["type"] == "on"]
    assert ons and ons[0]["t"] == 0.0 and out[-1] == {**out[-1], "type": "end", "answer": 1, "t": 1.5}
    assert [m["t"] for m in out] == sorted(m["t"] for m in out)
    r = client.get(ready["midi"])
    assert r.status_code == 200 and r.headers["content-type"] == "audio/midi"
    player, model = pretty_midi.PrettyMIDI(io.BytesIO(r.content)).instruments
    assert [n.pitch for n in player.notes] == [60, 62, 64, 65, 67]
    # the phrase, then 1 s of pause, then the answer as it was sent
    assert sorted((round(n.start - 2.2, 2), n.pitch) for n in model.notes) == sorted(
        (m["t"], m["pitch"]) for m in ons
    )
    page = client.get(ready["attention"])
    assert page.status_code == 200 and "duet, attention" in page.text
    assert client.get("/duet/nosuchsession/session.mid").status_code == 404


def test_playing_interrupts_the_answer(client):
    with client.websocket_connect(WS) as ws:
        ready = ws.receive_json()
        events, last = phrase(1000.0)
        ws.send_json({"type": "notes", "events": events})
        ws.send_json({"type": "answer", "time": last + 1000, "seconds": 8})
        first = ws.receive_json()
        assert first["type"] == "on" and first["t"] == 0.0
        ws.send_json({"type": "started", "answer": 1, "time": last + 1050})  # it sounded 50 ms late
        ws.send_json({"type": "notes", "events": [[last + 1050 + 400, 72, 90]]})
        out = receive_answer(ws, 1)
        assert out[-1] == {"type": "cut", "answer": 1, "t": 0.4}
        ws.send_json({"type": "notes", "events": [[last + 1050 + 700, 72, 0]]})
        ws.send_json({"type": "answer", "time": last + 2750, "seconds": 1})
        assert receive_answer(ws, 2)[-1]["type"] == "end"
    player, model = pretty_midi.PrettyMIDI(io.BytesIO(client.get(ready["midi"]).content)).instruments
    assert [n.pitch for n in player.notes] == [60, 62, 64, 65, 67, 72]
    assert player.notes[-1].start == pytest.approx(2.2 + 0.4)
    first_answer = [n for n in model.notes if n.start < 2.6]
    assert first_answer and all(n.end <= 2.6 + 1e-6 for n in first_answer)


def test_bad_messages_are_answered_and_the_session_goes_on(client):
    with client.websocket_connect(WS) as ws:
        ws.receive_json()
        for message, words in [
            ("not json", "Expecting value"),
            ("[1, 2]", 'JSON object with a "type"'),
            (json.dumps({"type": "dance"}), "unknown message type"),
            (json.dumps({"type": "notes", "events": [[0, 200, 80]]}), "pitch is an integer 0-127"),
            (json.dumps({"type": "notes", "events": [[0, 60, 80]] * 300}), "at most 256 events"),
            (json.dumps({"type": "answer", "time": 5000}), "play a few notes first"),
            (json.dumps({"type": "settings", "pause": 50}), "the pause is 100-10000 ms"),
            ("x" * (D.MAX_MESSAGE_BYTES + 1), "at most 16384 bytes"),
        ]:
            ws.send_text(message)
            reply = ws.receive_json()
            assert reply["type"] == "error" and words in reply["error"], (message[:40], reply)
        ws.send_bytes(b"\x00\x01")
        assert "JSON text" in ws.receive_json()["error"]
        events, last = phrase(1000.0)
        ws.send_json({"type": "notes", "events": events})
        ws.send_json({"type": "answer", "time": last + 1000, "seconds": 1})
        ws.send_json({"type": "answer", "time": last + 1000, "seconds": 1})  # while it plays
        out = []
        while not out or out[-1]["type"] != "end":
            out.append(ws.receive_json())
        errors = [m for m in out if m["type"] == "error"]
        assert len(errors) == 1 and "answer 1 is still playing" in errors[0]["error"]


def test_a_flood_of_notes_and_a_ten_minute_phrase_leave_the_server_answering(client):
    with client.websocket_connect(WS) as flood:
        ready = flood.receive_json()
        t = 0.0
        for _ in range(40):  # 10,240 events as fast as the socket takes them
            events = []
            for _ in range(128):
                events += [[t, 60 + int(t) % 24, 100], [t + 5, 60 + int(t) % 24, 0]]
                t += 10
            flood.send_json({"type": "notes", "events": events})
        # ten minutes of one held key, then silence for an hour
        flood.send_json({"type": "notes", "events": [[t + 10, 50, 90], [t + 600_000, 50, 0]]})
        flood.send_json({"type": "notes", "events": [[t + 4_200_000, 52, 90], [t + 4_200_300, 52, 0]]})
        # another player is answered meanwhile
        _, out = duet(client, seconds=1)
        assert out[-1]["type"] == "end"
        flood.send_json({"type": "answer", "time": t + 4_201_300, "seconds": 1})
        assert receive_answer(flood, 1)[-1]["type"] == "end"
    session = closed_session(client, ready["session"])
    assert session.closed and len(session.live) < D.MAX_SESSION_TOKENS
    # every gap between two events, the ten minutes under a held key as the hour of silence,
    # is heard as MAX_GAP_SECONDS
    player = pretty_midi.PrettyMIDI(io.BytesIO(client.get(ready["midi"]).content)).instruments[0]
    held = [n for n in player.notes if n.pitch == 50][-1]
    assert held.end - held.start == pytest.approx(D.MAX_GAP_SECONDS)
    last = player.notes[-1]
    assert (last.pitch, round(last.start - held.end, 2)) == (52, D.MAX_GAP_SECONDS)


def test_a_socket_closed_mid_answer_frees_its_session(client):
    engine = client.app.state.duet
    with client.websocket_connect(WS) as ws:
        sid = ws.receive_json()["session"]
        events, last = phrase(1000.0)
        ws.send_json({"type": "notes", "events": events})
        ws.send_json({"type": "answer", "time": last + 1000, "seconds": 30})
        assert ws.receive_json()["type"] == "on"
    # closed while sampling: the session ends, its cache is freed, its music kept; others go on
    session = closed_session(client, sid)
    assert session.closed and session.live.model.cache_shape is None and sid not in engine.live
    assert client.get(f"/duet/{sid}/session.mid").status_code == 200
    assert duet(client)[1][-1]["type"] == "end"


def test_too_many_sessions_are_refused_and_the_next_one_works(client, monkeypatch):
    monkeypatch.setattr(D, "MAX_LIVE_SESSIONS", 1)
    with client.websocket_connect(WS) as first:
        first.receive_json()
        with client.websocket_connect(WS) as second:
            reply = second.receive_json()
            assert reply["type"] == "error" and "1 duets are already open" in reply["error"]
    assert duet(client)[1][-1]["type"] == "end"
