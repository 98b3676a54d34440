"""The ImageNet class -> caption word table, the tagger, and tag-guided captioning (no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captioning.bundles.schema import EncoderSpec
from captioning.data.text import RESERVED_TOKENS, Vocabulary, tokenize
from captioning.errors import CaptioningError
from captioning.inference.guided import guided_beam_search
from captioning.tags import wordnet_table
from captioning.tags.support import classifier_reason
from captioning.tags.table import NUM_CLASSES, TABLE_PATH, ImageNetWords
from captioning.tags.tagger import Tagger

# Classes whose word matters most, checked against what people write for such photos.
EXPECTED_TAGS = {
    285: "cat", 281: "cat", 283: "cat",  # Egyptian cat (the example photo), tabby, Persian cat
    207: "dog", 235: "dog", 254: "dog", 273: "dog",  # golden retriever, German shepherd, pug, dingo
    967: "coffee", 504: "cup", 968: "cup",  # espresso (the example photo), coffee mug, cup
    759: "camera", 732: "camera", 872: "camera",  # reflex camera, Polaroid camera, tripod
    817: "car", 468: "car", 671: "bicycle", 444: "bicycle", 665: "motorcycle",  # sports car, cab, bikes
    404: "airplane", 779: "bus", 705: "train", 820: "train", 717: "truck", 472: "canoe",
    291: "lion", 292: "tiger", 386: "elephant", 340: "zebra", 339: "horse", 603: "horse",
    963: "pizza", 923: "plate", 850: "teddy", 879: "umbrella", 978: "beach", 970: "mountain",
    981: "baseball", 768: "football", 795: "ski", 760: "refrigerator", 861: "toilet",
}
NO_TAG = {
    880: "unicycle: fires on skateboards",
    287: "lynx: not a pet cat",
    461: "breastplate: armour plate, not a dinner plate",
    999: "toilet tissue",
    415: "bakery: the shop classes fire on clutter",
    934: "hotdog: 'dog' would name an animal",
}


@pytest.fixture(scope="module")
def table() -> ImageNetWords:
    return ImageNetWords.load()


def test_the_table_covers_the_1000_classes_in_the_classifiers_order(table):
    assert len(table.classes) == NUM_CLASSES
    wnids = [entry.wnid for entry in table.classes]
    assert wnids == sorted(wnids) and len(set(wnids)) == NUM_CLASSES  # ILSVRC order: sorted wnids
    assert (wnids[0], wnids[-1]) == ("n01440764", "n15075141")
    assert table.classes[285].label == "Egyptian cat" and table.classes[967].label == "espresso"


@pytest.mark.parametrize("index,tag", sorted(EXPECTED_TAGS.items()))
def test_known_classes_map_to_the_words_people_use(table, index, tag):
    assert table.classes[index].tag == tag, table.classes[index]


@pytest.mark.parametrize("index", sorted(NO_TAG))
def test_classes_without_a_sensible_caption_word_map_to_nothing(table, index):
    assert table.classes[index].tag is None, NO_TAG[index]


def test_every_word_form_is_one_normalised_caption_token(table):
    for tag in table.tags.values():
        for word in tag.forms + tag.mentions:
            assert tokenize(word) == [word], (tag.tag, word)
    dog_breeds = [entry for entry in table.classes if 151 <= entry.index <= 268]
    assert {entry.tag for entry in dog_breeds} == {"dog"}  # all 118 breeds add up to one tag


def test_the_table_matches_what_wordnet_gives_when_wordnet_is_installed():
    folder = wordnet_table.find_wordnet()
    if folder is None:
        pytest.skip("WordNet 3.0 not installed (Debian: apt-get install wordnet-base)")
    wnids = [entry.wnid for entry in ImageNetWords.load().classes]
    wordnet = wordnet_table.WordNetNouns(folder)
    for index, entry in enumerate(ImageNetWords.load().classes):  # wnid = WordNet noun offset
        assert wordnet.synset(int(entry.wnid[1:]))[0][0] == entry.label, index
    regenerated = wordnet_table.render(wordnet_table.build_table(wordnet, wnids))
    assert regenerated == TABLE_PATH.read_text(encoding="utf-8"), \
        "imagenet_words.json is out of date: python -m captioning.tags.wordnet_table --write"


def test_a_damaged_table_is_a_one_line_error(tmp_path):
    data = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    data["classes"][3]["tag"] = "unicorn"
    broken = tmp_path / "table.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(CaptioningError, match="damaged ImageNet word table.*unicorn"):
        ImageNetWords.load(broken)
    with pytest.raises(CaptioningError, match="missing"):
        ImageNetWords.load(tmp_path / "nothing.json")


# ------------------------------------------------------------------------------------- tagger

def one_hot_classifier(feature_dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Feature j (< feature_dim) votes for class CLASSES[j] with logit 10 * value."""
    kernel = np.zeros((feature_dim, NUM_CLASSES), dtype=np.float32)
    for j, index in enumerate(CLASSES):
        kernel[j, index] = 10.0
    return kernel, np.zeros(NUM_CLASSES, dtype=np.float32)


