"""The ``ensemble`` command's writer: one bundle from trained bundles that fit together.

The members must share the encoder, the features, the split, the vocabulary and the decoder's sizes
(they may differ in what shapes only training: dropout and the attention penalty). The ensemble is
the first member's bundle with one weights file per member and an ``ensemble`` record listing
them; ``inference.ensemble`` makes them caption together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

from captioning.bundles import store as bundles
from captioning.bundles.schema import WEIGHTS_FILE, BundleConfig, EnsembleMember
from captioning.bundles.trained_photos import read_trained_photos, write_trained_photos
from captioning.config import DecoderConfig
from captioning.errors import BundleError
from captioning.storage.disk_space import ensure_free_space
from captioning.storage.output_folder import OutputFolderError, resolve

# Decoder settings that shape only training; members may differ in them. Every other decoder
# setting (sizes, kind) must match, as the ensemble is rebuilt from one decoder config.
TRAINING_ONLY_DECODER_SETTINGS = ("dropout", "attention_regularization")
# Settings that must be equal: the same features in, the same words out, and the same
# held-out split (a member trained on another split would have seen the test photos).
SHARED_SETTINGS = ("encoder", "feature_shape", "max_length", "vocab_size", "split")

def combine_bundles(member_paths: Sequence[str | Path], target: str | Path) -> Path:
    """Write an ensemble bundle at ``target`` from trained bundles, checked to fit together.

    Each member is loaded first (so broken weights are caught here, not at caption time); its
    weights file is copied as is (already float16), the vocabulary and loss history come from the
    first member, config.json records every member's decoder settings and training summary, and
    trained_photos.json every photo any member was trained on (when each member has that record).

    Args:
        member_paths: two or more bundle folders, not ensembles themselves.
        target: the ensemble's folder; written atomically, never one of the members.

    Returns:
        The ensemble folder.

    Raises:
        BundleError: fewer than two members, a member that is missing, broken or an ensemble, the
            target being a member, or members that differ in encoder, vocabulary, split or sizes.
    """
    paths = [Path(path) for path in member_paths]
    if len(paths) < 2:
        raise BundleError("an ensemble needs at least two model bundles; name two or more")
    target = resolve(target)
    if any(target.resolve() == path.resolve() for path in paths):
        raise BundleError(f"{target}: the ensemble would overwrite one of its members; choose another --output")
    loaded = [bundles.load_bundle(path) for path in paths]
    for member in loaded:
        if len(member.members) > 1:
            raise BundleError(f"{member.path}: already an ensemble; name its member bundles instead")
    _check_distinct(loaded)
    first = loaded[0]
    for member in loaded[1:]:
        _check_compatible(first, member)

    def fill(staging: Path) -> None:
        weights = [member.path / WEIGHTS_FILE for member in loaded]
        extras = [first.path / name for name in (bundles.VOCAB_FILE, bundles.HISTORY_FILE, bundles.LOSS_CURVE_FILE)
                  if (first.path / name).is_file()]
        ensure_free_space(staging.parent, sum(path.stat().st_size for path in weights + extras), "the ensemble bundle",
                          error=OutputFolderError)
        for source, name in zip(weights, ensemble_config.weights_files, strict=True):
            shutil.copyfile(source, staging / name)
        for source in extras:
            shutil.copyfile(source, staging / source.name)
        if seen_photos is not None:
            write_trained_photos(staging, seen_photos)

    seen_photos = _seen_photos(loaded)
    members = tuple(EnsembleMember(source=member.path.name, created=member.config.created,
                                   decoder=member.config.decoder, training=member.config.training,
                                   fine_tuning=member.config.fine_tuning)
                    for member in loaded)
    ensemble_config = dataclasses.replace(first.config, ensemble=members)
    return bundles.write_bundle_folder(target, ensemble_config, fill)


def _check_compatible(first: bundles.Bundle, other: bundles.Bundle) -> None:
    """Raise a one-line BundleError naming the first setting in which ``other`` differs."""
    for key in SHARED_SETTINGS:
        mine, theirs = getattr(first.config, key), getattr(other.config, key)
        if mine != theirs:
            raise BundleError(f"{other.path}: its {key} differs from {first.path}'s ({_difference(theirs, mine)}); "
                              "an ensemble's members must be trained on the same features, split and vocabulary")
    if first.vocab.words != other.vocab.words:
        raise BundleError(f"{other.path}: its vocabulary differs from {first.path}'s; train the members "
                          "with the same dataset, split and --min-count")
    if _dataset_name(first.config) != _dataset_name(other.config):
        raise BundleError(f"{other.path}: trained on another dataset than {first.path}")
    first_decoder, other_decoder = (_architecture(b.config.decoder) for b in (first, other))
    if first_decoder != other_decoder:
        raise BundleError(f"{other.path}: decoder {other_decoder} differs from {first.path}'s "
                          f"{first_decoder}; an ensemble's members share one architecture")


def _difference(theirs: object, mine: object) -> str:
    """``theirs vs mine``; for two records of one kind, only the fields that differ."""
    if dataclasses.is_dataclass(theirs) and type(theirs) is type(mine):
        fields = [field.name for field in dataclasses.fields(theirs)
                  if getattr(theirs, field.name) != getattr(mine, field.name)]
        return ", ".join(f"{name} {getattr(theirs, name)} vs {getattr(mine, name)}" for name in fields)
    return f"{theirs} vs {mine}"


def _check_distinct(loaded: Sequence[bundles.Bundle]) -> None:
    """Refuse a member named twice, or two folders holding the same weights: such an "ensemble"
    captions exactly as the one model does, at twice the cost."""
    seen: dict[str, Path] = {}
    for member in loaded:
        digest = hashlib.sha1((member.path / WEIGHTS_FILE).read_bytes()).hexdigest()
        if digest in seen:
            same = "is named twice" if seen[digest].resolve() == member.path.resolve() else \
                f"has the same weights as {seen[digest]}"
            raise BundleError(f"{member.path} {same}; an ensemble needs different trained models")
        seen[digest] = member.path


def _seen_photos(loaded: Sequence[bundles.Bundle]) -> frozenset[str] | None:
    """Every photo any member saw in training; None if a member has no record (then it is unknown)."""
    records = [read_trained_photos(member.path) for member in loaded]
    known = [record for record in records if record is not None]
    return frozenset().union(*known) if len(known) == len(records) else None


def _dataset_name(bundle_config: BundleConfig) -> str | None:
    return bundle_config.dataset.name if bundle_config.dataset is not None else None


def _architecture(decoder: DecoderConfig) -> dict[str, object]:
    """The decoder's settings that shape the model (what members must share)."""
    return {key: value for key, value in dataclasses.asdict(decoder).items()
            if key not in TRAINING_ONLY_DECODER_SETTINGS}


__all__ = ["combine_bundles"]
