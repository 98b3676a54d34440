"""Captioner: paths and folders in, one result per image in input order, failures isolated."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from captioning.bundles.schema import EncoderSpec
from captioning.data.text import Vocabulary
from captioning.errors import BundleError
from captioning.inference import search
from captioning.inference.captioner import Captioner, CaptionResult
from captioning.inference.inputs import expand_paths
from captioning.inference.repetition import RepetitionBlocking
from tests.support.bundles import WORDS as BUNDLE_WORDS

WORDS = ["<pad>", "<unk>", "<start>", "<end>", "red", "blue", "green"]
COLORS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}


class ColourDecoder:
    """Says the dominant colour of the image, then ends. Features: mean RGB ``(B, 3)``."""

    def __init__(self):
        self.batch_sizes = []

    def initial_state(self, features):
        features = np.asarray(features, dtype=np.float64)
        return features, np.zeros((len(features), 1))

    def step(self, tokens, state):
        rgb, count = state
        self.batch_sizes.append(len(tokens))
        logits = np.full((len(tokens), len(WORDS)), -20.0)
        first = count[:, 0] == 0
        logits[first, 4:7] = rgb[first] / 20.0  # red, blue... by channel: R, G, B below
        logits[first, 5], logits[first, 6] = rgb[first, 2] / 20.0, rgb[first, 1] / 20.0
        logits[~first, 3] = 5.0  # then END
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return logits, (rgb, count + 1)


def fake_captioner(encoded: list | None = None, **options) -> Captioner:
    def encode(pixels, kind):
        if encoded is not None:
            encoded.append(len(pixels))
        return pixels.reshape(len(pixels), -1, 3).mean(axis=1)  # (B, 3) mean RGB

    encoder = SimpleNamespace(input_size=16, encode=encode)
    return Captioner(encoder, ColourDecoder(), Vocabulary(WORDS), max_length=5, **options)


def save(path: Path, colour: str, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, COLORS[colour]).save(path)
    return path


def test_files_and_folders_are_captioned_in_input_order(tmp_path):
    first = save(tmp_path / "one.png", "green")
    folder = tmp_path / "album"
    save(folder / "b.jpg", "blue")
    save(folder / "a.png", "red")
    save(folder / "sub" / "c.png", "green")
    (folder / "notes.txt").write_text("not an image")
    results = fake_captioner().caption_many([folder, first])
    assert [r.path for r in results] == [folder / "a.png", folder / "b.jpg", folder / "sub" / "c.png", first]
    assert [r.caption for r in results] == ["red", "blue", "green", "green"]
    assert all(r.ok and r.error is None for r in results)
    assert results[0].tokens == (4,) and results[0].score < 0


def test_bad_inputs_fail_alone_and_the_rest_of_the_batch_is_captioned(tmp_path):
    good = [save(tmp_path / f"{i}.png", colour) for i, colour in enumerate(["red", "blue", "green"])]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Image.new("RGB", (50, 50)).tobytes()[:100])
    empty = tmp_path / "empty.png"
    empty.touch()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    disguised = tmp_path / "really_a_png.jpg"  # Pillow sniffs content, not the extension
    Image.new("RGB", (20, 20), COLORS["blue"]).save(disguised, format="PNG")
    (tmp_path / "nothing").mkdir()
    inputs = [good[0], broken, tmp_path / "missing.jpg", good[1], empty, text, tmp_path / "nothing",
              disguised, good[2]]
    encoded = []
    results = fake_captioner(encoded).caption_many(inputs, batch_size=3)
    assert [r.path for r in results] == inputs
    assert [r.caption for r in results] == ["red", None, None, "blue", None, None, None, "blue", "green"]
    for result in results:
        if result.caption is None:
            assert result.error and "\n" not in result.error
            assert result.path.name in result.error
    assert "no such file" in results[2].error
    assert "empty" in results[4].error
    assert "not an image" in results[5].error
    assert "no images" in results[6].error
    # The 7 existing files went in batches of 3; the unreadable ones never reach the encoder.
    assert encoded == [2, 1, 1]


def test_batches_give_the_same_captions_as_one_at_a_time(tmp_path):
    paths = [save(tmp_path / f"{i:02d}.png", colour)
             for i, colour in enumerate(["red", "blue", "green", "blue", "red"] * 3)]
    captioner = fake_captioner()
    batched = captioner.caption_many(paths, beam_size=3, batch_size=32)
    alone = [captioner.caption_many([p], beam_size=3, batch_size=1)[0] for p in paths]
    assert [r.caption for r in batched] == [r.caption for r in alone]
    assert [r.score for r in batched] == pytest.approx([r.score for r in alone])
    assert captioner.step_decoder.batch_sizes[:2] == [45, 45]  # 15 images x 3 beams per step call


def test_caption_arrays_resizes_any_size(tmp_path):
    images = [np.full((50, 80, 3), COLORS["red"], np.uint8), np.full((16, 16, 3), COLORS["green"], np.uint8)]
    assert fake_captioner().caption_arrays(images) == ["red", "green"]
    assert fake_captioner().caption_arrays(np.stack([images[1]] * 2), beam_size=1) == ["green", "green"]
    with pytest.raises(ValueError, match="uint8"):
        fake_captioner().caption_arrays([np.zeros((16, 16), np.uint8)])


def test_expand_paths_reports_missing_and_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    entries = expand_paths([tmp_path / "empty", tmp_path / "gone.png"])
    assert [p for p, _ in entries] == [tmp_path / "empty", tmp_path / "gone.png"]
    assert all(error for _, error in entries)


def test_caption_result_fields():
    result = CaptionResult(Path("a.jpg"), None, "a.jpg: file not found")
    assert not result.ok and result.tokens == ()


def test_the_bundles_encoder_weights_are_what_build_encoder_takes():
    assert EncoderSpec("efficientnet_lite0", weights_id="imagenet").weights_to_load("m") == "imagenet"
    assert EncoderSpec("resnet50", weights_id="none").weights_to_load("m") == "none"
    assert EncoderSpec("resnet50").weights_to_load("m") == "imagenet"
    custom = EncoderSpec("resnet50", weights_id="md5-abc", weights="/w/resnet.h5")
    assert custom.weights_to_load("m") == "/w/resnet.h5"
    with pytest.raises(BundleError, match="md5-abc but config.json does not say where that file is"):
        EncoderSpec("resnet50", weights_id="md5-abc").weights_to_load("m")


# ------------------------------------------------------------------ with a real (tiny) bundle


@pytest.fixture(scope="module")
def real_captioner(tiny_bundle):
    return Captioner.load(tiny_bundle)


def test_from_bundle_uses_the_bundles_encoder_and_decoder(real_captioner, tiny_bundle):
    assert real_captioner.encoder.name == "efficientnet_lite0"
    assert real_captioner.encoder.weights_id == "none"
    assert real_captioner.decoder_kind == "merge" and real_captioner.feature_kind == "pooled"
    assert real_captioner.max_length == 8 and real_captioner.bundle.path == tiny_bundle


def test_real_model_batches_equal_one_at_a_time_and_arrays_equal_files(real_captioner, tmp_path):
    from captioning.data.images import load_image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (60 + 10 * i, 80, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    batched = real_captioner.caption_many(paths, beam_size=3)
    alone = [real_captioner.caption_many([p], beam_size=3)[0] for p in paths]
    assert all(r.ok for r in batched)
    assert [r.caption for r in batched] == [r.caption for r in alone]
    assert [r.score for r in batched] == pytest.approx([r.score for r in alone], abs=1e-3)
    for result in batched:
        assert result.caption and all(word in BUNDLE_WORDS for word in result.caption.split())
        assert len(result.tokens) <= real_captioner.max_length - 1
    pixels = [load_image(p, real_captioner.encoder.input_size) for p in paths]
    assert real_captioner.caption_arrays(pixels) == [r.caption for r in batched]


def test_missing_bundle_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="nowhere"):
        Captioner.load(tmp_path / "nowhere")


def test_a_bundle_whose_grid_is_not_its_encoders_is_refused(tmp_path):
    """A 9x9-grid decoder must not be fed a 7x7 grid (its attention weights do not depend on the
    grid size, so nothing else would notice)."""
    import json

    from tests.support.bundles import make_tiny_bundle

    path = make_tiny_bundle(tmp_path / "grid", kind="attention", encoder="efficientnet_lite2")
    settings = json.loads((path / "config.json").read_text())
    assert settings["feature_shape"] == [9, 9, 1280]
    settings["encoder"]["name"] = "efficientnet_lite0"  # a 7x7 encoder
    (path / "config.json").write_text(json.dumps(settings))
    # The schema knows every encoder's grid (config.ENCODER_SHAPES), so this fails before TensorFlow.
    with pytest.raises(BundleError, match=r"feature_shape \[9, 9, 1280\] does not fit the attention decoder "
                                          r"over the efficientnet_lite0 encoder \(grid features are \[7, 7, 1280\]\)"):
        Captioner.load(path)


def colour_tagger(threshold: float = 0.5):
    """A tagger whose "classifier" is sure of tag "green" for reddish images (class 0) and of "red"
    for blueish ones (class 1), over the mean-RGB features; other images get no tag."""
    from captioning.tags.table import ImageNetClass, ImageNetWords, TagWords
    from captioning.tags.tagger import Tagger

    kernel = np.zeros((3, 1000), dtype=np.float32)
    kernel[0, 0] = kernel[2, 1] = 0.1  # 220 * 0.1 = logit 22 for the strong channel
    classes = tuple(ImageNetClass(i, f"n{i:08d}", f"class {i}", {0: "green", 1: "red"}.get(i))
                    for i in range(1000))
    table = ImageNetWords(classes, {"green": TagWords("green", ("green",), ()),
                                    "red": TagWords("red", ("red",), ())})
    return Tagger((kernel, np.zeros(1000, np.float32)), Vocabulary(WORDS), threshold=threshold, table=table)


def test_tags_make_a_caption_name_what_the_classifier_is_sure_of(tmp_path):
    paths = [save(tmp_path / f"{colour}.png", colour) for colour in ("red", "blue", "green")]
    plain = fake_captioner().caption_many(paths)
    assert [r.caption for r in plain] == ["red", "blue", "green"] and all(r.tags is None for r in plain)
    tagged = fake_captioner(tagger=colour_tagger()).caption_many(paths)
    assert [r.caption for r in tagged] == ["green", "red", "green"]
    assert [[(t.word, t.added) for t in r.tags] for r in tagged] == [[("green", True)], [("red", True)], []]
    assert tagged[0].added_tags == ("green",) and tagged[0].tags[0].confidence > 0.99
    assert tagged[0].score < plain[0].score  # the forced word was not the decoder's choice
    # Turned off for one call (the web API's per-request choice): the ordinary captions.
    features = fake_captioner().encode(np.stack([np.asarray(Image.open(p).resize((16, 16))) for p in paths]))
    untagged = fake_captioner(tagger=colour_tagger()).decode_features_tagged(features, tags=False)
    assert [(h.tokens, used) for h, used in untagged] == [(r.tokens, None) for r in plain]


def test_without_a_tagger_the_captions_are_exactly_the_ordinary_beam_search(tmp_path):
    paths = [save(tmp_path / f"{i}.png", colour) for i, colour in enumerate(["red", "blue", "green", "red"])]
    captioner = fake_captioner()
    results = captioner.caption_many(paths, beam_size=3)
    features = captioner.encode(np.stack([captioner._load([p])[0] for p in paths]))
    expected = search.beam_search_hypotheses(ColourDecoder(), features, 3, captioner.max_length)
    assert [(r.tokens, r.score) for r in results] == [(h[0].tokens, h[0].score) for h in expected]
    # Repetition blocking and length_alpha 1 change nothing for one-word captions.
    blocked = fake_captioner(blocking=RepetitionBlocking.for_vocabulary(Vocabulary(WORDS))).caption_many(paths)
    assert [(r.tokens, r.score) for r in blocked] == [(r.tokens, r.score) for r in results]
