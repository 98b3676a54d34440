"""Training, end to end: dataset -> split -> vocabulary -> features -> tf.data -> fit -> bundle.

``train_model`` is the one function the ``train`` subcommand and the menu call. Importing this
module does not import TensorFlow: ``train_model`` first says what it will train, claims the output
folder (refusing one that is not the tool's to replace, or that another run is writing), reads the
dataset (a mistyped path, an unknown layout or an offline Mini-COCO download fails here) and checks
that the encoder's weights can be had, and only then imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from captioning import config
from captioning.bundles.schema import BundleConfig, DatasetRecord, EncoderSpec, TrainingRecord
from captioning.errors import DatasetError
from captioning.training.cluster import ClusterTask, WorkerLostError, read_cluster

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from captioning.data.datasets import CaptionedImage, Dataset
    from captioning.data.text import Vocabulary
    from captioning.encoders.base import Encoder
    from captioning.training.fit import FitResult, TrainingData


PRECISION_WORDS = {"float32": "float32", "bfloat16": "mixed bfloat16"}


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run depends on (built from the CLI or the menu)."""

    dataset: str = config.MINI_COCO_SOURCE
    encoder: str = config.DEFAULT_ENCODER
    encoder_weights: str = config.DEFAULT_ENCODER_WEIGHTS
    decoder: config.DecoderConfig = field(default_factory=config.DecoderConfig)
    train: config.TrainConfig = field(default_factory=config.TrainConfig)
    vocab: config.VocabConfig = field(default_factory=config.VocabConfig)
    split: config.SplitConfig = field(default_factory=config.SplitConfig)
    limit: int | None = None
    output: Path | None = None
    resume: bool = False
    strategy: str = config.DEFAULT_STRATEGY
    progress: bool = False  # per-batch progress bars (terminals)
    word_vectors: Path | None = None  # GloVe-format text file initialising the word embedding
    freeze_word_vectors: bool = False  # keep those vectors fixed during training

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainOptions:
        """Options from the parsed ``train`` arguments.

        Args:
            args: ``argparse.Namespace`` of the ``train`` subcommand.

        Returns:
            The options.

        Raises:
            CaptioningError: ``--word-vectors`` unreadable, or of another size than ``--embedding-dim``.
        """
        import sys

        embedding_dim = args.embedding_dim or config.DecoderConfig.embedding_dim
        word_vectors = Path(args.word_vectors).expanduser() if args.word_vectors else None
        if word_vectors is not None:
            from captioning.data.word_vectors import vector_dimension

            size = vector_dimension(word_vectors)  # the embedding takes the vectors' size
            if args.embedding_dim not in (None, size):
                raise DatasetError(f"--embedding-dim {args.embedding_dim} differs from the {size} numbers per word "
                                   f"of {word_vectors}; drop --embedding-dim (it follows the vectors)")
            embedding_dim = size
        elif args.freeze_word_vectors:
            raise DatasetError("--freeze-word-vectors needs --word-vectors FILE")
        return cls(
            dataset=str(args.dataset), encoder=args.encoder, encoder_weights=args.encoder_weights,
            decoder=config.DecoderConfig(
                kind=args.decoder, embedding_dim=embedding_dim, units=args.units, dropout=args.dropout,
                attention_regularization=args.attention_regularization),
            train=config.TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                     learning_rate=args.learning_rate, seed=args.seed,
                                     select_by=args.select_by, select_images=args.select_images,
                                     precision=args.precision),
            vocab=config.VocabConfig(min_count=args.min_count),
            split=config.SplitConfig(seed=args.seed),
            limit=args.limit, output=Path(args.output).expanduser() if args.output else None, resume=args.resume,
            strategy=args.strategy, progress=sys.stderr.isatty(), word_vectors=word_vectors,
            freeze_word_vectors=args.freeze_word_vectors)


