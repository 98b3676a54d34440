"""Ensembles whose members read different encoders: combined, described, and captioning with each
member on its own encoder's features, in TensorFlow and in the exported (LiteRT) form alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from captioning.bundles import default_model
from captioning.bundles import store as bundles
from captioning.bundles.combine import combine_bundles
from captioning.bundles.exported import ExportManifest, find_export
from captioning.errors import BundleError
from captioning.inference.captioner import Captioner
from captioning.inference.encoder_set import EncoderSet
from captioning.tags.tagger import Tagger
from captioning.training import finetune
from tests.support.bundles import make_tiny_bundle

LITE1, LITE0 = "efficientnet_lite1", "efficientnet_lite0"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Two tiny attention bundles: one over EfficientNet-Lite1's 8x8 grid, one over Lite0's 7x7."""
    root = tmp_path_factory.mktemp("parts")
    return (make_tiny_bundle(root / "on-lite1", kind="attention", seed=1, encoder=LITE1),
            make_tiny_bundle(root / "on-lite0", kind="attention", seed=2, encoder=LITE0))


@pytest.fixture(scope="module")
def mixed(parts, tmp_path_factory):
    return combine_bundles(parts, tmp_path_factory.mktemp("mixed") / "ensemble")


@pytest.fixture(scope="module")
def photos():
    return np.random.default_rng(0).integers(0, 256, (3, 240, 240, 3), dtype=np.uint8)


def test_the_ensemble_records_which_encoder_each_member_reads(mixed):
    settings = bundles.read_bundle_config(mixed)
    assert settings.encoder.name == LITE1 and settings.feature_shape == (8, 8, 1280)  # the first bundle's
    assert [m.encoder for m in settings.members] == [None, settings.encoders[1]]  # only the other one is named
    assert [spec.name for spec in settings.encoders] == [LITE1, LITE0]
    assert [settings.features_of(spec) for spec in settings.member_encoders] == [(8, 8, 1280), (7, 7, 1280)]
    assert default_model.architecture(settings) == f"{LITE1} & {LITE0} + 2 x attention ensemble"
    described = bundles.describe_bundle(mixed)
    assert f"and {LITE0} for the members that read its features" in described
    assert f"({LITE0} features, dropout" in described
    # config.json round-trips: read and written again, the same file
    data = json.loads((mixed / "config.json").read_text())
    assert settings.to_json() == data


def test_each_member_captions_from_its_own_encoders_features(parts, mixed):
    """The ensemble's next-word distribution is the mean of each member's on its own encoder's
    features, each made from the file as training made them: read at 240 px for Lite1, at 224 px
    for Lite0."""
    from captioning.data.images import load_image

    together = Captioner.load(mixed, tags=False, runtime="tensorflow")
    alone = [Captioner.load(path, tags=False, runtime="tensorflow") for path in parts]
    assert isinstance(together.encoder, EncoderSet) and together.encoder.input_size == 240
    files = sorted(EXAMPLES.glob("*.jpg"))[:3]
    joined = together.encode(np.stack([together.load_pixels(path) for path in files]))
    assert joined.shape == (3, 64 * 1280 + 49 * 1280) and joined.dtype == np.float16
    own = [captioner.encode(np.stack([load_image(path, captioner.encoder.input_size) for path in files]))
           for captioner in alone]
    np.testing.assert_array_equal(joined[:, :64 * 1280].reshape(own[0].shape), own[0])
    np.testing.assert_array_equal(joined[:, 64 * 1280:].reshape(own[1].shape), own[1])
    tokens = np.full((3,), 2, dtype=np.int32)  # START
    mixed_log_probs, _ = together.step_decoder.step(tokens, together.step_decoder.initial_state(joined))
    member_probs = [np.exp(c.step_decoder.step(tokens, c.step_decoder.initial_state(f))[0])
                    for c, f in zip(alone, own, strict=True)]
    np.testing.assert_allclose(np.exp(mixed_log_probs), np.mean(member_probs, axis=0), rtol=1e-4, atol=1e-6)
    # Attention maps: the mean over the members on the bundle's own encoder's grid (8 x 8)
    _, _, alpha = together.step_decoder.step_with_attention(tokens, together.step_decoder.initial_state(joined))
    assert alpha.shape == (3, 64)


