"""``--dataset mini-coco`` for real: kagglehub's own client against a Kaggle stand-in on loopback.

The stand-in (tests/support/kaggle_stand_in.py) serves a small Mini-COCO-layout zip built from the real
COCO photos in ../shared/datasets/coco-mini. Every test runs in its own HOME, kagglehub cache and
credentials (``kaggle_home``), never the user's.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from captioning import config
from captioning.data.datasets import load_dataset
from captioning.data.mini_coco import download_failure
from captioning.errors import DatasetError
from tests.conftest import COCO_MINI, PROJECT_ROOT, require_dataset
from tests.support.kaggle_stand_in import KaggleStandIn

OWNER, SLUG = config.MINI_COCO_HANDLE.split("/")
VERSION = 3
PHOTOS = 30


def mini_coco_zip(source: Path, count: int) -> bytes:
    """A Mini-COCO archive (``captions.json`` in COCO format + ``Images/``) of ``count`` photos.

    Every 15th photo in name order, so both kinds in coco-mini (original COCO 2017 sizes and
    256x256 val2014) are in it.
    """
    coco = json.loads((source / "captions.json").read_text(encoding="utf-8"))
    images = sorted(coco["images"], key=lambda image: image["file_name"])[::15][:count]
    ids = {image["id"] for image in images}
    subset = dict(coco, images=images,
                  annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("captions.json", json.dumps(subset))
        for image in images:
            archive.write(source / "Images" / image["file_name"], f"Images/{image['file_name']}")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archive() -> bytes:
    return mini_coco_zip(require_dataset(COCO_MINI), PHOTOS)


@pytest.fixture
def kaggle(kaggle_home, archive, monkeypatch):
    """The stand-in serving Mini-COCO version 3, and kagglehub pointed at it (through ``http_proxy``)."""
    server = KaggleStandIn(OWNER, SLUG, VERSION, archive).start()
    _point_kagglehub_at(server.proxy_url, monkeypatch)
    yield server
    server.stop()


def _point_kagglehub_at(proxy_url: str, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")  # kagglesdk: http://localhost/api/v1/...
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy_url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "")
    for name in ("all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def dataset_cache(home: Path) -> Path:
    return home / "kagglehub-cache" / "datasets" / OWNER / SLUG


def write_kaggle_json(home: Path, username: str, key: str) -> None:
    folder = home / ".kaggle"
    folder.mkdir(exist_ok=True)
    (folder / "kaggle.json").write_text(json.dumps({"username": username, "key": key}))


def download_error() -> str:
    with pytest.raises(DatasetError) as caught:
        load_dataset(config.MINI_COCO_SOURCE)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"could not download Mini-COCO ({config.MINI_COCO_HANDLE}) from Kaggle: ")
    assert "--dataset PATH" in message
    return message


def assert_is_the_subset(dataset, home: Path) -> None:
    assert dataset.layout == "coco-json" and dataset.source == "mini-coco"
    assert dataset.root == (dataset_cache(home) / "versions" / str(VERSION)).resolve()
    assert len(dataset.images) == PHOTOS and dataset.num_captions == 5 * PHOTOS
    assert not dataset.problems.describe()
    for image in dataset.images[::7]:
        with Image.open(image.path) as photo:
            photo.verify()  # whole, readable JPEGs


def test_first_download_then_the_cache_is_reused(kaggle, kaggle_home):
    first = load_dataset(config.MINI_COCO_SOURCE)
    assert_is_the_subset(first, kaggle_home)
    assert [r.status for r in kaggle.archive_downloads] == [200]
    assert all(r.authorization == "" for r in kaggle.requests)  # no credentials: asked anonymously
    assert not (dataset_cache(kaggle_home) / f"{VERSION}.archive").exists()  # unpacked and removed

    kaggle.requests.clear()
    second = load_dataset(config.MINI_COCO_SOURCE)
    assert second.root == first.root and second.key == first.key
    assert kaggle.archive_downloads == [] and kaggle.calls("DownloadDataset") == []
    assert len(kaggle.calls("GetDataset")) == 1  # kagglehub still asks for the current version


def test_credentials_in_kaggle_json_are_sent(kaggle, kaggle_home):
    kaggle.credentials = ("someone", "right-key")
    write_kaggle_json(kaggle_home, "someone", "right-key")
    assert_is_the_subset(load_dataset(config.MINI_COCO_SOURCE), kaggle_home)
    api = kaggle.calls("GetDataset") + kaggle.calls("DownloadDataset")
    assert api and all(r.authorization.startswith("Basic ") for r in api)


def test_missing_credentials_say_how_to_make_a_token(kaggle, kaggle_home):
    kaggle.credentials = ("someone", "right-key")
    message = download_error()
    assert "Kaggle asks for an API token (HTTP 401) and none is set up" in message
    assert "https://www.kaggle.com/settings" in message
    assert "~/.kaggle/kaggle.json" in message and "KAGGLE_USERNAME and KAGGLE_KEY" in message
    assert kaggle.archive_downloads == []
    assert not (dataset_cache(kaggle_home) / "versions").exists()


def test_rejected_credentials_say_to_replace_the_token(kaggle, kaggle_home):
    kaggle.credentials = ("someone", "right-key")
    write_kaggle_json(kaggle_home, "someone", "old-key")
    message = download_error()
    assert "Kaggle rejected the API credentials (HTTP 401)" in message
    assert "create a new token" in message and "~/.kaggle/kaggle.json" in message
    assert kaggle.archive_downloads == []


def test_forbidden_dataset_says_to_accept_its_terms(kaggle, monkeypatch):
    kaggle.forbidden = True
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "right-key")
    message = download_error()
    assert "Kaggle refused this account access to the dataset (HTTP 403)" in message
    assert f"https://www.kaggle.com/datasets/{config.MINI_COCO_HANDLE}" in message
    assert "accept the dataset's terms" in message
    assert kaggle.archive_downloads == []


def test_forbidden_without_credentials_asks_for_a_token(kaggle):
    kaggle.forbidden = True
    assert "Kaggle asks for an API token (HTTP 403) and none is set up" in download_error()


def test_unknown_dataset_names_the_handle(kaggle, kaggle_home):
    kaggle.slug = "some-other-dataset"  # Kaggle knows a dataset, just not ours
    message = download_error()
    assert "Kaggle has no such dataset (HTTP 404" in message
    assert f"check https://www.kaggle.com/datasets/{config.MINI_COCO_HANDLE}" in message
    assert "MINI_COCO_HANDLE in captioning/config.py" in message
    assert [r.status for r in kaggle.requests] == [404]
    assert not dataset_cache(kaggle_home).exists()


def test_download_cut_midway_is_never_used_and_the_next_run_finishes_it(kaggle, kaggle_home):
    kaggle.cut_next_downloads = 1
    message = download_error()
    assert "the download was cut off midway" in message and "run the same command again" in message
    assert [r.status for r in kaggle.archive_downloads] == [-200]  # the stand-in cut it
    cache = dataset_cache(kaggle_home)
    partial = cache / f"{VERSION}.archive"
    assert 0 < partial.stat().st_size < len(kaggle.archive)  # kagglehub keeps the part it got...
    assert not (cache / "versions" / str(VERSION)).exists()  # ...and never unpacks it

    kaggle.requests.clear()
    assert_is_the_subset(load_dataset(config.MINI_COCO_SOURCE), kaggle_home)
    # Resumed where it stopped; the stand-in's MD5 (X-Goog-Hash) vouches for the joined file.
    resumed = [r for r in kaggle.archive_downloads if r.range]
    assert [r.status for r in resumed] == [206] and resumed[0].range != "bytes=0-"


def test_damaged_archive_says_which_folder_to_delete(kaggle, kaggle_home):
    # A full-size archive in kagglehub's cache that is not a zip (corrupted on the way or on disk):
    # kagglehub takes it as "already complete", without checking it, and fails to unpack it.
    cache = dataset_cache(kaggle_home)
    cache.mkdir(parents=True)
    garbage = bytes(range(1, 256)) * (len(kaggle.archive) // 255 + 1)  # zeros would be an empty tar
    (cache / f"{VERSION}.archive").write_bytes(garbage[: len(kaggle.archive)])
    message = download_error()
    assert f"the downloaded archive is damaged; delete {cache} and run again" in message
    assert "archive is damaged" in download_error()  # stuck on every run: hence the advice...
    shutil.rmtree(cache)
    assert_is_the_subset(load_dataset(config.MINI_COCO_SOURCE), kaggle_home)  # ...which works


def test_no_network_says_so(kaggle_home, monkeypatch):
    _point_kagglehub_at(f"http://127.0.0.1:{unused_port()}", monkeypatch)
    message = download_error()
    assert "no network connection to Kaggle; connect to the internet and run again" in message


def test_offline_uses_the_newest_complete_version_downloaded_before(kaggle, kaggle_home, monkeypatch):
    first = load_dataset(config.MINI_COCO_SOURCE)
    assert first.notes == []
    # An older complete version and a newer incomplete one (no completion marker) beside it.
    versions = dataset_cache(kaggle_home) / "versions"
    shutil.copytree(versions / str(VERSION), versions / "2")
    (dataset_cache(kaggle_home) / "2.complete").touch()
    shutil.copytree(versions / str(VERSION), versions / "7")
    _point_kagglehub_at(f"http://127.0.0.1:{unused_port()}", monkeypatch)
    offline = load_dataset(config.MINI_COCO_SOURCE)
    assert offline.root == first.root
    assert offline.notes == [f"Kaggle is unreachable (no network connection to Kaggle); using version "
                             f"{VERSION} of {config.MINI_COCO_HANDLE}, downloaded earlier to {first.root}"]


def test_unusable_kaggle_json_is_named_before_any_request(kaggle, kaggle_home):
    (kaggle_home / ".kaggle").mkdir()
    (kaggle_home / ".kaggle" / "kaggle.json").write_text('{"username": "someone"')
    message = download_error()
    assert "the Kaggle credentials cannot be used (Invalid Kaggle credentials file at" in message
    assert "replace it with a new token" in message
    assert kaggle.requests == []


def test_full_disk_names_the_cache_and_kagglehub_cache():
    reason, action = download_failure(OSError(errno.ENOSPC, "No space left on device"),
                                      config.MINI_COCO_HANDLE, True)
    assert reason.startswith("the disk holding kagglehub's cache (") and reason.endswith(") is full")
    assert "KAGGLEHUB_CACHE" in action


def unused_port() -> int:
    """A loopback port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_cli(*args: str, workdir: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``image_captioning.py`` as a user runs it, with this test's kagglehub environment."""
    env = dict(os.environ, CAPTIONING_DATA_DIR=str(workdir / "data"),
               CAPTIONING_MODELS_DIR=str(workdir / "saved_models"))
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "image_captioning.py"), *args],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_info_downloads_refuses_in_one_line_and_works_offline(kaggle, kaggle_home, tmp_path, monkeypatch):
    kaggle.credentials = ("someone", "right-key")
    refused = run_cli("info", "--dataset", "mini-coco", workdir=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: could not download Mini-COCO")
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "Kaggle asks for an API token" in refused.stderr

    write_kaggle_json(kaggle_home, "someone", "right-key")
    described = run_cli("info", "--dataset", "mini-coco", workdir=tmp_path)
    assert described.returncode == 0, described.stderr
    assert "dataset: mini-coco" in described.stdout
    assert f"images:             {PHOTOS}" in described.stdout
    assert len(kaggle.archive_downloads) == 1

    _point_kagglehub_at(f"http://127.0.0.1:{unused_port()}", monkeypatch)
    offline = run_cli("info", "--dataset", "mini-coco", workdir=tmp_path)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.startswith("dataset: mini-coco\n  note: Kaggle is unreachable")
    assert f"images:             {PHOTOS}" in offline.stdout


@pytest.mark.slow
def test_train_on_the_download_then_reuse_it(kaggle, kaggle_home, tmp_path):
    bundle = tmp_path / "bundle"
    trained = run_cli("train", "--dataset", "mini-coco", "--limit", str(PHOTOS), "--epochs", "1",
                      "--encoder", "efficientnet_lite0", "--output", str(bundle), workdir=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "Traceback" not in trained.stderr
    assert (bundle / "config.json").is_file() and (bundle / "vocab.json").is_file()
    recorded = json.loads((bundle / "config.json").read_text())
    assert "mini-coco" in json.dumps(recorded)
    assert len(kaggle.archive_downloads) == 1

    kaggle.requests.clear()
    again = run_cli("info", "--dataset", "mini-coco", workdir=tmp_path)
    assert again.returncode == 0, again.stderr
    assert kaggle.archive_downloads == []  # another process, the same cache
