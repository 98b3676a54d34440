"""``serve`` as a user runs it: its first lines, its one-line errors, a request, and Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from captioning import config
from captioning.cli import main as cli
from captioning.errors import CaptioningError
from tests.support.serve_process import PROJECT_ROOT, running_server

pytest.importorskip("fastapi", reason="the web server's libraries are not installed")

from captioning.web.server import bind, page_url  # noqa: E402

# Runs the CLI in a fresh interpreter and reports whether TensorFlow was imported.
NO_TENSORFLOW_RUN = ("import sys; from captioning.cli.main import main; status = main(sys.argv[1:]); "
                     "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow'); "
                     "sys.exit(status)")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TENSORFLOW_RUN, *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_serve_options_and_defaults():
    args = cli.build_parser().parse_args(["serve"])
    assert (args.model, args.host, args.port) == (None, "127.0.0.1", 8000)  # loopback by default
    args = cli.build_parser().parse_args(["serve", "--model", "m", "--host", "0.0.0.0", "--port", "0",
                                          "--max-batch", "1", "--batch-wait-ms", "0"])
    assert (args.model, args.host, args.port, args.max_batch, args.batch_wait_ms) == ("m", "0.0.0.0", 0, 1, 0.0)
    for bad in (["--port", "70000"], ["--port", "http"], ["--max-batch", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.build_parser().parse_args(["serve", *bad])
        assert exit_info.value.code == 2


def test_a_missing_model_is_one_line_before_tensorflow(tmp_path):
    done = run_cli("serve", "--model", str(tmp_path / "nope"))
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "no model bundle there" in done.stderr
    assert done.stdout.strip() == "no tensorflow"


def test_a_port_in_use_is_one_line_after_the_model_line(tiny_bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_cli("serve", "--model", str(tiny_bundle), "--port", str(port))
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == f"model: {tiny_bundle} (efficientnet_lite0 + merge)"
    assert done.stdout.splitlines()[-1] == "no tensorflow"
    assert done.stderr == (f"error: port {port} on 127.0.0.1 is already in use; pass --port with another "
                           "number (0 picks a free one)\n")


def test_bind_errors_say_what_to_do():
    with pytest.raises(CaptioningError, match="pass --host 127.0.0.1"):
        bind("no-such-host.invalid", 0)
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_page_url():
    assert page_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert page_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/"
    assert page_url("::1", 80) == "http://[::1]:80/"


def test_serve_uses_the_default_model_answers_and_stops_cleanly_on_ctrl_c(tmp_path, tiny_bundle):
    import httpx2

    models = tmp_path / "saved_models"
    shutil.copytree(tiny_bundle, models / "my-model")
    (models / config.DEFAULT_MODEL_POINTER).write_text('{"model": "my-model"}')  # the user's choice
    private = tmp_path / "server-tmp"
    private.mkdir()
    env = {"CAPTIONING_MODELS_DIR": str(models), "TMPDIR": str(private)}
    photo = PROJECT_ROOT / "examples" / "chelsea.jpg"
    with running_server(env=env) as server:
        first, second = server.lines[:2]
        assert first == f"model: {models / 'my-model'} (efficientnet_lite0 + merge, your default)\n"
        assert second == f"Open {server.url} in a browser (Ctrl-C stops the server)\n"
        assert server.url.startswith("http://127.0.0.1:")
        with httpx2.Client(base_url=server.url, timeout=120) as client:
            assert client.get("healthz").json()["status"] == "ok"
            response = client.post("api/captions", files=[("files", ("chelsea.jpg", photo.read_bytes()))])
            assert response.status_code == 200
            entry = response.json()["results"][0]
            assert entry["image"] == "chelsea.jpg" and entry["caption"]
            assert client.get(entry["png"]).headers["content-type"] == "image/png"
            assert len(list(private.glob("captioning-serve-*"))) == 1  # the server's private folder
    # running_server checked: exit status 0, "Server stopped.", no traceback.
    assert list(private.glob("captioning-serve-*")) == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_menu_entry_serves_until_ctrl_c_then_returns_to_the_menu(tmp_path, tiny_bundle):
    import httpx2

    from captioning.cli import menu
    from tests.support.menu_session import MENU_PROMPT, MODEL_LIST, QUIT, answer, expect_exit_ok, spawn_menu

    serve_entry = [label for label, _ in menu.STEPS].index("Serve the captioning web page") + 1
    shutil.copytree(tiny_bundle, tmp_path / "saved_models" / "tiny")
    port = _free_port()
    child = spawn_menu(tmp_path, timeout=300)
    answer(child, str(serve_entry), MODEL_LIST)  # the shipped default, then tiny
    answer(child, "2", "Port [8000]: ")
    answer(child, str(port), "model: ")  # serve names its model first, as every command does
    child.expect_exact("(efficientnet_lite0 + merge)")
    child.expect_exact(f"Open http://127.0.0.1:{port}/ in a browser (Ctrl-C stops the server)")
    assert httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=60).json()["status"] == "ok"
    child.sendintr()
    child.expect_exact("Server stopped.")
    child.expect_exact(MENU_PROMPT)
    answer(child, QUIT, "Goodbye.")
    expect_exit_ok(child)


STALLED_UPLOAD = (b"POST /api/captions HTTP/1.1\r\nHost: test\r\n"
                  b"Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 100000\r\n\r\n"
                  b'--XX\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n\xff\xd8')


def _stall_an_upload(url: str) -> socket.socket:
    """A connection that sent part of an upload's body and then nothing more."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(STALLED_UPLOAD)
    return sock