def test_in_memory_photos_are_resized_for_the_other_encoder(parts, mixed, photos):
    from PIL import Image

    from captioning.data.images import resize_for_model

    together = Captioner.load(mixed, tags=False, runtime="tensorflow")
    lite0 = Captioner.load(parts[1], tags=False, runtime="tensorflow")
    small = np.stack([resize_for_model(Image.fromarray(photo), 224) for photo in photos])
    np.testing.assert_array_equal(together.encode(photos)[:, 64 * 1280:], lite0.encode(small).reshape(3, -1))
    assert len(together.caption_arrays(photos)) == 3
    with pytest.raises(ValueError, match="uint8 rows of"):
        together.encode(np.zeros((1, 100), np.uint8))


def test_the_exported_form_holds_both_encoders_and_captions_like_tensorflow(mixed, tmp_path):
    copy = shutil.copytree(mixed, tmp_path / "ensemble")
    exported = Captioner.load(copy, tags=False, runtime="litert")  # made on first use
    folder = find_export(copy, bundles.read_bundle_config(copy)).folder
    assert folder is not None
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["encoders"] == ["encoder.tflite", "encoder-2.tflite"]
    assert isinstance(exported.encoder, EncoderSet)
    keras_run = Captioner.load(copy, tags=False, runtime="tensorflow")
    photos = sorted(EXAMPLES.glob("*.jpg"))
    assert ([r.caption for r in exported.caption_many(photos)] == [r.caption for r in keras_run.caption_many(photos)])


def test_members_reading_one_encoder_with_other_weights_are_refused(parts, tmp_path):
    other = shutil.copytree(parts[1], tmp_path / "lite0-other-weights")
    settings = json.loads((other / "config.json").read_text())
    settings["encoder"]["weights_id"] = "md5-0123"
    settings["encoder"]["weights"] = "/somewhere/else.h5"
    (other / "config.json").write_text(json.dumps(settings))
    third = make_tiny_bundle(tmp_path / "third", kind="attention", seed=3, encoder=LITE0)
    with pytest.raises(BundleError, match="its encoder differs"):
        combine_bundles([parts[0], third, other], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_members_of_another_decoder_kind_on_another_encoder_are_refused(parts, tmp_path):
    merge = make_tiny_bundle(tmp_path / "merge-lite0", kind="merge", encoder=LITE0)
    with pytest.raises(BundleError, match="share one architecture"):
        combine_bundles([parts[0], merge], tmp_path / "refused")


def test_fine_tuning_a_member_uses_the_encoder_it_reads(mixed):
    loaded = bundles.load_bundle(mixed)
    second = finetune._member_config(loaded, 2)
    assert second.encoder.name == LITE0 and second.feature_shape == (7, 7, 1280) and second.ensemble is None
    assert finetune._member_config(loaded, 1).encoder.name == LITE1


def test_tags_read_the_first_encoders_part_of_joined_features():
    from captioning.data.text import RESERVED_TOKENS, Vocabulary

    rng = np.random.default_rng(1)
    classifier = (rng.normal(0, 0.05, (1280, 1000)).astype(np.float32), rng.normal(0, 0.1, 1000).astype(np.float32))
    vocab = Vocabulary([*RESERVED_TOKENS, "cat", "dog", "cup"])
    grid = rng.normal(size=(2, 8, 8, 1280)).astype(np.float16)
    joined = np.concatenate([grid.reshape(2, -1), rng.normal(size=(2, 49 * 1280)).astype(np.float16)], axis=1)
    on_its_own = Tagger(classifier, vocab).class_probabilities(grid)
    viewed = Tagger(classifier, vocab, features_view=lambda f: f[:, :64 * 1280].reshape(2, 8, 8, 1280))
    np.testing.assert_allclose(viewed.class_probabilities(joined), on_its_own, rtol=1e-6)


def test_an_export_manifest_from_before_mixed_ensembles_lists_one_encoder():
    data = {"export_version": 1, "format": "litert", "source_digest": "x", "decoder_kind": "attention",
            "files": {"encoder.tflite": "a", "member-1.tflite": "b"}, "encoder_outputs": ["grid", "pooled"],
            "members": ["member-1.tflite"]}
    assert ExportManifest.from_json(data).encoders == ("encoder.tflite",)
    with pytest.raises(ValueError, match="without its hash"):
        ExportManifest.from_json({**data, "encoders": ["encoder.tflite", "encoder-2.tflite"]})
