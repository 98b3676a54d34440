"""Caption decoders, one module per kind, each holding its training graph and its step decoder.

``build_decoder`` and ``make_step_decoder`` dispatch on ``DecoderConfig.kind`` through ``_MODULES``;
which features a kind reads (pooled vector or grid) is ``DecoderConfig.feature_kind``. Each module
is imported only when its kind is built, so importing this package does not import TensorFlow.

Layer names are part of the bundle format (weights are matched to a rebuilt architecture), so
never rename them.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from captioning.config import DECODER_KINDS, DecoderConfig
from captioning.data.text import PAD

if TYPE_CHECKING:
    import keras

    from captioning.models.attention import AttentionStepDecoder
    from captioning.models.merge import MergeStepDecoder

# Decoder kind -> the module under captioning/models/ with its ``build`` and ``STEP_DECODER``.
_MODULES = {"merge": "merge", "attention": "attention"}
assert set(_MODULES) == set(DECODER_KINDS), "every decoder kind needs its module"


def _module(kind: str) -> ModuleType:
    if kind not in _MODULES:
        raise ValueError(f"unknown decoder kind {kind!r}; expected one of {', '.join(DECODER_KINDS)}")
    return importlib.import_module(f"captioning.models.{_MODULES[kind]}")


def build_decoder(vocab_size: int, max_length: int, feature_shape: Sequence[int],
                  config: DecoderConfig) -> keras.Model:
    """Build the teacher-forcing training graph of the decoder named by ``config.kind``.

    Args:
        vocab_size: Number of word ids (``len(vocab)``), PAD included.
        max_length: Caption length in tokens counting START and END; the model reads
            ``max_length - 1`` input tokens (the caption without its last token).
        feature_shape: Shape of one image's features: ``(D,)`` pooled, ``(g, g, D)`` grid.
        config: Decoder sizes, dropout and kind.

    Returns:
        An uncompiled keras Model with dict inputs ``{"features": (B, *feature_shape), "tokens":
        (B, T) int32}`` (the same for every kind; T is ``max_length - 1`` or, for the merge
        decoder, any length up to it), returning logits ``(B, T, vocab_size)``.

    Raises:
        ValueError: An unknown kind or a feature shape the kind cannot take.
    """
    return _module(config.kind).build(vocab_size, max_length, feature_shape, config)


def make_step_decoder(model: keras.Model, config: DecoderConfig) -> MergeStepDecoder | AttentionStepDecoder:
    """The step-wise inference decoder for a trained model of ``config.kind``.

    Args:
        model: The training model (from ``build_decoder`` or a loaded bundle); shares its weights.
        config: Its decoder config.

    Returns:
        An object with ``initial_state(features)`` and ``step(tokens, state)``
        (``captioning.inference.search.StepDecoder``); attention decoders also have
        ``step_with_attention``.
    """
    return _module(config.kind).STEP_DECODER(model, config)


def caption_loss() -> keras.losses.Loss:
    """Cross-entropy on integer targets, averaged over real tokens only (PAD targets ignored)."""
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD)


__all__ = ["build_decoder", "caption_loss", "make_step_decoder"]
