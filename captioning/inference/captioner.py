"""Caption images with a trained bundle: the bundle, its encoder and the step decoder load once.

Each batch of files is decoded by ``images.load_image`` (the loader feature extraction used for
training) on a few threads, encoded by the bundle's own encoder through one compiled graph kept for
the captioner's lifetime (so only the first batch pays for tracing), cast to float16 as the feature
cache stores it, then captioned by one batched beam search. An image that cannot be read becomes a
``CaptionResult`` with an ``error``; the rest of its batch is still captioned.

Tags: when the bundle's encoder has an ImageNet classifier (``Encoder.classifier``) and tags are
on (the default), the search is ``inference.guided``: a caption that misses what the classifier is
sure of is searched again, constrained to name it. Off (``tags=False``, ``--no-tags``), or for an
encoder without a classifier, captions are exactly the ordinary beam search's.

Two runtimes give the same captions: the bundle's exported form (``inference.exported``, LiteRT,
no TensorFlow: a cold start in about a second) when it has one, else TensorFlow and the Keras
models (``Captioner.load``'s ``runtime``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from captioning import config
from captioning.data.images import resize_for_model
from captioning.errors import BundleError, CaptioningError, ExportError
from captioning.inference import search
from captioning.inference.constrained_search import constrained_beam_search
from captioning.inference.guided import UsedTag, guided_beam_search
from captioning.inference.inputs import expand_paths
from captioning.inference.repetition import RepetitionBlocking

if TYPE_CHECKING:
    from captioning.bundles.schema import BundleConfig
    from captioning.bundles.store import Bundle
    from captioning.data.text import Vocabulary
    from captioning.tags.tagger import Tagger


@dataclass(frozen=True)
class CaptionResult:
    """The outcome for one input image.

    Attributes:
        path: the image file (as found: given, or inside a given folder).
        caption: the caption, or None when the image failed.
        error: one line naming the file and why it failed, or None.
        tokens: the caption's word ids (no START/END).
        score: the caption's length-normalised log-probability.
        tags: the classifier's confident tags for this image, each marked whether the search
            added it; None when tags were off.
    """

    path: Path
    caption: str | None
    error: str | None = None
    tokens: tuple[int, ...] = field(default=(), repr=False)
    score: float | None = None
    tags: tuple[UsedTag, ...] | None = None

    @property
    def added_tags(self) -> tuple[str, ...]:
        """The tags this caption names only because the search was made to."""
        return tuple(tag.word for tag in self.tags or () if tag.added)

    @property
    def ok(self) -> bool:
        return self.error is None


# How a Captioner runs its models (``Captioner.load``): see there.
RUNTIMES = ("auto", "litert", "tensorflow")
LOADER_THREADS = 4  # Pillow releases the GIL while decoding, so threads overlap file reads


class ImageEncoder(Protocol):
    """What captioning needs of an encoder (``encoders.Encoder``): its input size and its features."""

    @property
    def input_size(self) -> int: ...

    def encode(self, pixels: np.ndarray, kind: str) -> np.ndarray: ...


class Captioner:
    """Everything needed to caption, loaded once and reused for every image."""

    def __init__(self, encoder: ImageEncoder, step_decoder: search.StepDecoder, vocab: Vocabulary, max_length: int,
                 feature_kind: str = "pooled", decoder_kind: str = "merge", bundle: Bundle | None = None,
                 tagger: Tagger | None = None, blocking: RepetitionBlocking | None = None,
                 length_alpha: float = 1.0, path: Path | None = None, runtime: str = "tensorflow"):
        """Assemble a captioner from loaded parts (``load`` is the usual way in).

        Args:
            encoder: an ``encoders.Encoder`` (the bundle's own) or its export
                (``inference.exported.ExportedEncoder``): its ``input_size`` and
                ``encode(pixels, kind)`` are used.
            step_decoder: from ``models.make_step_decoder`` or ``inference.exported``.
            vocab: a ``text.Vocabulary``.
            max_length: caption length counted with START and END, as trained.
            feature_kind: ``"pooled"`` (merge decoder) or ``"grid"`` (attention decoder).
            decoder_kind: ``"merge"`` or ``"attention"``.
            bundle: the loaded ``bundles.store.Bundle`` when there is one.
            tagger: a ``tags.tagger.Tagger`` to guide captions with, or None (tags off).
            blocking: bar repeated content words and trigrams in the search (None: off).
            length_alpha: rank finished captions by ``log_prob / length ** length_alpha``
                (1: the ordinary normalisation).
            path: the bundle folder, when there is one.
            runtime: ``"litert"`` (the bundle's export, no TensorFlow) or ``"tensorflow"``.
        """
        self.encoder = encoder
        self.step_decoder = step_decoder
        self.vocab = vocab
        self.max_length = int(max_length)
        self.feature_kind = feature_kind
        self.decoder_kind = decoder_kind
        self.bundle = bundle
        self.tagger = tagger
        self.blocking = blocking
        self.length_alpha = float(length_alpha)
        self.path = path if path is not None else (bundle.path if bundle is not None else None)
        self.runtime = runtime

    @property
    def has_attention(self) -> bool:
        """Whether the decoder attends over a grid, so ``--attention-map`` can show where it looked."""
        return hasattr(self.step_decoder, "step_with_attention")

    @classmethod
    def load(cls, path: str | Path | None = None, tags: bool = True, blocking: bool = config.REPETITION_BLOCKING,
             length_alpha: float = config.LENGTH_ALPHA, runtime: str = "auto",
             log: Callable[[str], None] | None = None,
             before_tensorflow: Callable[[], object] | None = None) -> Captioner:
        """Load a bundle and build its encoder and step decoder.

        Args:
            path: a bundle folder; default the default model (``bundles.default_model``).
            tags: guide captions with the encoder's ImageNet classifier when it has one.
            blocking: bar repeated content words and trigrams within a caption.
            length_alpha: rank finished captions by ``log_prob / length ** length_alpha``.
            runtime: ``"auto"``: the bundle's exported form (LiteRT, no TensorFlow) when it has a
                usable one, made now when it has none and ``config.EXPORT_BUNDLES`` is on, else
                TensorFlow; ``"litert"``: the export, made now if needed; ``"tensorflow"``: the
                Keras models.
            log: receives notes (an export being made, or TensorFlow used because it could not be).
            before_tensorflow: called once before TensorFlow is imported (the CLI's quiet import).

        Returns:
            A ready Captioner.

        Raises:
            BundleError: no bundle, or one that cannot be loaded.
            EncoderError: the bundle's encoder cannot be built.
            ExportError: ``runtime="litert"`` and the export cannot be made or loaded.
        """
        from captioning.bundles import store as bundles
        from captioning.bundles.default_model import default_model

        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        bundle_path = Path(path) if path is not None else default_model().path
        settings = bundles.read_bundle_config(bundle_path)
        captioner = cls._load_runtime(bundle_path, settings, runtime, log, before_tensorflow)
        captioner._set_search(settings, tags, blocking, length_alpha)
        return captioner

    @classmethod
    def _load_runtime(cls, bundle_path: Path, settings: BundleConfig, runtime: str,
                      log: Callable[[str], None] | None,
                      before_tensorflow: Callable[[], object] | None) -> Captioner:
        """The encoder and step decoder from the exported form or from TensorFlow (see ``load``)."""
        if runtime == "litert" or (runtime == "auto" and config.EXPORT_BUNDLES):
            try:
                return cls._load_exported(bundle_path, settings, log, before_tensorflow)
            except ExportError as error:
                if runtime == "litert":
                    raise
                if log is not None:
                    log(f"note: {error}; captioning with TensorFlow instead")
        elif runtime == "auto":
            from captioning.bundles.exported import find_export

            found = find_export(bundle_path, settings).folder  # one made earlier is still used
            if found is not None:
                return cls._from_export(bundle_path, settings, found)
        if before_tensorflow is not None:
            before_tensorflow()
        return cls._load_tensorflow(bundle_path)

    def _set_search(self, settings: BundleConfig, tags: bool, blocking: bool, length_alpha: float) -> None:
        """Tags (from the encoder's ImageNet classifier, when it has one), repetition blocking, ranking."""
        self.tagger = None
        if tags and settings.encoder.has_classifier:
            from captioning.tags.tagger import Tagger

            classifier = getattr(self.encoder, "classifier", None)
            if classifier is None:  # the exported encoder: the same weights, read without TensorFlow
                from captioning.encoders.lite_weights import classifier_weights

                classifier = classifier_weights(settings.encoder.name,
                                                settings.encoder.weights_to_load(self._config_file()))
            first_features = getattr(self.encoder, "first_features", None)  # an EncoderSet's joined features
            self.tagger = Tagger(classifier, self.vocab, features_view=None if first_features is None else
                                 lambda features: first_features(features, settings.feature_kind))
        self.blocking = RepetitionBlocking.for_vocabulary(self.vocab) if blocking else None
        self.length_alpha = float(length_alpha)

    def _config_file(self) -> Path:
        from captioning.bundles.store import CONFIG_FILE

        return Path(self.path or ".") / CONFIG_FILE

    @classmethod
    def _load_exported(cls, bundle_path: Path, settings: BundleConfig, log: Callable[[str], None] | None,
                       before_tensorflow: Callable[[], object] | None) -> Captioner:
        from captioning.export.first_use import ensure_export

        return cls._from_export(bundle_path, settings, ensure_export(bundle_path, settings, log, before_tensorflow))

    @classmethod
    def _from_export(cls, bundle_path: Path, settings: BundleConfig, folder: Path) -> Captioner:
        from captioning.bundles.store import VOCAB_FILE
        from captioning.data.text import Vocabulary
        from captioning.inference.encoder_set import assemble
        from captioning.inference.exported import load_exported

        vocab = Vocabulary.load(bundle_path / VOCAB_FILE)
        if len(vocab) != settings.vocab_size:
            raise BundleError(f"{bundle_path}: vocab.json has {len(vocab)} words but the model was trained with "
                              f"{settings.vocab_size}; the files come from different runs, retrain the model")
        encoder, step_decoder = assemble(*load_exported(folder, settings), settings)
        return cls(encoder, step_decoder, vocab, settings.max_length,
                   feature_kind=settings.feature_kind, decoder_kind=settings.decoder.kind, path=bundle_path,
                   runtime="litert")

    @classmethod
    def _load_tensorflow(cls, bundle_path: Path) -> Captioner:
        from captioning.bundles import store as bundles
        from captioning.encoders import build_bundle_encoder
        from captioning.inference.encoder_set import assemble
        from captioning.models import make_step_decoder

        loaded = bundles.load_bundle(bundle_path)
        settings = loaded.config
        # An ensemble bundle has several members; they caption together (inference.ensemble), each
        # from its own encoder's features when they read several (inference.encoder_set).
        encoder, step_decoder = assemble([build_bundle_encoder(spec, loaded.path) for spec in settings.encoders],
                                         [make_step_decoder(member, settings.decoder) for member in loaded.members],
                                         settings)
        return cls(encoder, step_decoder, loaded.vocab, settings.max_length, feature_kind=settings.feature_kind,
                   decoder_kind=settings.decoder.kind, bundle=loaded, runtime="tensorflow")

    # ------------------------------------------------------------------------------ captioning

    def caption(self, image: str | Path, beam_size: int = config.DEFAULT_BEAM_SIZE) -> CaptionResult:
        """Caption one image file.

        Args:
            image: the image file.
            beam_size: beam width; 1 is greedy.

        Returns:
            Its CaptionResult: ``caption``, ``score`` and ``tokens``, or ``error`` when the file
            cannot be read (missing, not an image, ...).

        Raises:
            CaptioningError: ``image`` is a folder (``caption_many`` captions the images in one).
        """
        if Path(image).is_dir():
            raise CaptioningError(f"{image}: a folder, not an image; caption_many([...]) captions the "
                                  "images in a folder")
        return self.caption_many([image], beam_size)[0]

    def caption_many(self, paths: Sequence[str | Path], beam_size: int = config.DEFAULT_BEAM_SIZE,
                     batch_size: int = config.CAPTION_BATCH_SIZE) -> list[CaptionResult]:
        """Caption image files and folders (searched recursively, image files only).

        Args:
            paths: files and/or folders, in the order wanted.
            beam_size: beam width; 1 is greedy.
            batch_size: images per encoder and decoder batch.

        Returns:
            One result per image in input order, folders expanded in sorted order; a missing path
            or a folder without images is one failed result.
        """
        return self.caption_entries(expand_paths(paths), beam_size, batch_size)

    def caption_entries(self, entries: Sequence[tuple[Path, str | None]],
                        beam_size: int = config.DEFAULT_BEAM_SIZE,
                        batch_size: int = config.CAPTION_BATCH_SIZE) -> list[CaptionResult]:
        """Caption the output of ``expand_paths``: entries with an error are passed through.

        Args:
            entries: ``(image path, error or None)`` pairs.
            beam_size: beam width; 1 is greedy.
            batch_size: images per encoder and decoder batch.

        Returns:
            One result per entry, in order.
        """
        results: list[CaptionResult | None] = [None] * len(entries)
        todo = []
        for position, (path, error) in enumerate(entries):
            if error is None:
                todo.append(position)
            else:
                results[position] = CaptionResult(path, None, error)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            captioned = self._caption_batch([entries[i][0] for i in chunk], beam_size)
            for position, result in zip(chunk, captioned, strict=True):
                results[position] = result
        return [result for result in results if result is not None]  # every slot is filled above

    def caption_arrays(self, images_uint8: np.ndarray | Sequence[np.ndarray],
                       beam_size: int = config.DEFAULT_BEAM_SIZE) -> list[str]:
        """Caption in-memory RGB images.

        Args:
            images_uint8: ``(B, H, W, 3)`` uint8, or a list of ``(H, W, 3)`` arrays; any size other
                than the encoder's is resized as ``images.load_image`` does (squashed, bilinear).

        Returns:
            One caption per image.
        """
        pixels = np.stack([self._fit(image) for image in images_uint8])  # (B, size, size, 3)
        features = self.encode(pixels)
        return [self.vocab.decode(h.tokens) for h in self.decode_features(features, beam_size)]

    def decode_features(self, features: np.ndarray,
                        beam_size: int = config.DEFAULT_BEAM_SIZE) -> list[search.Hypothesis]:
        """The best hypothesis per image for already-encoded features ``(B, ...)``."""
        return [hypothesis for hypothesis, _ in self.decode_features_tagged(features, beam_size)]

    def decode_features_tagged(self, features: np.ndarray, beam_size: int = config.DEFAULT_BEAM_SIZE,
                               tags: bool = True) -> list[tuple[search.Hypothesis, tuple[UsedTag, ...] | None]]:
        """As ``decode_features``, each with the tags behind it (None when tags are off).

        ``tags=False`` turns tags off for this call only (the web API's per-request choice).
        """
        if tags and self.tagger is not None:
            guided = guided_beam_search(self.step_decoder, features, self.tagger, beam_size, self.max_length,
                                        blocking=self.blocking, length_alpha=self.length_alpha)
            return [(caption.hypothesis, caption.used_tags()) for caption in guided]
        if self.blocking is not None or self.length_alpha != 1.0:
            # No constraints: the ordinary search, with these options (exactly it without them).
            free = constrained_beam_search(self.step_decoder, features, [[]] * len(features), beam_size,
                                           self.max_length, blocking=self.blocking, length_alpha=self.length_alpha)
            return [(hypotheses[0] if hypotheses else search.Hypothesis((), 0.0, 0), None) for hypotheses in free]
        ranked = search.beam_search_hypotheses(self.step_decoder, features, beam_size, self.max_length)
        return [(hypotheses[0], None) for hypotheses in ranked]

    # -------------------------------------------------------------------------------- internals

    def _caption_batch(self, paths: list[Path], beam_size: int) -> list[CaptionResult]:
        loaded = self._load(paths)
        ok = [pixels for pixels in loaded if not isinstance(pixels, str)]
        hypotheses = iter(self.decode_features_tagged(self.encode(np.stack(ok)), beam_size) if ok else [])
        results = []
        for path, pixels in zip(paths, loaded, strict=True):
            if isinstance(pixels, str):
                results.append(CaptionResult(path, None, _name_file(path, pixels)))
            else:
                best, tags = next(hypotheses)
                results.append(CaptionResult(path, self.vocab.decode(best.tokens), None,
                                             best.tokens, best.score, tags))
        return results

    def _load(self, paths: list[Path]) -> list[np.ndarray | str]:
        """Each image's pixels, or the one-line reason it cannot be read."""
        from concurrent.futures import ThreadPoolExecutor

        def load(path: Path) -> np.ndarray | str:
            try:
                return self.load_pixels(path)
            except CaptioningError as error:
                return str(error)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
                return f"{path}: cannot read image ({type(error).__name__}: {error})"

        with ThreadPoolExecutor(max_workers=min(LOADER_THREADS, len(paths))) as pool:
            return list(pool.map(load, paths))

    def load_pixels(self, path: str | Path) -> np.ndarray:
        """One image file as ``encode`` takes it: ``images.load_image`` at the encoder's input size,
        the loader feature extraction used for training (for an ensemble that reads several
        encoders, each size's pixels packed in one row: ``inference.encoder_set``).

        Raises:
            ImageError: one line naming the file and why it cannot be used.
        """
        from captioning.data.images import load_image

        load_for_each = getattr(self.encoder, "load_image", None)
        return load_for_each(path) if load_for_each is not None else load_image(path, self.encoder.input_size)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Features for uint8 pixels ``(B, size, size, 3)``: the encoder's own, float16 as the feature
        cache stores them (the decoder sees the numbers it was trained on)."""
        return self.encoder.encode(pixels, self.feature_kind)

    def _fit(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB images, got {image.shape} {image.dtype}")
        size = self.encoder.input_size
        if image.shape[:2] == (size, size):
            return image
        return resize_for_model(Image.fromarray(image), size)


def _name_file(path: Path, reason: str) -> str:
    """A failure message that names the file once (the loader's messages usually already do)."""
    return reason if str(path) in reason or path.name in reason else f"{path}: {reason}"
