"""The web side of the live duet (serve/duet.py has the music and the model): GET /duet, the
WebSocket /duet/ws (one `_Connection` per socket: a reader, a feeder task, at most one answer
task), and a finished session's MIDI and attention page. The protocol is in duet.py's docstring."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

from musicgpt.serve.duet import (
    ANSWER_CHUNK,
    LOOKAHEAD_SECONDS,
    MAX_EVENTS_PER_MESSAGE,
    MAX_INBOX,
    MAX_MESSAGE_BYTES,
    SYNC_STEPS,
    Answer,
    DuetEngine,
    DuetError,
    DuetSession,
    _check_answer,
)

_log = logging.getLogger(__name__)


def _number(data: dict, key: str, default=None):
    x = data.get(key, default)
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise DuetError(f"{key!r} must be a number, got {str(x)[:30]}")
    return x


class _Connection:
    """One socket's session: a reader (this), a feeder task and at most one answer task."""

    def __init__(self, engine: DuetEngine, ws, session: DuetSession):
        self.engine, self.ws, self.session = engine, ws, session
        self._send_lock = asyncio.Lock()
        self.dirty = asyncio.Event()  # new tokens to feed
        self.last_notes = time.monotonic()
        self.settings = {"seconds": 4.0, "temperature": 1.0}
        self.answer_task: asyncio.Task | None = None
        self.feeder = asyncio.create_task(self._feed())

    async def send(self, message: dict) -> None:
        async with self._send_lock:
            await self.ws.send_json(message)

    async def call(self, fn, *args):
        """Run fn on the engine's thread after the posted notes (whose messages are sent)."""
        out, result = await self.engine.run(self._drained, fn, args)
        for m in out:
            await self.send(m)
        return result

    def _drained(self, fn, args):
        out = self.session.drain()
        return out, fn(*args) if fn is not None else None

    async def handle(self, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise DuetError('a message is a JSON object with a "type"')
        kind, s = data["type"], self.session
        if kind == "notes":
            events = data.get("events")
            if not isinstance(events, list) or len(events) > MAX_EVENTS_PER_MESSAGE:
                raise DuetError(f'"events" must be a list of at most {MAX_EVENTS_PER_MESSAGE} events')
            s.post(events)  # checked here: a bad event is refused with its whole message
            self.last_notes = time.monotonic()
            self.dirty.set()
            if len(s.inbox) > MAX_INBOX:  # a flood: wait for the thread before reading on
                await self.call(None)
        elif kind == "answer":
            t = _number(data, "time")
            seconds = _number(data, "seconds", self.settings["seconds"])
            temperature = _number(data, "temperature", self.settings["temperature"])
            if not self.engine.incremental:
                await self.call(setattr, s.live, "n_fed", -1)  # stale: the answer prefills first
            answer, events = await self.call(s.begin_answer, t, seconds, temperature)
            self.answer_task = asyncio.create_task(self._answer(answer, events))
        elif kind == "started":
            k, t = _number(data, "answer"), _number(data, "time")
            await self.call(self._started, k, t)
        elif kind == "settings":
            pause = _number(data, "pause")
            if not 100 <= pause <= 10_000:
                raise DuetError(f"the pause is 100-10000 ms, got {pause}")
            seconds, temperature = _check_answer(
                _number(data, "seconds", 4.0), _number(data, "temperature", 1.0)
            )
            self.settings = {"seconds": seconds, "temperature": temperature}
            s.pause_ms = float(pause)
            self.dirty.set()
        else:
            raise DuetError(f"unknown message type {kind[:30]!r}")

    def _started(self, k, t) -> None:
        a = self.session.answer
        if a is not None and a.k == k and not a.cut:
            self.session.anchor = (float(t), a.start_step)

    async def _answer(self, answer: Answer, events: list) -> None:
        try:
            await self._stream(answer, events)
        except DuetError as e:  # the session is full
            await self._quietly(self.send({"type": "error", "error": str(e)}))
        except Exception:  # the socket went away (or a bug: logged); the server goes on
            _log.debug("duet answer stopped", exc_info=True)

    async def _quietly(self, coroutine) -> None:
        try:
            await coroutine
        except Exception:
            pass

    async def _stream(self, answer: Answer, events: list) -> None:
        """Send the answer's notes as they are sampled, at most LOOKAHEAD_SECONDS ahead of it."""
        s, first_sent, last_t = self.session, None, 0.0
        while True:
            for m in events:
                await self.send(m)
                if m["type"] == "on" and first_sent is None:
                    first_sent = time.monotonic()
                last_t = m.get("t", last_t)
            if answer.done or s.closed:
                return
            if first_sent is not None:
                ahead = last_t - (time.monotonic() - first_sent)
                if ahead > LOOKAHEAD_SECONDS:
                    await asyncio.sleep(min(ahead - LOOKAHEAD_SECONDS, 0.25))
                    events = []
                    continue
            events = await self.call(self._sample, answer)
            if not events and s.answer is not answer:
                return

    def _sample(self, answer: Answer) -> list:
        if self.session.answer is not answer or answer.done or self.session.closed:
            return []
        return self.session.sample(ANSWER_CHUNK, until_note=answer.n_notes == 0)

    async def _feed(self) -> None:
        try:
            await self._feed_loop()
        except Exception:  # a bug: logged, and the session goes on unfed (answers still prefill)
            _log.warning("duet feeder stopped", exc_info=True)

    async def _feed_loop(self) -> None:
        """Keep the cache fed while the player plays; in a pause, speculate on the answer."""
        s, e = self.session, self.engine
        while e.incremental:
            await self.dirty.wait()
            self.dirty.clear()
            while not await self.call(self._sync):
                pass
            if not e.speculate or s.pause_ms is None:
                continue
            # half way through the pause the player has most likely stopped
            wait = self.last_notes + s.pause_ms / 2000 - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(self.dirty.wait(), wait)
                    continue  # more notes came
                except asyncio.TimeoutError:
                    pass
            await self.call(self._speculate)

    def _sync(self) -> bool:
        return self.session.closed or self.session.live.sync(SYNC_STEPS)

    def _speculate(self) -> None:
        if self.session.closed:
            return
        try:
            self.session.speculate(self.settings["seconds"], self.settings["temperature"])
        except DuetError:
            pass

    def close(self) -> None:
        """Stop its tasks and close the session on the engine's thread, after any piece of its work
        already there. Nothing here awaits: the handler may be closing because it was cancelled."""
        for task in (self.feeder, self.answer_task):
            if task is not None:
                task.cancel()
        self.engine.submit(self.engine.close_session, self.session)


def duet_routes(engine: DuetEngine, *, about: str = "") -> list:
    """The routes to mount in the app: the page, its assets, the socket, a session's MIDI and
    attention page."""

    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from musicgpt.serve.static import PackageFiles, page

    async def duet_page(request) -> Response:
        return HTMLResponse(page("duet.html"))

    def find(request) -> DuetSession:
        session = engine.get(request.path_params["sid"])
        if session is None:
            raise HTTPException(404, "no such duet (the server keeps only the latest ones)")
        return session

    async def midi(request) -> Response:
        session = find(request)
        data = await engine.run(session.midi_bytes)
        return Response(data, media_type="audio/midi",
                        headers={"Content-Disposition": 'attachment; filename="duet.mid"'})  # fmt: skip

    async def attention(request) -> Response:
        session = find(request)
        try:
            html = await engine.run(session.attention_html, engine.template)
        except DuetError as e:
            raise HTTPException(404, str(e)) from None
        return HTMLResponse(html)

    async def socket(ws: WebSocket) -> None:
        await ws.accept()
        try:
            session = await engine.run(engine.open_session)
        except DuetError as e:
            await ws.send_json({"type": "error", "error": str(e)})
            await ws.close(code=1013)  # try again later
            return
        conn = _Connection(engine, ws, session)
        base = f"/duet/{session.id}"
        try:
            await conn.send({"type": "ready", "session": session.id, "midi": f"{base}/session.mid",
                             "attention": f"{base}/attention", "model": about,
                             "context": session.live.context})  # fmt: skip
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None or len(text) > MAX_MESSAGE_BYTES:
                    await conn.send(
                        {
                            "type": "error",
                            "error": f"a message is JSON text of at most {MAX_MESSAGE_BYTES} bytes",
                        }
                    )
                    continue
                try:
                    await conn.handle(json.loads(text))
                except (DuetError, ValueError) as e:  # json's errors are ValueErrors
                    await conn.send({"type": "error", "error": str(e)[:300]})
        except WebSocketDisconnect:
            pass
        except RuntimeError:  # a send after the client went away
            pass
        finally:
            conn.close()

    return [
        Route("/duet", duet_page),
        Mount("/duet/assets", PackageFiles()),  # duet.js, duet.css, player.js
        WebSocketRoute("/duet/ws", socket),
        Route("/duet/{sid}/session.mid", midi),
        Route("/duet/{sid}/attention", attention),
    ]
