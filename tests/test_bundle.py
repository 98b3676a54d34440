"""Model bundles: round trip, atomic replacement, every refusal, and choosing the default model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from captioning import config
from captioning.bundles import default_model as model_choice
from captioning.bundles import store as bundle
from captioning.bundles.schema import FORMAT_VERSION, BundleConfig, EncoderSpec
from captioning.cli import main as cli
from captioning.cli import runtime
from captioning.data.text import Vocabulary
from captioning.errors import BundleError
from captioning.storage.output_folder import OutputFolderError

DECODER = config.DecoderConfig(kind="merge", embedding_dim=8, units=8, dropout=0.0)
FEATURE_DIM = config.ENCODER_SHAPES["efficientnet_lite0"].feature_dim  # a bundle's features fit its encoder
FEATURES = np.random.default_rng(0).normal(size=(2, FEATURE_DIM)).astype(np.float32)
TOKENS = np.array([[2, 4, 5, 3, 0], [2, 6, 3, 0, 0]], dtype=np.int32)


# Bundles store weights as float16: outputs match the float32 model to within that rounding,
# far closer than two differently initialised models.
FLOAT16_ATOL = 1e-2

def _vocab(extra=()):
    return Vocabulary(["<pad>", "<unk>", "<start>", "<end>", "a", "red", "circle", *extra])


def _save(target, vocab=None, seed=0, history=None):
    import keras

    from captioning.models import build_decoder

    vocab = vocab or _vocab()
    keras.utils.set_random_seed(seed)
    model = build_decoder(len(vocab), 6, (FEATURE_DIM,), DECODER)
    settings = BundleConfig(encoder=EncoderSpec(name="efficientnet_lite0", weights_id="none", random_weights=True),
                            decoder=DECODER, vocab_size=len(vocab), max_length=6, feature_shape=(FEATURE_DIM,))
    history = history or {"loss": [2.0, 1.5], "val_loss": [2.1, 1.8]}
    return bundle.save_bundle(target, model, vocab, settings, history), model


def _predict(model):
    return model.predict({"features": FEATURES, "tokens": TOKENS}, verbose=0)


def test_round_trip_gives_the_same_model(tmp_path):
    path, model = _save(tmp_path / "m")
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["config.json", "history.json", "loss_curve.png", "model.weights.h5", "vocab.json"])
    loaded = bundle.load_bundle(path)
    assert loaded.vocab == _vocab() and loaded.config.format_version == FORMAT_VERSION
    assert loaded.history["val_loss"] == [2.1, 1.8] and loaded.config.decoder == DECODER
    # Weights are stored as float16: exactly the originals rounded to float16, and the same outputs
    # to within that rounding.
    for stored, original in zip(loaded.model.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(stored, original.astype(np.float16).astype(np.float32))
    assert np.allclose(_predict(loaded.model), _predict(model), atol=FLOAT16_ATOL)
    assert loaded.config.weights_dtype == "float16"
    assert loaded.config.to_json() == json.loads((path / "config.json").read_text())  # one schema, both ways
    assert (path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_saved_weights_leave_out_the_optimizer(tmp_path):
    import h5py

    from captioning.training.fit import compile_model

    path, model = _save(tmp_path / "plain")
    compile_model(model, 1e-3)
    model.fit({"features": FEATURES, "tokens": TOKENS}, TOKENS, verbose=0)
    trained = bundle.save_bundle(tmp_path / "trained", model, _vocab(), bundle.read_bundle_config(path),
                                 {"loss": [1.0], "val_loss": [1.0]})
    with h5py.File(trained / "model.weights.h5") as weights:
        assert "optimizer" not in weights
    assert np.allclose(_predict(bundle.load_bundle(trained).model), _predict(model), atol=FLOAT16_ATOL)


def test_failed_save_leaves_the_previous_bundle_intact(tmp_path, monkeypatch):
    path, old_model = _save(tmp_path / "m", seed=0)
    (path / ".checkpoint").mkdir()
    (path / ".checkpoint" / "state.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}

    import captioning.render.loss_curve

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(captioning.render.loss_curve, "save_loss_curve", broken)
    with pytest.raises(OutputFolderError, match=r"could not write the model bundle .*m \(disk full \(simulated\)\); "
                                                r"what was there is unchanged$"):
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


def _config_only_bundle(path: Path, kind: str = "merge", members: int = 0, **extra) -> Path:
    """A folder with just the config.json that choosing a model reads (no weights: never loaded)."""
    path.mkdir(parents=True)
    grid = kind == "attention"
    data = {"format_version": 1, "encoder": {"name": "efficientnet_lite0", "weights_id": "imagenet"},
            "decoder": {"kind": kind}, "vocab_size": 10, "max_length": 8,
            "feature_shape": [7, 7, 1280] if grid else [1280], **extra}
    if members:
        data["ensemble"] = {"members": [{"source": f"m{n}"} for n in range(members)]}
    (path / "config.json").write_text(json.dumps(data))
    return path


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A stand-in for the shipped saved_models/default: a 3-member attention ensemble."""
    path = _config_only_bundle(tmp_path / "repo" / "default", kind="attention", members=3)
    monkeypatch.setattr(config, "DEFAULT_BUNDLE_DIR", path)
    return path