CLASSES = (285, 207, 208, 967, 291, 880, 504, 759)  # cat, dog, dog, coffee, lion, -, cup, camera
WORDS = ["a", "cat", "dog", "dogs", "coffee", "cup", "on", "the", "table", "animal", "camera"]
VOCAB = Vocabulary([*RESERVED_TOKENS, *WORDS])


def features_for(*logits_per_feature: dict[int, float]) -> np.ndarray:
    """Pooled features ``(B, 8)``: logit/10 on the features named."""
    rows = np.zeros((len(logits_per_feature), 8), dtype=np.float32)
    for row, wanted in zip(rows, logits_per_feature, strict=True):
        for j, logit in wanted.items():
            row[j] = logit / 10
    return rows


def test_class_probabilities_are_the_classifier_over_the_mean_of_the_grid():
    tagger = Tagger(one_hot_classifier(), VOCAB)
    grid = np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype(np.float16)
    from_grid = tagger.class_probabilities(grid)
    from_pooled = tagger.class_probabilities(grid.astype(np.float32).mean(axis=(1, 2)))
    np.testing.assert_allclose(from_grid, from_pooled, rtol=1e-5)
    np.testing.assert_allclose(from_grid.sum(axis=1), 1.0, rtol=1e-5)


def test_a_tag_sums_its_classes_and_counts_at_the_threshold():
    tagger = Tagger(one_hot_classifier(), VOCAB, threshold=0.5)
    # Two dog breeds at ~0.3 each: neither is sure, together they are (the cat class is unsure).
    features = features_for({1: 12.0, 2: 12.0, 0: 11.4}, {0: 8.0, 1: 8.0})
    probabilities = tagger.class_probabilities(features)
    assert probabilities[0, 207] < 0.5 and probabilities[0, 208] < 0.5
    tags = tagger.tags(features)
    assert [tag.word for tag in tags[0]] == ["dog"]
    dog_classes = [entry.index for entry in tagger.table.classes if entry.tag == "dog"]
    assert tags[0][0].confidence == pytest.approx(probabilities[0, dog_classes].sum(), rel=1e-5)
    assert tags[0][0].confidence > probabilities[0, 207] + probabilities[0, 208]
    assert [tag.word for tag in tags[1]] == []  # cat and dog ~0.43 each: under the threshold


