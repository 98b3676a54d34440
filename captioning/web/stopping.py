"""How ``serve`` stops: uvicorn's graceful shutdown, with one line instead of a traceback.

On Ctrl-C uvicorn stops listening, lets the requests in progress finish for
``timeout_graceful_shutdown`` seconds, cancels those still running (a stalled upload, a client that
stopped reading) and runs the app's shutdown (``app.ServerState.stop``: the worker stops, the
private folder of uploads is deleted). A second Ctrl-C makes it stop waiting at once, but uvicorn
then skips the app's shutdown and leaves the requests to be cancelled as the event loop closes,
each logged as a crash. ``CaptioningServer`` finishes that path itself: it cancels the requests
(``middleware.AnswerCancelled`` answers each 503, quietly), runs the app's shutdown without
waiting for the batch in progress, and says in one line what was cut short, as it does for
requests dropped at the graceful timeout (whose own uvicorn error line it hides).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from captioning.web.app import ServerState

# uvicorn's line when the graceful timeout ends; CaptioningServer says it in the tool's words.
_UVICORN_TIMEOUT_LINE = "timeout graceful shutdown exceeded"


class _HideTimeoutLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _UVICORN_TIMEOUT_LINE not in str(record.msg)


def quiet_logs() -> None:
    """Keep lines that are not for a user off the server's terminal (idempotent).

    python-multipart logs each malformed request body as a warning before raising the error that
    answers it 400; with no logging set up Python would print it on stderr.
    """
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideTimeoutLine) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(_HideTimeoutLine())


def _requests(count: int) -> str:
    return f"{count} request" if count == 1 else f"{count} requests"


class CaptioningServer(uvicorn.Server):
    """uvicorn's server, finishing a second Ctrl-C cleanly and reporting what stopping cut short.

    Args:
        config: uvicorn's settings (``timeout_graceful_shutdown`` is the grace for requests).
        state: the app's ``ServerState`` (counts cancelled requests; ``stop_now``).
        log: where the one line goes.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState, log: Callable[[str], None]):
        super().__init__(config)
        self.state = state
        self.log = log
        quiet_logs()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        app_shut_down = getattr(self.lifespan, "shutdown_event", None)
        if self.force_exit and app_shut_down is not None and not app_shut_down.is_set():
            # uvicorn stopped waiting and skipped the app's shutdown: cancel what is left (each
            # request answers 503) and shut the app down without waiting for the worker.
            running = list(self.server_state.tasks)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            cut = self.state.cancelled_requests
            self.log("Second Ctrl-C: stopping at once" + (
                f"; cancelled {_requests(cut)} in progress (answered 503)" if cut else ""))
            self.state.stop_now()
            await self.lifespan.shutdown()
        elif self.state.cancelled_requests:
            cut = self.state.cancelled_requests
            self.log(f"Dropped {_requests(cut)} still unfinished {self.config.timeout_graceful_shutdown:g} s "
                     "after Ctrl-C (a stalled upload or a slow client; answered 503)")
