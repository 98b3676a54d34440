"""A stand-in for the part of Kaggle that ``kagglehub.dataset_download(handle)`` talks to.

Written against kagglehub 1.0.3 with kagglesdk 0.1.38 (the versions requirements.txt admits),
whose code was read to get the exchange right. For an unversioned handle ``owner/slug`` kagglehub's
``DatasetHttpResolver`` does this:

1. ``POST {endpoint}/api/v1/datasets.DatasetApiService/GetDataset`` with the JSON body
   ``{"ownerSlug", "datasetSlug"}``; it reads ``currentVersionNumber`` from the JSON answer. It
   asks again on every call, even when that version is already in its cache.
2. When ``{KAGGLEHUB_CACHE}/datasets/owner/slug/versions/N`` is not complete:
   ``POST .../datasets.DatasetApiService/DownloadDataset`` with ``{"ownerSlug", "datasetSlug",
   "datasetVersionNumber"}``. Kaggle answers with a redirect to a signed Cloud Storage URL;
   ``requests`` follows it with a ``GET``. The archive answer carries ``Content-Length``,
   ``Accept-Ranges: bytes`` and ``X-Goog-Hash: md5=<base64>`` (checked after the download). A
   partial ``N.archive`` left by a cut download is resumed with ``Range: bytes=K-`` (206).
3. It unpacks the zip into ``versions/N``, deletes the archive and writes a completion marker.

Credentials go as HTTP Basic auth (``KAGGLE_USERNAME``/``KAGGLE_KEY`` or ``kaggle.json``) or a
Bearer token (``KAGGLE_API_TOKEN``); without any, kagglehub asks anonymously. Errors come back
as the HTTP status plus a JSON body ``{"code": status, "message": ...}``.

How the client gets here: kagglesdk takes its endpoint from ``KAGGLE_API_ENVIRONMENT``, from a
fixed table only (``LOCALHOST`` is ``http://localhost`` on port 80; ``TEST`` is port 7777 and
also makes the client print every answer, archive bytes included). So the tests set
``KAGGLE_API_ENVIRONMENT=LOCALHOST`` and make this server the HTTP proxy (``http_proxy``), which
``requests`` honours: the server listens on a free loopback port, several test runs on one
machine never collide, and no request can leave the machine. As a proxy it receives absolute
URLs (``POST http://localhost/api/...``) and answers only those addressed to ``localhost``.

Knobs a test turns, and what the server saw, are attributes of ``KaggleStandIn``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

API = "/api/v1/datasets.DatasetApiService/"
STORAGE = "/storage/"  # where the redirect sends the archive download (Cloud Storage in Kaggle)


@dataclass
class Request:
    """One request the stand-in answered."""

    method: str
    path: str
    body: dict
    authorization: str
    range: str
    status: int = 0


@dataclass
class KaggleStandIn:
    """Serves one dataset, ``owner/slug`` at ``version``, as a zip archive.

    Attributes:
        owner, slug, version: The dataset it knows; anything else is a 404.
        archive: The zip file's bytes.
        credentials: ``(username, key)`` it accepts. None: anonymous requests are served too (a
            public dataset); otherwise a request without these credentials gets 401.
        forbidden: Answer 403 (no access: terms not accepted, private dataset) to every request.
        cut_next_downloads: How many of the next archive downloads to cut: the answer promises the
            whole archive but the connection is closed after half of it.
        requests: Every request answered, in order.
    """

    owner: str
    slug: str
    version: int
    archive: bytes
    credentials: tuple[str, str] | None = None
    forbidden: bool = False
    cut_next_downloads: int = 0
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def proxy_url(self) -> str:
        """The value for ``http_proxy``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def archive_downloads(self) -> list[Request]:
        """The requests that fetched (part of) the archive."""
        return [r for r in self.requests if r.path.startswith(STORAGE)]

    def calls(self, name: str) -> list[Request]:
        """The API calls named ``name`` (``GetDataset`` or ``DownloadDataset``)."""
        return [r for r in self.requests if r.path == API + name]

    def start(self) -> KaggleStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def take_cut(self) -> bool:
        """Whether to cut this download (and count it)."""
        with self._lock:
            if self.cut_next_downloads <= 0:
                return False
            self.cut_next_downloads -= 1
            return True


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Clients that hang up (a cut download, an answer dropped unread) are normal here."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _handler_for(stand_in: KaggleStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(_KaggleHandler):
        server_state = stand_in

    return Handler


