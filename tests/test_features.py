"""Feature extraction and its on-disk cache: reuse, resume after a kill, corrupt images, full disks.

Most tests use a tiny deterministic Keras encoder (same fields as ``encoders.Encoder``) so the
whole pipeline runs in seconds; one CLI test and the slow real-data test use efficientnet_lite0.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import config
from captioning.data.datasets import load_dataset
from captioning.errors import FeatureCacheError
from captioning.features import cache as feature_cache
from captioning.features import extraction as features
from captioning.features.cache import load_features
from captioning.features.extraction import encode_paths, extract_features
from captioning.storage import disk_space
from tests.support.encoders import tiny_encoder

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TINY_SIZE = 28


def write_photos(root: Path, names, seed: int = 0) -> list[Path]:
    """Small random-colour JPEGs in ``root/Images`` plus a Flickr-style ``captions.txt``."""
    images = root / "Images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        pixels = rng.integers(0, 256, (20 + len(paths) % 7, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / name, quality=95)
        paths.append(images / name)
    captions = ["image,caption"] + [f"{p.name},a photo of thing {i}" for i, p in
                                    enumerate(sorted(images.glob("*.jpg")))]
    (root / "captions.txt").write_text("\n".join(captions) + "\n")
    return paths


def photo_names(count: int, start: int = 0) -> list[str]:
    return [f"photo_{i:03d}.jpg" for i in range(start, start + count)]


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    write_photos(root, photo_names(10))
    return root


def cached_dir(dataset, encoder, kind="pooled") -> Path:
    return feature_cache.cache_dir(dataset.key, encoder.name, encoder.weights_id, kind)


def load_all(dataset, encoder, kind="pooled", paths=None):
    paths = paths if paths is not None else [image.path for image in dataset.images]
    return load_features(dataset, encoder.name, encoder.weights_id, kind, paths)


def test_extract_then_load_matches_the_model_on_the_shared_loader(photos, encoder):
    from captioning.data.images import load_image

    dataset = load_dataset(photos)
    report = extract_features(dataset, encoder, batch_size=4, progress=False)
    assert (report.computed, report.reused, report.failed) == (10, 0, [])
    assert report.images_per_second > 0

    cached = load_all(dataset, encoder)
    paths = [image.path for image in dataset.images]
    pixels = np.stack([load_image(p, TINY_SIZE) for p in paths]).astype(np.float32)
    expected = encoder.pooled_model.predict(pixels, verbose=0)
    assert cached.dtype == np.float16 and cached.shape == (10, 8)
    np.testing.assert_allclose(cached, expected, rtol=2e-3, atol=1e-3)
    assert np.ptp(cached, axis=0).max() > 0, "different photos must get different vectors"

    reversed_rows = load_all(dataset, encoder, paths=paths[::-1])
    np.testing.assert_array_equal(reversed_rows, cached[::-1])
    in_memory, failures = encode_paths(encoder, paths, "pooled", batch_size=3)
    assert failures == []
    np.testing.assert_array_equal(in_memory, cached)


def test_complete_cache_second_run_computes_nothing(photos, encoder, monkeypatch):
    dataset = load_dataset(photos)
    extract_features(dataset, encoder, batch_size=4, progress=False)
    first = np.array(load_all(dataset, encoder))

    def no_pipeline(*args, **kwargs):
        raise AssertionError("the pipeline ran over a complete cache")

    monkeypatch.setattr(features, "_run_pipeline", no_pipeline)
    start = time.perf_counter()
    report = extract_features(dataset, encoder, batch_size=4, progress=False)
    assert (report.computed, report.reused, report.images_per_second) == (0, 10, 0.0)
    assert time.perf_counter() - start < 2
    np.testing.assert_array_equal(load_all(dataset, encoder), first)


def test_new_and_changed_images_are_the_only_ones_recomputed(photos, encoder):
    dataset = load_dataset(photos)
    extract_features(dataset, encoder, batch_size=4, progress=False)
    before = {image.path.name: np.array(row) for image, row in zip(dataset.images, load_all(dataset, encoder), strict=True)}

    write_photos(photos, photo_names(3, start=10), seed=1)
    changed = photos / "Images" / "photo_000.jpg"
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a later mtime, whatever the clock
    dataset = load_dataset(photos)
    report = extract_features(dataset, encoder, batch_size=4, progress=False)
    assert (report.computed, report.reused) == (4, 9)

    after = {image.path.name: row for image, row in zip(dataset.images, load_all(dataset, encoder), strict=True)}
    assert len(after) == 13
    for name, row in before.items():
        if name != "photo_000.jpg":
            np.testing.assert_array_equal(after[name], row)
    assert not np.array_equal(after["photo_000.jpg"], before["photo_000.jpg"])


def test_corrupt_image_is_listed_skipped_and_retried_only_when_it_changes(photos, encoder):
    broken = photos / "Images" / "photo_004.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    dataset = load_dataset(photos)
    report = extract_features(dataset, encoder, batch_size=4, progress=False)
    assert report.computed == 9
    assert [path for path, _ in report.failed] == [broken]
    assert "photo_004.jpg" in report.failed[0][1]

    good = [image.path for image in dataset.images if image.path != broken]
    assert load_all(dataset, encoder, paths=good).shape == (9, 8)
    with pytest.raises(FeatureCacheError, match="photo_004.jpg"):
        load_all(dataset, encoder)

    again = extract_features(dataset, encoder, batch_size=4, progress=False)
    assert (again.computed, again.reused, len(again.failed)) == (0, 9, 1)

    write_photos(photos, ["photo_004.jpg"], seed=5)
    fixed = extract_features(dataset, encoder, batch_size=4, progress=False)
    assert (fixed.computed, fixed.reused, fixed.failed) == (1, 9, [])
    assert load_all(dataset, encoder).shape == (10, 8)


def test_encode_paths_reports_unreadable_files_and_keeps_the_others_in_order(photos, encoder, tmp_path):
    missing = tmp_path / "nope.jpg"
    paths = sorted((photos / "Images").glob("*.jpg"))[:3]
    features_, failures = encode_paths(encoder, [paths[0], missing, paths[1], paths[2]], "grid", 2)
    assert features_.shape == (3, 7, 7, 8) and features_.dtype == np.float16
    assert failures == [(missing, failures[0][1])] and "not found" in failures[0][1]
    alone, _ = encode_paths(encoder, [paths[2]], "grid", 2)
    np.testing.assert_array_equal(features_[2], alone[0])


def test_grid_kind_is_stored_on_its_own_and_averages_to_pooled(photos, encoder):
    dataset = load_dataset(photos)
    report = extract_features(dataset, encoder, kind="grid", batch_size=4, progress=False)
    assert report.computed == 10
    assert not cached_dir(dataset, encoder, "pooled").exists(), "only the kind asked for is computed"
    grid = load_all(dataset, encoder, "grid")
    assert grid.shape == (10, 7, 7, 8)
    extract_features(dataset, encoder, kind="pooled", batch_size=4, progress=False)
    pooled = load_all(dataset, encoder, "pooled")
    np.testing.assert_allclose(grid.astype(np.float32).mean(axis=(1, 2)), pooled, rtol=1e-2, atol=1e-2)


def test_a_9x9_grid_round_trips_through_the_cache_and_resumes(photos):
    """A grid other than 7x7 (EfficientNet-Lite2's 9x9): rows keep their shape through shards,
    consolidation, the memmap and a resumed run; a cache of another grid size is refused."""
    from captioning.data.images import load_image

    encoder = tiny_encoder(grid_size=9, name="tiny9")
    dataset = load_dataset(photos)
    paths = [image.path for image in dataset.images]
    first = extract_features(dataset, encoder, kind="grid", image_paths=paths[:6], batch_size=4,
                             progress=False)
    assert first.computed == 6
    rest = extract_features(dataset, encoder, kind="grid", batch_size=4, progress=False)
    assert (rest.computed, rest.reused) == (4, 6)
    grid = load_all(dataset, encoder, "grid")
    assert grid.shape == (10, 9, 9, 8) and grid.dtype == np.float16
    pixels = np.stack([load_image(p, encoder.input_size) for p in paths]).astype(np.float32)
    np.testing.assert_allclose(grid, encoder.model.predict(pixels, verbose=0), rtol=2e-3, atol=1e-3)
    index = json.loads((cached_dir(dataset, encoder, "grid") / "index.json").read_text())
    assert index["row_shape"] == [9, 9, 8]
    memmap, rows = feature_cache.open_features(dataset, encoder.name, encoder.weights_id, "grid", paths[::-1])
    np.testing.assert_array_equal(memmap[rows], grid[::-1])
    in_memory, _ = encode_paths(encoder, paths[:2], "grid")
    np.testing.assert_array_equal(in_memory, grid[:2])

    seven = tiny_encoder(grid_size=7, name="tiny9")  # same cache folder, other grid
    with pytest.raises(FeatureCacheError, match=r"holds rows of shape \(9, 9, 8\), the encoder gives "
                                                r"\(7, 7, 8\); delete that folder"):
        extract_features(dataset, seven, kind="grid", batch_size=4, progress=False)


def test_failed_shard_write_leaves_the_cache_loadable_and_resumable(photos, encoder, monkeypatch):
    dataset = load_dataset(photos)
    extract_features(dataset, encoder, batch_size=4, progress=False)
    first = np.array(load_all(dataset, encoder))
    write_photos(photos, photo_names(12, start=10), seed=2)
    dataset = load_dataset(photos)

    real_save, calls = np.save, []

    def save_then_fill_the_disk(handle, array, allow_pickle=False):
        calls.append(len(array))
        if len(calls) == 2:  # the second shard dies half-written
            handle.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(handle, array, allow_pickle=allow_pickle)

    monkeypatch.setattr(feature_cache.np, "save", save_then_fill_the_disk)
    with pytest.raises(FeatureCacheError, match="disk is full"):
        extract_features(dataset, encoder, batch_size=4, progress=False)
    monkeypatch.setattr(feature_cache.np, "save", real_save)

    folder = cached_dir(dataset, encoder)
    assert not list(folder.rglob("*.tmp")), "the half-written temp file is removed"
    old_paths = [image.path for image in dataset.images if int(image.path.stem[-3:]) < 10]
    np.testing.assert_array_equal(load_all(dataset, encoder, paths=old_paths), first)

    report = extract_features(dataset, encoder, batch_size=4, progress=False)
    assert (report.computed, report.reused) == (8, 14), "the one committed new shard is reused"
    assert load_all(dataset, encoder).shape == (22, 8)


def test_not_enough_disk_space_is_refused_before_writing(photos, encoder, monkeypatch):
    dataset = load_dataset(photos)
    usage = disk_space.shutil.disk_usage(PROJECT_ROOT)
    monkeypatch.setattr(disk_space.shutil, "disk_usage",
                        lambda path: usage._replace(free=100))
    with pytest.raises(FeatureCacheError, match="not enough disk space"):
        extract_features(dataset, encoder, kind="grid", batch_size=4, progress=False)
    assert not list(cached_dir(dataset, encoder, "grid").rglob("*.npy"))


def test_missing_cache_names_the_images_and_the_command(photos, encoder):
    dataset = load_dataset(photos)
    with pytest.raises(FeatureCacheError, match=r"10 of 10 images .*photo_000.jpg.*extract"):
        load_all(dataset, encoder)


DRIVER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from captioning import config
    from captioning.data import images
    from captioning.data.datasets import load_dataset
    from captioning.features.extraction import extract_features
    from tests.support.encoders import tiny_encoder

    config.FEATURE_CACHE_DIR = Path(sys.argv[2])
    delay, real_load = float(sys.argv[3]), images.load_image

    def slow_load(path, size):  # stretch the run so the test can kill it midway
        time.sleep(delay)
        return real_load(path, size)

    images.load_image = slow_load
    report = extract_features(load_dataset(sys.argv[1]), tiny_encoder(), batch_size=4, progress=False)
    print(json.dumps({{"computed": report.computed, "reused": report.reused}}))
""")


