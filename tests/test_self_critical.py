"""Self-critical training: its pieces, its checkpoints, and that it teaches a weak decoder to caption."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from captioning.config import DecoderConfig, SelfCriticalConfig  # noqa: E402
from captioning.data.text import END, PAD, RESERVED_TOKENS, START, Vocabulary  # noqa: E402
from captioning.training.caption_quality import CaptionQuality, monitor_subset  # noqa: E402
from captioning.training.cider_reward import CiderD, with_end_marker  # noqa: E402
from captioning.training.self_critical import (  # noqa: E402
    SampledCaptions,
    SelfCriticalData,
    sample_captions,
    sample_rewards,
    self_critical_advantages,
    self_critical_fit,
    teacher_forcing_inputs,
)

WORDS = ["a", "red", "blue", "green", "yellow", "circle", "square", "on", "grass"]
VOCAB = Vocabulary([*RESERVED_TOKENS, *WORDS])
CLASSES = ["a red circle", "a blue square", "a green circle", "a yellow square"]
MAX_LENGTH, FEATURE_DIM = 8, 8


class FixedDistribution:
    """A step decoder whose next-word distribution is the same at every step (for sampling tests)."""

    def __init__(self, probabilities: np.ndarray):
        self.log_probs = np.log(np.maximum(probabilities, 1e-30))

    def initial_state(self, features):
        return (np.asarray(features, dtype=np.float32),)

    def step(self, tokens, state):
        return np.tile(self.log_probs, (len(tokens), 1)), state


def test_samples_follow_the_distribution_and_never_draw_reserved_ids():
    probabilities = np.zeros(len(VOCAB))
    probabilities[[PAD, START]] = 0.3  # never drawn, however likely
    probabilities[4], probabilities[5], probabilities[END] = 0.2, 0.1, 0.1
    sampled = sample_captions(FixedDistribution(probabilities), np.zeros((50, 2)), samples=4, steps=6,
                              rng=np.random.default_rng(0))
    assert sampled.tokens.shape == (200, 6)
    drawn = np.concatenate([row[:length] for row, length in zip(sampled.tokens, sampled.lengths, strict=True)])
    assert not np.isin(drawn, [PAD, START]).any()
    # Renormalised over the allowed ids: word 4 is 1/2, word 5 and END 1/4 each.
    share = np.mean(drawn == 4)
    assert 0.45 < share < 0.55
    ended = sampled.lengths < 6
    assert all(row[length - 1] == END and not row[length:].any()
               for row, length in zip(sampled.tokens[ended], sampled.lengths[ended], strict=True))


def test_same_seed_same_samples():
    probabilities = np.full(len(VOCAB), 1 / len(VOCAB))
    decoder = FixedDistribution(probabilities)
    first = sample_captions(decoder, np.zeros((3, 2)), 5, 7, np.random.default_rng([1, 2]))
    second = sample_captions(decoder, np.zeros((3, 2)), 5, 7, np.random.default_rng([1, 2]))
    assert np.array_equal(first.tokens, second.tokens)


def test_the_baseline_is_the_mean_of_the_other_samples():
    rewards = np.array([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])
    advantages = self_critical_advantages(rewards, samples=3)
    assert advantages == pytest.approx([1 - 2.5, 2 - 2.0, 3 - 1.5, 0 - 3, 0 - 3, 6 - 0])
    assert advantages.reshape(2, 3).sum(axis=1) == pytest.approx([0, 0])
    with pytest.raises(ValueError, match="at least 2 samples"):
        self_critical_advantages(rewards, samples=1)


def test_teacher_forcing_inputs_shift_the_sample_and_mask_after_end():
    sampled = SampledCaptions(np.array([[4, 5, END, PAD], [6, 7, 8, 9]], dtype=np.int32), np.array([3, 4]))
    tokens_in, targets, mask = teacher_forcing_inputs(sampled, input_length=5)
    assert tokens_in.tolist() == [[START, 4, 5, PAD, PAD], [START, 6, 7, 8, PAD]]
    assert targets.tolist() == [[4, 5, END, PAD, PAD], [6, 7, 8, 9, PAD]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]


def test_rewards_favour_the_references_and_a_proper_ending():
    references = [with_end_marker(c.split()) for c in ("a red circle", "a red circle on grass")]
    cider = CiderD([references, [with_end_marker(CLASSES[1].split())]])
    prepared = [cider.prepare(references)]
    ids = {word: VOCAB.id_of(word) for word in WORDS}
    good = [ids["a"], ids["red"], ids["circle"], END]
    cut = [ids["a"], ids["red"], ids["circle"], ids["on"]]
    wrong = [ids["a"], ids["blue"], ids["square"], END]
    sampled = SampledCaptions(np.array([good, cut, wrong], dtype=np.int32), np.array([4, 4, 4]))
    rewards = sample_rewards(cider, sampled, VOCAB.words, prepared, samples=3)
    assert rewards[0] > rewards[1] > rewards[2]


def test_monitor_subset_is_fixed_and_sorted():
    chosen = monitor_subset(100, 10, seed=3)
    assert len(chosen) == 10 and np.all(np.diff(chosen) > 0)
    assert np.array_equal(chosen, monitor_subset(100, 10, seed=3))
    assert np.array_equal(monitor_subset(5, 10, seed=3), np.arange(5))


def _toy_problem(photos: int, seed: int):
    """Feature rows near one of four class prototypes; each photo's references name its class."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(99).normal(size=(len(CLASSES), FEATURE_DIM))
    classes = rng.integers(0, len(CLASSES), size=photos)
    features = (prototypes[classes] + 0.3 * rng.normal(size=(photos, FEATURE_DIM))).astype(np.float16)
    references = [[CLASSES[c], CLASSES[c]] for c in classes]
    return features, references


