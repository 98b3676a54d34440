"""The ``scst`` command: fine-tuning a bundle for CIDEr-D into a new bundle.

The learning itself (self-critical training teaches a weak decoder) is shown in
test_self_critical.py; here: the refusals (one line, before any work), and a whole run from a
trained bundle to a fine-tuned one that records what was done and captions.
"""

from __future__ import annotations

import json

import pytest

from captioning.bundles.combine import combine_bundles
from captioning.bundles.trained_photos import read_trained_photos
from captioning.cli.main import main
from tests.support.bundles import make_tiny_bundle


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("scst-members")
    members = [make_tiny_bundle(root / f"member-{seed}", kind="attention", seed=seed) for seed in (1, 2)]
    return combine_bundles(members, root / "pair")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_an_ensemble_is_fine_tuned_one_member_at_a_time(pair, capsys):
    assert main(["scst", "--model", str(pair)]) == 1
    err = _one_line_error(capsys)
    assert "ensemble of 2 decoders" in err and "--member 1 .. --member 2" in err and "`ensemble`" in err
    assert main(["scst", "--model", str(pair), "--member", "3"]) == 1
    assert "--member 3 is not one of them" in _one_line_error(capsys)
    assert not pair.with_name("pair-member-3-scst").exists()


def test_a_single_model_has_no_members_and_is_never_its_own_output(tiny_bundle, capsys):
    assert main(["scst", "--model", str(tiny_bundle), "--member", "2"]) == 1
    assert "one decoder (drop --member)" in _one_line_error(capsys)
    assert main(["scst", "--model", str(tiny_bundle), "--output", str(tiny_bundle)]) == 1
    assert "is the bundle being fine-tuned" in _one_line_error(capsys)


def test_one_sample_per_photo_has_no_baseline(tiny_bundle, capsys):
    assert main(["scst", "--model", str(tiny_bundle), "--samples", "1"]) == 1
    assert "at least 2 are needed" in _one_line_error(capsys)


def test_a_missing_model_is_one_line(tmp_path, capsys):
    assert main(["scst", "--model", str(tmp_path / "nowhere")]) == 1
    _one_line_error(capsys)


@pytest.mark.slow  # trains a tiny model on 30 photos, then fine-tunes it for an epoch
def test_train_selecting_by_cider_then_scst_gives_a_fine_tuned_bundle(tmp_path, capsys):
    from tests.support.shapes_dataset import write_shapes_dataset

    folder = write_shapes_dataset(tmp_path / "shapes", n_images=30, seed=4)
    trained = tmp_path / "trained"
    assert main(["train", "--dataset", str(folder), "--encoder", "efficientnet_lite0", "--encoder-weights", "none",
                 "--decoder", "attention", "--epochs", "2", "--batch-size", "16", "--min-count", "1",
                 "--embedding-dim", "8", "--units", "8", "--output", str(trained),
                 "--select-by", "val_cider", "--select-images", "4"]) == 0
    training = json.loads((trained / "config.json").read_text())["training"]
    assert training["select_by"] == "val_cider" and isinstance(training["best_val_cider"], float)
    assert "epochs are chosen by validation CIDEr-D on 2 photos (beam 1)" in capsys.readouterr().out
    before = {path.name: path.read_bytes() for path in trained.iterdir() if path.is_file()}

    assert main(["scst", "--model", str(trained), "--epochs", "1", "--samples", "3", "--batch-images", "8",
                 "--monitor-images", "4"]) == 0
    out = capsys.readouterr().out
    tuned = tmp_path / "trained-scst"
    assert out.startswith(f"model: {trained} (efficientnet_lite0 + attention")
    assert "before fine-tuning: validation CIDEr-D" in out and "epoch 1/1: training reward" in out
    assert f"bundle {tuned}" in out or f"{tuned} holds the starting weights" in out
    assert {path.name: path.read_bytes() for path in trained.iterdir() if path.is_file()} == before  # only read
    assert not (tuned / ".checkpoint").exists()

    saved = json.loads((tuned / "config.json").read_text())
    record = saved["fine_tuning"]
    assert record["epochs_run"] == 1 and record["samples_per_image"] == 3 and record["monitor_images"] == min(4, saved["dataset"]["val_images"])
    assert record["source"] == str(trained.resolve()) and record["best_epoch"] in (0, 1)
    assert saved["training"] == json.loads((trained / "config.json").read_text())["training"]
    # Fine-tuned on the same dataset and split: it has seen exactly the photos its source had.
    assert read_trained_photos(tuned) == read_trained_photos(trained) is not None
    history = json.loads((tuned / "history.json").read_text())
    assert len(history["self_critical"]["val_cider"]) == 1 and history["loss"]

    assert main(["info", "--model", str(tuned)]) == 0
    assert "fine-tuning: self-critical for CIDEr-D: 1 epochs, validation CIDEr-D" in capsys.readouterr().out
    photo = sorted((folder / "Images").iterdir())[0]
    assert main(["caption", str(photo), "--model", str(tuned), "--no-png"]) == 0
    assert capsys.readouterr().out.startswith(f"{photo}: ")
