"""The compute dtype of a training run: float32, or mixed bfloat16 where the processor does it natively.

Mixed bfloat16 keeps the weights, the optimizer and the loss in float32 and runs the layers'
arithmetic in bfloat16. On a CPU with AVX512_BF16 (or AMX) oneDNN's bfloat16 matmuls do twice
the work per instruction; measured on the project's 2-core AMD EPYC (AVX512_BF16, no AMX), a
Flickr8k merge epoch took 27% less CPU time than in float32 (61.6 -> 44.9 s,
benchmarks/bench_training.py) and an attention step about 20% less, with validation losses within
0.015 of float32's over 3 epochs (seeds alone move them by 0.04). Elementwise bfloat16 ops are
emulated on such CPUs and the casts cost something, hence less than 2x. Without native support
everything is emulated and slower, so ``auto`` keeps float32 there, and on GPUs, not measured.

Bundles are unaffected: weights stay float32 and every model is rebuilt in float32 to caption.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from captioning.config import DEFAULT_PRECISION, TRAINING_PRECISIONS

# /proc/cpuinfo flags of instructions that compute in bfloat16 (Linux names).
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def resolve_precision(name: str = DEFAULT_PRECISION) -> str:
    """``"float32"`` or ``"bfloat16"``: what ``--precision NAME`` trains in on this machine.

    Args:
        name: ``auto`` (bfloat16 when the CPU computes it natively and no GPU is visible, else
            float32), ``float32`` or ``bfloat16``.

    Raises:
        ValueError: an unknown name.
    """
    if name not in TRAINING_PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(TRAINING_PRECISIONS)}")
    if name != "auto":
        return name
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "float32"
    return "bfloat16" if cpu_has_native_bfloat16() else "float32"


def cpu_has_native_bfloat16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether ``cpuinfo`` (Linux's /proc/cpuinfo) lists a bfloat16 instruction set; False elsewhere."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}
    return any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)


@contextlib.contextmanager
def compute_precision(precision: str) -> Iterator[None]:
    """Build models inside this block to compute in ``precision`` (from ``resolve_precision``).

    Keras reads its global dtype policy when a layer is created, so the policy is set for the
    block and restored after it: models built elsewhere (captioning, evaluation) stay float32.
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