@dataclass
class TrainResult:
    """What a run produced. ``bundle_dir`` is None only when stopped before the first epoch."""

    bundle_dir: Path | None
    best_val_loss: float | None
    epochs_run: int
    history: dict
    interrupted: bool = False


@dataclass
class _Prepared:
    dataset: Dataset
    vocab: Vocabulary
    max_length: int
    encoder: Encoder
    data: TrainingData
    feature_shape: tuple[int, ...]
    counts: dict[str, int]
    val_images: list[CaptionedImage]  # for the validation CIDEr-D of ``select_by="val_cider"``
    val_image_rows: np.ndarray  # (len(val_images),) their feature rows
    seen_paths: list[Path]  # every photo training or the choice of epoch looked at (train + val)


def default_output(dataset_name: str, encoder: str, decoder: str) -> Path:
    """``config.MODELS_DIR / "<dataset>-<encoder>-<decoder>"`` (read at call time)."""
    return Path(config.MODELS_DIR) / f"{dataset_name}-{encoder}-{decoder}"


def output_folder(options: TrainOptions) -> Path:
    """Where the run writes its bundle: ``--output``, else ``default_output`` for the dataset.

    Known before the dataset is read: a local dataset's name is its folder's (``Dataset.name``),
    Mini-COCO's is ``mini-coco``.
    """
    if options.output:
        return Path(options.output).expanduser()
    dataset = str(options.dataset)
    name = dataset if dataset == config.MINI_COCO_SOURCE else Path(dataset).expanduser().resolve().name
    return default_output(name, options.encoder, options.decoder.kind)


def interrupted_run(options: TrainOptions) -> Path | None:
    """The run's output folder when it holds an interrupted run's checkpoint (``--resume`` applies).

    An interrupted run is also one whose epochs were all done but whose bundle was not written
    (killed during the final save): resuming it writes the bundle. No TensorFlow needed.
    """
    from captioning.training.checkpoint_layout import has_checkpoint

    output = output_folder(options)
    return output if has_checkpoint(output) else None


def train_model(options: TrainOptions, log: Callable[[str], None] = print,
                before_tensorflow: Callable[[], object] | None = None) -> TrainResult:
    """Train a caption model and write its bundle.

    With ``strategy="multi-worker"`` every host runs this with the same options and its own
    ``TF_CONFIG``; only the chief claims and writes the output folder. The other workers run the
    same steps (TensorFlow's multi-worker saving involves every worker) into a private temporary
    folder that is removed at the end, so they never touch a folder a user owns.

    Args:
        options: The run's settings.
        log: Receives progress lines (per step and per epoch).
        before_tensorflow: called once the output folder is claimed, before TensorFlow is first
            imported (the CLI imports it quietly there: ``cli.runtime.import_tensorflow``).

    Returns:
        The TrainResult. On Ctrl-C after at least one finished epoch, the bundle holds the best
        weights so far, the checkpoint stays for ``--resume``, and ``interrupted`` is True. A
        worker that is not the chief returns ``bundle_dir=None``.

    Raises:
        CaptioningError: An output folder that is not the tool's to replace or that another run
            is writing (both before any work), a missing or malformed ``TF_CONFIG`` (before any
            work), an unreadable dataset, no usable captions, encoder or cache failures, a resume
            that does not match, a worker lost mid-run, or a full disk.
    """
    from captioning.bundles.default_model import shown
    from captioning.storage.output_folder import claim

    target = output_folder(options)
    log(f"training: {options.encoder} + {options.decoder.kind} decoder on dataset {options.dataset} "
        f"-> {shown(target)}{' (resuming)' if options.resume else ''}")
    task = _cluster_task(options)
    if task is not None and not task.is_chief:
        return _train_as_worker(options, task, log, before_tensorflow)
    with claim(target, log, default=not options.output) as output:
        dataset = _checked_dataset(options, log)
        if before_tensorflow is not None:
            before_tensorflow()  # only now, after the cheap checks
        return _train_into(output, options, dataset, log, task)


