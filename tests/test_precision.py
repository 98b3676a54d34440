"""Training precision: auto reads the CPU's bfloat16 support, models built in bfloat16 keep float32
weights and compute the same loss within bfloat16 rounding, and the policy never leaks out."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from captioning import models  # noqa: E402
from captioning.config import DecoderConfig  # noqa: E402
from captioning.training.precision import compute_precision, cpu_has_native_bfloat16, resolve_precision  # noqa: E402

CPUINFO = "processor\t: {n}\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {extra}\n\n"
VOCAB, MAX_LENGTH = 23, 8
TOKENS = np.array([[2, 5, 9, 4, 3, 0, 0, 0],
                   [2, 7, 3, 0, 0, 0, 0, 0],
                   [2, 4, 4, 8, 11, 6, 12, 3]], dtype=np.int32)  # (B, max_length)


@pytest.mark.parametrize(("extra", "native"), [("avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True),
                                               ("avx512f avx512_vnni", False), ("", False)])
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, extra, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(n=0, extra=extra) + CPUINFO.format(n=1, extra=extra))
    assert cpu_has_native_bfloat16(cpuinfo) is native


def test_no_cpuinfo_means_no_native_bfloat16(tmp_path):
    assert cpu_has_native_bfloat16(tmp_path / "absent") is False


def test_explicit_precisions_are_kept_and_unknown_ones_refused(monkeypatch):
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr("captioning.training.precision.cpu_has_native_bfloat16", lambda: False)
    assert resolve_precision("auto") == "float32"
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        resolve_precision("float16")


def _build(kind: str, precision: str):
    config = DecoderConfig(kind=kind, embedding_dim=10, units=16, attention_dim=8, attention_feature_dim=12,
                           attention_regularization=1.0)
    shape = (7, 7, 12) if kind == "attention" else (12,)
    keras.utils.set_random_seed(0)
    with compute_precision(precision):
        model = models.build_decoder(VOCAB, MAX_LENGTH, shape, config)
    model.compile(optimizer="adam", loss=models.caption_loss())
    return model, shape


@pytest.mark.parametrize("kind", ["merge", "attention"])
def test_a_bfloat16_model_keeps_float32_weights_and_the_float32_loss(kind):
    single, shape = _build(kind, "float32")
    mixed, _ = _build(kind, "bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # restored after the block
    assert mixed.get_layer(index=-1).compute_dtype == "bfloat16"
    assert {w.dtype for w in mixed.get_weights()} == {np.dtype("float32")}
    rng = np.random.default_rng(1)
    mixed.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in mixed.get_weights()])
    single.set_weights(mixed.get_weights())
    inputs = {"features": rng.random((3, *shape)).astype(np.float32), "tokens": TOKENS[:, :-1]}
    targets = TOKENS[:, 1:]
    expected = single.evaluate(inputs, targets, verbose=0)
    assert mixed.evaluate(inputs, targets, verbose=0) == pytest.approx(expected, rel=0.01)
    assert np.isfinite(mixed.train_on_batch(inputs, targets))  # the attention penalty is added in float32