class _KaggleHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops reading never holds a server thread for long
    server_state: KaggleStandIn

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # keep test output clean

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._answer("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._answer("GET")

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        request = Request(method, url.path, body, self.headers.get("Authorization", ""),
                          self.headers.get("Range", ""))
        self.server_state.record(request)
        if url.hostname != "localhost":  # never a proxy to anywhere else
            return self._error(request, 502, f"the stand-in serves only localhost, not {url.hostname}")
        refusal = self._refusal()
        if refusal and not url.path.startswith(STORAGE):  # signed storage URLs need no auth
            return self._error(request, *refusal)
        if method == "POST" and url.path == API + "GetDataset":
            return self._get_dataset(request)
        if method == "POST" and url.path == API + "DownloadDataset":
            return self._download_dataset(request)
        if method == "GET" and url.path == self._storage_path():
            return self._archive(request)
        self._error(request, 404, "Not found")

    def _refusal(self) -> tuple[int, str] | None:
        state = self.server_state
        if state.forbidden:
            return 403, "Permission 'datasets.get' was denied"
        if state.credentials is None:
            return None
        username, key = state.credentials
        basic = "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()
        if self.headers.get("Authorization") != basic:
            return 401, "Unauthenticated"
        return None

    def _known(self, body: dict) -> bool:
        state = self.server_state
        return body.get("ownerSlug") == state.owner and body.get("datasetSlug") == state.slug

    def _get_dataset(self, request: Request) -> None:
        state = self.server_state
        if not self._known(request.body):
            return self._error(request, 404, "Not found")
        self._json(request, 200, {"ref": f"{state.owner}/{state.slug}", "ownerSlug": state.owner,
                                  "datasetSlug": state.slug, "currentVersionNumber": state.version,
                                  "title": "Mini COCO 2014 (stand-in)", "isPrivate": False})

    def _download_dataset(self, request: Request) -> None:
        if not self._known(request.body) or request.body.get("datasetVersionNumber") != self.server_state.version:
            return self._error(request, 404, "Not found")
        request.status = 302
        self.send_response(302)
        self.send_header("Location", f"http://localhost{self._storage_path()}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _storage_path(self) -> str:
        state = self.server_state
        return f"{STORAGE}{state.owner}/{state.slug}/{state.version}/archive.zip"

    def _archive(self, request: Request) -> None:
        data = self.server_state.archive
        start = _range_start(request.range, len(data))
        if start is None:
            return self._error(request, 416, "Requested range not satisfiable")
        request.status = 206 if request.range else 200
        self.send_response(request.status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Goog-Hash", "md5=" + base64.b64encode(hashlib.md5(data).digest()).decode())
        self.send_header("Content-Length", str(len(data) - start))
        if request.range:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.server_state.take_cut():
            request.status = -request.status  # marks the cut in ``requests``
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.close_connection = True
            return
        try:
            self.wfile.write(data[start:])
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # kagglehub drops a full answer unread when it resumes with a Range request

    def _json(self, request: Request, status: int, payload: dict) -> None:
        request.status = status
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, request: Request, status: int, message: str) -> None:
        self._json(request, status, {"code": status, "message": message})


def _range_start(header: str, size: int) -> int | None:
    """The first byte asked for by ``Range: bytes=K-`` (0 without one); None when unsatisfiable."""
    if not header:
        return 0
    unit, _, spec = header.partition("=")
    first, _, last = spec.partition("-")
    if unit.strip() != "bytes" or last or not first.isdigit() or int(first) >= size:
        return None
    return int(first)