def test_only_tags_the_vocabulary_can_say_and_at_most_max_tags():
    tagger = Tagger(one_hot_classifier(), VOCAB, threshold=0.2, max_tags=2)
    assert "lion" not in tagger.words and "cat" in tagger.words  # no form of lion in VOCAB
    features = features_for({4: 20.0}, {0: 15.0, 3: 15.0, 6: 14.0})
    tags = tagger.tags(features)
    assert tags[0] == []  # a sure lion the model cannot name
    assert [tag.word for tag in tags[1]] == ["cat", "coffee"]  # cup (~0.2) is third: dropped
    cat = tags[1][0]
    assert cat.token_ids == {VOCAB.id_of("cat")}
    assert cat.named_in([VOCAB.id_of("a"), VOCAB.id_of("cat")])
    assert not cat.named_in([VOCAB.id_of("a"), VOCAB.id_of("dog")])
    dog = Tagger(one_hot_classifier(), VOCAB, threshold=0.5).tags(features_for({1: 20.0}))[0][0]
    assert dog.token_ids == {VOCAB.id_of("dog"), VOCAB.id_of("dogs")}
    assert dog.named_in([VOCAB.id_of("animal")])  # a mention counts; it is never forced


def test_a_classifier_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError):
        Tagger((np.zeros((8, 10)), np.zeros(10)), VOCAB)


def test_which_bundles_have_a_classifier():
    lite = EncoderSpec("efficientnet_lite0", weights_id="imagenet")
    assert lite.has_classifier and classifier_reason(lite) == "the efficientnet_lite0 encoder's own ImageNet classifier"
    resnet = EncoderSpec("resnet50", weights_id="imagenet")
    assert not resnet.has_classifier and "have no ImageNet classifier" in classifier_reason(resnet)
    for random in (EncoderSpec("efficientnet_lite0", weights_id="none"),
                   EncoderSpec("efficientnet_lite0", weights_id="imagenet", random_weights=True)):
        assert not random.has_classifier and "random weights" in classifier_reason(random)


# ------------------------------------------------------------------------------- guided search

class WordTableDecoder:
    """A tiny language model over VOCAB: after START "a" then a noun, END; rows independent.

    The noun comes from the image feature row: a per-image bias (the last axis of the state), so
    photos differ; "cat" is never likely, so only a constraint brings it in.
    """

    def __init__(self):
        vocab = len(VOCAB)
        logits = np.full((vocab, vocab), -8.0)
        logits[2, VOCAB.id_of("a")] = 0.0  # START -> a
        for noun in ("dog", "cup", "table", "camera"):
            logits[VOCAB.id_of("a"), VOCAB.id_of(noun)] = 0.0
            logits[VOCAB.id_of(noun), 3] = 0.0  # noun -> END
            logits[VOCAB.id_of(noun), VOCAB.id_of("on")] = -1.0
        logits[VOCAB.id_of("on"), VOCAB.id_of("the")] = 0.0
        logits[VOCAB.id_of("the"), VOCAB.id_of("table")] = 0.0
        logits[VOCAB.id_of("cat"), 3] = 0.0
        self.logits = logits

    def initial_state(self, features):
        return (np.asarray(features, dtype=np.float64)[:, :len(VOCAB)],)

    def step(self, tokens, state):
        logits = self.logits[tokens] + state[0]
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)), state


def guided_features(favourite: list[str], classifier_logits: list[dict[int, float]]) -> np.ndarray:
    """Per image: a decoder bias towards its favourite noun, then 8 classifier features."""
    rows = np.zeros((len(favourite), len(VOCAB) + 8), dtype=np.float32)
    for row, noun, logits in zip(rows, favourite, classifier_logits, strict=True):
        row[VOCAB.id_of(noun)] = 3.0
        for j, logit in logits.items():
            row[len(VOCAB) + j] = logit / 10
    return rows


class SlicedTagger(Tagger):
    """The tagger on the last 8 feature columns (the decoder reads the first ones)."""

    def class_probabilities(self, features):
        return super().class_probabilities(np.asarray(features)[:, -8:])


