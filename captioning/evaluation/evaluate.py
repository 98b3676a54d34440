"""Evaluate a model bundle: choose held-out images, caption them in batches, score them.

Which images: the bundle's ``config.json`` records the dataset it was trained on (source and key)
and the split settings. On that same dataset the split is recomputed and only its test (or val)
images are captioned, so the model is never scored on images it was trained on. A dataset with a
different key was not the training dataset, so all of its images are test images, but for the photos
the bundle's ``trained_photos.json`` lists by content (a model trained on a mix of datasets has seen
some of them; ``bundles.trained_photos``): those are left out, on any dataset, and counted.

Scoring is ``metrics.score_captions`` against all of each image's references; files are written by
``report.py`` (which also decides where: each evaluation in its own folder, the bundle's own record
only for the full test split at the default beam). TensorFlow is imported only when a real captioner is loaded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from captioning import config
from captioning.bundles.default_model import choose_model
from captioning.bundles.schema import BundleConfig, DatasetRecord
from captioning.bundles.store import read_bundle_config
from captioning.bundles.trained_photos import photo_digest, photo_digests, read_trained_photos
from captioning.data.datasets import CaptionedImage, Dataset, load_dataset, split_dataset
from captioning.errors import BundleError, CaptioningError, DatasetError
from captioning.evaluation import metrics
from captioning.storage.safe_text import json_text


class CaptionsPaths(Protocol):
    """What evaluation needs from a captioner (``captioner.Captioner`` or a test double)."""

    def caption_many(self, paths: Sequence[Path], beam_size: int) -> list: ...


@dataclass(frozen=True)
class TagSummary:
    """The tag settings of an evaluation and how many captions name a tag only because the search
    was made to (``metrics.json["tags"]``)."""

    threshold: float
    max_tags: int
    captions_with_added_tags: int


@dataclass
class EvaluationSet:
    """The held-out images to caption and where they came from.

    Attributes:
        images: the images, in dataset order (first ``--limit`` of them when limited).
        split: ``"test"`` or ``"val"``.
        dataset: the loaded dataset.
        seen_in_training: whether this is the dataset the bundle was trained on (so the split was
            recomputed); False means all of its images are test images.
        split_config: the split settings used (None for an unseen dataset).
        available: held-out images before ``--limit``.
        left_out_trained: images of the split left out because the bundle was trained on them
            (the same photo by content, under any name; ``bundles.trained_photos``).
    """

    images: list[CaptionedImage]
    split: str
    dataset: Dataset
    seen_in_training: bool
    split_config: config.SplitConfig | None
    available: int
    left_out_trained: int = 0

    def describe(self) -> str:
        """One line: how many images, which split, of which dataset, and why these."""
        count = f"{len(self.images):,}"
        if self.available != len(self.images):
            count += f" of {self.available:,}"
        if self.split_config is not None:  # the dataset it was trained on: the split was recomputed
            how = (f"{self.split} split (seed {self.split_config.seed}) of the training dataset "
                   f"{self.dataset.key}")
            if self.left_out_trained:
                how += f", less {self.left_out_trained:,} photos it also has under other names"
        elif self.left_out_trained:
            how = (f"dataset {self.dataset.key}, less the {self.left_out_trained:,} photos of it the model was "
                   "trained on (by content, from its training dataset)")
        else:
            how = f"dataset {self.dataset.key}, not used in training (all images held out)"
        return f"{count} images: {how}"


@dataclass
class ImageOutcome:
    """One evaluated image: its generated caption (or why it failed) and its references."""

    path: Path
    references: list[str]
    caption: str | None
    error: str | None = None


@dataclass
class EvaluationResult:
    """Everything an evaluation produced, ready for ``report.py``."""

    model_path: Path
    evaluation_set: EvaluationSet
    outcomes: list[ImageOutcome]
    scores: metrics.ScoreReport
    beam_size: int
    seconds: float  # captioning and scoring
    caption_seconds: float
    tags: TagSummary | None = None  # None when tags were off (captioning.tags)
    date: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def scored(self) -> list[ImageOutcome]:
        """Images that got a caption (the ones the metrics cover)."""
        return [outcome for outcome in self.outcomes if outcome.error is None]

    @property
    def failed(self) -> list[ImageOutcome]:
        """Images the captioner could not read."""
        return [outcome for outcome in self.outcomes if outcome.error is not None]

    def to_dict(self) -> dict:
        """The content of ``metrics.json``: scores with their implementation and scale, and the
        split, image count, beam size, dataset key and date they belong to."""
        chosen = self.evaluation_set
        dataset = chosen.dataset
        split_config = chosen.split_config
        data: dict[str, Any] = {
            "date": self.date,
            # Names that are not UTF-8 are written escaped, with "<field>_escaping" (safe_text).
            **json_text("model", self.model_path),
            "dataset": {**json_text("source", dataset.source or dataset.root), "key": dataset.key,
                        "seen_in_training": chosen.seen_in_training},
            "split": chosen.split,
            "split_config": None if split_config is None else {
                "seed": split_config.seed, "val_fraction": split_config.val_fraction,
                "test_fraction": split_config.test_fraction},
            "num_images": len(self.scored),
            "num_images_requested": len(self.outcomes),
            "num_images_held_out": chosen.available,
            "num_images_left_out_as_trained_on": chosen.left_out_trained,
            "beam_size": self.beam_size,
            "tags": None if self.tags is None else dataclasses.asdict(self.tags),
            "seconds": round(self.seconds, 2),
            "captioning_seconds": round(self.caption_seconds, 2),
        }
        data.update(self.scores.to_dict())  # scale, scores, implementations, tokenizer, ...
        data["failed_images"] = [{**json_text("image", o.path), **json_text("error", o.error)}
                                 for o in self.failed]
        data["captions"] = [{**json_text("image", _relative(dataset, o.path)), "caption": o.caption}
                            for o in self.scored]
        return data


def _relative(dataset: Dataset, path: Path) -> str:
    try:
        return dataset.relative(path)
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------ choosing images

def training_dataset(bundle_config: BundleConfig, model_path: Path | str = "") -> str:
    """The source of the dataset a bundle was trained on (as given to ``load_dataset``).

    Args:
        bundle_config: the bundle's config.
        model_path: the bundle folder, for messages.

    Raises:
        BundleError: the config does not say which dataset the model was trained on.
        DatasetError: it names a folder that is not here (a bundle trained on another machine).
    """
    source = bundle_config.dataset.source if bundle_config.dataset is not None else None
    if not source:
        raise BundleError(f"{model_path}: config.json does not record the training dataset; "
                          "pass --dataset PATH to evaluate on a dataset")
    if source != config.MINI_COCO_SOURCE and not Path(source).expanduser().exists():
        # A bundle trained elsewhere (the shipped one included) names a folder of that machine.
        raise DatasetError(f"{model_path} was trained on the dataset at {source}, which is not on this "
                           "machine; pass --dataset PATH to a copy of it or to another dataset")
    return source


def recorded_split_config(bundle_config: BundleConfig, model_path: Path | str = "") -> config.SplitConfig:
    """The train/val/test split settings a bundle was trained with.

    Raises:
        BundleError: no split recorded; guessing could score the model on its training images.
    """
    if bundle_config.split is None:
        raise BundleError(f"{model_path}: config.json does not record the train/val/test split, so "
                          "held-out images cannot be told apart; evaluate on another dataset with "
                          "--dataset PATH or retrain the model")
    return bundle_config.split


def choose_images(bundle_config: BundleConfig, dataset: Dataset, split: str = "test", limit: int | None = None,
                  model_path: Path | str = "") -> EvaluationSet:
    """The images of ``dataset`` the bundle was not trained on.

    Args:
        bundle_config: the bundle's config.
        dataset: the loaded dataset to evaluate on.
        split: ``"test"`` or ``"val"``.
        limit: keep only the first N held-out images.
        model_path: the bundle folder, for messages.

    Returns:
        The EvaluationSet.

    Raises:
        CaptioningError: an unknown split, ``val`` asked of a dataset the model never saw, or an
            empty split.
    """
    if split not in config.EVALUATION_SPLITS:
        raise CaptioningError(f"--split {split}: expected one of {', '.join(config.EVALUATION_SPLITS)}")
    seen = bundle_config.dataset is not None and _same_dataset(bundle_config.dataset, dataset)
    if seen:
        split_config = recorded_split_config(bundle_config, model_path)
        parts = split_dataset(dataset.images, split_config)
        held_out = getattr(parts, split)
    elif split == "val":
        raise CaptioningError(f"--split val: dataset {dataset.key} was not used to train {model_path}, so "
                              "it has no validation split (all its images are test images); use --split test")
    else:
        split_config, held_out = None, list(dataset.images)
    learnt_from = parts.train if seen and split == "val" else None
    held_out, left_out = _without_trained_photos(held_out, model_path, learnt_from)
    if not held_out and left_out:
        raise DatasetError(f"dataset {dataset.key}: the model was trained on all {left_out:,} photos of its "
                           f"{split} split; evaluate on photos it has not seen")
    if not held_out:
        raise DatasetError(f"dataset {dataset.key}: its {split} split is empty; use a larger dataset "
                           f"or the other split")
    images = held_out[:limit] if limit else list(held_out)
    return EvaluationSet(images=images, split=split, dataset=dataset, seen_in_training=seen,
                         split_config=split_config, available=len(held_out), left_out_trained=left_out)


def _without_trained_photos(images: list[CaptionedImage], model_path: Path | str,
                            learnt_from: list[CaptionedImage] | None = None) -> tuple[list[CaptionedImage], int]:
    """``images`` but those the bundle lists as trained on (by content), and how many were left out.

    ``learnt_from``: given when ``images`` is the validation split of the bundle's own dataset, its
    train split. The record lists validation photos too (they chose the epoch), but scoring them is
    what ``--split val`` asks for; only photos the model also learnt from are left out then: the
    train split's (a photo can be there under another name) and any other the record lists.
    """
    trained = read_trained_photos(model_path) if model_path else None
    if not trained:
        return images, 0
    digests = [photo_digest(image.path) for image in images]
    if learnt_from is not None:
        trained = (trained - set(digests)) | photo_digests(image.path for image in learnt_from)
    kept = [image for image, digest in zip(images, digests, strict=True) if digest not in trained]
    return kept, len(images) - len(kept)


# ------------------------------------------------------------------------------ captioning, scoring

def caption_in_batches(captioner: CaptionsPaths, paths: list[Path], beam_size: int,
                       batch_size: int = config.EVALUATE_BATCH_SIZE, progress: bool = True) -> list:
    """Caption images a batch at a time (the captioner encodes and decodes each batch at once),
    with a tqdm progress bar.

    Args:
        captioner: anything with ``caption_many(paths, beam_size)``.
        paths: image files.
        beam_size: beam width; 1 is greedy.
        batch_size: images per ``caption_many`` call.
        progress: show the progress bar (on stderr).

    Returns:
        One ``CaptionResult``-like object (``path``, ``caption``, ``error``) per path, in order.
    """
    from tqdm import tqdm

    results = []
    with tqdm(total=len(paths), unit="img", desc="captioning", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            batch = paths[start:start + batch_size]
            captioned = captioner.caption_many(batch, beam_size=beam_size)
            if len(captioned) != len(batch):
                raise CaptioningError(f"the captioner returned {len(captioned)} results for "
                                      f"{len(batch)} images")
            results.extend(captioned)
            bar.update(len(batch))
    return results


def evaluate_images(captioner: CaptionsPaths, evaluation_set: EvaluationSet, beam_size: int,
                    model_path: Path | str = "", progress: bool = True,
                    use_java: bool | None = None) -> EvaluationResult:
    """Caption the chosen images and score them against all their references.

    Args:
        captioner: anything with ``caption_many(paths, beam_size)``.
        evaluation_set: from ``choose_images``.
        beam_size: beam width; 1 is greedy.
        model_path: the bundle folder (recorded in the result).
        progress: show the progress bar.
        use_java: passed to ``metrics.score_captions`` (None: Java when installed).

    Returns:
        The EvaluationResult.

    Raises:
        CaptioningError: no image could be captioned (the message quotes the first error).
    """
    started = time.perf_counter()
    images = evaluation_set.images
    results = caption_in_batches(captioner, [image.path for image in images], beam_size,
                                 progress=progress)
    caption_seconds = time.perf_counter() - started
    outcomes = [ImageOutcome(image.path, list(image.captions), result.caption, result.error)
                for image, result in zip(images, results, strict=True)]
    scored = [outcome for outcome in outcomes if outcome.error is None]
    if not scored:
        raise CaptioningError(f"none of the {len(outcomes)} images could be captioned; first error: "
                              f"{outcomes[0].error}")
    scores = metrics.score_captions([o.caption or "" for o in scored], [o.references for o in scored],
                                    use_java=use_java)
    return EvaluationResult(model_path=Path(model_path), evaluation_set=evaluation_set,
                            outcomes=outcomes, scores=scores, beam_size=beam_size,
                            seconds=time.perf_counter() - started, caption_seconds=caption_seconds,
                            tags=_tag_summary(captioner, results))


def _tag_summary(captioner: CaptionsPaths, results: list) -> TagSummary | None:
    """How the captioner used tags, or None when it had none (a test double may have no ``tagger``)."""
    tagger = getattr(captioner, "tagger", None)
    if tagger is None:
        return None
    added = sum(1 for result in results if getattr(result, "added_tags", ()))
    return TagSummary(tagger.threshold, tagger.max_tags, added)


def _same_dataset(recorded: DatasetRecord, dataset: Dataset) -> bool:
    """Whether the bundle was trained on ``dataset``, also after the folder moved.

    The key hashes the folder's location, which differs on another machine (a clone with the data
    elsewhere); the split depends only on relative paths, so a matching dataset name is enough to
    hold out the same images. Holding out by name errs on the safe side: at worst a different
    dataset of the same name is scored on its test split only.
    """
    return recorded.key == dataset.key or (bool(recorded.name) and recorded.name == dataset.name)


def prepare(model: str | Path | None, dataset_source: str | Path | None, split: str = "test",
            limit: int | None = None) -> tuple[Path, EvaluationSet]:
    """Find the bundle and choose its held-out images, before any model is loaded (fast failure).

    Args:
        model: bundle folder, or None for the default bundle (``bundles.default_model``).
        dataset_source: ``"mini-coco"`` or a dataset folder; None: the bundle's training dataset.
        split: ``"test"`` or ``"val"``.
        limit: keep only the first N held-out images.

    Returns:
        (bundle folder, EvaluationSet).

    Raises:
        BundleError, DatasetError, CaptioningError: as the steps above, one line each.
    """
    model_path = choose_model(model).path
    bundle_config = read_bundle_config(model_path)  # fails before any dataset is loaded
    if dataset_source is None:
        dataset_source = training_dataset(bundle_config, model_path)
    dataset = load_dataset(dataset_source)
    return model_path, choose_images(bundle_config, dataset, split, limit, model_path)
