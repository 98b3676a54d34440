"""``extract --shard I/N``: disjoint shares, merged by the cache into what one extraction gives."""

from __future__ import annotations

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

from captioning import config
from captioning.data.datasets import load_dataset
from captioning.features import cache as feature_cache
from captioning.features.extraction import extract_features
from captioning.features.sharding import Shard, ShardSpecError, parse_shard
from tests.support.encoders import tiny_encoder
from tests.test_features import load_all, photo_names, write_photos

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SUBPROCESS_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    write_photos(root, photo_names(11))
    (root / "Images" / "photo_005.jpg").write_bytes(b"not a jpeg")  # one failure, recorded like the rows
    return root


def test_shard_values_parse_or_fail_in_one_line():
    assert parse_shard("1/4") == Shard(1, 4) and parse_shard(" 0 / 1 ") == Shard(0, 1)
    for bad, says in [("2/2", "from 0 to 1"), ("1/0", "from 1 to"), ("a/b", "expected I/N"), ("1", "expected I/N"),
                      ("-1/2", "expected I/N"), ("1/2/3", "expected I/N"), ("0/99999", "from 1 to 10000")]:
        with pytest.raises(ShardSpecError) as raised:
            parse_shard(bad)
        assert says in str(raised.value) and "\n" not in str(raised.value)


def test_shares_are_disjoint_cover_everything_and_ignore_input_order():
    names = [f"img{i:02d}.jpg" for i in range(23)]
    shares = [Shard(i, 4).select(names[::-1], key=str) for i in range(4)]
    assert sorted(n for share in shares for n in share) == names
    assert {len(share) for share in shares} == {5, 6}
    assert shares[1] == names[1::4]


def snapshot(dataset, encoder):
    """What a cache holds, independent of row order: rows by image, signatures and failures."""
    directory = feature_cache.cache_dir(dataset.key, encoder.name, encoder.weights_id, "pooled")
    index = json.loads((directory / "index.json").read_text())
    failures = json.loads((directory / "failures.json").read_text())
    paths = sorted(index["rows"])
    rows = np.asarray(load_all(dataset, encoder, paths=[dataset.root / p for p in paths]))
    return paths, rows, index["signatures"], failures


def test_two_shares_give_the_same_cache_as_one_extraction(photos, encoder, tmp_path, monkeypatch):
    dataset = load_dataset(photos)
    monkeypatch.setattr(config, "FEATURE_CACHE_DIR", tmp_path / "one")
    single = extract_features(dataset, encoder, batch_size=4, progress=False)
    expected = snapshot(dataset, encoder)

    monkeypatch.setattr(config, "FEATURE_CACHE_DIR", tmp_path / "sharded")
    first = extract_features(dataset, encoder, batch_size=4, progress=False, shard=Shard(0, 2))
    second = extract_features(dataset, encoder, batch_size=4, progress=False, shard=Shard(1, 2))
    # Sorted, photo_000 .. photo_010: share 0 takes the even ones, share 1 the odd ones and the broken 005.
    assert (first.computed, second.computed) == (6, 4) and not first.unmerged and not second.unmerged
    assert sorted(first.failed + second.failed) == sorted(single.failed) and len(single.failed) == 1
    got = snapshot(dataset, encoder)
    assert got[0] == expected[0] and got[2:] == expected[2:]
    np.testing.assert_array_equal(got[1], expected[1])
    parts = tmp_path / "sharded"
    assert not list(parts.rglob("parts/*/shards/*")), "merged parts keep no rows"

    again = extract_features(dataset, encoder, batch_size=4, progress=False, shard=Shard(1, 2))
    assert (again.computed, again.reused, len(again.failed)) == (0, 4, 1)


def test_a_share_finished_while_the_cache_is_busy_is_merged_by_the_next_reader(photos, encoder, monkeypatch):
    dataset = load_dataset(photos)
    monkeypatch.setattr(config, "FEATURE_MERGE_WAIT_SECONDS", 0.0)
    extract_features(dataset, encoder, batch_size=4, progress=False, shard=Shard(0, 2))
    cache = feature_cache.FeatureCache.of(dataset, encoder.name, encoder.weights_id, "pooled")
    with cache.locked():  # another process writing the cache, as far as the second share can tell
        late = extract_features(dataset, encoder, batch_size=4, progress=False, shard=Shard(1, 2))
    assert late.unmerged and late.computed == 4
    assert len(cache.pending_parts()) == 1
    rows = load_all(dataset, encoder, paths=[i.path for i in dataset.images if i.path.name != "photo_005.jpg"])
    assert rows.shape == (10, 8) and not cache.pending_parts()


def test_bad_shard_on_the_command_line_is_one_line(photos, capsys):
    from captioning.cli.main import main

    assert main(["extract", "--dataset", str(photos), "--shard", "2/2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --shard 2/2: I must be from 0 to 1") and "\n" not in err


DRIVER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from captioning import config
    from captioning.data import images
    from captioning.data.datasets import load_dataset
    from captioning.features.extraction import extract_features
    from captioning.features.sharding import parse_shard
    from tests.support.encoders import tiny_encoder

    config.FEATURE_CACHE_DIR = Path(sys.argv[2])
    delay, real_load = float(sys.argv[4]), images.load_image

    def slow_load(path, size):  # stretch the run so both shares overlap and one can be killed midway
        time.sleep(delay)
        return real_load(path, size)

    images.load_image = slow_load
    report = extract_features(load_dataset(sys.argv[1]), tiny_encoder(), batch_size=4, progress=False,
                              shard=parse_shard(sys.argv[3]))
    print(json.dumps({{"computed": report.computed, "reused": report.reused, "unmerged": report.unmerged}}))
""")


@pytest.mark.slow  # three fresh TensorFlow processes: about 40 s on two shared cores
def test_concurrent_shares_and_a_killed_one_still_give_one_extractions_cache(tmp_path, encoder, monkeypatch):
    photos = tmp_path / "photos"
    write_photos(photos, photo_names(40))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(PROJECT_ROOT)))
    cache = tmp_path / "shared-cache"

    def start(share: str, delay: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(photos), str(cache), share, str(delay)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    def finish(process: subprocess.Popen) -> dict:
        try:
            out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"extraction did not finish in {SUBPROCESS_TIMEOUT_S} s") from None
        assert process.returncode == 0, err[-2000:]
        return json.loads(out.strip().splitlines()[-1])

    steady, victim = start("0/2", 0.05), start("1/2", 0.2)
    victim_shards = cache  # the victim's part folder, once it exists
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while not list(victim_shards.glob("*/*/pooled/parts/1-of-2/shards/*.json")):
        assert victim.poll() is None, f"share 1/2 ended early: {victim.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "share 1/2 committed no batch in time"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    first = finish(steady)
    assert first["computed"] == 20
    resumed = finish(start("1/2", 0.0))
    assert resumed["reused"] >= 4 and resumed["computed"] + resumed["reused"] == 20 and not resumed["unmerged"]

    dataset = load_dataset(photos)
    paths = sorted(image.path for image in dataset.images)
    monkeypatch.setattr(config, "FEATURE_CACHE_DIR", cache)
    sharded = np.array(load_all(dataset, encoder, paths=paths))
    assert not list(cache.rglob("parts/*/shards/*.json")) and not list(cache.rglob("pooled/shards/*.json"))
    monkeypatch.setattr(config, "FEATURE_CACHE_DIR", tmp_path / "one-cache")
    extract_features(dataset, encoder, batch_size=4, progress=False)
    np.testing.assert_array_equal(sharded, load_all(dataset, encoder, paths=paths))
