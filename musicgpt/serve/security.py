"""The app answers only its own pages: a pure ASGI middleware for HTTP and WebSocket alike.

Two attacks reach a server that listens on 127.0.0.1 from any web page the user has open:

* DNS rebinding: a page at attacker.example re-points its name to 127.0.0.1, and its script then
  reads our responses as same-origin (every job's notes and MIDI, other users' uploads). The
  browser still sends `Host: attacker.example:PORT`, so every request (GET too) whose Host is not
  one of our own names is refused.
* Cross-site requests: a page anywhere can POST a form to 127.0.0.1 (the browser sends it without
  asking) or open a WebSocket to it. Browsers name the page that sent a request in its `Origin`
  header, which a page cannot forge; a request that changes state (any method but GET, HEAD,
  OPTIONS) and every WebSocket must come from our own origin when a browser sent it. A client
  that sends no Origin and no `Sec-Fetch-Site` (curl, Python, a benchmark script) is no browser,
  so no other site's page can be speaking through it.

Refusals are JSON {"error": ...} with 403 for HTTP, and a close (code 1008, which servers answer
with 403) for a WebSocket before it is accepted.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
WILDCARDS = {"0.0.0.0", "::"}  # listening on every interface


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> set[str]:
    """The names a browser may use for a server listening on `host`: this machine's loopback
    names, the address given and `extra` names; for a wildcard address also this machine's name."""
    names = {"localhost", "127.0.0.1", "::1", _bare(host), *(_bare(h) for h in extra)}
    if _bare(host) in WILDCARDS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names - {""}


def _bare(host: str) -> str:
    """'[::1]' -> '::1', 'LocalHost' -> 'localhost'."""
    host = host.strip().lower()
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def host_name(value: str) -> str | None:
    """The name in a Host header or an origin's authority, without its port: 'x.org:8000' -> 'x.org',
    '[::1]:8000' -> '::1'. None when it is not a well-formed authority."""
    try:
        parsed = urlsplit(f"//{value}")
        parsed.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return None
    return parsed.hostname


class SameOrigin:
    """Refuse requests whose Host is not ours, and state-changing ones from another origin."""

    def __init__(self, app, hosts: Iterable[str]):
        self.app, self.hosts = app, {_bare(h) for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):  # lifespan
            return await self.app(scope, receive, send)
        problem = self.problem(scope)
        if problem is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008, "reason": problem[:120]})
        body = json.dumps({"error": problem}).encode()
        await send({
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    def problem(self, scope) -> str | None:
        """Why the request is refused, or None."""
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.lower(), value)
        host = headers.get(b"host", b"").decode("latin-1")
        name = host_name(host) if host else None
        if name is None or name not in self.hosts:
            return (
                f"this server answers only to {', '.join(sorted(self.hosts))}; the request was for "
                f"{host[:80]!r}"
            )
        if scope["type"] == "http" and scope["method"] in SAFE_METHODS:
            return None
        origin = headers.get(b"origin")
        if origin is not None:
            origin_text = origin.decode("latin-1")
            parsed = urlsplit(origin_text)
            if parsed.scheme not in ("http", "https") or parsed.netloc.lower() != host.lower():
                return f"a request from another site ({origin_text[:80]}) may not change anything here"
            return None
        if headers.get(b"sec-fetch-site", b"").lower() == b"cross-site":
            return "a request from another site may not change anything here"
        return None
