"""Captioning without TensorFlow: a bundle's exported encoder and decoders run by LiteRT.

``load_exported(folder, bundle_config)`` gives an ``ExportedEncoder`` per encoder the bundle reads
(the ``captioner.ImageEncoder`` protocol: ``input_size``, ``encode(pixels, kind)`` -> float16
features, as ``encoders.Encoder``) and one step decoder per member (``initial_state``, ``step`` and, for attention, ``step_with_attention``:
the protocol of ``inference.search``), so beam search, ensembles and attention maps run unchanged.

A LiteRT interpreter must not be used by two threads at once; each thread gets its own
interpreters, made on its first call (a model loads in milliseconds: the file is memory-mapped).
They run ``config.LITERT_THREADS`` threads each; LiteRT's own default is one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from captioning import config
from captioning.bundles.exported import read_manifest
from captioning.bundles.schema import BundleConfig, EncoderSpec
from captioning.errors import ExportError
from captioning.native_logs import stderr_silenced

# LiteRT's C++ start-up notices ("Created TensorFlow Lite XNNPACK delegate") are noise to a user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Signatures:
    """The signature runners of one ``.tflite`` file, one interpreter per calling thread."""

    def __init__(self, path: Path, names: Sequence[str], threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.path, self.names, self.threads = path, tuple(names), threads
        self._interpreter_class = Interpreter
        self._local = threading.local()
        found = self._runners()  # loads it once here, so a broken file fails at load time
        missing = [name for name in self.names if name not in found]
        if missing:
            raise ExportError(f"{path}: no {missing[0]} signature; delete the folder and it is made again")

    def _runners(self) -> dict:
        runners = getattr(self._local, "runners", None)
        if runners is None:
            try:
                interpreter = self._interpreter_class(model_path=str(self.path), num_threads=self.threads)
                available = interpreter.get_signature_list()
                runners = {name: interpreter.get_signature_runner(name) for name in self.names if name in available}
            except (ValueError, RuntimeError, OSError) as error:
                raise ExportError(f"{self.path}: not a usable LiteRT model ({str(error).splitlines()[0][:120]}); "
                                  "delete the folder and it is made again") from None
            self._local.runners = runners
            self._local.interpreter = interpreter  # the runners need it alive
        return runners

    def __call__(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run signature ``name``; inputs are resized to each call's batch (the batch axis is open)."""
        return self._runners()[name](**inputs)