def _checked_dataset(options: TrainOptions, log: Callable[[str], None]) -> Dataset:
    """The cheap checks before TensorFlow: the dataset reads, and the encoder's weights can be had."""
    from captioning.data.datasets import load_dataset
    from captioning.encoders.keras_weights import check_available

    dataset = load_dataset(options.dataset)
    for note in dataset.notes:
        log(f"note: {note}")
    check_available(options.encoder, options.encoder_weights)
    return dataset


def _cluster_task(options: TrainOptions) -> ClusterTask | None:
    """This process's task in a multi-worker run (``TF_CONFIG`` checked); None for other strategies."""
    return read_cluster() if options.strategy == config.MULTI_WORKER_STRATEGY else None


def _train_as_worker(options: TrainOptions, task: ClusterTask, log: Callable[[str], None],
                     before_tensorflow: Callable[[], object] | None) -> TrainResult:
    """A worker that is not the chief: the same run, written into a temporary folder, then removed.

    Resuming, it starts from the chief's checkpoint (read, never written), as TensorFlow's
    multi-worker guide has every worker restore from the chief's folder.
    """
    import shutil
    import tempfile

    from captioning.training.checkpoint_layout import ResumeError, checkpoint_dir, has_checkpoint

    chief_output = output_folder(options)
    log(f"{task.name}: only the chief writes the model and checkpoints (to its --output); this worker's "
        "copies go to a temporary folder, removed at the end")
    with tempfile.TemporaryDirectory(prefix="captioning-worker-") as scratch:
        output = Path(scratch) / chief_output.name
        if options.resume:
            if not has_checkpoint(chief_output):
                raise ResumeError(f"{task.name}: no checkpoint of the chief's run in {chief_output}; with "
                                  "--resume every worker reads it, so --output must name a folder all hosts "
                                  "share (the same path on each)")
            shutil.copytree(checkpoint_dir(chief_output), checkpoint_dir(output))
        dataset = _checked_dataset(options, log)
        if before_tensorflow is not None:
            before_tensorflow()
        result = _train_into(output, options, dataset, log, task)
    return dataclasses.replace(result, bundle_dir=None)


def _train_into(output: Path, options: TrainOptions, dataset: Dataset, log: Callable[[str], None],
                task: ClusterTask | None = None) -> TrainResult:
    """``train_model`` once ``output`` is claimed (or, for a worker that is not the chief, made)."""
    import keras

    from captioning.bundles.store import save_bundle
    from captioning.bundles.trained_photos import photo_digests
    from captioning.models import build_decoder
    from captioning.storage.output_folder import OutputFolderError
    from captioning.training import fit
    from captioning.training.checkpoints import remove_checkpoint
    from captioning.training.distribution import make_strategy
    from captioning.training.precision import compute_precision, resolve_precision

    started = time.time()
    if task is not None:
        log(f"{task.name}: joining the cluster in TF_CONFIG; training starts once all {task.num_workers} "
            "workers have joined")
    # First: a multi-worker strategy must exist before TensorFlow runs anything else.
    strategy = make_strategy(options.strategy)
    prepared = _prepare(options, dataset, log, extract=task is None)
    precision = resolve_precision(options.train.precision)
    keras.utils.set_random_seed(options.train.seed)
    with strategy.scope(), compute_precision(precision):
        model = build_decoder(len(prepared.vocab), prepared.max_length, prepared.feature_shape,
                              options.decoder)
        found = _load_word_vectors(model, options, prepared.vocab, log)  # a resumed run then loads its checkpoint
        fit.compile_model(model, options.train.learning_rate)
    if strategy.num_replicas_in_sync > 1:
        log(f"training on {strategy.num_replicas_in_sync} devices ({type(strategy).__name__})")
    log(f"training {options.decoder.kind} decoder in {PRECISION_WORDS[precision]}: "
        f"{len(prepared.data.train_rows)} train / {len(prepared.data.val_rows)} val captions, "
        f"up to {options.train.epochs} epochs -> {output}")
    fitting_scope: contextlib.AbstractContextManager = contextlib.nullcontext()
    if task is not None:
        from captioning.training.keras_multi_worker import prepare_model

        prepare_model(model, strategy)
        fitting_scope = strategy.scope()  # Keras fits it under the strategy of the enclosing scope
    with _lost_workers_reported(task, output), fitting_scope:
        result = fit.fit(model, prepared.data, options.train, output, _fingerprint(options, prepared),
                         resume=options.resume, log=log, progress=options.progress,
                         caption_quality=_caption_quality(model, options, prepared, log))
    if result.epochs_run == 0:
        log("interrupted before the first epoch finished: nothing saved")
        return TrainResult(None, None, 0, result.history, interrupted=True)
    bundle_config = _bundle_config(options, prepared, result, time.time() - started, precision, found)
    try:
        save_bundle(output, model, prepared.vocab, bundle_config, result.history,
                    trained_photos=photo_digests(prepared.seen_paths))
    except OutputFolderError as error:  # the checkpoint is intact: the bundle can be written later
        then = "continue" if result.interrupted else "write the bundle without training again"
        raise OutputFolderError(f"{error}; the checkpoint of epoch {result.epochs_run} is kept: run the same "
                                f"command with --resume to {then}") from None
    # A worker that is not the chief wrote into its temporary folder: the chief's is the one to name.
    saved_in = output if task is None or task.is_chief else "the chief's output folder"
    if result.interrupted:
        log(f"interrupted after epoch {result.epochs_run}: the best weights so far are saved in {saved_in}; "
            "run the same command with --resume to continue")
    else:
        remove_checkpoint(output)  # finished: nothing left to resume
        log(f"saved model bundle to {saved_in}")
    return TrainResult(output, result.best_val_loss, result.epochs_run, result.history, result.interrupted)