def _wait_until(condition, what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds (a loaded machine may take seconds), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _requests_in_progress(url: str) -> int:
    """What /healthz reports: requests being answered besides its own."""
    import httpx2

    return httpx2.get(url + "healthz", timeout=60).json()["requests_in_progress"]


def _refuses_connections(url: str) -> bool:
    """Whether the server stopped listening (uvicorn's first step after Ctrl-C)."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError:
        return True
    return False


def _after_start_up(server) -> list[str]:
    """The lines after the one saying where to open the page."""
    opened = next(i for i, line in enumerate(server.lines) if line.startswith(f"Open {server.url} "))
    return server.lines[opened + 1:]


def _answer(sock: socket.socket) -> bytes:
    with sock:
        return b"".join(iter(lambda: sock.recv(4096), b""))


def test_ctrl_c_drops_a_stalled_upload_in_one_line_and_malformed_bodies_are_quiet(tmp_path, tiny_bundle):
    import httpx2

    private = tmp_path / "server-tmp"
    private.mkdir()
    with running_server("--model", str(tiny_bundle), env={"TMPDIR": str(private)}) as server:
        response = httpx2.post(server.url + "api/captions", content=b"garbage",
                               headers={"content-type": "multipart/form-data; boundary=XX"}, timeout=60)
        assert response.status_code == 400
        stalled = _stall_an_upload(server.url)
        _wait_until(lambda: _requests_in_progress(server.url) == 1, "the stalled upload reached the app")
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(60) == 0
    assert _answer(stalled).startswith(b"HTTP/1.1 503 ")
    # running_server checked: exit status 0, "Server stopped.", no traceback.
    grace = config.ServeConfig().shutdown_grace_s
    assert _after_start_up(server) == [
        f"Dropped 1 request still unfinished {grace:g} s after Ctrl-C (a stalled upload or a slow client; "
        "answered 503)\n",
        "Server stopped.\n"], server.output  # nothing from the malformed body, no uvicorn error line
    assert list(private.glob("captioning-serve-*")) == []


def test_a_second_ctrl_c_stops_at_once_and_says_what_it_cut_short(tmp_path, tiny_bundle):
    private = tmp_path / "server-tmp"
    private.mkdir()
    with running_server("--model", str(tiny_bundle), env={"TMPDIR": str(private)}) as server:
        stalled = _stall_an_upload(server.url)
        _wait_until(lambda: _requests_in_progress(server.url) == 1, "the stalled upload reached the app")
        server.process.send_signal(signal.SIGINT)
        _wait_until(lambda: _refuses_connections(server.url), "the first Ctrl-C stopped the listening")
        server.process.send_signal(signal.SIGINT)  # uvicorn is waiting for the request to finish
        # The lines below tell "at once" from the 5 s grace path ("Dropped ... 5 s after Ctrl-C");
        # the exit itself may take seconds on a loaded machine (TensorFlow's teardown), so no tight bound.
        assert server.process.wait(20) == 0
    assert _answer(stalled).startswith(b"HTTP/1.1 503 ")
    assert _after_start_up(server) == [
        "Second Ctrl-C: stopping at once; cancelled 1 request in progress (answered 503)\n",
        "Server stopped.\n"], server.output
    assert list(private.glob("captioning-serve-*")) == []


def test_a_missing_web_library_is_named_and_a_broken_one_says_why(monkeypatch, tmp_path):
    from captioning.web import server

    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # as if it were not installed
    with pytest.raises(CaptioningError, match=r"^the web server needs fastapi_offline, which is not installed; "
                                              r"run pip install -r requirements\.txt$"):
        server._web_libraries()
    monkeypatch.undo()
    broken = tmp_path / "site" / "fastapi"  # installed, but one of its own imports fails
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("from pydantic import NoSuchThing\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [name for name in sys.modules if name == "fastapi" or name.startswith("fastapi.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(CaptioningError) as error:
        server._web_libraries()
    assert str(error.value) == ("the web server's fastapi is installed but does not import (cannot import name "
                                "'NoSuchThing' from 'pydantic' (" + str(__import__("pydantic").__file__) + ")); "
                                "run pip install -r requirements.txt to repair it")
