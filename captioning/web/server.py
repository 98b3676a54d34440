"""``serve``: load the model once, listen on the address asked for, run uvicorn until Ctrl-C.

Cheap checks come first (the bundle's config, the web libraries, the address is free), so a
mistake is one line before TensorFlow loads. The listening socket is bound here and handed to
uvicorn, which is what makes ``--port 0`` (a free port, printed) work.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import importlib.util
import socket
from collections.abc import Callable
from pathlib import Path

from captioning import config
from captioning.errors import CaptioningError

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def serve(model_dir: str | Path | None = None, host: str = config.ServeConfig.host,
          port: int = config.ServeConfig.port, log: Callable[[str], None] = print,
          settings: config.ServeConfig | None = None) -> None:
    """Serve the captioning page and API until Ctrl-C (or SIGTERM), then shut down cleanly.

    Args:
        model_dir: a bundle folder; default the default model (``bundles.default_model``).
        host: address to listen on; loopback unless asked otherwise.
        port: TCP port; 0 picks a free one.
        log: where the status lines go (``default_model.model_line`` first, then where to open the
            page).
        settings: limits and batching (default ``config.ServeConfig()``; host and port come from
            the arguments above).

    Raises:
        CaptioningError: no usable model, a missing web library, or an address that cannot be used.
    """
    from captioning.bundles import default_model

    settings = dataclasses.replace(settings or config.ServeConfig(), host=host, port=port)
    choice = default_model.choose_model(model_dir)  # --model, else the default model
    model_dir = choice.path
    log(default_model.model_line(model_dir))  # the line every command starts with; reads config.json
    if choice.note:
        log(f"note: {choice.note}")
    uvicorn = _web_libraries()
    sock = bind(host, port)
    try:
        from captioning.cli.runtime import import_tensorflow
        from captioning.inference.captioner import Captioner
        from captioning.web.app import create_app
        from captioning.web.stopping import CaptioningServer

        def quiet_tensorflow() -> None:
            tf = import_tensorflow()  # only now: everything above answers without it
            # Its Python-side notices (graph retracing while warming up) mean nothing to a user.
            tf.get_logger().setLevel("ERROR")

        # TensorFlow only when the model has no exported form yet (it is made now, once).
        captioner = Captioner.load(model_dir, log=log, before_tensorflow=quiet_tensorflow)
        url = page_url(host, sock.getsockname()[1])

        def ready() -> None:
            if host in WILDCARD_HOSTS:
                log("note: listening on every network interface, without a password; anyone who "
                    "can reach this machine can use it")
            log(f"Open {url} in a browser (Ctrl-C stops the server)")

        app = create_app(captioner, model_dir, settings, on_ready=ready)
        server = CaptioningServer(uvicorn.Config(
            app, log_level="warning", access_log=False, server_header=False,
            timeout_graceful_shutdown=settings.shutdown_grace_s, limit_concurrency=settings.max_queued_images,
            timeout_keep_alive=5), app.state.server, log)
        interrupted = False
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            interrupted = True  # uvicorn has shut down gracefully and re-raised Ctrl-C
        if not server.started:
            if interrupted:
                raise KeyboardInterrupt  # while warming up: "interrupted", as any other command
            raise CaptioningError("the server did not start; see the lines above")
        log("Server stopped.")
    finally:
        sock.close()


def page_url(host: str, port: int) -> str:
    """The address to open: loopback for a wildcard host, IPv6 in brackets."""
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1" if host != "::" else "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        CaptioningError: unknown host, port in use, or no permission, each with what to do.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError, OverflowError) as error:
        raise CaptioningError(f"cannot listen on {host!r} port {port} ({error}); pass --host 127.0.0.1 "
                              "or an address of this machine") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise CaptioningError(f"port {port} on {host} is already in use; pass --port with another "
                                  "number (0 picks a free one)") from None
        if error.errno == errno.EACCES:
            raise CaptioningError(f"no permission to listen on port {port}; use a port above 1023") from None
        raise CaptioningError(f"cannot listen on {host} port {port}: {error.strerror or error}; "
                              "pass --host 127.0.0.1") from None
    sock.set_inheritable(True)
    return sock


# python_multipart is FastAPI's form parser.
WEB_LIBRARIES = ("fastapi", "fastapi_offline", "python_multipart", "uvicorn")


def _web_libraries():
    """uvicorn, after checking every web library imports (one line saying why and how if not).

    A library that is missing is named as such (the one missing may be a dependency of these); one
    that is installed but fails to import says the error, which is the real cause (a broken or
    mismatched dependency), instead of claiming it is not installed.
    """
    for name in WEB_LIBRARIES:
        try:
            importlib.import_module(name)
        except ImportError as error:
            missing = error.name if error.name and not _installed(error.name) else None
            if missing is not None:
                raise CaptioningError(f"the web server needs {missing.partition('.')[0]}, which is not "
                                      "installed; run pip install -r requirements.txt") from None
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CaptioningError(f"the web server's {name} is installed but does not import ({reason}); "
                                  "run pip install -r requirements.txt to repair it") from None
    return importlib.import_module("uvicorn")  # imported above


def _installed(module: str) -> bool:
    """Whether the top-level package of ``module`` can be found (not whether it imports)."""
    try:
        return importlib.util.find_spec(module.partition(".")[0]) is not None
    except (ImportError, ValueError):  # a half-imported or odd entry in sys.modules
        return True
