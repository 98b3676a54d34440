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
# What a killed write into a bundle leaves: an atomic write's ``.NAME.<random><suffix>`` temp file
# (storage.atomic), a first-use export's ``.exported.new-<random>`` or ``.old-`` (export.first_use).
_LEFTOVER = re.compile(r"\.(?:" + "|".join(re.escape(name) for name in (*FILES, EXPORT_FOLDER))
                       + "|" + _MEMBER_WEIGHTS.pattern + r")\..+")


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
    return _LEFTOVER.fullmatch(name) is not None


__all__ = ["CHECKPOINT_FOLDER", "CONFIG_FILE", "EXPORT_FOLDER", "FILES", "FOLDERS", "HISTORY_FILE",
           "LOSS_CURVE_FILE", "METRICS_FILE", "SAMPLES_FILE", "TRAINED_PHOTOS_FILE", "VOCAB_FILE", "WEIGHTS_FILE",
           "is_part_of_bundle", "member_weights_file"]
