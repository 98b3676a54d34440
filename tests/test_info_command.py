"""``info`` as a user runs it: a subprocess, exit codes, a summary and never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from captioning.bundles.store import read_bundle_config
from tests.support.datasets import make_flickr_csv, make_images

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_info(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "image_captioning.py", "info", *map(str, args)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


def test_info_summarises_a_dataset(tmp_path):
    result = run_info("--dataset", make_flickr_csv(tmp_path / "flickr"))
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in out + result.stderr
    assert "flickr-csv (captions.txt + Images/)" in out
    assert "images:             3" in out
    assert "captions:           4 usable of 7 read" in out
    assert "captions/image:     min 1, mean 1.33, max 2" in out
    assert "p50 " in out and "p99 " in out and ", max 6" in out
    assert "split (seed 1234):  train " in out
    assert "vocabulary:" in out and "max caption length:" in out
    for reason in ("1 captions whose image file is missing (e.g. missing.jpg)",
                   "1 images without a usable caption (e.g. lonely.jpg)",
                   "1 empty captions", "1 duplicate captions", "1 malformed rows"):
        assert reason in out


def test_info_unusable_dataset_exits_1_with_one_line(tmp_path):
    make_images(tmp_path / "Images", ["a.jpg"])
    (tmp_path / "captions.json").write_text('{"annotations": [')
    result = run_info("--dataset", tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "captions.json: invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_without_options_is_a_usage_error():
    result = run_info()
    assert result.returncode == 2
    assert "--dataset" in result.stderr and "--model" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_does_not_import_tensorflow(tmp_path):
    root = make_flickr_csv(tmp_path / "flickr")
    code = ("import sys; from captioning.cli.main import main; "
            f"status = main(['info', '--dataset', {str(root)!r}]); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'; "
            "sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_info_says_whether_the_model_captions_with_tags(tmp_path):
    import json
    import shutil

    result = run_info("--model", "saved_models/default")  # an EfficientNet-Lite with ImageNet weights
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    tags = next(line for line in lines if line.startswith("  tags: "))
    encoder = read_bundle_config(PROJECT_ROOT / "saved_models" / "default").encoder.name
    assert tags.startswith(f"  tags: on (the {encoder} encoder's own ImageNet classifier)")
    sayable = next(line for line in lines if "tag words are in this vocabulary:" in line)
    assert {"cat", "dog", "coffee", "cup", "camera"} <= set(sayable.split(": ", 1)[1].split(", "))
    # Words of ImageNet classes no training caption used (the mix added zebra, not penguin).
    assert any(line.startswith("    not in it (never added): ") and "penguin" in line for line in lines)
    # The same bundle recorded as resnet50 (whose Keras weights have no classifier): tags off.
    other = tmp_path / "resnet"
    shutil.copytree(PROJECT_ROOT / "saved_models" / "default", other,
                    ignore=shutil.ignore_patterns("*.h5", "*.png"))
    settings = json.loads((other / "config.json").read_text())
    settings["encoder"] = {"name": "resnet50", "weights_id": "imagenet"}
    settings["feature_shape"] = [7, 7, 2048]
    (other / "config.json").write_text(json.dumps(settings))
    result = run_info("--model", other)
    assert result.returncode == 0, result.stderr
    assert "  tags: off (the resnet50 encoder's weights have no ImageNet classifier)" in result.stdout.splitlines()


def test_a_reader_that_goes_away_is_not_a_traceback():
    # `info | head`: the pipe is closed before the command writes; it must stop without a traceback.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "image_captioning.py", "info", "--model", "saved_models/default"],
                             cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader is gone before the first line
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) != 0
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