@contextlib.contextmanager
def _lost_workers_reported(task: ClusterTask | None, output: Path) -> Iterator[None]:
    """In a multi-worker run, a worker that stops or cannot be reached becomes one line.

    TensorFlow's collectives then fail on every other worker (after its health checks notice; seen
    here: ``UnavailableError`` within seconds of the chief's Ctrl-C); the last finished epoch's
    checkpoint is intact on the chief.
    """
    if task is None:
        yield
        return
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError) as error:  # its message is a graph dump, of no use to a user
        where = f"in {output}" if task.is_chief else "by the chief"
        raise WorkerLostError(f"{task.name}: training stopped, another worker stopped or cannot be reached "
                              f"({type(error).__name__}); the last finished epoch's checkpoint is kept {where}: "
                              "start every worker again with --resume") from None


def _prepare(options: TrainOptions, dataset: Dataset, log: Callable[[str], None], extract: bool = True) -> _Prepared:
    """Dataset, split, vocabulary and the features' memmap.

    ``extract``: compute missing features into the cache (under its write lock). Workers of a
    multi-worker run pass False: they only read the cache (filled beforehand by ``extract``,
    with ``--shard`` on several hosts), so workers sharing a cache folder never contend for it.
    """
    from captioning.data.datasets import split_dataset
    from captioning.data.text import Vocabulary, choose_max_length, tokenize
    from captioning.encoders import build_encoder
    from captioning.features.cache import open_features
    from captioning.features.extraction import cached_features_report, extract_features
    from captioning.training.fit import TrainingData

    images = dataset.images[: options.limit] if options.limit else dataset.images
    split = split_dataset(images, options.split)
    if not split.train:
        raise DatasetError(f"{dataset.root}: no image left for training after the split; use more images")
    train_captions = [c for image in split.train for c in image.captions]
    vocab = Vocabulary.build(train_captions, options.vocab.min_count, options.vocab.max_size)
    if len(vocab) <= 4:
        raise DatasetError(f"{dataset.root}: no word appears {options.vocab.min_count} times in the training "
                           "captions; use more images or a lower --min-count")
    max_length = choose_max_length([len(tokenize(c)) for c in train_captions], options.vocab.length_percentile)
    log(f"dataset {dataset.root}: {len(split.train)} train / {len(split.val)} val / {len(split.test)} test "
        f"images; vocabulary {len(vocab)} words; captions up to {max_length} tokens")

    encoder = build_encoder(options.encoder, options.encoder_weights)
    kind = options.decoder.feature_kind
    wanted = [image.path for image in split.train + split.val]
    if extract:
        report = extract_features(dataset, encoder, kind=kind, image_paths=wanted,
                                  batch_size=config.EXTRACT_BATCH_SIZE, progress=options.progress)
    else:
        report = cached_features_report(dataset, encoder, kind=kind, image_paths=wanted)
    failed = {Path(path) for path, _ in report.failed}
    if failed:
        log(f"skipping {len(failed)} unreadable images (first: {sorted(failed)[0]})")
    train = [image for image in split.train if image.path not in failed]
    val = [image for image in split.val if image.path not in failed]
    if not train:
        raise DatasetError(f"{dataset.root}: none of the training images could be read")
    # The whole cache as a memmap: training reads each batch's rows, never the array at once.
    features, image_rows = open_features(dataset, encoder.name, encoder.weights_id, kind,
                                         [i.path for i in train + val])  # image_rows: (images,)
    train_rows, train_tokens = _caption_rows(train, vocab, max_length, offset=0)
    val_rows, val_tokens = _caption_rows(val, vocab, max_length, offset=len(train))
    data = TrainingData(features, image_rows[train_rows], train_tokens, image_rows[val_rows], val_tokens)
    counts = {"train_images": len(train), "val_images": len(val), "test_images": len(split.test),
              "train_captions": len(train_rows), "val_captions": len(val_rows)}
    return _Prepared(dataset, vocab, max_length, encoder, data, tuple(features.shape[1:]), counts,
                     val, image_rows[len(train):], [image.path for image in train + val])