def run_driver(script: Path, photos: Path, cache: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(photos), str(cache), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=PROJECT_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_sigkilled_extraction_resumes_to_the_same_cache(tmp_path, encoder, monkeypatch):
    photos = tmp_path / "photos"
    write_photos(photos, photo_names(60))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(PROJECT_ROOT)))
    cache = tmp_path / "killed-cache"

    victim = run_driver(script, photos, cache, delay=0.1)
    shard_dir = next_shard_dir(cache, victim)
    deadline = time.monotonic() + 60
    while len(list(shard_dir.glob("*.json"))) < 2:
        assert victim.poll() is None, f"driver ended early: {victim.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no shard written within 60 s"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    committed = len(list(shard_dir.glob("*.json")))
    assert 2 <= committed < 15 and not (shard_dir.parent / "index.json").exists()

    resumed = run_driver(script, photos, cache, delay=0)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-2000:]
    counts = json.loads(out.strip().splitlines()[-1])
    assert counts["reused"] >= 4 * committed and counts["computed"] + counts["reused"] == 60

    dataset = load_dataset(photos)
    paths = [image.path for image in dataset.images]
    monkeypatch.setattr(config, "FEATURE_CACHE_DIR", cache)
    resumed_rows = np.array(load_all(dataset, encoder, paths=paths))
    monkeypatch.setattr(config, "FEATURE_CACHE_DIR", tmp_path / "clean-cache")
    extract_features(dataset, encoder, batch_size=4, progress=False)
    np.testing.assert_array_equal(resumed_rows, load_all(dataset, encoder, paths=paths))
    assert not list(cache.rglob("shards/*.npy")), "merged shards are removed"