def _content(caption: str) -> set[str]:
    return set(caption.split()) - {"a"}


def _weak_decoder(seed: int, warm_up: tuple | None = None):
    """A small merge decoder; with ``warm_up`` (features, references) it first sees a little
    cross-entropy, so it writes words of the references but mostly not the right photo's."""
    import keras

    from captioning.models import build_decoder
    from captioning.training.fit import compile_model

    keras.utils.set_random_seed(seed)
    decoder = DecoderConfig(kind="merge", embedding_dim=16, units=32, dropout=0.0)
    model = build_decoder(len(VOCAB), MAX_LENGTH, (FEATURE_DIM,), decoder)
    compile_model(model, 1e-2)
    if warm_up is not None:
        features, references = warm_up
        tokens = VOCAB.encode_batch([refs[0] for refs in references], MAX_LENGTH)
        model.fit({"features": features.astype(np.float32), "tokens": tokens[:, :-1]}, tokens[:, 1:],
                  batch_size=64, epochs=2, verbose=0)
    return model, decoder


@pytest.mark.slow  # ~30-60 s: a few hundred policy-gradient steps on a tiny decoder
def test_self_critical_training_teaches_a_weak_decoder_to_name_unseen_photos(tmp_path):
    import keras

    from captioning.inference.search import greedy_search
    from captioning.models import make_step_decoder

    train_features, train_references = _toy_problem(256, seed=1)
    unseen_features, unseen_references = _toy_problem(64, seed=2)
    features = np.concatenate([train_features, unseen_features])
    monitor = CaptionQuality(features, np.arange(256, 320), unseen_references, VOCAB, MAX_LENGTH, beam_size=1)
    model, decoder = _weak_decoder(seed=5, warm_up=(train_features, train_references))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    data = SelfCriticalData(features, np.arange(256), train_references, monitor)
    config = SelfCriticalConfig(epochs=12, learning_rate=3e-3, images_per_batch=32, patience=12, seed=4)
    lines = []
    result = self_critical_fit(model, decoder, VOCAB, MAX_LENGTH, data, config, tmp_path / "out",
                               {"toy": 1}, log=lines.append)
    assert result.best_val_cider > max(4 * result.start_val_cider, result.start_val_cider + 250), lines  # x100
    captions = greedy_search(make_step_decoder(model, decoder), unseen_features.astype(np.float32), MAX_LENGTH)
    # CIDEr-D weighs words by rarity, and "a" starts every reference here, so it earns nothing: the
    # test asks for the words that tell photos apart (colour and shape) and no others.
    right = sum(_content(VOCAB.decode(ids)) == _content(refs[0])
                for ids, refs in zip(captions, unseen_references, strict=True))
    assert right / len(unseen_references) >= 0.9, lines
    assert (tmp_path / "out" / ".checkpoint" / "state.json").is_file()


def test_resume_continues_from_the_checkpoint_and_ctrl_c_keeps_the_best(tmp_path, monkeypatch):
    import keras

    from captioning.training import self_critical

    train_features, train_references = _toy_problem(64, seed=1)
    monitor = CaptionQuality(train_features, np.arange(16), train_references[:16], VOCAB, MAX_LENGTH)
    model, decoder = _weak_decoder(seed=5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = SelfCriticalData(train_features, np.arange(64), train_references, monitor)
    config = SelfCriticalConfig(epochs=3, learning_rate=1e-3, images_per_batch=32, patience=5, seed=4)
    calls = []
    original = self_critical._run_epoch

    def interrupt_in_epoch_two(*args, **kwargs):
        calls.append(args[-2])  # the epoch index
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(self_critical, "_run_epoch", interrupt_in_epoch_two)
    first = self_critical_fit(model, decoder, VOCAB, MAX_LENGTH, data, config, tmp_path, {"toy": 1},
                              log=lambda line: None)
    assert first.interrupted and first.epochs_run == 1
    monkeypatch.setattr(self_critical, "_run_epoch", original)
    fresh, _ = _weak_decoder(seed=6)
    fresh.compile(optimizer=keras.optimizers.Adam(1e-3))
    lines = []
    second = self_critical_fit(fresh, decoder, VOCAB, MAX_LENGTH, data, config, tmp_path, {"toy": 1},
                               resume=True, log=lines.append)
    assert not second.interrupted and second.epochs_run == 3
    assert any("resuming after epoch 1" in line for line in lines)
    assert len(second.history["val_cider"]) == 3
    assert second.start_val_cider == pytest.approx(first.start_val_cider)
