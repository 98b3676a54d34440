"""Model bundles: round trip, atomic replacement, every refusal, and finding the default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captioning import bundle, config
from captioning.errors import BundleError
from captioning.text import Vocabulary

DECODER = config.DecoderConfig(embedding_dim=8, units=8, dropout=0.0)
FEATURE_DIM = config.ENCODER_FEATURE_DIMS["efficientnet_lite0"]  # a bundle's features fit its encoder
FEATURES = np.random.default_rng(0).normal(size=(2, FEATURE_DIM)).astype(np.float32)
TOKENS = np.array([[2, 4, 5, 3, 0], [2, 6, 3, 0, 0]], dtype=np.int32)


# Bundles store weights as float16: outputs match the float32 model to within that rounding,
# far closer than two differently initialised models.
FLOAT16_ATOL = 1e-2

def _vocab(extra=()):
    return Vocabulary(["<pad>", "<unk>", "<start>", "<end>", "a", "red", "circle", *extra])


def _save(target, vocab=None, seed=0, history=None):
    import keras

    from captioning.decoder import build_training_model

    vocab = vocab or _vocab()
    keras.utils.set_random_seed(seed)
    model = build_training_model(len(vocab), 6, (FEATURE_DIM,), DECODER)
    settings = {"decoder": {**DECODER.__dict__}, "vocab_size": len(vocab), "max_length": 6,
                "feature_shape": [FEATURE_DIM], "encoder": {"name": "efficientnet_lite0", "weights_id": "none",
                                                  "random_weights": True}}
    history = history or {"loss": [2.0, 1.5], "val_loss": [2.1, 1.8]}
    return bundle.save_bundle(target, model, vocab, settings, history), model


def _predict(model):
    return model.predict({"features": FEATURES, "tokens": TOKENS}, verbose=0)


def test_round_trip_gives_the_same_model(tmp_path):
    path, model = _save(tmp_path / "m")
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["config.json", "history.json", "loss_curve.png", "model.weights.h5", "vocab.json"])
    loaded = bundle.load_bundle(path)
    assert loaded.vocab == _vocab() and loaded.config["format_version"] == bundle.FORMAT_VERSION
    assert loaded.history["val_loss"] == [2.1, 1.8] and loaded.decoder_config == DECODER
    # Weights are stored as float16: exactly the originals rounded to float16, and the same outputs
    # to within that rounding.
    for stored, original in zip(loaded.model.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(stored, original.astype(np.float16).astype(np.float32))
    assert np.allclose(_predict(loaded.model), _predict(model), atol=FLOAT16_ATOL)
    assert loaded.config["weights_dtype"] == "float16"
    assert (path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_saved_weights_leave_out_the_optimizer(tmp_path):
    import h5py

    from captioning.training import compile_model

    path, model = _save(tmp_path / "plain")
    compile_model(model, 1e-3)
    model.fit({"features": FEATURES, "tokens": TOKENS}, TOKENS, verbose=0)
    trained = bundle.save_bundle(tmp_path / "trained", model, _vocab(), json.loads(
        (path / "config.json").read_text()), {"loss": [1.0], "val_loss": [1.0]})
    with h5py.File(trained / "model.weights.h5") as weights:
        assert "optimizer" not in weights
    assert np.allclose(_predict(bundle.load_bundle(trained).model), _predict(model), atol=FLOAT16_ATOL)


def test_bundle_module_does_not_import_tensorflow():
    code = "import sys, captioning.bundle; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent).returncode == 0


def test_failed_save_leaves_the_previous_bundle_intact(tmp_path, monkeypatch):
    path, old_model = _save(tmp_path / "m", seed=0)
    (path / ".checkpoint").mkdir()
    (path / ".checkpoint" / "state.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}

    import captioning.plots

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(captioning.plots, "save_loss_curve", broken)
    with pytest.raises(OSError, match="simulated"):
        _save(tmp_path / "m", seed=1)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp folders left behind
    assert np.allclose(_predict(bundle.load_bundle(path).model), _predict(old_model), atol=FLOAT16_ATOL)


def test_replacing_a_bundle_keeps_the_training_checkpoint(tmp_path):
    path, old_model = _save(tmp_path / "m", seed=0)
    (path / ".checkpoint").mkdir()
    (path / ".checkpoint" / "state.json").write_text('{"epoch": 1}')
    _, new_model = _save(tmp_path / "m", seed=1)
    # The tolerance below tells the two models apart.
    assert not np.allclose(_predict(old_model), _predict(new_model), atol=FLOAT16_ATOL)
    assert (path / ".checkpoint" / "state.json").read_text() == '{"epoch": 1}'
    assert np.allclose(_predict(bundle.load_bundle(path).model), _predict(new_model), atol=FLOAT16_ATOL)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def _edit_config(path, **changes):
    data = json.loads((path / "config.json").read_text())
    data.update(changes)
    (path / "config.json").write_text(json.dumps(data))


def test_newer_format_version_is_refused(tmp_path):
    path, _ = _save(tmp_path / "m")
    _edit_config(path, format_version=bundle.FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match="newer than this tool supports"):
        bundle.load_bundle(path)
    with pytest.raises(BundleError, match="newer"):
        bundle.describe_bundle(path)


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "model.weights.h5", "history.json"])
def test_missing_file_is_refused(tmp_path, name):
    path, _ = _save(tmp_path / "m")
    (path / name).unlink()
    with pytest.raises(BundleError, match=f"{name}.*(missing|not found)"):
        bundle.load_bundle(path)


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "history.json"])
def test_unreadable_json_is_refused(tmp_path, name):
    path, _ = _save(tmp_path / "m")
    (path / name).write_text('{"format_version": 1,')
    with pytest.raises(BundleError, match=name):
        bundle.load_bundle(path)


def test_weights_that_do_not_fit_the_vocabulary_are_refused(tmp_path):
    path, _ = _save(tmp_path / "m")
    _vocab(extra=("blue", "square")).save(path / "vocab.json")
    _edit_config(path, vocab_size=9)  # consistent config + vocab, but the weights are for 7 words
    with pytest.raises(BundleError, match="weights do not fit"):
        bundle.load_bundle(path)


def test_vocabulary_from_another_run_is_refused(tmp_path):
    path, _ = _save(tmp_path / "m")
    _vocab(extra=("blue",)).save(path / "vocab.json")
    with pytest.raises(BundleError, match="8 words but the model was trained with 7"):
        bundle.load_bundle(path)


def test_not_a_folder_is_refused(tmp_path):
    with pytest.raises(BundleError, match="not a folder"):
        bundle.load_bundle(tmp_path / "nothing")


def test_find_default_bundle_prefers_the_newest_then_the_shipped_default(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_BUNDLE_DIR", tmp_path / "shipped")
    with pytest.raises(BundleError, match="image_captioning.py train"):
        bundle.find_default_bundle()
    _save(tmp_path / "shipped")
    assert bundle.find_default_bundle() == tmp_path / "shipped"
    older, _ = _save(config.MODELS_DIR / "older")
    newer, _ = _save(config.MODELS_DIR / "newer")
    _edit_config(older, created="2020-01-01T00:00:00+00:00")
    (config.MODELS_DIR / "not-a-bundle").mkdir()
    assert bundle.find_default_bundle() == newer
    assert bundle.list_bundles() == [newer, older, tmp_path / "shipped"]


def test_describe_bundle_summarises_it(tmp_path):
    path, _ = _save(tmp_path / "m")
    text = bundle.describe_bundle(path)
    assert "efficientnet_lite0" in text and "RANDOM WEIGHTS" in text and "merge" in text
    assert "best val loss 1.8000" in text and "7 words" in text
