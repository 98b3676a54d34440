"""The fit loop: batches, resume = uninterrupted, Ctrl-C, early stopping, LR plateau, strategies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from captioning.config import DecoderConfig  # noqa: E402
from captioning.training import fit  # noqa: E402
from captioning.training.checkpoint_layout import FitState, ResumeError  # noqa: E402
from tests.support.toy_training import CONFIG, FEATURE_DIM, FINGERPRINT, MAX_LENGTH, toy_data, toy_model  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_batches_gather_feature_rows_and_shift_tokens():
    data = toy_data()
    batches = list(fit.make_dataset(data.features, data.train_rows, data.train_tokens, batch_size=16))
    inputs, targets = batches[0]
    assert inputs["features"].shape == (16, FEATURE_DIM) and inputs["features"].dtype.name == "float32"
    assert np.array_equal(inputs["features"].numpy(), data.features[data.train_rows[:16]].astype(np.float32))
    assert np.array_equal(inputs["tokens"].numpy(), data.train_tokens[:16, :-1])
    assert np.array_equal(targets.numpy(), data.train_tokens[:16, 1:])
    assert sum(len(t) for _, t in batches) == len(data.train_rows)
    shuffled = [t.numpy() for _, t in fit.make_dataset(data.features, data.train_rows,
                                                             data.train_tokens, 16, shuffle_seed=3)]
    again = [t.numpy() for _, t in fit.make_dataset(data.features, data.train_rows,
                                                          data.train_tokens, 16, shuffle_seed=3)]
    assert all(np.array_equal(a, b) for a, b in zip(shuffled, again, strict=True))
    assert not np.array_equal(shuffled[0], targets.numpy())


def test_trimmed_batches_group_similar_lengths_and_keep_every_caption():
    data = toy_data(images=200)
    lengths = (data.train_tokens != 0).sum(axis=1)
    batches = list(fit.make_dataset(data.features, data.train_rows, data.train_tokens, 16,
                                         shuffle_seed=[1, 0], trim=True))
    seen = []
    for inputs, targets in batches:
        real = (targets.numpy() != 0).sum(axis=1) + 1  # tokens per caption
        assert targets.shape[1] == real.max() - 1  # trimmed to the batch's longest caption
        assert inputs["tokens"].shape == targets.shape
        seen.extend(real.tolist())
    assert sorted(seen) == sorted(lengths.tolist())
    assert np.mean([t.shape[1] for _, t in batches]) < MAX_LENGTH - 1.5  # most padding is gone


class _RowsOnly:
    """Feature rows that can be indexed but never turned into one array (as a big memmap should not be)."""

    def __init__(self, features):
        self._features, self.shape, self.requested = features, features.shape, []

    def __getitem__(self, rows):
        self.requested.append(np.array(rows))
        return self._features[rows]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole feature array was read")


def test_batches_read_only_their_own_feature_rows_from_a_memmap(tmp_path):
    data = toy_data(images=30)
    np.save(tmp_path / "features.npy", data.features)
    memmap = np.load(tmp_path / "features.npy", mmap_mode="r", allow_pickle=False)
    features = _RowsOnly(memmap)
    batches = list(fit.make_dataset(features, data.train_rows, data.train_tokens, 16, shuffle_seed=[1, 0]))
    order = fit._batch_order(data.train_tokens, 16, [1, 0], by_length=False)
    expected = data.features[data.train_rows[order]].astype(np.float32)
    got = np.concatenate([inputs["features"].numpy() for inputs, _ in batches])
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert sorted(len(rows) for rows in features.requested) == sorted(len(t) for _, t in batches)
    assert batches[0][0]["features"].shape[1:] == (FEATURE_DIM,)  # static shape kept for Keras


def test_train_options_take_the_attention_regularization_from_the_command_line():
    from captioning.cli.main import build_parser
    from captioning.training.pipeline import TrainOptions

    parser = build_parser()
    options = TrainOptions.from_args(parser.parse_args(["train", "--decoder", "attention",
                                                        "--attention-regularization", "0.25"]))
    assert options.decoder.kind == "attention" and options.decoder.attention_regularization == 0.25
    default = TrainOptions.from_args(parser.parse_args(["train"]))
    assert default.decoder.attention_regularization == DecoderConfig().attention_regularization
    assert TrainOptions.from_args(parser.parse_args(
        ["train", "--attention-regularization", "0"])).decoder.attention_regularization == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--attention-regularization", "-1"])


def _interrupt_after(epochs_done):
    lines = []

    def log(line):
        lines.append(line)
        if line.startswith(f"epoch {epochs_done}/"):
            raise KeyboardInterrupt

    return log, lines


def test_resumed_run_gives_the_same_weights_as_an_uninterrupted_one(tmp_path):
    data = toy_data()
    straight = toy_model(seed=1)
    full = fit.fit(straight, data, CONFIG, tmp_path / "a", FINGERPRINT, log=lambda line: None)
    assert full.epochs_run == 4 and not full.interrupted

    log, lines = _interrupt_after(2)
    first = fit.fit(toy_model(seed=1), data, CONFIG, tmp_path / "b", FINGERPRINT, log=log)
    assert first.interrupted and first.epochs_run == 2
    assert (tmp_path / "b" / ".checkpoint" / "state.json").is_file()

    # A fresh process would rebuild the model with fresh weights: use another seed to prove
    # that weights, optimizer and schedule all come from the checkpoint.
    resumed_model = toy_model(seed=99)
    resumed = fit.fit(resumed_model, data, CONFIG, tmp_path / "b", FINGERPRINT, resume=True,
                           log=lines.append)
    assert any(line.startswith("resuming after epoch 2") for line in lines)
    assert resumed.epochs_run == 4 and resumed.history == _without_seconds(resumed.history, full.history)
    for a, b in zip(straight.get_weights(), resumed_model.get_weights(), strict=True):
        assert np.array_equal(a, b)
    assert int(resumed_model.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy())


def _without_seconds(history, reference):
    """``reference`` with ``history``'s timings, so only the losses and learning rates compare."""
    return {**reference, "seconds": history["seconds"]}