def test_guided_search_adds_only_missing_tags_and_keeps_the_rest_unchanged():
    decoder, tagger = WordTableDecoder(), SlicedTagger(one_hot_classifier(), VOCAB, threshold=0.5)
    features = guided_features(["dog", "dog", "cup", "table"],
                               [{0: 20.0}, {1: 20.0}, {}, {3: 20.0}])  # cat, dog, nothing, coffee
    guided = guided_beam_search(decoder, features, tagger, beam_size=3, max_length=8)
    words = [VOCAB.decode(caption.hypothesis.tokens) for caption in guided]
    assert words[0] != "a dog" and "cat" in words[0].split()  # the classifier's cat is named
    assert guided[0].added == ("cat",) and guided[0].unconstrained.tokens != guided[0].hypothesis.tokens
    assert words[1] == "a dog" and guided[1].added == ()  # the dog was named already: untouched
    assert guided[1].hypothesis == guided[1].unconstrained
    assert words[2] == "a cup" and guided[2].tags == ()  # no confident tag
    assert "coffee" in words[3].split() and guided[3].added == ("coffee",)
    used = guided[0].used_tags()
    assert [(t.word, t.added) for t in used] == [("cat", True)] and 0.5 <= used[0].confidence <= 1


def test_guided_search_batched_equals_one_by_one():
    decoder, tagger = WordTableDecoder(), SlicedTagger(one_hot_classifier(), VOCAB, threshold=0.3, max_tags=2)
    features = guided_features(["dog", "cup", "table", "camera", "dog"],
                               [{0: 20.0}, {0: 14.0, 3: 14.0}, {}, {7: 20.0}, {1: 9.0, 3: 9.0}])
    batched = guided_beam_search(decoder, features, tagger, beam_size=2, max_length=7)
    for i in range(len(features)):
        alone = guided_beam_search(decoder, features[i:i + 1], tagger, beam_size=2, max_length=7)[0]
        assert (alone.hypothesis, alone.added, alone.unconstrained) == \
               (batched[i].hypothesis, batched[i].added, batched[i].unconstrained)
        # Confidences: the same up to float32 matrix-product rounding, which depends on the batch.
        assert [t.word for t in alone.tags] == [t.word for t in batched[i].tags]
        np.testing.assert_allclose([t.confidence for t in alone.tags], [t.confidence for t in batched[i].tags],
                                   rtol=1e-5)
    assert sum(bool(caption.added) for caption in batched) >= 2  # the test exercises the constraints


def test_guided_search_keeps_the_caption_when_the_tags_cannot_fit():
    decoder = WordTableDecoder()
    tagger = SlicedTagger(one_hot_classifier(), VOCAB, threshold=0.3, max_tags=2)
    features = guided_features(["dog"], [{0: 14.0, 3: 14.0}])  # a sure cat and a sure coffee
    # max_length 2 leaves one token: room for one tag word, not for both.
    guided = guided_beam_search(decoder, features, tagger, beam_size=3, max_length=2)[0]
    assert [tag.word for tag in guided.tags] == ["cat", "coffee"]
    assert guided.added == () and guided.hypothesis == guided.unconstrained
    assert VOCAB.decode(guided.hypothesis.tokens) == "a"
    roomy = guided_beam_search(decoder, features, tagger, beam_size=3, max_length=4)[0]
    assert set(roomy.added) == {"cat", "coffee"}
    assert {"cat", "coffee"} <= set(VOCAB.decode(roomy.hypothesis.tokens).split())


def test_tag_support_of_a_bundle_without_a_readable_vocabulary_still_answers(tmp_path):
    from captioning import config
    from captioning.tags.support import tag_support

    shipped = config.DEFAULT_BUNDLE_DIR / "config.json"  # efficientnet_lite0, ImageNet weights
    (tmp_path / "config.json").write_bytes(shipped.read_bytes())
    support = tag_support(tmp_path)
    assert support.available and "vocabulary file not found" in support.vocabulary_problem
    assert "which tag words it can say is unknown" in support.describe()
    (tmp_path / "vocab.json").write_text(json.dumps({"format": 1, "words": [*RESERVED_TOKENS, "a", "kitten"]}))
    support = tag_support(tmp_path)
    assert support.sayable == ("cat",) and "dog" in support.unsayable  # "kitten" is a form of cat