def _load_word_vectors(model, options: TrainOptions, vocab: Vocabulary, log: Callable[[str], None]) -> int | None:
    """Put ``--word-vectors`` into the model's embedding; how many vocabulary words the file had."""
    if options.word_vectors is None:
        return None
    from captioning.data.text import RESERVED_TOKENS
    from captioning.data.word_vectors import read_word_vectors
    from captioning.models import set_word_embedding

    loaded = read_word_vectors(options.word_vectors, vocab.words)
    rows = {vocab.id_of(word): vector for word, vector in loaded.vectors.items() if word not in RESERVED_TOKENS}
    set_word_embedding(model, rows, freeze=options.freeze_word_vectors)
    words = len(vocab) - len(RESERVED_TOKENS)
    state = "frozen" if options.freeze_word_vectors else "trained further"
    log(f"word vectors: {len(rows)} of {words} vocabulary words found in {options.word_vectors} "
        f"({loaded.dimension} numbers each, {state}); the others start random")
    return len(rows)


def _caption_quality(model, options: TrainOptions, prepared: _Prepared,
                     log: Callable[[str], None]) -> Callable[[], float] | None:
    """The validation CIDEr-D scorer ``fit`` selects epochs by, or None to select by the loss."""
    if options.train.select_by != "val_cider":
        return None
    if not prepared.val_images:
        log("no validation photos: epochs are chosen by the training loss, not validation CIDEr-D")
        return None
    from captioning.models import build_decoder, make_step_decoder
    from captioning.training.caption_quality import CaptionQuality, monitor_subset
    from captioning.training.precision import compute_precision

    chosen = monitor_subset(len(prepared.val_images), options.train.select_images, options.train.seed)
    monitor = CaptionQuality(prepared.data.features, prepared.val_image_rows[chosen],
                             [prepared.val_images[i].captions for i in chosen], prepared.vocab,
                             prepared.max_length, options.train.select_beam_size)
    log(f"epochs are chosen by validation CIDEr-D on {len(monitor)} photos (beam {monitor.beam_size})")
    # Captions come from a float32 copy of the model, as users' captions do (the model may train in
    # mixed bfloat16, whose step decoder would mix dtypes); its weights are refreshed before scoring.
    with compute_precision("float32"):
        scorer = build_decoder(len(prepared.vocab), prepared.max_length, prepared.feature_shape, options.decoder)
    step_decoder = make_step_decoder(scorer, options.decoder)

    def score() -> float:
        scorer.set_weights(model.get_weights())
        return monitor.score(step_decoder)

    return score