def test_interrupt_keeps_best_weights_and_checkpoint(tmp_path):
    data = toy_data()
    model = toy_model(seed=2)
    log, _ = _interrupt_after(1)
    result = fit.fit(model, data, CONFIG, tmp_path, FINGERPRINT, log=log)
    assert result.interrupted and result.epochs_run == 1 and result.best_epoch == 1
    state = json.loads((tmp_path / ".checkpoint" / "state.json").read_text())
    assert state["fit"]["epoch"] == 1 and (tmp_path / ".checkpoint" / state["folder"] / "model.keras").is_file()
    assert result.best_val_loss == pytest.approx(
        model.evaluate(fit.make_dataset(data.features, data.val_rows, data.val_tokens, 16), verbose=0),
        rel=1e-5)


def test_resume_refuses_missing_checkpoint_and_changed_options(tmp_path):
    data = toy_data()
    with pytest.raises(ResumeError, match="no interrupted training run"):
        fit.fit(toy_model(seed=3), data, CONFIG, tmp_path, FINGERPRINT, resume=True)
    log, _ = _interrupt_after(1)
    fit.fit(toy_model(seed=3), data, CONFIG, tmp_path, FINGERPRINT, log=log)
    with pytest.raises(ResumeError, match="options differ.*batch_size: 16 then, 32 now"):
        fit.fit(toy_model(seed=3), data, CONFIG, tmp_path, {**FINGERPRINT, "batch_size": 32}, resume=True)
    # More epochs than first asked for is a normal way to continue a run.
    more = fit.fit(toy_model(seed=3), data, replace(CONFIG, epochs=2), tmp_path,
                        {**FINGERPRINT, "epochs": 2}, resume=True, log=lambda line: None)
    assert more.epochs_run == 2


