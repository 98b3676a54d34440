"""The web server's HTTP API through FastAPI's TestClient: photos in, ``caption --json`` entries out.

Most tests run the real stack on the tiny bundle (tests/support/bundles.py). Batching and dispatch
are checked with a captioner whose decoder names each photo's colour (a wrong slice of a batch would
give a photo another's colour) and whose encoder can be held, so that requests pile up behind it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import config
from captioning.data import images
from captioning.data.text import Vocabulary
from captioning.inference.captioner import Captioner
from tests.support.bundles import WORDS, make_tiny_bundle

pytest.importorskip("fastapi", reason="the web server's libraries are not installed")
from fastapi.testclient import TestClient  # noqa: E402

from captioning.web.app import STATIC_DIR, create_app, over_limit  # noqa: E402
from captioning.web.batching import CaptionBatcher, ServerStopping  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((PROJECT_ROOT / "examples").glob("*.jpg"))
FAST = dataclasses.replace(config.ServeConfig(), batch_wait_ms=2.0)


# ---------------------------------------------------------------------------- helpers


def jpeg_bytes(colour=(200, 40, 40), size=(64, 48), fmt="JPEG") -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.paste((250, 250, 250), (5, 5, 20, 20))
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def bomb_png_bytes(side: int = 20_000) -> bytes:
    """A PNG whose header claims side x side pixels (400 MP) with almost no data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def files_field(*named: tuple[str, bytes]) -> list:
    return [("files", (name, data, "application/octet-stream")) for name, data in named]


def post(client: TestClient, *named: tuple[str, bytes], **form):
    return client.post("/api/captions", files=files_field(*named), data={k: str(v) for k, v in form.items()})


def example_files() -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in EXAMPLES]


@pytest.fixture(scope="module")
def tiny_captioner(tiny_bundle):
    from captioning.cli.runtime import import_tensorflow

    import_tensorflow()
    return Captioner.load(tiny_bundle)


@pytest.fixture
def client(tiny_captioner, tiny_bundle):
    with TestClient(create_app(tiny_captioner, tiny_bundle, FAST)) as test_client:
        yield test_client


# A captioner that says each photo's dominant colour; the real Captioner class around a decoder
# with known answers (as in test_captioner.py), so batching and dispatch can be checked exactly.
COLOUR_WORDS = ["<pad>", "<unk>", "<start>", "<end>", "red", "green", "blue"]
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}


class ColourDecoder:
    def initial_state(self, features):
        return np.asarray(features, dtype=np.float64), np.zeros((len(features), 1))

    def step(self, tokens, state):
        rgb, count = state
        logits = np.full((len(tokens), len(COLOUR_WORDS)), -20.0)
        first = count[:, 0] == 0
        logits[first, 4:7] = rgb[first] / 20.0  # red, green, blue from the R, G, B means
        logits[~first, 3] = 5.0  # then END
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return logits, (rgb, count + 1)


class HeldEncoder:
    """Mean RGB per photo; records batch sizes; can hold the worker until released."""

    def __init__(self):
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next = False

    input_size = 16

    def encode(self, pixels, kind):
        self.entered.set()
        self.gate.wait(30)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("simulated failure inside the model")
        self.batch_sizes.append(len(pixels))
        return pixels.reshape(len(pixels), -1, 3).mean(axis=1)  # (B, 3)


def colour_captioner(encoder: HeldEncoder) -> Captioner:
    return Captioner(encoder, ColourDecoder(), Vocabulary(COLOUR_WORDS), max_length=5)


# ---------------------------------------------------------------------------- the page and docs