def _caption_rows(images: Sequence[CaptionedImage], vocab: Vocabulary, max_length: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """One example per caption: (feature row of its image, padded token ids)."""
    rows = np.array([offset + i for i, image in enumerate(images) for _ in image.captions], dtype=np.int64)
    captions = [caption for image in images for caption in image.captions]
    tokens = vocab.encode_batch(captions, max_length) if captions else np.zeros((0, max_length), np.int32)
    return rows, tokens  # (N,), (N, max_length)


def _fingerprint(options: TrainOptions, prepared: _Prepared) -> dict:
    """The settings a resumed run must share with the interrupted one (JSON-able)."""
    train = {k: v for k, v in dataclasses.asdict(options.train).items() if k != "epochs"}
    return {
        "dataset_key": prepared.dataset.key, "limit": options.limit,
        "encoder": options.encoder, "weights_id": prepared.encoder.weights_id,
        "decoder": dataclasses.asdict(options.decoder), "train": train,
        "vocab": dataclasses.asdict(options.vocab), "split": dataclasses.asdict(options.split),
        "vocab_size": len(prepared.vocab), "max_length": prepared.max_length,
        "word_vectors": str(options.word_vectors) if options.word_vectors else None,
        "freeze_word_vectors": options.freeze_word_vectors,
    }


def _bundle_config(options: TrainOptions, prepared: _Prepared, result: FitResult,
                   seconds: float, precision: str, word_vectors_found: int | None = None) -> BundleConfig:
    """What the run's bundle records: the encoder and its weights, the decoder, the data, the run."""
    weights = options.encoder_weights
    random = weights == "none"
    encoder = EncoderSpec(
        name=prepared.encoder.name, weights_id=prepared.encoder.weights_id,
        input_size=prepared.encoder.input_size, feature_kind=options.decoder.feature_kind,
        # A local weights file: the captioner rebuilds the encoder from it.
        weights=None if weights in ("imagenet", "none") else str(Path(weights).resolve()),
        random_weights=random,
        note="random encoder weights: for tests and benchmarks only, not for real use" if random else None)
    dataset = DatasetRecord(source=prepared.dataset.source or str(prepared.dataset.root), key=prepared.dataset.key,
                            name=prepared.dataset.name, limit=options.limit, **prepared.counts)
    val_cider = result.history.get("val_cider") or []
    best_val_cider = val_cider[result.best_epoch - 1] if val_cider and result.best_epoch else None
    # The precision it resolved to ("auto" would not say what the run trained in).
    settings = {**dataclasses.asdict(options.train), "precision": precision}
    training = TrainingRecord(**settings, epochs_run=result.epochs_run,
                              best_epoch=result.best_epoch, best_val_loss=result.best_val_loss,
                              best_val_cider=best_val_cider,
                              word_vectors=str(options.word_vectors.resolve()) if options.word_vectors else None,
                              freeze_word_vectors=options.freeze_word_vectors if options.word_vectors else None,
                              word_vectors_found=word_vectors_found,
                              stopped_early=result.stopped_early, interrupted=result.interrupted,
                              seconds=round(seconds, 1))
    return BundleConfig(encoder=encoder, decoder=options.decoder, vocab_size=len(prepared.vocab),
                        max_length=prepared.max_length, feature_shape=tuple(prepared.feature_shape),
                        dataset=dataset, split=options.split, vocab_config=options.vocab, training=training)
