"""Fine-tuning a trained bundle for CIDEr-D, end to end: bundle -> its dataset and split -> features
-> self-critical epochs -> a new bundle.

``finetune_bundle`` is the one function the ``scst`` subcommand calls. Like ``train_model`` it
claims the output folder (refusing one that is not the tool's to replace, or that another run is
writing) before TensorFlow is imported. The source bundle is only read: the result is a new
bundle, the same model with other weights and a ``fine_tuning`` record, which the ``info`` command
shows.

An ensemble is fine-tuned one member at a time (``member``): each member gets its own bundle and
``ensemble`` puts the fine-tuned members back together.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from captioning import config
from captioning.bundles.schema import BundleConfig, FineTuningRecord
from captioning.errors import BundleError, CaptioningError, DatasetError

if TYPE_CHECKING:
    from captioning.bundles.store import Bundle
    from captioning.data.datasets import Dataset
    from captioning.training.self_critical import SelfCriticalData

METHOD = "self-critical sequence training for CIDEr-D (Rennie et al. 2017, mean-of-other-samples baseline)"


@dataclass(frozen=True)
class FineTuneOptions:
    """Everything a fine-tuning run depends on (built from the CLI)."""

    source: Path  # the trained bundle
    member: int | None = None  # which member of an ensemble (1-based); None for a single decoder
    dataset: str | None = None  # None: the dataset the bundle was trained on
    output: Path | None = None  # None: ``default_output(source, member)``
    settings: config.SelfCriticalConfig = field(default_factory=config.SelfCriticalConfig)
    limit: int | None = None  # first N training photos only (trials and tests)
    resume: bool = False
    progress: bool = False  # per-batch progress bars (terminals)


@dataclass
class FineTuneResult:
    """How a fine-tuning run ended; ``bundle_dir`` None when nothing was saved."""

    bundle_dir: Path | None
    start_val_cider: float | None
    best_val_cider: float | None
    best_epoch: int
    epochs_run: int
    interrupted: bool


def default_output(source: Path, member: int | None) -> Path:
    """``<source>-scst`` beside the source bundle (``<source>-member-N-scst`` for a member)."""
    name = source.name if member is None else f"{source.name}-member-{member}"
    return source.parent / f"{name}-scst"


def check_member(bundle_config: BundleConfig, member: int | None, source: Path) -> None:
    """Refuse a member number the bundle does not have, or none for an ensemble (one line each)."""
    count = bundle_config.member_count
    if member is None and count > 1:
        raise BundleError(f"{source} is an ensemble of {count} decoders: fine-tune them one at a time with "
                          f"--member 1 .. --member {count}, then combine the fine-tuned results with `ensemble`")
    if member is not None and not 1 <= member <= count:
        have = f"members 1 to {count}" if count > 1 else "one decoder (drop --member)"
        raise BundleError(f"{source} has {have}; --member {member} is not one of them")


def finetune_bundle(options: FineTuneOptions, log: Callable[[str], None] = print,
                    before_tensorflow: Callable[[], object] | None = None) -> FineTuneResult:
    """Fine-tune a bundle's decoder for CIDEr-D and write the result as a new bundle.

    Args:
        options: the run's settings.
        log: receives progress lines (per step and per epoch).
        before_tensorflow: called once the output folder is claimed, before TensorFlow is first
            imported (the CLI imports it quietly there).

    Returns:
        The FineTuneResult. On Ctrl-C after a finished epoch the bundle holds the best weights so
        far and the checkpoint stays for ``--resume``.

    Raises:
        CaptioningError: an unreadable source bundle, a wrong ``member``, an output folder that is
            not the tool's to replace (or the source itself), a dataset without the bundle's
            photos or references, a resume that does not match, or a full disk.
    """
    from captioning.bundles.store import read_bundle_config
    from captioning.storage.output_folder import claim

    if options.settings.samples_per_image < 2:
        raise CaptioningError(f"--samples {options.settings.samples_per_image}: each sample's baseline is the "
                              "mean reward of the photo's other samples, so at least 2 are needed")
    source = Path(options.source).expanduser()
    source_config = read_bundle_config(source)
    check_member(source_config, options.member, source)
    output = Path(options.output).expanduser() if options.output else default_output(source, options.member)
    if output.resolve() == source.resolve():
        raise BundleError(f"--output {output} is the bundle being fine-tuned; choose another folder "
                          "(the source is only read)")
    with claim(output, log, default=not options.output) as claimed:
        if before_tensorflow is not None:
            before_tensorflow()
        return _finetune_into(claimed, source, options, log)


def _finetune_into(output: Path, source: Path, options: FineTuneOptions, log: Callable[[str], None]) -> FineTuneResult:
    """``finetune_bundle`` once ``output`` is claimed."""
    import keras

    from captioning.bundles.store import load_bundle, save_bundle
    from captioning.storage.output_folder import OutputFolderError
    from captioning.training.checkpoints import remove_checkpoint
    from captioning.training.self_critical import self_critical_fit

    started = time.time()
    loaded = load_bundle(source)
    member_config = _member_config(loaded, options.member)
    model = loaded.members[(options.member or 1) - 1]
    data, dataset_note, seen_photos = _prepare(member_config, loaded, options, log)
    settings = options.settings
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate))
    which = source if options.member is None else f"{source} member {options.member}"
    log(f"fine-tuning {which} for CIDEr-D: {len(data.train_rows)} training photos x "
        f"{settings.samples_per_image} sampled captions, up to {settings.epochs} epochs -> {output}")
    result = self_critical_fit(model, member_config.decoder, loaded.vocab, loaded.config.max_length, data,
                               settings, output, _fingerprint(source, options, dataset_note),
                               resume=options.resume, log=log, progress=options.progress)
    if result.epochs_run == 0 and result.interrupted:
        log("interrupted before the first epoch finished: nothing saved")
        return FineTuneResult(None, result.start_val_cider, None, 0, 0, interrupted=True)
    record = FineTuningRecord(
        method=METHOD, source=str(source.resolve()) if options.member is None else f"{source.resolve()} "
        f"(member {options.member})", epochs=settings.epochs, learning_rate=settings.learning_rate,
        samples_per_image=settings.samples_per_image, images_per_batch=settings.images_per_batch,
        patience=settings.patience, seed=settings.seed, monitor_images=len(data.monitor),
        monitor_beam_size=settings.monitor_beam_size, epochs_run=result.epochs_run,
        best_epoch=result.best_epoch, start_val_cider=round(result.start_val_cider, 3),
        best_val_cider=round(result.best_val_cider, 3), stopped_early=result.stopped_early,
        interrupted=result.interrupted, seconds=round(time.time() - started, 1))
    bundle_config = dataclasses.replace(member_config, fine_tuning=record)
    history = {**loaded.history, "self_critical": result.history}  # the loss curve stays cross-entropy's
    try:
        save_bundle(output, model, loaded.vocab, bundle_config, history, trained_photos=seen_photos)
    except OutputFolderError as error:
        raise OutputFolderError(f"{error}; the checkpoint of epoch {result.epochs_run} is kept: run the same "
                                "command with --resume") from None
    if result.interrupted:
        log(f"interrupted after epoch {result.epochs_run}: the best weights so far are saved in {output}; "
            "run the same command with --resume to continue")
    else:
        remove_checkpoint(output)
        log(f"saved fine-tuned bundle to {output}")
    return FineTuneResult(output, result.start_val_cider, result.best_val_cider, result.best_epoch,
                          result.epochs_run, result.interrupted)


def _member_config(loaded: Bundle, member: int | None) -> BundleConfig:
    """The config a single-decoder bundle of ``member`` has: its decoder, encoder and training record."""
    bundle_config = loaded.config
    if member is None or not bundle_config.ensemble:
        return dataclasses.replace(bundle_config, fine_tuning=None)
    entry = bundle_config.ensemble[member - 1]
    if entry.decoder is None:
        raise BundleError(f"{loaded.path}: config.json does not record member {member}'s decoder")
    # A member of an ensemble that mixes encoders may read another encoder than the bundle's own.
    encoder = entry.encoder or bundle_config.encoder
    return dataclasses.replace(bundle_config, decoder=entry.decoder, training=entry.training,
                               fine_tuning=entry.fine_tuning, ensemble=None, encoder=encoder,
                               feature_shape=bundle_config.features_of(encoder))


def _prepare(bundle_config: BundleConfig, loaded: Bundle, options: FineTuneOptions,
             log: Callable[[str], None]) -> tuple[SelfCriticalData, str, frozenset[str] | None]:
    """The training photos' features and references, the validation monitor, the dataset's key,
    and the digests of every photo the fine-tuned model will have seen (None when unknown).

    The split is the bundle's own, so the photos it was validated (and tested) on stay unseen.
    """
    import numpy as np

    from captioning.data.datasets import load_dataset, split_dataset
    from captioning.encoders import build_encoder
    from captioning.evaluation.evaluate import recorded_split_config, training_dataset
    from captioning.features.cache import open_features
    from captioning.features.extraction import extract_features
    from captioning.training.caption_quality import CaptionQuality, monitor_subset
    from captioning.training.self_critical import SelfCriticalData

    source = options.dataset or training_dataset(bundle_config, loaded.path)
    dataset = load_dataset(source)
    recorded = bundle_config.dataset
    if recorded is not None and recorded.name and dataset.name and recorded.name != dataset.name:
        log(f"note: {loaded.path} was trained on {recorded.name}; fine-tuning on {dataset.name} with its "
            "split settings")
    images = dataset.images[: recorded.limit] if recorded is not None and recorded.limit else dataset.images
    split = split_dataset(images, recorded_split_config(bundle_config, loaded.path))
    train = split.train[: options.limit] if options.limit else split.train
    if not train or not split.val:
        raise DatasetError(f"{dataset.root}: fine-tuning needs training and validation photos in the bundle's "
                           f"split ({len(train)} train, {len(split.val)} val); use a larger dataset")
    spec = bundle_config.encoder
    encoder = build_encoder(spec.name, weights=spec.weights_to_load(loaded.path / config.BUNDLE_CONFIG_FILE))
    kind = bundle_config.feature_kind
    report = extract_features(dataset, encoder, kind=kind, image_paths=[i.path for i in train + split.val],
                              batch_size=config.EXTRACT_BATCH_SIZE, progress=options.progress)
    failed = {Path(path) for path, _ in report.failed}
    train = [image for image in train if image.path not in failed]
    val = [image for image in split.val if image.path not in failed]
    features, rows = open_features(dataset, encoder.name, encoder.weights_id, kind, [i.path for i in train + val])
    watched = monitor_subset(len(val), options.settings.monitor_images, options.settings.seed)
    monitor = CaptionQuality(features, rows[len(train) + watched], [val[i].captions for i in watched],
                             loaded.vocab, bundle_config.max_length, options.settings.monitor_beam_size)
    log(f"dataset {dataset.root}: {len(train)} training photos, validation CIDEr-D on {len(watched)} of "
        f"{len(val)} validation photos (beam {options.settings.monitor_beam_size})")
    data = SelfCriticalData(features=features, train_rows=np.asarray(rows[: len(train)], dtype=np.int64),
                            train_references=[image.captions for image in train], monitor=monitor)
    return data, dataset.key, _seen_photos(loaded, dataset, [image.path for image in train + val])


def _seen_photos(loaded: Bundle, dataset: Dataset, paths: list[Path]) -> frozenset[str] | None:
    """The source bundle's trained photos and this run's, by content (``bundles.trained_photos``).

    A source without a record (written before the record existed) saw the train and validation
    photos of its own dataset's split: when that is this dataset, this run's photos include them.
    On another dataset what it saw is unknown, so no record is written rather than a partial one.
    """
    from captioning.bundles.trained_photos import photo_digests, read_trained_photos

    before = read_trained_photos(loaded.path)
    recorded = loaded.config.dataset
    if before is None and (recorded is None or recorded.key != dataset.key):
        return None
    return (before or frozenset()) | photo_digests(paths)


def _fingerprint(source: Path, options: FineTuneOptions, dataset_key: str) -> dict:
    """The settings a resumed run must share with the interrupted one (JSON-able)."""
    settings = {k: v for k, v in dataclasses.asdict(options.settings).items() if k != "epochs"}
    return {"source": str(source.resolve()), "member": options.member, "dataset_key": dataset_key,
            "limit": options.limit, "self_critical": settings}


__all__ = ["FineTuneOptions", "FineTuneResult", "check_member", "default_output", "finetune_bundle"]