class ExportedEncoder:
    """The bundle's image encoder, exported: uint8 pixels -> float16 features (+ ImageNet logits).

    Attributes:
        name, weights_id: as the bundle records them (``encoders.Encoder``'s fields).
        input_size: input side in pixels.
        has_classifier: whether ``class_logits`` is available (EfficientNet-Lite with ImageNet weights).
    """

    def __init__(self, path: Path, spec: EncoderSpec, has_classifier: bool, threads: int = config.LITERT_THREADS):
        self.name, self.weights_id = spec.name, spec.weights_id
        self.input_size = config.ENCODER_SHAPES[spec.name].input_size
        self.has_classifier = has_classifier
        self._run = _Signatures(path, ["encode"], threads)

    def _outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        expected = (self.input_size, self.input_size, 3)
        pixels = np.asarray(pixels)
        if pixels.ndim != 4 or pixels.shape[1:] != expected or pixels.dtype != np.uint8:
            raise ValueError(f"{self.name} expects uint8 images of shape (B, {expected[0]}, {expected[1]}, 3), "
                             f"got {pixels.dtype} {pixels.shape}")
        return self._run("encode", pixels=np.ascontiguousarray(pixels))

    def encode(self, pixels: np.ndarray, kind: str) -> np.ndarray:
        """Features of a batch of images, as ``encoders.Encoder.encode``: float16 as the feature cache
        stores them, so the decoder sees the numbers it was trained on.

        Args:
            pixels: uint8 ``(B, input_size, input_size, 3)`` RGB.
            kind: ``"pooled"`` or ``"grid"``.

        Returns:
            float16 ``(B, D)`` or ``(B, g, g, D)``.
        """
        return self.encode_with_class_logits(pixels, kind)[0]

    def encode_with_class_logits(self, pixels: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Features as ``encode``, and the ImageNet classifier's logits from the same pass.

        Returns:
            ``(features float16, class_logits float32 (B, 1000) or None without a classifier)``.
            The logits are the classifier over the float32 pooled grid.
        """
        if kind not in config.FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {kind!r}: use one of {', '.join(config.FEATURE_KINDS)}")
        outputs = self._outputs(pixels)
        return outputs[kind].astype(np.float16), outputs.get("class_logits")


class ExportedAttentionStep:
    """An exported attention decoder; state ``(grid, projected, h, c)`` as ``models.attention``'s."""

    def __init__(self, path: Path, threads: int = config.LITERT_THREADS):
        self._run = _Signatures(path, ["initial", "step"], threads)

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        out = self._run("initial", features=np.asarray(features, dtype=np.float32))
        return out["grid"], out["projected"], out["h"], out["c"]

    def step_with_attention(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]):
        """``(log_probs (B, V), new_state, alpha (B, P))``."""
        grid, projected, h, c = state
        out = self._run("step", tokens=np.asarray(tokens, dtype=np.int32), grid=np.ascontiguousarray(grid),
                        projected=np.ascontiguousarray(projected), h=np.ascontiguousarray(h),
                        c=np.ascontiguousarray(c))
        return out["log_probs"], (grid, projected, out["next_h"], out["next_c"]), out["alpha"]

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        log_probs, state, _ = self.step_with_attention(tokens, state)
        return log_probs, state


class ExportedMergeStep:
    """An exported merge decoder; state ``(image, h, c)`` as ``models.merge``'s."""

    def __init__(self, path: Path, threads: int = config.LITERT_THREADS):
        self._run = _Signatures(path, ["initial", "step"], threads)

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        image = self._run("initial", features=np.asarray(features, dtype=np.float32))["image"]
        zeros = np.zeros_like(image)
        return image, zeros, zeros.copy()

    def step(self, tokens: np.ndarray, state: tuple[np.ndarray, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        image, h, c = state
        out = self._run("step", tokens=np.asarray(tokens, dtype=np.int32), image=np.ascontiguousarray(image),
                        h=np.ascontiguousarray(h), c=np.ascontiguousarray(c))
        return out["log_probs"], (image, out["next_h"], out["next_c"])


ExportedStep = ExportedAttentionStep | ExportedMergeStep


def load_exported(folder: Path, bundle_config: BundleConfig,
                  threads: int = config.LITERT_THREADS) -> tuple[list[ExportedEncoder], list[ExportedStep]]:
    """The exported encoders and decoders of a bundle, from an export folder already checked to fit
    it (``bundles.exported.find_export``).

    Returns:
        ``(encoders in bundle_config.encoders order, step decoders in member order)``;
        ``inference.encoder_set.assemble`` puts them together.

    Raises:
        ExportError: a file is not a usable LiteRT model.
    """
    manifest = read_manifest(folder)
    has_classifier = "class_logits" in manifest.encoder_outputs  # the first encoder's outputs
    encoders = [ExportedEncoder(folder / name, spec, has_classifier and number == 1, threads)
                for number, (name, spec) in enumerate(zip(manifest.encoders, bundle_config.encoders, strict=True), 1)]
    with stderr_silenced():
        # LiteRT announces its CPU delegate on a process's first model run, with no setting to
        # turn that line off; run the encoder once here, where nothing else is printing.
        first = encoders[0]
        first.encode(np.zeros((1, first.input_size, first.input_size, 3), np.uint8), "pooled")
    step_class = ExportedAttentionStep if manifest.decoder_kind == "attention" else ExportedMergeStep
    return encoders, [step_class(folder / name, threads) for name in manifest.members]


__all__ = ["ExportedAttentionStep", "ExportedEncoder", "ExportedMergeStep", "load_exported"]