def test_a_newer_trained_bundle_does_not_become_the_default(tmp_path, shipped):
    # The attack from issue 15: a 2-epoch trial run used to become the model caption uses.
    older, _ = _save(config.MODELS_DIR / "older")
    newer, _ = _save(config.MODELS_DIR / "trial-2-epochs")
    _edit_config(older, created="2020-01-01T00:00:00+00:00")
    (config.MODELS_DIR / "not-a-bundle").mkdir()
    assert model_choice.default_model().path == shipped
    assert model_choice.default_model() == model_choice.ModelChoice(shipped, None)
    assert bundle.list_bundles() == [newer, older, shipped]
    assert model_choice.ordered_bundles() == ([shipped, newer, older], model_choice.ModelChoice(shipped))
    assert not model_choice.pointer_path().exists()


def test_the_chosen_default_is_used_listed_first_and_named(tmp_path, shipped, monkeypatch):
    monkeypatch.chdir(config.MODELS_DIR.parent)  # paths inside the current folder are shown relative
    chosen = _config_only_bundle(config.MODELS_DIR / "mine")
    newer = _config_only_bundle(config.MODELS_DIR / "newer", created="2999-01-01T00:00:00+00:00")
    pointer = model_choice.set_default(chosen, chosen_by="test")
    assert pointer == config.MODELS_DIR / config.DEFAULT_MODEL_POINTER
    stored = json.loads(pointer.read_text())
    assert stored["model"] == "mine" and stored["chosen_by"] == "test"  # by name: the folder may move
    assert model_choice.default_model().path == chosen
    assert model_choice.ordered_bundles()[0] == [chosen, newer, shipped]
    assert model_choice.model_line(chosen) == "model: saved_models/mine (efficientnet_lite0 + merge, your default)"
    assert model_choice.model_line(newer) == "model: saved_models/newer (efficientnet_lite0 + merge)"
    assert model_choice.model_line(shipped) == (f"model: {shipped} (efficientnet_lite0 + 3 x attention "
                                                "ensemble, shipped)")
    # Choosing the shipped model again removes the pointer.
    assert model_choice.set_default(shipped, chosen_by="test") is None and not pointer.exists()
    assert model_choice.model_line(shipped).endswith("ensemble, shipped default)")


def test_a_default_outside_the_models_folder_is_stored_by_absolute_path(tmp_path, shipped):
    elsewhere = _config_only_bundle(tmp_path / "elsewhere" / "model")
    pointer = model_choice.set_default(elsewhere, chosen_by="test")
    assert json.loads(pointer.read_text())["model"] == str(elsewhere.resolve())
    assert model_choice.choose_model(None).path == elsewhere.resolve()
    assert model_choice.choose_model(str(shipped)).path == shipped  # --model always wins


def test_a_chosen_default_that_is_gone_falls_back_to_the_shipped_one_with_a_note(shipped):
    gone = _config_only_bundle(config.MODELS_DIR / "deleted-later")
    model_choice.set_default(gone, chosen_by="test")
    (gone / "config.json").unlink()
    gone.rmdir()
    choice = model_choice.default_model()
    assert choice.path == shipped and model_choice.default_model().path == shipped
    assert "deleted-later" in choice.note and "is gone" in choice.note and "\n" not in choice.note
    assert "image_captioning.py default MODEL_DIR" in choice.note
    assert model_choice.pointer_path().exists()  # kept: the folder may only be unmounted for now