def test_resuming_a_run_with_no_epoch_left_trains_nothing_and_gives_its_best_weights(tmp_path):
    """A kill during the final save leaves a checkpoint whose epochs are all done: --resume ends it."""
    data = toy_data()
    done_model = toy_model(seed=4)
    done = fit.fit(done_model, data, replace(CONFIG, epochs=2), tmp_path, FINGERPRINT, log=lambda line: None)
    assert done.epochs_run == 2 and (tmp_path / ".checkpoint" / "state.json").is_file()

    lines = []
    finished_model = toy_model(seed=98)  # other weights: everything must come from the checkpoint
    finished = fit.fit(finished_model, data, replace(CONFIG, epochs=2), tmp_path, FINGERPRINT, resume=True,
                            log=lines.append)
    assert lines == [f"that run finished 2 of 2 epochs: nothing left to train, writing its model from the "
                     f"checkpoint in {tmp_path / '.checkpoint'}"]  # no "epoch k/2" line: nothing retrained
    assert finished.epochs_run == 2 and not finished.interrupted and finished.history == done.history
    assert finished.best_val_loss == done.best_val_loss and finished.best_epoch == done.best_epoch
    for a, b in zip(done_model.get_weights(), finished_model.get_weights(), strict=True):
        assert np.array_equal(a, b)  # the best weights, as the uninterrupted run ended with


def test_resuming_a_run_that_stopped_early_trains_nothing(tmp_path):
    data = toy_data()
    config = replace(CONFIG, epochs=30, early_stopping_patience=1, learning_rate=0.5)  # overshoots, so it stops
    stopped = fit.fit(toy_model(seed=5), data, config, tmp_path, FINGERPRINT, log=lambda line: None)
    assert stopped.stopped_early and stopped.epochs_run < 30
    lines = []
    again = fit.fit(toy_model(seed=97), data, config, tmp_path, FINGERPRINT, resume=True, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"that run stopped early after epoch {stopped.epochs_run}: "
                                                   "nothing left to train")
    assert again.epochs_run == stopped.epochs_run and again.history == stopped.history


class _FakeOptimizer:
    def __init__(self, learning_rate):
        import tensorflow as tf

        self.learning_rate = tf.Variable(learning_rate)


class _FakeModel:
    def __init__(self, learning_rate):
        self.optimizer = _FakeOptimizer(learning_rate)


def test_early_stopping_and_plateau_follow_keras_rules():
    config = replace(CONFIG, early_stopping_patience=2, reduce_lr_patience=1, reduce_lr_factor=0.5)
    model, state = _FakeModel(0.01), FitState(learning_rate=0.01)
    verdicts = []
    for val in (3.0, 2.0, 2.5, 1.9, 2.2, 2.3):
        improved = fit._record_epoch(model, state, {"loss": [1.0], "val_loss": [val]}, "val_loss", 1.0, config)
        verdicts.append((improved, round(state.learning_rate, 6), state.stopped_early))
    assert verdicts == [(True, 0.01, False), (True, 0.01, False), (False, 0.005, False),
                        (True, 0.005, False), (False, 0.0025, False), (False, 0.00125, True)]
    assert state.best == 1.9 and state.best_epoch == 4
    assert state.history["learning_rate"] == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.0025])


def test_gains_smaller_than_min_delta_halve_the_rate_but_still_count_as_best():
    config = replace(CONFIG, early_stopping_patience=3, reduce_lr_patience=1, reduce_lr_factor=0.5,
                     reduce_lr_min_delta=0.01)
    model, state = _FakeModel(0.001), FitState(learning_rate=0.001)
    for val in (5.30, 5.25, 5.248):  # the last gain (0.002) is a plateau for the learning rate
        improved = fit._record_epoch(model, state, {"loss": [1.0], "val_loss": [val]}, "val_loss", 1.0, config)
    assert improved and state.best_epoch == 3
    assert state.learning_rate == pytest.approx(0.0005)


