"""Normal runs print no TensorFlow log lines: no C++ ``E0000 ... oneDNN`` notice while training,
no Python ``WARNING:tensorflow`` retracing notice while evaluating an ensemble in several batches.

Each run is a fresh interpreter started as a user starts it (no ``TF_CPP_MIN_LOG_LEVEL`` set).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.shapes_dataset import write_shapes_dataset

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRY = str(PROJECT_ROOT / "image_captioning.py")
# absl's C++ lines ("E0000 00:00:...", "I0000 ...", "W0000 ..."), TensorFlow's Python logger, absl's notice.
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} |WARNING:tensorflow|WARNING: All log messages|retracing|oneDNN",
                         re.MULTILINE)


def _user_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ, CAPTIONING_MODELS_DIR=str(workdir / "models"),
               CAPTIONING_DATA_DIR=str(workdir / "data"))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the tests' own setting; a user has none
    return env


def test_a_tiny_training_run_prints_no_tensorflow_log_lines(tmp_path):
    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=24, seed=0)
    # merge: its masked LSTM is what made oneDNN log "E0000 ... DT_BOOL" on CPUs without AVX-512.
    done = subprocess.run([sys.executable, ENTRY, "train", "--dataset", str(dataset), "--decoder", "merge",
                           "--encoder-weights", "none", "--epochs", "1", "--min-count", "1",
                           "--embedding-dim", "8", "--units", "8", "--batch-size", "16"],
                          cwd=tmp_path, env=_user_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0].startswith("training: efficientnet_lite0 + merge decoder on dataset ")
    assert not TF_LOG_LINE.search(done.stderr), done.stderr[-2000:]


def test_evaluating_an_attention_ensemble_in_batches_of_several_sizes_prints_no_tensorflow_log_lines(tmp_path):
    from captioning.bundles.combine import combine_bundles
    from tests.support.bundles import make_tiny_bundle

    members = [make_tiny_bundle(tmp_path / f"member{seed}", kind="attention", seed=seed) for seed in range(3)]
    ensemble = combine_bundles(members, tmp_path / "ensemble")
    dataset = write_shapes_dataset(tmp_path / "shapes", n_images=5, seed=0)
    # Batches of 2, 2 and 1: each member meets two batch sizes (and more beam widths), which
    # retraced its step graphs until they had fixed signatures.
    code = textwrap.dedent(f"""
        from captioning import config
        config.EVALUATE_BATCH_SIZE = 2
        from captioning.cli.main import main
        raise SystemExit(main(["evaluate", "--model", {str(ensemble)!r}, "--dataset", {str(dataset)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=_user_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "evaluating 5 images" in done.stdout.splitlines()[1], done.stdout[:500]
    assert not TF_LOG_LINE.search(done.stderr), done.stderr[-2000:]
