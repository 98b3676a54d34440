"""The ``ensemble`` command's writer: one bundle from trained bundles that fit together.

The members must share the split, the vocabulary and the decoder's sizes (they may differ in what
shapes only training: dropout and the attention penalty). They may read different encoders'
features (EfficientNet-Lite0 and Lite1 members: each photo is then encoded by both, and members
that learnt from different features make more different mistakes, which is what an ensemble
averages away); members of one encoder must read it with the same weights. The ensemble is the
first member's bundle with one weights file per member and an ``ensemble`` record listing them
(a member on another encoder than the first's records which); ``inference.ensemble`` makes them
caption together. A bundle that is already an ensemble
brings all its members, so an ensemble grows by naming it with the new models (nothing nests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

from captioning.bundles import store as bundles
from captioning.bundles.schema import BundleConfig, EncoderSpec, EnsembleMember
from captioning.bundles.trained_photos import read_trained_photos, write_trained_photos
from captioning.config import MAX_ENSEMBLE_MEMBERS, DecoderConfig
from captioning.errors import BundleError
from captioning.storage.disk_space import ensure_free_space
from captioning.storage.output_folder import OutputFolderError, resolve

# Decoder settings that shape only training; members may differ in them. Every other decoder
# setting (sizes, kind) must match, as the ensemble is rebuilt from one decoder config.
TRAINING_ONLY_DECODER_SETTINGS = ("dropout", "attention_regularization")
# Settings that must be equal: the same words out, and the same held-out split (a member trained
# on another split would have seen the test photos). Encoders are checked per member
# (``_check_encoders``); the feature shape follows from the encoder and the decoder kind.
SHARED_SETTINGS = ("max_length", "vocab_size", "split")

@dataclasses.dataclass(frozen=True)
class _Member:
    """One decoder going into the ensemble: its weights file and what config.json says of it."""

    weights: Path
    record: EnsembleMember
    bundle: bundles.Bundle  # the bundle it comes from (an ensemble brings several members)
    encoder: EncoderSpec  # whose features it reads (``BundleConfig.member_encoders``)


def combine_bundles(member_paths: Sequence[str | Path], target: str | Path) -> Path:
    """Write an ensemble bundle at ``target`` from trained bundles, checked to fit together.

    Each bundle is loaded first (so broken weights are caught here, not at caption time); its
    weights files are copied as they are (already float16). A bundle that is itself an ensemble
    brings every member it has, with their records. The vocabulary and loss history come from the
    first bundle, config.json records every member's decoder settings and training summary, and
    trained_photos.json every photo any bundle was trained on (when each has that record).

    Args:
        member_paths: bundle folders, two or more decoders in all.
        target: the ensemble's folder; written atomically, never one of the bundles named.

    Returns:
        The ensemble folder.

    Raises:
        BundleError: fewer than two decoders, a bundle that is missing or broken, the target
            being one of the bundles, the same weights twice, or bundles that differ in vocabulary,
            split or sizes, or in the settings of one encoder.
    """
    paths = [Path(path) for path in member_paths]
    if len(paths) < 2:  # one ensemble alone would only be copied
        raise BundleError("an ensemble needs at least two model bundles; name two or more")
    target = resolve(target)
    if any(target.resolve() == path.resolve() for path in paths):
        raise BundleError(f"{target}: the ensemble would overwrite one of its members; choose another --output")
    loaded = [bundles.load_bundle(path) for path in paths]
    members = [member for bundle in loaded for member in _members_of(bundle)]
    if len(members) > MAX_ENSEMBLE_MEMBERS:  # else a bundle no command could load would replace --output
        raise BundleError(f"these bundles hold {len(members)} decoders, more than the {MAX_ENSEMBLE_MEMBERS} an "
                          "ensemble may have; name fewer models")
    _check_distinct(members)
    _check_encoders(members)
    first = loaded[0]
    for bundle in loaded[1:]:
        _check_compatible(first, bundle)

    def fill(staging: Path) -> None:
        weights = [member.weights for member in members]
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
    # The top-level decoder, encoder and training record stay the first bundle's: an ensemble's are
    # already its first member's, and every member shares the architecture (checked per bundle
    # above). A member records its encoder only when it is not that one.
    records = tuple(dataclasses.replace(member.record, encoder=None if member.encoder == first.config.encoder
                                        else member.encoder) for member in members)
    ensemble_config = dataclasses.replace(first.config, ensemble=records)
    return bundles.write_bundle_folder(target, ensemble_config, fill)


def _members_of(bundle: bundles.Bundle) -> list[_Member]:
    """The decoders a bundle brings: its one model, or every member of an ensemble."""
    bundle_config = bundle.config
    if bundle_config.members:
        return [_Member(weights=bundle.path / name, record=record, bundle=bundle, encoder=encoder)
                for name, record, encoder in zip(bundle_config.weights_files, bundle_config.members,
                                                 bundle_config.member_encoders, strict=True)]
    record = EnsembleMember(source=bundle.path.name, created=bundle_config.created, decoder=bundle_config.decoder,
                            training=bundle_config.training, fine_tuning=bundle_config.fine_tuning)
    return [_Member(weights=bundle.path / bundle_config.weights_files[0], record=record, bundle=bundle,
                    encoder=bundle_config.encoder)]


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
    # An ensemble is rebuilt from its one decoder config, so its top-level one speaks for all members.
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


def _check_encoders(members: Sequence[_Member]) -> None:
    """Refuse members that read one encoder with different settings (weights, input size): the
    ensemble encodes each photo once per encoder, so a member would get features it never saw."""
    seen: dict[str, _Member] = {}
    for member in members:
        earlier = seen.setdefault(member.encoder.name, member)
        if member.encoder != earlier.encoder:
            raise BundleError(f"{_which(member)}: its encoder differs from {_which(earlier)}'s "
                              f"({_difference(member.encoder, earlier.encoder)}); an ensemble's members of one "
                              "encoder must be trained on the same features")


def _check_distinct(members: Sequence[_Member]) -> None:
    """Refuse a bundle named twice, or the same weights twice (also inside an ensemble named): such
    an "ensemble" captions as one fewer member would, at more cost."""
    seen: dict[str, _Member] = {}
    for member in members:
        digest = hashlib.sha1(member.weights.read_bytes()).hexdigest()
        if digest in seen:
            earlier = seen[digest]
            if earlier.bundle.path.resolve() == member.bundle.path.resolve() and earlier.bundle is not member.bundle:
                raise BundleError(f"{member.bundle.path} is named twice; an ensemble needs different trained models")
            raise BundleError(f"{_which(member)} has the same weights as {_which(earlier)}; an ensemble needs "
                              "different trained models (an ensemble named brings its members: name each model once)")
        seen[digest] = member


def _which(member: _Member) -> str:
    """The bundle a member comes from, and which member it is when that bundle is an ensemble."""
    if not member.bundle.config.members:
        return str(member.bundle.path)
    return f"{member.bundle.path} (its member {member.record.source or '?'})"


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