@pytest.mark.slow  # a fresh TensorFlow process: ~30 s on two shared cores
def test_mirrored_strategy_over_two_logical_cpus_trains_an_epoch(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        from dataclasses import replace
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tests.support import toy_training as t
        from captioning.training import fit
        from captioning.training.distribution import make_strategy
        strategy = make_strategy("mirrored")
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
        with strategy.scope():
            model = t.toy_model(seed=5)
        result = fit.fit(model, t.toy_data(images=40), replace(t.CONFIG, epochs=1), {str(tmp_path)!r},
                              t.FINGERPRINT)
        print("REPLICAS", strategy.num_replicas_in_sync, "EPOCHS", result.epochs_run,
              "LOSS", result.history["loss"][0])
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REPLICAS 2 EPOCHS 1 LOSS" in done.stdout
    assert float(done.stdout.split("LOSS")[1]) > 0


@pytest.mark.slow  # runs the random-weight encoder over 30 images and trains three times
def test_train_command_interrupt_resume_and_bundle_config(tmp_path, capsys):
    from captioning import config
    from captioning.cli.main import main
    from captioning.training.pipeline import TrainOptions, train_model
    from tests.support.shapes_dataset import write_shapes_dataset

    folder = write_shapes_dataset(tmp_path / "shapes", n_images=30, seed=4)
    argv = ["train", "--dataset", str(folder), "--encoder", "efficientnet_lite0", "--decoder", "merge", "--encoder-weights", "none",
            "--epochs", "2", "--batch-size", "16", "--min-count", "1", "--embedding-dim", "8", "--units", "8"]
    assert main(argv + ["--resume"]) == 1
    assert "no interrupted training run to resume" in capsys.readouterr().err

    from captioning.cli.main import build_parser

    log, lines = _interrupt_after(1)
    interrupted = train_model(TrainOptions.from_args(build_parser().parse_args(argv)), log=log)
    bundle_dir = config.MODELS_DIR / "shapes-efficientnet_lite0-merge"
    assert interrupted.interrupted and interrupted.bundle_dir == bundle_dir and interrupted.epochs_run == 1
    assert "--resume" in lines[-1] and (bundle_dir / ".checkpoint" / "state.json").is_file()
    assert json.loads((bundle_dir / "history.json").read_text())["loss"] == interrupted.history["loss"]

    assert main(argv[:-4] + ["--embedding-dim", "16", "--units", "8", "--resume"]) == 1
    assert "options differ" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert not (bundle_dir / ".checkpoint").exists()
    saved = json.loads((bundle_dir / "config.json").read_text())
    assert saved["encoder"] | {"note": ""} == {"name": "efficientnet_lite0", "weights_id": "none",
                                               "random_weights": True, "input_size": 224,
                                               "feature_kind": "pooled", "note": ""}
    assert saved["training"]["epochs_run"] == 2 and saved["feature_shape"] == [1280]
    assert saved["dataset"]["key"].startswith("shapes-") and saved["split"]["seed"] == 1234
    assert saved["format_version"] == 1 and saved["vocab_size"] == 20 and saved["training"]["seconds"] > 0
    # The photos it learnt from or chose its epoch by, by content, so evaluations elsewhere leave them out.
    from captioning.bundles.trained_photos import photo_digests, read_trained_photos
    from captioning.data.datasets import load_dataset, split_dataset

    parts = split_dataset(load_dataset(folder).images, config.SplitConfig())
    assert read_trained_photos(bundle_dir) == photo_digests(image.path for image in parts.train + parts.val)


def test_selecting_by_validation_cider_keeps_the_epoch_with_the_best_captions(tmp_path):
    # A scripted scorer: CIDEr-D peaks at epoch 2 whatever the loss does; patience 2 then stops at 4.
    scores = iter([10.0, 30.0, 20.0, 25.0, 99.0])
    weights_at = {}
    model = toy_model(seed=6)

    def quality() -> float:
        weights_at[len(weights_at) + 1] = [w.copy() for w in model.get_weights()]
        return next(scores)

    config = replace(CONFIG, epochs=5, early_stopping_patience=2, select_by="val_cider")
    lines: list[str] = []
    result = fit.fit(model, toy_data(), config, tmp_path, FINGERPRINT, log=lines.append, caption_quality=quality)
    assert result.history["val_cider"] == [10.0, 30.0, 20.0, 25.0] and result.epochs_run == 4
    assert result.best_epoch == 2 and result.stopped_early
    assert result.best_val_loss == result.history["val_loss"][1]  # the kept epoch's loss, not the lowest
    assert "val CIDEr-D 30.00" in lines[1] and "(best so far)" in lines[1]
    for kept, at_epoch_2 in zip(model.get_weights(), weights_at[2], strict=True):
        assert np.array_equal(kept, at_epoch_2)
