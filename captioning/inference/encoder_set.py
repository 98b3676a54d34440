"""Ensembles whose members read different encoders: every photo is encoded by each, in one array.

An ensemble may mix decoders trained on different encoders' features (``bundles.combine``; the
shipped model has EfficientNet-Lite1 and Lite0 members): decoders that learnt from different
features make more different mistakes, so their average gains more than members of one encoder
do. The searches, the web batcher and evaluation pass one ``(B, ...)`` features array around, so
``EncoderSet.encode`` gives one: each encoder's features flattened and laid side by side,
``(B, F1 + F2 + ...)``. Each member's step decoder is wrapped in ``MemberFeatures``, which cuts its
encoder's part back out in its own shape. A bundle of one encoder keeps its encoder and step
decoders exactly as they are (``assemble``).

Each encoder sees a photo exactly as its members' training features were made: ``load_image``
reads the file once per encoder, at that encoder's input size, and the sizes travel packed in one
flat uint8 row per photo (``EncoderSet.load_image``), so batches stack as before. In-memory
images (``Captioner.caption_arrays``) come at the first encoder's size and are resized for the
others (bilinear, as ``data.images.resize_for_model``); resizing an already resized image blurs it
a little, which cost 2 CIDEr-D on the Flickr8k test photos, so files never take that path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from captioning import config
from captioning.data.images import load_image, resize_for_model
from captioning.inference.ensemble import make_ensemble_step_decoder

if TYPE_CHECKING:
    from captioning.bundles.schema import BundleConfig


@dataclass(frozen=True)
class FeatureSlot:
    """Where one encoder's features lie in an ``EncoderSet``'s row: columns ``start:stop``, and
    the shape they are cut back into (``(g, g, D)`` grid or ``(D,)`` pooled)."""

    start: int
    stop: int
    shape: tuple[int, ...]

    def cut(self, features: np.ndarray) -> np.ndarray:
        """This encoder's features ``(B, *shape)`` out of joined ``(B, F)`` features."""
        return features[:, self.start:self.stop].reshape((features.shape[0], *self.shape))


class EncoderSet:
    """Several image encoders as one (the ``captioner.ImageEncoder`` protocol): joined features.

    Attributes:
        encoders: the encoders (``encoders.Encoder`` or ``inference.exported.ExportedEncoder``),
            the bundle's own first.
        input_size: the first encoder's: the size photos are loaded at.
        classifier: the first encoder's ImageNet classifier, when it has one (tags).
    """

    def __init__(self, encoders: Sequence[Any]):
        if len(encoders) < 2:
            raise ValueError(f"an EncoderSet joins two or more encoders, got {len(encoders)}")
        self.encoders = list(encoders)
        self.input_size = int(self.encoders[0].input_size)
        self.name = " + ".join(encoder.name for encoder in self.encoders)
        self.classifier = getattr(self.encoders[0], "classifier", None)

    @property
    def has_classifier(self) -> bool:
        """Whether the first encoder gives ImageNet class logits (an exported encoder's flag, or a
        Keras encoder's classifier)."""
        first = self.encoders[0]
        return bool(getattr(first, "has_classifier", False) or getattr(first, "classifier", None) is not None)

    def slots(self, kind: str) -> list[FeatureSlot]:
        """Each encoder's place in the joined row for features of ``kind``, in encoder order."""
        slots, start = [], 0
        for encoder in self.encoders:
            shape = config.ENCODER_SHAPES[encoder.name].feature_shape(kind)
            size = int(np.prod(shape))
            slots.append(FeatureSlot(start, start + size, shape))
            start += size
        return slots

    def load_image(self, path: str | Path) -> np.ndarray:
        """One photo for every encoder, packed: ``load_image`` at each encoder's input size, flattened
        and laid side by side (uint8, one row; ``encode`` unpacks it).

        Raises:
            ImageError: as ``data.images.load_image``.
        """
        return np.concatenate([load_image(path, encoder.input_size).reshape(-1) for encoder in self.encoders])

    def encode(self, pixels: np.ndarray, kind: str) -> np.ndarray:
        """Joined float16 features ``(B, F1 + F2 + ...)``.

        Args:
            pixels: packed photos ``(B, P)`` from ``load_image``, or uint8 ``(B, input_size,
                input_size, 3)`` photos at the first encoder's size (resized for the others).
            kind: ``"grid"`` or ``"pooled"``.
        """
        pixels = np.asarray(pixels)
        if pixels.ndim == 2:
            own = self._unpack(pixels)
        else:
            own = [pixels if encoder.input_size == self.input_size else _resized(pixels, encoder.input_size)
                   for encoder in self.encoders]
        parts = [np.asarray(encoder.encode(photos, kind)).reshape(len(pixels), -1)
                 for encoder, photos in zip(self.encoders, own, strict=True)]
        return np.concatenate(parts, axis=1)

    def _unpack(self, packed: np.ndarray) -> list[np.ndarray]:
        """Each encoder's ``(B, size, size, 3)`` photos out of packed rows."""
        sizes = [encoder.input_size for encoder in self.encoders]
        expected = sum(3 * size * size for size in sizes)
        if packed.shape[1] != expected or packed.dtype != np.uint8:
            raise ValueError(f"packed photos for {self.name} are uint8 rows of {expected}, got "
                             f"{packed.dtype} {packed.shape}")
        photos, start = [], 0
        for size in sizes:
            stop = start + 3 * size * size
            photos.append(packed[:, start:stop].reshape(len(packed), size, size, 3))
            start = stop
        return photos

    def first_features(self, features: np.ndarray, kind: str) -> np.ndarray:
        """The first encoder's features out of joined ones (what its classifier reads)."""
        return self.slots(kind)[0].cut(features)


def _resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """Each uint8 photo of a batch resized to ``size x size``."""
    return np.stack([resize_for_model(Image.fromarray(photo), size) for photo in pixels])


class MemberFeatures:
    """A member's step decoder that reads its own encoder's part of joined features."""

    def __init__(self, member: Any, slot: FeatureSlot):
        self.member, self.slot = member, slot

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.member.initial_state(self.slot.cut(features))

    def step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        return self.member.step(tokens, state)

    def step_with_attention(self, tokens: np.ndarray, state: tuple):
        return self.member.step_with_attention(tokens, state)


def assemble(encoders: Sequence[Any], members: Sequence[Any], bundle_config: BundleConfig) -> tuple[Any, Any]:
    """The captioner's encoder and step decoder from a bundle's encoders and member step decoders.

    Args:
        encoders: one per ``bundle_config.encoders``, in that order.
        members: one step decoder per weights file, in order.
        bundle_config: the bundle's settings.

    Returns:
        ``(encoder, step decoder)``: for one encoder, that encoder and the members as
        ``inference.ensemble`` joins them; for several, an ``EncoderSet`` and the members each
        reading its own encoder's part.
    """
    if len(encoders) == 1:
        return encoders[0], make_ensemble_step_decoder(members)
    encoder_set = EncoderSet(encoders)
    slots = encoder_set.slots(bundle_config.feature_kind)
    slot_of = {spec: slot for spec, slot in zip(bundle_config.encoders, slots, strict=True)}
    wrapped = [MemberFeatures(member, slot_of[spec])
               for member, spec in zip(members, bundle_config.member_encoders, strict=True)]
    return encoder_set, make_ensemble_step_decoder(wrapped)


__all__ = ["EncoderSet", "FeatureSlot", "MemberFeatures", "assemble"]
