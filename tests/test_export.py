"""The exported (LiteRT) form of a bundle: written with the bundle, the same captions as TensorFlow,
used without importing TensorFlow, and never used once it no longer matches the bundle's weights.

Exporting converts a whole EfficientNet-Lite0 (~10 s), so one tiny attention bundle is saved with
its export for the module; the tests that remake an export pay for one each.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from captioning import config
from captioning.bundles import exported
from captioning.bundles.store import read_bundle_config
from captioning.data.images import load_image
from captioning.errors import ExportError
from captioning.inference.attention_weights import attention_for_tokens
from captioning.inference.captioner import Captioner
from tests.support.bundles import make_tiny_bundle

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((PROJECT_ROOT / "examples").glob("*.jpg"))


@pytest.fixture(scope="module")
def exported_bundle(tmp_path_factory) -> Path:
    """A tiny attention bundle (random weights) saved with its export, as ``train`` saves one."""
    return make_tiny_bundle(tmp_path_factory.mktemp("export") / "tiny-attention", kind="attention", export=True)


@pytest.fixture
def copied_bundle(exported_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(exported_bundle, tmp_path / "copy"))


def _pixels(size: int) -> np.ndarray:
    return np.stack([load_image(path, size) for path in EXAMPLES])


def test_saving_writes_an_export_that_fits_the_bundle(exported_bundle):
    folder = exported_bundle / config.EXPORT_FOLDER
    manifest = exported.read_manifest(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.tflite", "manifest.json", "member-1.tflite"]
    assert manifest.decoder_kind == "attention" and manifest.members == ("member-1.tflite",)
    assert manifest.encoder_outputs == ("grid", "pooled")  # random weights: no ImageNet classifier
    lookup = exported.find_export(exported_bundle, read_bundle_config(exported_bundle))
    assert lookup.folder == folder and lookup.reason is None
    assert not list(exported_bundle.parent.glob(".*new-*"))  # no staging folder left


def test_exported_decoder_gives_the_tensorflow_captions_and_attention(exported_bundle):
    lite = Captioner.load(exported_bundle, runtime="litert")
    reference = Captioner.load(exported_bundle, runtime="tensorflow")
    assert (lite.runtime, reference.runtime) == ("litert", "tensorflow")
    assert lite.path == reference.path == exported_bundle and lite.has_attention
    # A random-weights encoder is drawn anew by each TensorFlow load, so both decoders read the
    # same features here; the encoder's own round trip is the next test.
    features = lite.encode(_pixels(lite.encoder.input_size))
    for beam in (1, 3):
        assert ([h.tokens for h in lite.decode_features(features, beam)]
                == [h.tokens for h in reference.decode_features(features, beam)])
    state_lite = lite.step_decoder.initial_state(features)
    state_tf = reference.step_decoder.initial_state(features)
    tokens = np.full(len(features), 2, np.int32)
    log_lite, _, alpha_lite = lite.step_decoder.step_with_attention(tokens, state_lite)
    log_tf, _, alpha_tf = reference.step_decoder.step_with_attention(tokens, state_tf)
    np.testing.assert_allclose(log_lite, log_tf, atol=1e-4)
    np.testing.assert_allclose(alpha_lite, alpha_tf, atol=1e-5)
    best = lite.decode_features(features[:1], 3)[0].tokens
    np.testing.assert_allclose(attention_for_tokens(lite.step_decoder, features[:1], best),
                               attention_for_tokens(reference.step_decoder, features[:1], best), atol=1e-5)


def test_exported_encoder_gives_the_tensorflow_features_and_imagenet_logits():
    import keras

    from captioning.encoders import build_encoder
    from captioning.export import graphs, litert
    from captioning.inference.exported import ExportedEncoder

    keras.utils.set_random_seed(3)
    settings = read_bundle_config(PROJECT_ROOT / "saved_models" / "default")  # a real bundle's config
    encoder = build_encoder(settings.encoder.name, "none")  # its encoder, with random weights
    rng = np.random.default_rng(0)
    encoder.classifier = (rng.normal(0, 0.05, (1280, 1000)).astype(np.float32),
                          rng.normal(0, 0.1, 1000).astype(np.float32))
    functions = graphs.encoder_functions(encoder)
    pixels = _pixels(encoder.input_size)
    model = litert.convert(functions, float16_weights=False)
    litert.check(model, functions, {"encode": {"pixels": pixels[:2]}}, "the test encoder")  # raises if not
    path = Path(config.DATA_DIR) / "encoder.tflite"
    path.parent.mkdir(parents=True)
    path.write_bytes(model)
    lite = ExportedEncoder(path, settings.encoder, has_classifier=True, threads=2)
    grid, logits = lite.encode_with_class_logits(pixels, "grid")
    reference = encoder.encode(pixels, "grid").astype(np.float32)
    assert grid.dtype == np.float16 and grid.shape == reference.shape
    # Float32 arithmetic in another order: at most a float16 rounding step apart, rarely that.
    assert np.max(np.abs(grid.astype(np.float32) - reference)) <= 4e-3
    assert np.mean(grid.astype(np.float32) != reference) < 0.01
    pooled = encoder.encode(pixels, "pooled").astype(np.float32)
    np.testing.assert_allclose(lite.encode(pixels, "pooled").astype(np.float32), pooled, atol=4e-3)
    kernel, bias = encoder.classifier
    np.testing.assert_allclose(logits, pooled @ kernel + bias, atol=2e-2)


def test_a_converted_model_that_disagrees_with_tensorflow_is_refused():
    import tensorflow as tf

    from captioning.export import litert

    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32, name="x")])
    def double(x):
        return {"y": 2 * x}

    @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32, name="x")])
    def triple(x):
        return {"y": 3 * x}

    model = litert.convert({"f": double}, float16_weights=False)
    feed = {"f": {"x": np.ones((2, 3), np.float32)}}
    litert.check(model, {"f": double}, feed, "double")
    with pytest.raises(ExportError, match="differs from TensorFlow"):
        litert.check(model, {"f": triple}, feed, "double")


def test_caption_menu_api_use_the_export_without_importing_tensorflow(exported_bundle, tmp_path):
    photo = EXAMPLES[0]
    code = f"""
        import io, sys
        from captioning.cli.main import main
        from captioning.inference.captioner import Captioner

        assert main(["caption", "--no-png", "--model", {str(exported_bundle)!r}, {str(photo)!r}]) == 0
        captioner = Captioner.load({str(exported_bundle)!r})
        assert captioner.runtime == "litert", captioner.runtime
        print("api:", captioner.caption({str(photo)!r}).caption)
        from captioning.cli import menu
        # The menu: caption, our model (the shipped default is listed first), a photo, back, quit.
        sys.stdin = io.StringIO(f"2\\n2\\n{photo}\\nq\\n{{len(menu.STEPS)}}\\n")
        main([])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        assert not heavy, heavy[:5]
        assert "tensorflow" not in sys.modules
    """
    models = tmp_path / "saved_models"
    shutil.copytree(exported_bundle, models / "only")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "CAPTIONING_MODELS_DIR": str(models),
           "CAPTIONING_DATA_DIR": str(tmp_path / "data"), "CAPTIONING_EXPORT": "0"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    caption = done.stdout.split(f"{photo}: ", 1)[1].splitlines()[0]
    assert f"api: {caption}" in done.stdout
    assert done.stdout.count(caption) >= 3  # caption command, API and menu agree
    assert "XNNPACK" not in done.stderr and "Traceback" not in done.stderr


def test_a_stale_or_damaged_export_is_refused_and_remade(copied_bundle, exported_bundle, tmp_path):
    settings = read_bundle_config(copied_bundle)
    folder = copied_bundle / config.EXPORT_FOLDER
    digest = exported.source_digest(copied_bundle, settings)
    assert exported.problem(folder, digest, 1) is None
    # Damaged: one exported file changed.
    member = folder / "member-1.tflite"
    original = member.read_bytes()
    member.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert "not the file its manifest lists" in exported.problem(folder, digest, 1)
    member.write_bytes(original)
    # Stale: the bundle's weights replaced with another run's.
    other = make_tiny_bundle(tmp_path / "other", kind="attention", seed=7)
    shutil.copy(other / "model.weights.h5", copied_bundle / "model.weights.h5")
    lookup = exported.find_export(copied_bundle, settings)
    assert lookup.folder is None and "stale" in lookup.reason
    lines: list[str] = []
    captioner = Captioner.load(copied_bundle, runtime="litert", log=lines.append)
    assert any("not usable" in line and "stale" in line for line in lines), lines
    remade = exported.read_manifest(folder)
    assert remade.source_digest == exported.source_digest(copied_bundle, settings) != digest
    assert captioner.runtime == "litert"
    # The remade export computes the new weights: it agrees with TensorFlow on them.
    reference = Captioner.load(copied_bundle, runtime="tensorflow")
    features = captioner.encode(_pixels(captioner.encoder.input_size))
    state = captioner.step_decoder.initial_state(features)
    np.testing.assert_allclose(state[2], reference.step_decoder.initial_state(features)[2], atol=1e-5)
    assert not list(copied_bundle.glob(".exported*"))  # no temp folder left in the bundle
    assert sorted(p.name for p in copied_bundle.iterdir()) == sorted(p.name for p in exported_bundle.iterdir())


@pytest.mark.slow  # one more export (~10 s of CPU)
def test_a_bundle_that_cannot_be_written_keeps_its_export_in_the_cache(copied_bundle, monkeypatch):
    from captioning.export import first_use

    shutil.rmtree(copied_bundle / config.EXPORT_FOLDER)
    before = {p.name: p.stat().st_mtime_ns for p in copied_bundle.iterdir()}
    monkeypatch.setattr(first_use, "write_in_place", _refuse_bundle_folder(first_use.write_in_place, copied_bundle))
    lines: list[str] = []
    captioner = Captioner.load(copied_bundle, runtime="litert", log=lines.append)
    cached = exported.cache_export_folder(exported.source_digest(copied_bundle, read_bundle_config(copied_bundle)))
    assert cached.is_relative_to(config.DATA_DIR) and (cached / "manifest.json").is_file()
    assert any("cannot be written" in line and str(cached) in line for line in lines), lines
    assert {p.name: p.stat().st_mtime_ns for p in copied_bundle.iterdir()} == before  # the bundle untouched
    assert captioner.runtime == "litert"
    # Found there next time, without TensorFlow and without exporting again.
    assert exported.find_export(copied_bundle, read_bundle_config(copied_bundle)).folder == cached
    assert Captioner.load(copied_bundle, runtime="litert", log=lines.append).runtime == "litert"
    assert sum("Exporting" in line for line in lines) == 1


def _refuse_bundle_folder(write_in_place, bundle: Path):
    """``first_use.write_in_place`` as on a read-only bundle folder: writing inside it fails."""
    def write(target: Path, fill):
        if target.parent == bundle:
            raise PermissionError(errno.EROFS, "Read-only file system", str(target))
        return write_in_place(target, fill)

    return write


def test_a_manifest_that_is_not_one_is_refused(copied_bundle):
    folder = copied_bundle / config.EXPORT_FOLDER
    (folder / "manifest.json").write_text(json.dumps({"export_version": 1}))
    assert "not an export manifest" in exported.problem(folder, "x", 1)
    shutil.rmtree(folder)
    assert exported.problem(folder, "x", 1) == "no export"


@pytest.mark.slow
def test_shipped_model_captions_the_examples_as_tensorflow_does():
    """Token for token, greedy and beam 3; makes the shipped model's export first if it has none."""
    bundle = config.DEFAULT_BUNDLE_DIR
    lite = Captioner.load(bundle, runtime="litert")
    reference = Captioner.load(bundle, runtime="tensorflow")
    for beam in (1, 3):
        got = lite.caption_many(EXAMPLES, beam_size=beam)
        expected = reference.caption_many(EXAMPLES, beam_size=beam)
        assert [r.tokens for r in got] == [r.tokens for r in expected], beam
    assert lite.encoder.has_classifier  # the ImageNet logits the tags feature reads
