"""Small ASGI guards: a cap on request bodies, safety headers on every response, and a quiet 503
for a request the server cancels as it stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

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
        return (f"the request is larger than {self.max_bytes / 2**20:g} MiB; "
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


class AnswerCancelled:
    """A request whose task the server cancels gets 503 and ends quietly.

    uvicorn cancels a request's task only to stop: after a second Ctrl-C, or when the request is
    still running ``timeout_graceful_shutdown`` seconds after the first (a stalled upload, a slow
    client). Left to propagate, the cancellation reaches uvicorn as a crash: it logs "Exception in
    ASGI application" with a long traceback and answers 500. Here it is answered 503 (unless the
    response had begun), counted through ``on_cancel``, and not re-raised: nothing else awaits the
    request's own task, and the server reports the count in one line. ``on_change(+1)`` and
    ``on_change(-1)`` mark each request's start and end (``/healthz`` reports the count in progress).
    """

    DETAIL = "the server stopped before this request finished; try again when it is back"

    def __init__(self, app, on_cancel: Callable[[], None], on_change: Callable[[int], None] = lambda step: None):
        self.app = app
        self.on_cancel = on_cancel
        self.on_change = on_change

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.on_change(1)
        try:
            await self._answer(scope, receive, send)
        finally:
            self.on_change(-1)

    async def _answer(self, scope, receive, send):
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # handled: the answer below may await
            self.on_cancel()
            if not started:
                with contextlib.suppress(Exception):  # the client may be gone; nothing to tell it
                    await _send_json(send, 503, {"detail": self.DETAIL}, ((b"retry-after", b"5"),))


async def _send_json(send, status: int, body: dict, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": payload})
