"""Write a bundle's export folder: ``encoder.tflite`` (and ``encoder-<n>.tflite`` for each further
encoder of an ensemble that mixes encoders), ``member-<n>.tflite`` per decoder, ``manifest.json``.

Made from the weights *as the bundle stores them* (float16), so the exported decoders compute what
the TensorFlow path computes from the same files. Each model is checked against TensorFlow before
it is written (``litert.check``); the manifest, written last, marks the folder complete.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from captioning.bundles.exported import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MANIFEST_FILE,
    ExportManifest,
    file_sha256,
    member_file,
)
from captioning.bundles.layout import export_encoder_file
from captioning.bundles.schema import BundleConfig
from captioning.data.text import START
from captioning.encoders.base import Encoder
from captioning.export import graphs, litert
from captioning.storage.atomic import write_bytes_atomic, write_json_atomic

CHECK_BATCH = 2  # images run through TensorFlow and LiteRT alike before a file is written


def write_export(folder: Path, bundle_config: BundleConfig, members: Sequence[keras.Model],
                 encoders: Sequence[Encoder], digest: str, log: Callable[[str], None] | None = None) -> ExportManifest:
    """Export the encoders and every decoder of a bundle into ``folder``.

    Args:
        folder: an existing, empty folder (a staging folder the caller renames into place).
        bundle_config: the bundle's settings.
        members: its decoders' training models, weights loaded from the bundle's files.
        encoders: its encoders in ``bundle_config.encoders`` order (``encoders.build_encoder``
            with the bundle's weights): one, but for an ensemble whose members read several.
        digest: ``bundles.exported.source_digest`` of the bundle, recorded in the manifest.
        log: receives a line per file written.

    Returns:
        The manifest written.

    Raises:
        ExportError: a converted model disagrees with TensorFlow.
        OSError: a file cannot be written.
    """
    rng = np.random.default_rng(0)
    files: dict[str, str] = {}
    encoder_names, features_by_encoder, outputs = [], {}, ()
    for number, (spec, encoder) in enumerate(zip(bundle_config.encoders, encoders, strict=True), 1):
        size = encoder.input_size
        pixels = rng.integers(0, 256, (CHECK_BATCH, size, size, 3), dtype=np.uint8)
        encoder_functions = graphs.encoder_functions(encoder)
        name = export_encoder_file(number)
        files[name] = _write(folder / name, encoder_functions, {"encode": {"pixels": pixels}},
                             f"the {encoder.name} encoder", float16_weights=False)
        encoder_names.append(name)
        _say(log, f"  exported the {encoder.name} encoder")
        encoded = {key: np.asarray(value) for key, value in encoder_functions["encode"](pixels=pixels).items()}
        if number == 1:  # the manifest lists the first encoder's outputs: tags read its class_logits
            outputs = tuple(sorted(encoded))
        # The decoders read features as the feature cache stores them: float16.
        features_by_encoder[spec] = encoded[bundle_config.feature_kind].astype(np.float16).astype(np.float32)
    names = []
    for number, (member, spec) in enumerate(zip(members, bundle_config.member_encoders, strict=True), 1):
        features = features_by_encoder[spec]
        functions = graphs.decoder_functions(member, bundle_config.decoder, features.shape[1:])
        name = member_file(number)
        files[name] = _write(folder / name, functions, _decoder_inputs(functions, features, rng),
                             f"decoder {number}", float16_weights=True)
        names.append(name)
        _say(log, f"  exported decoder {number} of {len(members)}")
    manifest = ExportManifest(
        export_version=EXPORT_VERSION, format=EXPORT_FORMAT, source_digest=digest, files=files,
        encoder_outputs=outputs, decoder_kind=bundle_config.decoder.kind, members=tuple(names),
        converter=f"tensorflow {importlib.metadata.version('tensorflow')}",
        created=datetime.now(UTC).isoformat(timespec="seconds"), encoders=tuple(encoder_names))
    write_json_atomic(folder / MANIFEST_FILE, manifest.to_json(), sort_keys=True)
    return manifest


def _write(path: Path, functions: graphs.Functions, inputs: dict, what: str, float16_weights: bool) -> str:
    """Convert, check and write one model; its sha256."""
    model = litert.convert(functions, float16_weights=float16_weights)
    litert.check(model, functions, inputs, what)
    write_bytes_atomic(path, model)
    return file_sha256(path)


def _decoder_inputs(functions: graphs.Functions, features: np.ndarray, rng: np.random.Generator) -> dict:
    """Check inputs for a decoder: real encoder features, then one step from a state that is not all zeros."""
    initial = {key: np.asarray(value) for key, value in functions["initial"](features=features).items()}
    state = dict(initial)
    width = initial["h"].shape if "h" in initial else initial["image"].shape  # (B, U)
    for key in ("h", "c"):  # merge decoders start from zeros; a random state tests the recurrence too
        state[key] = rng.normal(0.0, 0.5, width).astype(np.float32)
    tokens = np.array([START] + [4] * (len(features) - 1), dtype=np.int32)
    return {"initial": {"features": features}, "step": {"tokens": tokens, **state}}


def _say(log: Callable[[str], None] | None, line: str) -> None:
    if log is not None:
        log(line)


__all__ = ["write_export"]
