"""Two small ASGI guards: a cap on request bodies and safety headers on every response."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException


class BodySizeLimit:
    """Refuse (413) a request whose body is larger than ``max_bytes``, before it is parsed.

    A declared ``Content-Length`` over the limit is refused at once; a body sent without one
    (chunked) is counted as it arrives and refused when it passes the limit, so a huge upload is
    never spooled to disk by the multipart parser.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _message(self) -> str:
        return (f"the request is larger than {self.max_bytes // (1024 * 1024)} MB; "
                "send fewer or smaller photos per request")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, {"detail": self._message()})
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the request's body parsing: FastAPI turns it into the 413.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)


class SafetyHeaders:
    """``nosniff`` and ``no-referrer`` on every response, and a Content-Security-Policy on all but
    FastAPI's docs pages (Swagger UI starts itself with an inline script)."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
    NO_CSP_PREFIXES = ("/docs", "/redoc")

    def __init__(self, app, content_security_policy: str):
        self.app = app
        self.csp = [(b"content-security-policy", content_security_policy.encode())]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = self.HEADERS
        if not scope["path"].startswith(self.NO_CSP_PREFIXES):
            added = [*added, *self.csp]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
