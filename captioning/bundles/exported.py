"""A bundle's exported form (LiteRT files that caption without TensorFlow): where it is, and whether
it may be used.

An export is a folder holding ``encoder.tflite`` (the bundle's image encoder; ``encoder-2.tflite``
for a second one an ensemble's members read), one ``member-<n>.tflite`` per decoder (ensembles
have several) and ``manifest.json``, written last.
It lives in the bundle (``<bundle>/exported/``, made when the bundle is saved, or beside the bundle
on first use) or, when the bundle folder cannot be written (a read-only install), in the cache
``config.DATA_DIR / config.EXPORT_CACHE_FOLDER / <digest>/``.

The manifest records ``source_digest``: a hash of everything the exported graphs were made from
(the sha256 of every weights file, the encoder's name and weights, the decoder's settings, the
feature shape, and ``EXPORT_VERSION``), plus the sha256 of each exported file. ``problem`` refuses
an export whose digest is not the bundle's present one (weights replaced, a folder copied from
another bundle, an older exporter) or whose files are not the ones listed; such an export is remade,
never used. Checking costs one read of the weights and exported files (~0.1 s for the shipped
ensemble), a small part of a TensorFlow-free cold start.

TensorFlow-free; ``captioning.export`` writes exports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioning import config
from captioning.bundles import layout
from captioning.bundles.schema import BundleConfig
from captioning.errors import CaptioningError, InputFileError
from captioning.storage.safe_json import read_json_file

# Bump when the exported graphs, their inputs or outputs change: every older export is then remade.
EXPORT_VERSION = 1
EXPORT_FORMAT = "litert"
MANIFEST_FILE = layout.EXPORT_MANIFEST_FILE
ENCODER_FILE = layout.EXPORT_ENCODER_FILE
member_file = layout.export_member_file
MAX_MANIFEST_BYTES = 1 * config.MIB


@dataclass(frozen=True)
class ExportManifest:
    """``manifest.json`` of an export folder.

    Attributes:
        export_version: ``EXPORT_VERSION`` of the exporter that wrote it.
        format: ``"litert"``.
        source_digest: ``source_digest`` of the bundle it was made from.
        files: exported file name -> its sha256.
        encoder_outputs: the encoder's outputs: ``grid``, ``pooled`` and, for an encoder with an
            ImageNet classifier, ``class_logits``.
        decoder_kind: ``"merge"`` or ``"attention"``: which signatures the member files hold.
        members: the member files, in the order of the bundle's weights files.
        encoders: the encoder files, in the order of ``BundleConfig.encoders`` (one but for an
            ensemble whose members read different encoders; older manifests list none: one).
        converter: what converted it (``tensorflow 2.21.0``), for the record.
        created: when (ISO 8601), for the record.
    """

    export_version: int
    format: str
    source_digest: str
    files: dict[str, str]
    encoder_outputs: tuple[str, ...]
    decoder_kind: str
    members: tuple[str, ...]
    converter: str = ""
    created: str = ""
    encoders: tuple[str, ...] = (ENCODER_FILE,)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["encoder_outputs"], data["members"] = list(self.encoder_outputs), list(self.members)
        data["encoders"] = list(self.encoders)
        return data

    @classmethod
    def from_json(cls, data: Any) -> ExportManifest:
        """Check a parsed manifest.

        Raises:
            ValueError: not a manifest this tool wrote (the caller says which file).
        """
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            manifest = cls(
                export_version=_typed(data, "export_version", int), format=_typed(data, "format", str),
                source_digest=_typed(data, "source_digest", str),
                files={str(k): str(v) for k, v in _typed(data, "files", dict).items()},
                encoder_outputs=tuple(str(o) for o in _typed(data, "encoder_outputs", list)),
                decoder_kind=_typed(data, "decoder_kind", str),
                members=tuple(str(m) for m in _typed(data, "members", list)),
                converter=str(data.get("converter", "")), created=str(data.get("created", "")),
                encoders=tuple(str(e) for e in _typed({"encoders": [ENCODER_FILE], **data}, "encoders", list)))
        except KeyError as error:
            raise ValueError(f"no {error.args[0]}") from None
        if not manifest.encoders or manifest.encoders[0] != ENCODER_FILE:
            raise ValueError("lists no encoder")
        if not set(manifest.members) | set(manifest.encoders) <= set(manifest.files):
            raise ValueError("lists a model file without its hash")
        return manifest


def _typed(data: dict, key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{key} is not a {kind.__name__}")
    return value


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def source_digest(bundle_path: str | Path, bundle_config: BundleConfig) -> str:
    """A hash of everything a bundle's export is made from; it changes whenever the export would.

    Args:
        bundle_path: the bundle folder (its weights files are hashed).
        bundle_config: its config.json.

    Returns:
        A sha256 hex digest.

    Raises:
        OSError: a weights file cannot be read.
    """
    encoder = bundle_config.encoder
    identity = {
        "export_version": EXPORT_VERSION, "format": EXPORT_FORMAT,
        "encoder": {"name": encoder.name, "weights_id": encoder.weights_id, "weights": encoder.weights},
        "decoder": dataclasses.asdict(bundle_config.decoder), "vocab_size": bundle_config.vocab_size,
        "feature_shape": list(bundle_config.feature_shape),
        "weights": [file_sha256(Path(bundle_path) / name) for name in bundle_config.weights_files],
    }
    if len(bundle_config.encoders) > 1:  # only then: every single-encoder export made before stays valid
        identity["member_encoders"] = [{"name": spec.name, "weights_id": spec.weights_id, "weights": spec.weights}
                                       for spec in bundle_config.member_encoders]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def read_manifest(folder: Path) -> ExportManifest:
    """The manifest of an export folder.

    Raises:
        CaptioningError: missing or not a manifest this tool wrote (one line).
    """
    path = folder / MANIFEST_FILE
    try:
        return ExportManifest.from_json(read_json_file(path, MAX_MANIFEST_BYTES))
    except InputFileError as error:
        raise CaptioningError(f"{path}: {error.reason}") from None
    except ValueError as error:
        raise CaptioningError(f"{path}: not an export manifest ({error})") from None


def problem(folder: Path, digest: str, member_count: int, encoder_count: int = 1) -> str | None:
    """Why the export in ``folder`` must not be used for a bundle whose ``source_digest`` is ``digest``.

    Args:
        folder: an export folder.
        digest: the bundle's present ``source_digest``.
        member_count: the bundle's decoders.
        encoder_count: the encoders they read.

    Returns:
        None when it fits and every file is the one its manifest lists; else a few words saying why.
    """
    if not (folder / MANIFEST_FILE).is_file():
        return "no export" if not folder.exists() else "incomplete (no manifest)"
    try:
        manifest = read_manifest(folder)
    except CaptioningError as error:
        return str(error)
    if manifest.export_version != EXPORT_VERSION or manifest.format != EXPORT_FORMAT:
        return f"made by another version of the exporter ({manifest.format} {manifest.export_version})"
    if (manifest.source_digest != digest or len(manifest.members) != member_count
            or len(manifest.encoders) != encoder_count):
        return "made from other weights or settings than the bundle's present ones (stale)"
    for name, expected in manifest.files.items():
        path = folder / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return f"{name} is missing"
        try:
            if file_sha256(path) != expected:
                return f"{name} is not the file its manifest lists (changed or damaged)"
        except OSError as error:
            return f"{name} cannot be read ({error.strerror or error})"
    return None


def bundle_export_folder(bundle_path: str | Path) -> Path:
    """Where a bundle keeps its export: ``<bundle>/exported``."""
    return Path(bundle_path) / config.EXPORT_FOLDER


def cache_export_folder(digest: str) -> Path:
    """The cache folder of an export for a bundle that cannot be written (keyed by its digest)."""
    return Path(config.DATA_DIR) / config.EXPORT_CACHE_FOLDER / digest[:32]


@dataclass(frozen=True)
class ExportLookup:
    """Where a bundle's usable export is, if anywhere.

    Attributes:
        folder: the usable export folder, or None.
        digest: the bundle's present ``source_digest``.
        reason: why the bundle's own export folder is not usable (None when it is).
    """

    folder: Path | None
    digest: str
    reason: str | None


def find_export(bundle_path: str | Path, bundle_config: BundleConfig) -> ExportLookup:
    """The bundle's usable export: its own ``exported/`` folder, else the cache's copy.

    Args:
        bundle_path: the bundle folder.
        bundle_config: its config.json.

    Returns:
        The lookup; ``folder`` is None when neither place holds an export that fits.

    Raises:
        OSError: the bundle's weights cannot be read.
    """
    digest = source_digest(bundle_path, bundle_config)
    counts = bundle_config.member_count, len(bundle_config.encoders)
    own = bundle_export_folder(bundle_path)
    reason = problem(own, digest, *counts)
    if reason is None:
        return ExportLookup(own, digest, None)
    cached = cache_export_folder(digest)
    if problem(cached, digest, *counts) is None:
        return ExportLookup(cached, digest, reason)
    return ExportLookup(None, digest, reason)


__all__ = ["ENCODER_FILE", "EXPORT_VERSION", "MANIFEST_FILE", "ExportLookup", "ExportManifest",
           "bundle_export_folder", "cache_export_folder", "file_sha256", "find_export", "member_file", "problem",
           "read_manifest", "source_digest"]