def test_page_and_everything_it_loads_come_from_the_server(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/static/app.js" in loaded and "/static/style.css" in loaded
    for url in loaded:
        assert url.startswith("/"), f"the page loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url
    assert "default-src 'self'" in client.get("/static/index.html").headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        assert "http://" not in client.get(f"/static/{asset}").text.replace("http://www.w3.org", "")
        assert "https://" not in client.get(f"/static/{asset}").text


def test_openapi_docs_page_is_served_without_a_cdn(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    scripts = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert scripts and all(url.startswith("/docs-static/") for url in scripts)
    for url in scripts:
        assert client.get(url).status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/captions", "/api/model", "/api/limits", "/healthz"} <= set(schema["paths"])
    assert client.get("/redoc").status_code == 200


def test_static_files_cannot_reach_outside_their_folder(client):
    for url in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2Fapp.py"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "create_app" not in response.text


# ---------------------------------------------------------------------------- captions


def test_photos_get_caption_json_entries_in_order(client, tiny_captioner):
    response = post(client, *example_files())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny-merge" and body["beam_size"] == config.DEFAULT_BEAM_SIZE
    results = body["results"]
    assert [entry["image"] for entry in results] == [path.name for path in EXAMPLES]
    # The same captions the tool gives for these files in one process (same batch, same model).
    expected = tiny_captioner.caption_many(EXAMPLES)
    assert [entry["caption"] for entry in results] == [r.caption for r in expected]
    for entry, result in zip(results, expected, strict=True):
        assert set(entry) == {"image", "caption", "score", "tags", "png"}  # as caption --json, png a URL
        assert entry["score"] == pytest.approx(round(result.score, 6), abs=1e-5)
        assert all(word in WORDS for word in entry["caption"].split())
        png = client.get(entry["png"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(png.content)) as image:
            image.load()
            assert image.format == "PNG" and image.width >= 480
        assert "_captioned.png" in png.headers["content-disposition"]


def test_beam_size_one_is_greedy_and_a_model_without_a_classifier_says_so(client):
    response = post(client, ("a.jpg", jpeg_bytes()), beam_size=1, tags="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["beam_size"] == 1
    assert body["tags"] == {"requested": True, "supported": False, "note": "this model's encoder has no "
                            "ImageNet classifier; captions are not tagged"}
    assert body["results"][0]["tags"] is None  # as caption --json writes it with tags off
    assert post(client, ("a.jpg", jpeg_bytes()), tags="false").json()["tags"]["requested"] is False
    assert post(client, ("a.jpg", jpeg_bytes())).json()["tags"]["requested"] is True  # the default


def test_tags_are_used_by_default_and_can_be_turned_off_per_request(tiny_bundle):
    from captioning.tags.table import ImageNetClass, ImageNetWords, TagWords
    from captioning.tags.tagger import Tagger

    # A "classifier" sure of tag "green" for reddish photos (class 0), over the mean-RGB features.
    kernel = np.zeros((3, 1000), dtype=np.float32)
    kernel[0, 0] = 0.1
    table = ImageNetWords(tuple(ImageNetClass(i, f"n{i:08d}", f"class {i}", "green" if i == 0 else None)
                                for i in range(1000)), {"green": TagWords("green", ("green",), ())})
    captioner = colour_captioner(HeldEncoder())
    captioner.tagger = Tagger((kernel, np.zeros(1000, np.float32)), captioner.vocab, table=table)
    red, blue = jpeg_bytes(colour=COLOURS["red"]), jpeg_bytes(colour=COLOURS["blue"])
    with TestClient(create_app(captioner, tiny_bundle, FAST)) as client:
        body = post(client, ("red.jpg", red), ("blue.jpg", blue)).json()
        assert body["tags"] == {"requested": True, "supported": True,
                                "note": "captions name what the encoder's ImageNet classifier is sure of"}
        assert [r["caption"] for r in body["results"]] == ["green", "blue"]
        (green,) = body["results"][0]["tags"]
        assert (green["tag"], green["added"]) == ("green", True) and green["confidence"] > 0.99
        assert body["results"][1]["tags"] == []
        plain = post(client, ("red.jpg", red), tags="false").json()
        assert plain["tags"]["requested"] is False and plain["tags"]["supported"] is True
        assert plain["results"][0]["caption"] == "red" and plain["results"][0]["tags"] is None


def test_bad_files_get_one_line_errors_next_to_the_good_ones(client, tmp_path):
    served_before = sorted(STATIC_DIR.rglob("*"))
    truncated = jpeg_bytes(size=(400, 300))[:900]
    response = post(client, ("good.jpg", jpeg_bytes()), ("notes.txt", b"just some text\n"),
                    ("empty.jpg", b""), ("cut.jpg", truncated), ("bomb.png", bomb_png_bytes()),
                    ("../../etc/passwd", b"root:x:0:0"), ("good.png", jpeg_bytes((20, 20, 200), fmt="PNG")))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["image"] for r in results] == ["good.jpg", "notes.txt", "empty.jpg", "cut.jpg", "bomb.png",
                                             "passwd", "good.png"]
    assert results[0]["caption"] and results[-1]["caption"]
    errors = {r["image"]: r["error"] for r in results if "error" in r}
    assert set(errors) == {"notes.txt", "empty.jpg", "cut.jpg", "bomb.png", "passwd"}
    assert "not an image" in errors["notes.txt"]
    assert "empty" in errors["empty.jpg"]
    assert "truncated" in errors["cut.jpg"] or "damaged" in errors["cut.jpg"]
    assert "too large" in errors["bomb.png"]
    store = client.app.state.server.store
    for name, error in errors.items():
        assert error.startswith(f"{name}: ") and "\n" not in error
        assert str(store.folder) not in error and ".upload" not in error  # never the private path
    for entry in results:
        if "error" in entry:
            assert entry["caption"] is None and "png" not in entry
    assert len(list(store.folder.iterdir())) == 2  # only the two good uploads are kept
    assert sorted(STATIC_DIR.rglob("*")) == served_before  # nothing written where files are served


def test_limits_on_size_and_count(tiny_captioner, tiny_bundle):
    settings = dataclasses.replace(FAST, max_file_bytes=20_000, max_files=3, max_request_bytes=100_000)
    with TestClient(create_app(tiny_captioner, tiny_bundle, settings)) as client:
        limits = client.get("/api/limits").json()
        assert limits["max_files"] == 3 and limits["max_file_bytes"] == 20_000
        assert limits["max_image_pixels"] == images.MAX_IMAGE_PIXELS
        big = b"\xff\xd8" + bytes(30_000)
        response = post(client, ("small.jpg", jpeg_bytes()), ("big.jpg", big))
        assert response.status_code == 200
        small, too_big = response.json()["results"]
        assert small["caption"] and too_big["caption"] is None
        assert too_big["error"] == ("big.jpg: file is too large (30,002 bytes, over the 20,000-byte limit); "
                                    "resize or compress it")
        response = post(client, *[(f"{i}.jpg", jpeg_bytes()) for i in range(4)])
        assert response.status_code == 413 and "at most 3" in response.json()["detail"]
        response = post(client, *[(f"{i}.jpg", bytes(40_000)) for i in range(3)])
        assert response.status_code == 413 and "larger than" in response.json()["detail"]
        for beam in (0, 11, "wide"):
            assert post(client, ("a.jpg", jpeg_bytes()), beam_size=beam).status_code == 422
        assert client.post("/api/captions", data={"beam_size": "2"}).status_code == 422  # no files
        assert client.get("/healthz").json()["status"] == "ok"  # refusals leave it serving


@pytest.mark.parametrize(("size", "limit", "said"), [
    (21_000_000, 20 * 2**20, "20.03 MiB, over the 20 MiB limit"),  # not "20.0 MB, over the 20.0 MB limit"
    (20 * 2**20 + 6_000, 20 * 2**20, "20.01 MiB, over the 20 MiB limit"),
    (20 * 2**20 + 1, 20 * 2**20, "20,971,521 bytes, over the 20 MiB (20,971,520-byte) limit"),
    (30_000, 20 * 1024, "29.3 KiB, over the 20 KiB limit"),
    (30_002, 20_000, "30,002 bytes, over the 20,000-byte limit"),
    (None, 20 * 2**20, "over the 20 MiB limit"),
])
def test_a_size_over_the_limit_reads_as_over_it(size, limit, said):
    assert over_limit(size, limit) == said


def test_a_body_without_a_length_is_cut_off_at_the_limit(tiny_captioner, tiny_bundle):
    settings = dataclasses.replace(FAST, max_request_bytes=50_000)
    with TestClient(create_app(tiny_captioner, tiny_bundle, settings)) as client:
        boundary = "xyz"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n").encode()

        def chunked():  # a generator body is sent without Content-Length
            yield head
            for _ in range(20):
                yield bytes(10_000)
            yield f"\r\n--{boundary}--\r\n".encode()

        response = client.post("/api/captions", content=chunked(),
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 413


def test_model_endpoint_says_what_info_says(client, tiny_bundle):
    from captioning.bundles.store import describe_bundle

    text = client.get("/api/model", params={"format": "text"})
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert text.text == describe_bundle(tiny_bundle) + "\n"
    info = client.get("/api/model").json()
    assert info["name"] == "tiny-merge" and info["decoder"] == "merge"
    assert info["encoder"] == "efficientnet_lite0" and info["attention_maps"] is False
    assert info["description"] == describe_bundle(tiny_bundle)
    assert info["config"] == json.loads((tiny_bundle / "config.json").read_text())
    assert client.get("/api/model", params={"format": "xml"}).status_code == 422


def test_merge_models_have_no_attention_map(client):
    entry = post(client, ("a.jpg", jpeg_bytes())).json()["results"][0]
    assert "attention_map" not in entry
    result_id = entry["png"].split("/")[-2]
    response = client.get(f"/api/results/{result_id}/attention.png")
    assert response.status_code == 404 and "no attention" in response.json()["detail"]


def test_attention_models_link_their_attention_map(tmp_path):
    from captioning.cli.runtime import import_tensorflow

    import_tensorflow()
    bundle_dir = make_tiny_bundle(tmp_path / "tiny-attention", kind="attention")
    with TestClient(create_app(Captioner.load(bundle_dir), bundle_dir, FAST)) as client:
        entry = post(client, ("a.jpg", jpeg_bytes()), beam_size=2).json()["results"][0]
        assert entry["attention_map"].endswith("/attention.png")
        response = client.get(entry["attention_map"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(response.content)) as image:
            image.load()
        again = client.get(entry["attention_map"])  # rendered once, then served from the store
        assert again.content == response.content
        assert client.get("/api/model").json()["attention_maps"] is True


def test_unknown_and_expired_results_are_404(tiny_captioner, tiny_bundle):
    settings = dataclasses.replace(FAST, result_ttl_s=0.5)
    with TestClient(create_app(tiny_captioner, tiny_bundle, settings)) as client:
        png = post(client, ("a.jpg", jpeg_bytes())).json()["results"][0]["png"]
        assert client.get(png).status_code == 200
        for bad in ("nope", "x" * 24, "..%2F..%2Fetc", "%2e%2e"):
            assert client.get(f"/api/results/{bad}/captioned.png").status_code == 404
        time.sleep(0.6)
        response = client.get(png)
        assert response.status_code == 404 and "expire" in response.json()["detail"]
        store = client.app.state.server.store
        assert list(store.folder.iterdir()) == []  # the expired upload and PNG are deleted


def test_oldest_results_make_room_under_the_byte_budget(tiny_captioner, tiny_bundle):
    photo = jpeg_bytes(size=(200, 150))
    settings = dataclasses.replace(FAST, max_stored_bytes=3 * len(photo))
    with TestClient(create_app(tiny_captioner, tiny_bundle, settings)) as client:
        pngs = [post(client, (f"{i}.jpg", photo)).json()["results"][0]["png"] for i in range(5)]
        store = client.app.state.server.store
        assert len(store) == 3 and store.stored_bytes <= 3 * len(photo)
        assert client.get(pngs[0]).status_code == 404 and client.get(pngs[-1]).status_code == 200


def test_shutdown_deletes_the_private_folder(tiny_captioner, tiny_bundle):
    with TestClient(create_app(tiny_captioner, tiny_bundle, FAST)) as client:
        assert post(client, ("a.jpg", jpeg_bytes())).status_code == 200
        state = client.app.state.server
        folder = state.store.folder
        assert folder.is_dir() and oct(folder.stat().st_mode)[-3:] == "700"
        assert not folder.is_relative_to(PROJECT_ROOT)
    assert not folder.exists()
    with pytest.raises(ServerStopping):
        state.batcher.submit([np.zeros((224, 224, 3), np.uint8)], 1)


# ---------------------------------------------------------------------------- batching


def test_requests_arriving_together_are_captioned_in_one_batch(tiny_bundle):
    encoder = HeldEncoder()
    app = create_app(colour_captioner(encoder), tiny_bundle, FAST)
    colours = ["red", "green", "blue", "green", "red", "blue", "blue", "red"]
    with TestClient(app) as client:
        state = app.state.server
        encoder.batch_sizes.clear()  # forget the warm-up
        encoder.entered.clear()
        encoder.gate.clear()  # hold the worker at its next batch
        answers: dict[int, list] = {}

        def ask(index: int) -> None:
            photo = jpeg_bytes(COLOURS[colours[index]])
            answers[index] = post(client, (f"{colours[index]}-{index}.jpg", photo)).json()["results"]

        first = threading.Thread(target=ask, args=(0,))
        first.start()
        assert encoder.entered.wait(30)  # request 0 is in the model; the rest must queue behind it
        others = [threading.Thread(target=ask, args=(i,)) for i in range(1, len(colours))]
        for thread in others:
            thread.start()
        deadline = time.monotonic() + 30
        while state.batcher.queued_images < len(others) and time.monotonic() < deadline:
            time.sleep(0.01)
        encoder.gate.set()
        for thread in [first, *others]:
            thread.join(60)
        stats = client.get("/healthz").json()
    assert encoder.batch_sizes == [1, len(others)]  # 8 requests, 2 model calls
    assert stats["requests"] == len(colours) and stats["batches"] == 2 and stats["requests_in_progress"] == 0
    assert stats["largest_batch"] == len(others)
    for index, colour in enumerate(colours):  # every request got its own photo's caption
        assert answers[index] == [{"image": f"{colour}-{index}.jpg", "caption": colour,
                                   "score": answers[index][0]["score"], "tags": None,
                                   "png": answers[index][0]["png"]}]


def test_concurrent_requests_on_the_real_model_match_one_at_a_time(tiny_captioner, tiny_bundle):
    # A wait long enough that requests released together surely meet, even on a loaded machine.
    settings = dataclasses.replace(FAST, batch_wait_ms=100.0)
    with TestClient(create_app(tiny_captioner, tiny_bundle, settings)) as client:
        _check_concurrent_match_alone(client)


def _check_concurrent_match_alone(client):
    photos = [(f"p{i}.jpg", jpeg_bytes(colour, size=(80 + 16 * i, 60))) for i, colour in
              enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (90, 90, 90), (10, 160, 160)])]
    alone = {name: post(client, (name, data)).json()["results"][0]["caption"] for name, data in photos}
    together: dict[str, str] = {}
    barrier = threading.Barrier(len(photos))

    def ask(name: str, data: bytes) -> None:
        barrier.wait()
        together[name] = post(client, (name, data)).json()["results"][0]["caption"]

    threads = [threading.Thread(target=ask, args=photo) for photo in photos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert together == alone
    stats = client.get("/healthz").json()
    assert stats["requests"] == 2 * len(photos)
    assert stats["batches"] < stats["requests"]  # some of the concurrent ones shared a batch


def test_a_failing_batch_fails_its_requests_only_and_the_server_carries_on(tiny_bundle):
    encoder = HeldEncoder()
    app = create_app(colour_captioner(encoder), tiny_bundle, FAST)
    with TestClient(app, raise_server_exceptions=False) as client:
        encoder.fail_next = True
        failed = post(client, ("red.jpg", jpeg_bytes(COLOURS["red"])))
        assert failed.status_code == 500
        assert "internal error (RuntimeError)" in failed.json()["detail"]
        ok = post(client, ("blue.jpg", jpeg_bytes(COLOURS["blue"])))
        assert ok.status_code == 200 and ok.json()["results"][0]["caption"] == "blue"
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["failed_batches"] == 1
        assert len(client.app.state.server.store) == 1  # the failed request's upload is gone


def test_batching_off_and_beam_sizes_kept_apart():
    encoder = HeldEncoder()
    captioner = colour_captioner(encoder)
    pixels = [np.full((16, 16, 3), COLOURS[c], np.uint8) for c in ("red", "green", "blue")]
    batcher = CaptionBatcher(captioner, max_images=1, wait_s=0.05)
    encoder.gate.clear()
    batcher.start()
    futures = [batcher.submit([p], 1) for p in pixels]
    encoder.gate.set()
    assert [f.result(10)[0].caption for f in futures] == ["red", "green", "blue"]
    assert encoder.batch_sizes == [1, 1, 1] and batcher.stats.batches == 3
    batcher.stop()

    encoder.batch_sizes.clear()
    batcher = CaptionBatcher(captioner, max_images=8, wait_s=0.05)
    encoder.gate.clear()
    batcher.start()
    futures = [batcher.submit([p], beam) for p, beam in zip(pixels, (1, 2, 1), strict=True)]
    futures.append(batcher.submit(pixels, 1))  # one request of three images
    encoder.gate.set()
    assert [r.caption for f in futures for r in f.result(10)] == ["red", "green", "blue", "red", "green", "blue"]
    assert sorted(encoder.batch_sizes) == [1, 5]  # beam 1 together (2 + 3 images), beam 2 alone
    batcher.stop()


def test_a_full_queue_answers_busy(tiny_bundle):
    encoder = HeldEncoder()
    settings = dataclasses.replace(FAST, max_queued_images=2)
    with TestClient(create_app(colour_captioner(encoder), tiny_bundle, settings)) as client:
        encoder.entered.clear()  # set by the warm-up
        encoder.gate.clear()
        holder = threading.Thread(target=post, args=(client, ("a.jpg", jpeg_bytes())))
        holder.start()
        assert encoder.entered.wait(30)
        queued = threading.Thread(target=post, args=(client, *[(f"{i}.jpg", jpeg_bytes()) for i in range(2)]))
        queued.start()
        deadline = time.monotonic() + 30
        while client.app.state.server.batcher.queued_images < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = post(client, ("late.jpg", jpeg_bytes()))
        encoder.gate.set()
        holder.join(30)
        queued.join(30)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert "busy" in busy.json()["detail"]
