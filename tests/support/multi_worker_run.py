"""One training process for the multi-worker tests: ``python -m tests.support.multi_worker_run ...``.

Runs ``train_model`` (the ``train`` command's function) on a dataset whose features the test
extracted with ``tests.support.encoders.tiny_encoder``, with a batch as large as the training split
so that one epoch is exactly one step, then writes the initial and trained float32 weights to
``WEIGHTS_NPZ`` (bundles keep float16). ``TF_CONFIG`` comes from the environment, as on a real host.

Arguments: DATASET FEATURE_CACHE OUTPUT STRATEGY WEIGHTS_NPZ
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    dataset, cache, output, strategy, weights_file = argv
    from captioning import config, encoders
    from captioning.data.datasets import load_dataset, split_dataset
    from captioning.training import fit
    from captioning.training.pipeline import TrainOptions, train_model
    from tests.support.encoders import tiny_encoder

    config.FEATURE_CACHE_DIR = Path(cache)
    encoders.build_encoder = lambda name, weights="imagenet": tiny_encoder()  # type: ignore[assignment]
    split = split_dataset(load_dataset(dataset).images, config.SplitConfig())
    train_captions = sum(len(image.captions) for image in split.train)
    real_fit = fit.fit

    def fit_and_keep_weights(model, *args, **kwargs):
        initial = model.get_weights()
        result = real_fit(model, *args, **kwargs)
        trained = model.get_weights()
        np.savez(weights_file, **{f"initial_{i}": w for i, w in enumerate(initial)},
                 **{f"trained_{i}": w for i, w in enumerate(trained)})
        print("STEPS", int(model.optimizer.iterations.numpy()), flush=True)
        return result

    fit.fit = fit_and_keep_weights  # type: ignore[assignment]
    options = TrainOptions(
        dataset=dataset, encoder="tiny", encoder_weights="none",
        # No dropout: each replica draws its own masks, so only the gradients can be compared.
        decoder=config.DecoderConfig(kind="merge", embedding_dim=8, units=8, dropout=0.0),
        train=config.TrainConfig(epochs=1, batch_size=train_captions, learning_rate=0.01, seed=3,
                                 precision="float32"),  # exact comparison: no bfloat16 rounding
        vocab=config.VocabConfig(min_count=1), output=Path(output), strategy=strategy)
    result = train_model(options)
    print("RESULT", result.epochs_run, result.bundle_dir, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
