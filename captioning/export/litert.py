"""Functions -> a LiteRT model (one ``.tflite`` with a signature per function), checked against TensorFlow.

TensorFlow 2.21's converter, given functions that read Keras 3 variables, silently writes a model
without their values (a ~20 KB file computing garbage). Freezing the variables into constants
first (``convert_variables_to_constants_v2``) is what makes it keep them; ``check`` then runs the
converted model on the same inputs as TensorFlow and refuses it unless the outputs agree, so a
converter regression can never reach a caption.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from captioning.errors import ExportError
from captioning.export.graphs import Functions
from captioning.native_logs import stderr_silenced


def _frozen(function: Callable) -> tf.types.experimental.ConcreteFunction:
    """``function`` (a tf.function with an input signature) with its variables as constants."""
    concrete = function.get_concrete_function()  # type: ignore[attr-defined]
    keys = sorted(concrete.structured_outputs)  # the flat outputs come in sorted-key order
    constant = convert_to_constants.convert_variables_to_constants_v2(concrete)

    @tf.function(input_signature=function.input_signature)  # type: ignore[attr-defined]
    def frozen(*args):
        return dict(zip(keys, constant(*args), strict=True))  # keep the output names

    return frozen.get_concrete_function()


def convert(functions: Functions, float16_weights: bool) -> bytes:
    """Convert functions to one LiteRT model with a signature per function.

    Args:
        functions: signature name -> tf.function with an input signature, returning a dict.
        float16_weights: store the weights as float16 (halves the file; the runtime computes in
            float32). Lossless for decoders, whose bundle weights are float16 already; not for the
            ImageNet encoders, whose float32 weights then change a few captions.

    Returns:
        The ``.tflite`` file's bytes.
    """
    with tempfile.TemporaryDirectory(prefix="captioning-export-") as saved:
        tf.saved_model.save(tf.Module(), saved,
                            signatures={name: _frozen(function) for name, function in functions.items()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=list(functions))
        if float16_weights:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def check(model: bytes, functions: Functions, inputs: Mapping[str, Mapping[str, np.ndarray]], what: str,
          tolerance: float = 1e-3) -> None:
    """Run the converted model and TensorFlow on the same inputs; raise unless every output agrees.

    Args:
        model: the ``.tflite`` bytes.
        functions: the functions it was converted from.
        inputs: per signature, its inputs by name.
        what: named in the error.
        tolerance: allowed difference, relative to each output's largest magnitude (float32
            arithmetic in another order differs by ~1e-5 here).

    Raises:
        ExportError: an output is missing, of another shape, or too far from TensorFlow's.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    for name, feed in inputs.items():
        expected = {key: np.asarray(value) for key, value in functions[name](**feed).items()}
        with stderr_silenced():  # LiteRT's "Created ... XNNPACK delegate" line on the first run
            actual = interpreter.get_signature_runner(name)(**feed)
        for key, reference in expected.items():
            got = actual.get(key)
            if got is None or got.shape != reference.shape:
                raise ExportError(f"exporting {what}: output {name}.{key} came out as "
                                  f"{None if got is None else got.shape}, TensorFlow gives {reference.shape}")
            scale = max(1.0, float(np.max(np.abs(reference)))) if reference.size else 1.0
            error = float(np.max(np.abs(got - reference))) if reference.size else 0.0
            if not error <= tolerance * scale:  # also refuses NaN
                raise ExportError(f"exporting {what}: output {name}.{key} differs from TensorFlow's by {error:.3g} "
                                  f"(scale {scale:.3g}); the converted model is not usable")


__all__ = ["check", "convert"]