def next_shard_dir(cache: Path, victim: subprocess.Popen) -> Path:
    """The killed run's shard folder (created once the driver has built its cache path)."""
    deadline = time.monotonic() + 60
    while True:
        found = list(cache.glob("*/*/pooled/shards"))
        if found:
            return found[0]
        assert victim.poll() is None, f"driver ended early: {victim.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the driver never created its cache folder"
        time.sleep(0.05)


def test_extract_command_with_efficientnet_lite0(photos, capsys):
    from captioning.cli.main import main

    assert main(["extract", "--dataset", str(photos), "--encoder", "efficientnet_lite0",
                 "--limit", "6", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "computed 6" in out and "images/s" in out
    assert main(["extract", "--dataset", str(photos), "--encoder", "efficientnet_lite0",
                 "--limit", "6", "--grid"]) == 0
    dataset = load_dataset(photos)
    paths = [image.path for image in dataset.images[:6]]
    grid = load_features(dataset, "efficientnet_lite0", "imagenet", "grid", paths)
    pooled = load_features(dataset, "efficientnet_lite0", "imagenet", "pooled", paths)
    assert grid.shape == (6, 7, 7, 1280) and pooled.shape == (6, 1280)
    np.testing.assert_allclose(grid.astype(np.float32).mean(axis=(1, 2)), pooled, atol=2e-2)


@pytest.mark.slow
def test_coco_mini_with_efficientnet_lite0(coco_mini):
    from captioning.encoders import build_encoder

    dataset = load_dataset(coco_mini)
    encoder = build_encoder("efficientnet_lite0", "imagenet")
    report = extract_features(dataset, encoder, batch_size=32, progress=False)
    assert (report.computed, report.failed) == (442, [])
    rows = load_all(dataset, encoder)
    assert rows.shape == (442, 1280)
    assert np.isfinite(rows.astype(np.float32)).all()
    assert not np.allclose(rows[0], rows[1], atol=1e-2), "two different photos, two different vectors"
    assert extract_features(dataset, encoder, progress=False).reused == 442
