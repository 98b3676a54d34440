"""Ensembles whose members read different encoders: every photo is encoded by each, in one array.

An ensemble may mix decoders trained on different encoders' features (``bundles.combine``; the
shipped model has EfficientNet-Lite1 and Lite0 members): decoders that learnt from different
features make more different mistakes, so their average gains more than members of one encoder
do. The searches, the web batcher and evaluation pass one ``(B, ...)`` features array around, so
``EncoderSet.encode`` gives one: each encoder's features flattened and laid side by side,
``(B, F1 + F2 + ...)``. Each member's step decoder is wrapped in ``MemberFeatures``, which cuts its
encoder's part back out in its own shape. A bundle of one encoder keeps its encoder and step
decoders exactly as they are (``assemble``).

Photos are loaded at the first encoder's input size (the bundle's own ``encoder``, whose
classifier gives the tags); each other encoder gets that image resized to its own input size
(bilinear, as ``data.images.resize_for_model``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from captioning import config
from captioning.data.images import resize_for_model
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

    def slots(self, kind: str) -> list[FeatureSlot]:
        """Each encoder's place in the joined row for features of ``kind``, in encoder order."""
        slots, start = [], 0
        for encoder in self.encoders:
            shape = config.ENCODER_SHAPES[encoder.name].feature_shape(kind)
            size = int(np.prod(shape))
            slots.append(FeatureSlot(start, start + size, shape))
            start += size
        return slots

    def encode(self, pixels: np.ndarray, kind: str) -> np.ndarray:
        """Joined float16 features ``(B, F1 + F2 + ...)`` of uint8 ``(B, input_size, input_size, 3)`` photos."""
        pixels = np.asarray(pixels)
        parts = []
        for encoder in self.encoders:
            own = pixels if encoder.input_size == self.input_size else _resized(pixels, encoder.input_size)
            parts.append(np.asarray(encoder.encode(own, kind)).reshape(len(pixels), -1))
        return np.concatenate(parts, axis=1)

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
