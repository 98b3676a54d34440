"""Training across machines: TF_CONFIG checks, and two workers on loopback against one worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captioning.training.cluster import ClusterConfigError, read_cluster

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT_S = 300  # two fresh TensorFlow processes on two shared cores take about a minute
PORT_ATTEMPTS = 3


def tf_config(workers, task_type="worker", index=0, **cluster) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": {"worker": workers, **cluster},
                                     "task": {"type": task_type, "index": index}})}


def test_tf_config_names_this_task_and_the_chief():
    workers = ["10.0.0.1:2222", "10.0.0.2:2222", "[::1]:2223"]
    first = read_cluster(tf_config(workers, index=0))
    assert (first.task_type, first.task_index, first.num_workers, first.is_chief) == ("worker", 0, 3, True)
    assert first.name == "worker 0 of 3"
    assert not read_cluster(tf_config(workers, index=2)).is_chief
    # With a chief in the cluster, worker 0 is an ordinary worker (TensorFlow's rule).
    assert not read_cluster(tf_config(workers, index=0, chief=["10.0.0.9:2222"])).is_chief
    chief = read_cluster(tf_config(workers, "chief", 0, chief=["10.0.0.9:2222"]))
    assert chief.is_chief and chief.num_workers == 4 and chief.name == "chief of 4"


@pytest.mark.parametrize(("value", "says"), [
    (None, "needs the TF_CONFIG environment variable"),
    ("   ", "needs the TF_CONFIG environment variable"),
    ("{not json", "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}, "tasks": 1}', "unknown key 'tasks'"),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "'cluster' must map"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "'ps' is not used"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "'a' is not host:port"),
    ('{"cluster": {"worker": ["a:70000"]}, "task": {"type": "worker", "index": 0}}', "is not host:port"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}', "listed twice"),
    ('{"cluster": {"worker": ["a:1"]}}', "'task' must be an object"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 0}}', "'evaluator' is not in"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}', "from 0 to 1"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "whole number"),
    ('{"cluster": {"worker": ["a:1"], "chief": ["b:1", "c:1"]}, "task": {"type": "chief", "index": 0}}',
     "at most one 'chief'"),
])
def test_missing_or_malformed_tf_config_is_one_line_saying_what_to_set(value, says):
    with pytest.raises(ClusterConfigError) as raised:
        read_cluster({} if value is None else {"TF_CONFIG": value})
    message = str(raised.value)
    assert says in message and "\n" not in message and '"task": {"type": "worker", "index": 0}' in message


def test_train_multi_worker_without_tf_config_fails_before_any_work(tmp_path, monkeypatch, capsys):
    from captioning.cli.main import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    output = tmp_path / "bundle"
    assert main(["train", "--dataset", str(tmp_path / "nowhere"), "--strategy", "multi-worker",
                 "--output", str(output)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --strategy multi-worker needs the TF_CONFIG") and "\n" not in err
    assert not output.exists()


def free_ports(count: int) -> list[int]:
    """Ports free right now (the OS picks them); a race with another process is retried by the caller."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_run(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.support.multi_worker_run", *args], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **env})


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return -9, out, err + f"\n(killed after {WORKER_TIMEOUT_S} s)"
    return process.returncode, out, err


def run_two_workers(make_args, scratch: Path) -> list[tuple[int, str, str]]:
    """Both workers of a two-worker cluster on loopback, retried on fresh ports if one was taken."""
    for _attempt in range(PORT_ATTEMPTS):
        addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
        processes = [start_run(make_args(index), {**tf_config(addresses, index=index),
                                                  "TMPDIR": str(scratch / f"tmp-{index}")})
                     for index in range(2)]
        results = []
        for process in processes:
            results.append(finish(process))
            if results[-1][0] != 0:  # the other one would wait for its peer: stop it now
                for other in processes:
                    if other.poll() is None:
                        other.kill()
        if not any("address already in use" in err.lower() for _, _, err in results):
            return results
    return results


@pytest.mark.slow  # three fresh TensorFlow processes: about 1 to 2 minutes on two shared cores
def test_two_workers_on_loopback_take_the_same_step_as_one_worker(tmp_path):
    from captioning import config
    from captioning.data.datasets import load_dataset
    from captioning.features.extraction import extract_features
    from tests.support.encoders import tiny_encoder
    from tests.support.shapes_dataset import write_shapes_dataset

    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=24, seed=2)
    cache = tmp_path / "shared-cache"  # the folder the hosts would share
    config.FEATURE_CACHE_DIR = cache
    extract_features(load_dataset(dataset), tiny_encoder(), progress=False)
    users_folder = tmp_path / "worker-1-host" / "notes"  # what worker 1's --output names on its host
    users_folder.mkdir(parents=True)
    (users_folder / "notes.txt").write_text("mine")
    for index in range(2):
        (tmp_path / f"tmp-{index}").mkdir()

    shared_output = tmp_path / "shared" / "model"
    runs = run_two_workers(lambda index: [str(dataset), str(cache),
                                          str(shared_output if index == 0 else users_folder),
                                          "multi-worker", str(tmp_path / f"worker-{index}.npz")], tmp_path)
    for index, (code, _out, err) in enumerate(runs):
        assert code == 0, f"worker {index}: {err[-3000:]}"
    assert "RESULT 1 " + str(shared_output) in runs[0][1] and "RESULT 1 None" in runs[1][1]
    assert "training on 2 devices" in runs[0][1]

    single = start_run([str(dataset), str(cache), str(tmp_path / "single"), "default",
                        str(tmp_path / "single.npz")], {})
    code, out, err = finish(single)
    assert code == 0, err[-3000:]

    # The chief wrote the bundle; worker 1 wrote nothing of the user's, and removed its scratch.
    assert (shared_output / "config.json").is_file() and not (shared_output / ".checkpoint").exists()
    assert sorted(p.name for p in users_folder.iterdir()) == ["notes.txt"]
    assert list((tmp_path / "tmp-1").iterdir()) == []
    chief, worker, alone = (np.load(tmp_path / f"{name}.npz") for name in ("worker-0", "worker-1", "single"))
    assert [k for k in alone.files if k.startswith("initial")] == [f"initial_{i}" for i in range(len(alone.files) // 2)]
    for key in alone.files:
        np.testing.assert_array_equal(chief[key], worker[key])  # the replicas stay in sync
        # One step of Adam from the same initial weights on the same global batch: the same weights,
        # up to float32 summation order in the all-reduce.
        np.testing.assert_allclose(chief[key], alone[key], rtol=1e-5, atol=1e-6)
    moved = [np.abs(alone[f"trained_{i}"] - alone[f"initial_{i}"]).max() for i in range(len(alone.files) // 2)]
    assert min(moved) > 1e-3, "every weight took a real step (Adam moves each by about the learning rate)"


def test_caption_loss_on_one_device_is_keras_masked_mean_cross_entropy():
    keras = pytest.importorskip("keras")
    from captioning.models import caption_loss

    rng = np.random.default_rng(0)
    targets = rng.integers(1, 12, size=(6, 9)).astype(np.int32)
    targets[:, 5:] = 0  # padding
    targets[2, 2:] = 0
    logits = rng.normal(size=(6, 9, 12)).astype(np.float32)
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)(targets, logits)
    ours = caption_loss()(targets, logits)
    np.testing.assert_allclose(float(ours), float(reference), rtol=1e-6)
    half_padded = np.concatenate([targets, np.zeros_like(targets)])  # more padding: the same mean
    np.testing.assert_allclose(float(caption_loss()(half_padded, np.concatenate([logits, logits]))),
                               float(reference), rtol=1e-6)
