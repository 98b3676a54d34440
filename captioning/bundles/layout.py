"""What a model bundle folder is made of: every name the tool writes into one, in one place.

A bundle folder (``saved_models/NAME/``) holds only what this tool writes there::

    config.json            BundleConfig (``schema``); written last, it marks a complete bundle
    vocab.json             the vocabulary
    model.weights.h5       the (first) decoder's weights; an ensemble adds model-2.weights.h5, ...
    history.json           per-epoch losses
    loss_curve.png         their plot
    trained_photos.json    digests of the photos training saw (``trained_photos``)
    metrics.json           the bundle's record of its test split (``evaluate``)
    evaluation_samples.png the same evaluation's sample captions
    exported/              the LiteRT form (``bundles.exported``)
    .checkpoint/           an unfinished training run's checkpoints (kept across saves)

plus the hidden temp files and folders of the tool's own writes into it (``.vocab.json.x1y2z3.tmp``,
``.exported.new-x1y2z3``) that a kill can leave. Saving a bundle replaces the folder whole, so
``storage.output_folder`` refuses one that holds anything else: that file is someone's. The
shipped bundle's hand-written MODEL_CARD.md is deliberately not listed: the tool never writes one.

No imports beyond ``config``: ``storage.output_folder`` reads this.
"""

from __future__ import annotations

import re
from pathlib import Path

from captioning import config

CONFIG_FILE = config.BUNDLE_CONFIG_FILE
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.weights.h5"  # the first (or only) decoder's weights; ensembles add model-2...
HISTORY_FILE = "history.json"
LOSS_CURVE_FILE = "loss_curve.png"
TRAINED_PHOTOS_FILE = "trained_photos.json"
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "evaluation_samples.png"
EXPORT_FOLDER = config.EXPORT_FOLDER
CHECKPOINT_FOLDER = config.CHECKPOINT_FOLDER

FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, HISTORY_FILE, LOSS_CURVE_FILE, TRAINED_PHOTOS_FILE,
         METRICS_FILE, SAMPLES_FILE)
FOLDERS = (EXPORT_FOLDER, CHECKPOINT_FOLDER)

_MEMBER_WEIGHTS = re.compile(r"model-[1-9][0-9]*\.weights\.h5")

# What exported/ holds (``bundles.exported``, written by ``export.writer``): nothing else.
EXPORT_ENCODER_FILE = "encoder.tflite"
EXPORT_MANIFEST_FILE = "manifest.json"
_EXPORT_MEMBER = re.compile(r"member-[1-9][0-9]*\.tflite")
_EXPORT_OTHER_ENCODER = re.compile(r"encoder-[2-9]\.tflite")  # an ensemble's further encoders

# The random part of a ``tempfile.mkstemp``/``mkdtemp`` name: 8 of [a-z0-9_]. Matching it exactly
# keeps a user's ``.config.json.orig`` or ``.exported.new-notes`` from being taken for the tool's.
TEMP_TAIL = r"[a-z0-9_]{8}"
# Infixes of the temp folders beside a folder ``NAME`` being replaced whole: ``.NAME.new-<random>``
# (being written) and ``.NAME.old-<random>`` (the old one moved aside); ``storage.output_folder``
# uses them for bundles, ``export.first_use`` for a bundle's exported/.
STAGING_INFIX = ".new-"
BACKUP_INFIX = ".old-"


def _temp_file_pattern(name_pattern: str, suffixes: tuple[str, ...]) -> str:
    """``storage.atomic``'s temp file of a file: ``.NAME.<random><suffix>``, where the suffix is the default
    ``.tmp`` or the file's own ending (writers that choose the format from the name pass it)."""
    endings = "|".join(re.escape(suffix) for suffix in (".tmp", *suffixes))
    return r"\." + name_pattern + r"\." + TEMP_TAIL + "(?:" + endings + ")"


# What a killed write into a bundle leaves: an atomic write's temp file (files only), a first-use
# export's ``.exported.new-<random>`` or ``.exported.old-<random>`` (folders only).
_LEFTOVER_FILE = re.compile("|".join(
    [_temp_file_pattern(re.escape(name), (Path(name).suffix, "".join(Path(name).suffixes))) for name in FILES]
    + [_temp_file_pattern(_MEMBER_WEIGHTS.pattern, (".h5", ".weights.h5"))]))
_LEFTOVER_FOLDER = re.compile(r"\." + re.escape(EXPORT_FOLDER) + "(?:" + re.escape(STAGING_INFIX) + "|"
                              + re.escape(BACKUP_INFIX) + ")" + TEMP_TAIL)


def export_member_file(number: int) -> str:
    """The exported file of decoder ``number`` (1-based, as the weights files count): ``member-<n>.tflite``."""
    return f"member-{number}.tflite"


def export_encoder_file(number: int) -> str:
    """The exported file of the bundle's encoder ``number`` (1-based, ``BundleConfig.encoders``):
    ``encoder.tflite``, then ``encoder-2.tflite`` for a second encoder an ensemble's members read."""
    return EXPORT_ENCODER_FILE if number == 1 else f"encoder-{number}.tflite"


def is_part_of_export(name: str, is_folder: bool) -> bool:
    """Whether an entry of a bundle's ``exported/`` is one the export writes (files only, no temp files:
    an export is written in a staging folder and renamed into place only when complete)."""
    return not is_folder and (name in (EXPORT_ENCODER_FILE, EXPORT_MANIFEST_FILE)
                              or _EXPORT_MEMBER.fullmatch(name) is not None
                              or _EXPORT_OTHER_ENCODER.fullmatch(name) is not None)


def member_weights_file(number: int) -> str:
    """The weights file of decoder ``number`` (1-based): ``model.weights.h5``, ``model-2.weights.h5``, ..."""
    return WEIGHTS_FILE if number == 1 else f"model-{number}.weights.h5"


def _is_file_name(name: str) -> bool:
    return name in FILES or _MEMBER_WEIGHTS.fullmatch(name) is not None


def is_part_of_bundle(name: str, is_folder: bool) -> bool:
    """Whether an entry of a bundle folder is one this tool writes there (so replacing it loses nothing).

    Args:
        name: the entry's name in the bundle folder.
        is_folder: whether it is a folder (``exported`` and ``.checkpoint`` must be; the files must not).
    """
    if name in FOLDERS:
        return is_folder
    if _is_file_name(name):
        return not is_folder
    return (_LEFTOVER_FOLDER if is_folder else _LEFTOVER_FILE).fullmatch(name) is not None


__all__ = ["BACKUP_INFIX", "CHECKPOINT_FOLDER", "CONFIG_FILE", "EXPORT_ENCODER_FILE", "EXPORT_FOLDER",
           "EXPORT_MANIFEST_FILE", "FILES", "FOLDERS", "HISTORY_FILE", "LOSS_CURVE_FILE", "METRICS_FILE",
           "SAMPLES_FILE", "STAGING_INFIX", "TEMP_TAIL", "TRAINED_PHOTOS_FILE", "VOCAB_FILE", "WEIGHTS_FILE",
           "export_encoder_file", "export_member_file", "is_part_of_bundle", "is_part_of_export", "member_weights_file"]