@pytest.mark.parametrize("content, reason", [
    (b"{not json", "Expecting property name"),
    (b"[" * 30_000 + b"]" * 30_000, "nested more than 64 levels"),  # a one-line note, no traceback
    (b"[\"saved_models/x\"]", 'no "model" path'),
    (b'{"model": 12}', 'no "model" path'),
    (b'{"model": ""}', 'no "model" path'),
    (b"\xff\xfe", "not UTF-8 text"),
    (b" " * (model_choice.POINTER_MAX_BYTES + 1), "over the 65.5 KB this tool reads"),
])
def test_an_unreadable_pointer_falls_back_with_a_one_line_note(shipped, content, reason):
    config.MODELS_DIR.mkdir(parents=True)
    model_choice.pointer_path().write_bytes(content)
    choice = model_choice.default_model()
    assert choice.path == shipped
    assert "is unreadable" in choice.note and reason in choice.note and "\n" not in choice.note


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_pointer_is_not_read(shipped):
    config.MODELS_DIR.mkdir(parents=True)
    os.mkfifo(model_choice.pointer_path())  # opening it for reading would block forever
    assert "not a regular file" in model_choice.default_model().note


def test_no_default_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_BUNDLE_DIR", tmp_path / "shipped-deleted")
    with pytest.raises(BundleError, match="no model bundle .*image_captioning.py train"):
        model_choice.default_model()
    _config_only_bundle(config.MODELS_DIR / "mine")
    with pytest.raises(BundleError, match="no default was chosen.*default MODEL_DIR.*found: mine"):
        model_choice.default_model()
    model_choice.set_default(config.MODELS_DIR / "mine", chosen_by="test")
    assert model_choice.default_model().path == config.MODELS_DIR / "mine"
    assert model_choice.ordered_bundles() == ([config.MODELS_DIR / "mine"],
                                              model_choice.ModelChoice(config.MODELS_DIR / "mine"))


def test_only_a_bundle_can_be_the_default(tmp_path, shipped):
    (tmp_path / "photos").mkdir()
    with pytest.raises(BundleError, match="photos.*config.json"):
        model_choice.set_default(tmp_path / "photos", chosen_by="test")
    assert not model_choice.pointer_path().exists()


def test_default_command_shows_sets_and_resets(tmp_path, shipped, capsys):
    mine = _config_only_bundle(config.MODELS_DIR / "mine")
    assert cli.main(["default"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("(efficientnet_lite0 + 3 x attention ensemble, "
                                                            "shipped default)")
    assert cli.main(["default", str(mine)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model: ") and lines[0].endswith("mine (efficientnet_lite0 + merge, your default)")
    assert "now use it when no --model is given" in lines[1]
    assert cli.main(["default", "--shipped"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("shipped default)")
    assert not model_choice.pointer_path().exists()
    assert cli.main(["default", str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_train_make_default_sets_the_default_only_when_asked_and_finished(tmp_path, shipped, monkeypatch,
                                                                          capsys):
    from captioning.training import pipeline as train_pipeline

    trained = _config_only_bundle(config.MODELS_DIR / "trial")
    outcome = {"interrupted": False}
    monkeypatch.setattr(train_pipeline, "train_model", lambda options, **_: train_pipeline.TrainResult(
        trained, 2.5, 2, {}, interrupted=outcome["interrupted"]))
    argv = ["train", "--dataset", str(tmp_path), "--output", str(trained)]
    assert cli.main(argv) == 0  # without --make-default the default stays the shipped one
    assert model_choice.default_model().path == shipped and "default" not in capsys.readouterr().out
    outcome["interrupted"] = True
    assert cli.main([*argv, "--make-default"]) == runtime.EXIT_INTERRUPTED
    assert model_choice.default_model().path == shipped
    assert "not made the default model" in capsys.readouterr().out
    outcome["interrupted"] = False
    assert cli.main([*argv, "--make-default"]) == 0
    assert model_choice.default_model().path == trained
    assert "is now the default model" in capsys.readouterr().out


def test_info_model_alone_describes_the_default_and_names_it_first(shipped, capsys):
    assert cli.main(["info", "--model"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model: ") and lines[0].endswith("shipped default)")
    assert lines[1] == f"model bundle: {shipped}"


def test_describe_bundle_summarises_it(tmp_path):
    path, _ = _save(tmp_path / "m")
    text = bundle.describe_bundle(path)
    assert "efficientnet_lite0" in text and "RANDOM WEIGHTS" in text and "merge" in text
    assert "best val loss 1.8000" in text and "7 words" in text
