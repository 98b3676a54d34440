"""Metrics against hand-computed values and against the COCO caption toolkit's own figures."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from captioning.evaluation import metrics, ptb_tokenizer

HAS_JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not HAS_JAVA, reason="Java is not installed (the COCO jars need it)")

# Hand-made captions with the things that trip tokenisers: case, trailing " .", commas, quotes,
# possessives, contractions, brackets, hyphenated words, numbers and abbreviations.
FIXTURE_CANDIDATES = [
    "A dog runs on the grass .",
    "a man rides a bike",
    "Two children play in the snow.",
    "A woman in a red t-shirt is smiling",
    "the dog 's ball is in the water",
    "A man in St. Louis holds a sign that says \"Free Dinner\"",
    "a girl doesn't like the 3.5 ft. wall (really)",
    "A black dog and a white dog run , jump and play !",
]
FIXTURE_REFERENCES = [
    ["A dog is running on grass .", "The brown dog runs through the grass", "a dog in a field"],
    ["A man riding a bicycle .", "a person rides a bike down the street"],
    ["Two kids playing in the snow", "Children are sledding on a snowy hill .", "two small children play"],
    ["A smiling woman wearing a red T-shirt .", "a woman in red smiles"],
    ["A dog's ball floats in the water .", "the ball of a dog is in a lake"],
    ["A man holds a \"Free Dinner\" sign .", "someone in st. louis with a sign"],
    ["A girl climbs a wall .", "The girl doesn't want to climb the 3.5 ft. wall"],
    ["Two dogs , one black and one white , play .", "a black dog and a white dog are running"],
]


def _no_java(monkeypatch):
    """Make the code believe Java is missing, as on a machine without it."""
    monkeypatch.setattr(ptb_tokenizer.shutil, "which", lambda name: None)


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("A dog runs on the grass .", "a dog runs on the grass"),
    ("The dog's ball, \"big\" and red!", "the dog 's ball big and red"),
    ("Don't stop (ever)", "do n't stop -lrb- ever -rrb-"),  # the toolkit keeps lowercased -lrb-
    ("A man in St. Louis wearing a t-shirt...", "a man in st. louis wearing a t-shirt"),
    ("It is 3.5 ft. tall at 9:30 a.m. in the U.S.", "it is 3.5 ft. tall at 9:30 a.m. in the u.s."),
    ("the dogs' toys; 50% off $5 #1", "the dogs toys 50 % off $ 5 # 1"),
    ("can't won't cannot gonna", "ca n't wo n't can not gon na"),
    ("two lines\nin one caption", "two lines in one caption"),
])
def test_python_tokenizer_known_cases(raw, expected):
    # Expected strings are what the Stanford jar + the toolkit's punctuation list produce.
    assert ptb_tokenizer.coco_tokenize_python(raw) == expected


@needs_java
def test_our_java_call_matches_the_toolkits_ptbtokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = FIXTURE_CANDIDATES + [ref for refs in FIXTURE_REFERENCES for ref in refs]
    toolkit = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    ours = ptb_tokenizer.coco_tokenize_java(captions)
    assert [line.split() for line in ours] == [toolkit[i][0].split() for i in range(len(captions))]


@needs_java
def test_python_and_java_tokenizers_agree_on_fixture():
    captions = FIXTURE_CANDIDATES + [ref for refs in FIXTURE_REFERENCES for ref in refs]
    java = ptb_tokenizer.coco_tokenize_java(captions)
    python = [ptb_tokenizer.coco_tokenize_python(caption) for caption in captions]
    assert python == java


@pytest.mark.slow
@needs_java
def test_python_and_java_tokenizers_agree_on_real_captions(flickr8k, coco_mini):
    with open(flickr8k / "captions.txt", newline="", encoding="utf-8") as handle:
        captions = [row["caption"] for row in csv.DictReader(handle)]
    annotations = json.loads((coco_mini / "captions.json").read_text(encoding="utf-8"))["annotations"]
    captions += [item["caption"] for item in annotations]
    java = ptb_tokenizer.coco_tokenize_java(captions)
    python = [ptb_tokenizer.coco_tokenize_python(caption) for caption in captions]
    differing = [c for c, j, p in zip(captions, java, python, strict=True) if j.split() != p.split()]
    # Measured: 2 of 37,682 differ ("ant 's-eye-view", a curly-quote "'tis"); allow a few more.
    assert len(differing) <= len(captions) // 5000, differing[:10]


def test_java_tokenizer_failure_falls_back_to_python(monkeypatch):
    def broken(texts):
        raise RuntimeError("java exited with 1: boom")

    monkeypatch.setattr(ptb_tokenizer, "coco_tokenize_java", broken)
    tokens, tokenizer, notes = ptb_tokenizer.tokenize_all(["A Dog ."], use_java=True)
    assert tokens == ["a dog"]
    assert tokenizer == ptb_tokenizer.PYTHON_TOKENIZER
    assert "boom" in notes[0] and "pure-Python" in notes[0]


# --------------------------------------------------------------------------------------------
# BLEU
# --------------------------------------------------------------------------------------------

def test_bleu_known_case():
    # "the cat sat on the mat" vs two references, by hand: clipped precisions 5/6, 3/5, 1/4, 0/3;
    # closest reference length 6 = hypothesis length, so no brevity penalty.
    bleu = metrics.nltk_corpus_bleu(["the cat sat on the mat"],
                                    [["the cat is on the mat", "there is a cat on the mat"]])
    assert bleu["BLEU-1"] == pytest.approx(100 * 5 / 6)
    assert bleu["BLEU-2"] == pytest.approx(100 * (5 / 6 * 3 / 5) ** 0.5)
    assert bleu["BLEU-3"] == pytest.approx(50.0)  # (5/6 * 3/5 * 1/4) ** (1/3) = 0.5
    assert bleu["BLEU-4"] < 1e-60  # no 4-gram match: unsmoothed NLTK gives ~1e-76, i.e. zero


def test_bleu_brevity_penalty_known_case():
    # Two words against a six-word reference: every n-gram matches, BP = exp(1 - 6/2).
    bleu = metrics.nltk_corpus_bleu(["the cat"], [["the cat is on the mat"]])
    assert bleu["BLEU-1"] == pytest.approx(100 * 2.718281828 ** -2, rel=1e-6)


def test_perfect_match_gives_bleu_100(monkeypatch):
    _no_java(monkeypatch)
    references = [refs for refs in FIXTURE_REFERENCES]
    candidates = [refs[0] for refs in references]
    report = metrics.score_captions(candidates, references)
    for order in (1, 2, 3, 4):
        assert report.scores[f"BLEU-{order}"] == pytest.approx(100.0)
        assert report.scores[f"COCO-BLEU-{order}"] == pytest.approx(100.0)
    assert report.scores["ROUGE-L"] == pytest.approx(100.0)


def test_nltk_bleu_matches_coco_bleu_on_fixture():
    # Both use the closest reference length (ties -> the shorter) for the brevity penalty and pool
    # clipped counts over the corpus; COCO adds 1e-15/1e-9 to each precision. With matches at every
    # order and no caption under 4 words (see the next test) they agree to ~1e-9 relative:
    # 1e-6 on the x100 scale is generous, and far below the 0.01 the table prints.
    tokens, _, _ = ptb_tokenizer.tokenize_all(
        FIXTURE_CANDIDATES + [r for refs in FIXTURE_REFERENCES for r in refs], use_java=False)
    candidates = tokens[:len(FIXTURE_CANDIDATES)]
    references = metrics._regroup(tokens[len(FIXTURE_CANDIDATES):], [len(r) for r in FIXTURE_REFERENCES])
    ours = metrics.nltk_corpus_bleu(candidates, references)
    coco = metrics.coco_scores(candidates, references)
    assert ours["BLEU-4"] > 5  # every order has matches, so the comparison is not 0 vs ~0
    for order in (1, 2, 3, 4):
        assert ours[f"BLEU-{order}"] == pytest.approx(coco[f"COCO-BLEU-{order}"], abs=1e-6)


def test_nltk_counts_a_short_hypothesis_as_one_ngram():
    # "a dog" has no trigram; NLTK still counts max(1, 0) = 1 in the trigram denominator, COCO 0.
    candidates, references = ["a dog runs fast", "a dog"], [["a dog runs fast"], ["a dog"]]
    ours = metrics.nltk_corpus_bleu(candidates, references)
    coco = metrics.coco_scores(candidates, references)
    assert ours["BLEU-2"] == pytest.approx(coco["COCO-BLEU-2"]) == pytest.approx(100.0)
    assert coco["COCO-BLEU-3"] == pytest.approx(100.0)
    assert ours["BLEU-3"] == pytest.approx(100 * (2 / 3) ** (1 / 3))  # trigrams: 2 of 2 + 1


def test_nltk_and_coco_bleu_differ_only_when_an_order_has_no_match():
    # No 4-gram matches: NLTK gives ~1e-76 (zero), COCO a small value from its 1e-15 epsilon.
    bleu = metrics.nltk_corpus_bleu(["the cat sat on the mat"], [["the cat is on the mat"]])
    coco = metrics.coco_scores(["the cat sat on the mat"], [["the cat is on the mat"]])
    assert bleu["BLEU-4"] < 1e-60
    assert 1e-6 < coco["COCO-BLEU-4"] < 0.1


# --------------------------------------------------------------------------------------------
# CIDEr-D, ROUGE-L
# --------------------------------------------------------------------------------------------

def test_cider_known_case_identical_single_reference():
    # Candidate == its only reference and no n-gram is shared across images: every tf-idf vector
    # equals its reference's, cosine 1 at n = 1..4, no length penalty -> 10 (x100 -> 1000).
    candidates = ["a red ball on grass", "two cats sleep together now"]
    scores = metrics.coco_scores(candidates, [[c] for c in candidates])
    assert scores["CIDEr-D"] == pytest.approx(1000.0)


def test_cider_is_zero_on_a_single_image():
    # idf = log(#images / df) = log(1/1) = 0: CIDEr-D needs several images to say anything.
    scores = metrics.coco_scores(["a dog runs"], [["a dog runs"]])
    assert scores["CIDEr-D"] == 0.0


@needs_java
def test_cider_and_rouge_equal_toolkit_on_toolkit_tokens(monkeypatch):
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"caption": r} for r in refs] for i, refs in enumerate(FIXTURE_REFERENCES)}
    res = {i: [{"caption": c}] for i, c in enumerate(FIXTURE_CANDIDATES)}
    gts_tok, res_tok = PTBTokenizer().tokenize(gts), PTBTokenizer().tokenize(res)
    toolkit_cider = 100 * Cider().compute_score(gts_tok, res_tok)[0]
    toolkit_rouge = 100 * Rouge().compute_score(
        {k: [" ".join(r.split()) for r in v] for k, v in gts_tok.items()},
        {k: [" ".join(r.split()) for r in v] for k, v in res_tok.items()})[0]

    report = metrics.score_captions(FIXTURE_CANDIDATES, FIXTURE_REFERENCES, meteor=False)
    assert report.tokenizer == ptb_tokenizer.JAVA_TOKENIZER
    assert report.scores["CIDEr-D"] == pytest.approx(toolkit_cider, rel=1e-12)
    assert report.scores["ROUGE-L"] == pytest.approx(toolkit_rouge, rel=1e-12)


# --------------------------------------------------------------------------------------------
# METEOR and the no-Java path
# --------------------------------------------------------------------------------------------

def test_without_java_meteor_is_skipped_plainly_and_the_rest_computed(monkeypatch):
    _no_java(monkeypatch)
    report = metrics.score_captions(FIXTURE_CANDIDATES, FIXTURE_REFERENCES)
    assert "METEOR" not in report.scores
    assert "Java is not installed" in report.skipped["METEOR"]
    assert "METEOR" not in report.implementations
    assert report.tokenizer == ptb_tokenizer.PYTHON_TOKENIZER
    for name in ("BLEU-1", "BLEU-4", "COCO-BLEU-4", "ROUGE-L", "CIDEr-D"):
        assert 0.0 < report.scores[name] <= 1000.0
    assert report.to_dict()["skipped"]["METEOR"] == report.skipped["METEOR"]


def test_meteor_jar_failure_becomes_a_skip(monkeypatch):
    import subprocess

    from pycocoevalcap.meteor import meteor as meteor_module

    class BrokenMeteor:
        def __init__(self):
            self.meteor_p = subprocess.Popen(["sleep", "30"], stdin=subprocess.PIPE,
                                             stderr=subprocess.PIPE)

        def compute_score(self, gts, res):
            raise ValueError("could not convert string to float: ''")

    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: True)
    monkeypatch.setattr(meteor_module, "Meteor", BrokenMeteor)
    report = metrics.score_captions(FIXTURE_CANDIDATES, FIXTURE_REFERENCES, use_java=False)
    assert "METEOR" not in report.scores
    assert report.skipped["METEOR"].startswith("the METEOR jar failed")
    assert report.scores["CIDEr-D"] > 0


@needs_java
def test_java_path_computes_meteor():
    report = metrics.score_captions(FIXTURE_CANDIDATES, FIXTURE_REFERENCES)
    assert report.tokenizer == ptb_tokenizer.JAVA_TOKENIZER
    assert 10.0 < report.scores["METEOR"] < 100.0  # partial matches: well above 0, below perfect
    assert not report.skipped


# --------------------------------------------------------------------------------------------
# Caption statistics
# --------------------------------------------------------------------------------------------

def test_distinct_share_warning_when_captions_repeat(monkeypatch):
    _no_java(monkeypatch)
    candidates = ["A dog runs on the grass ."] * 9 + ["a man rides a bike"]
    references = [["a dog on grass"]] * 10
    report = metrics.score_captions(candidates, references)
    assert report.distinct_share == pytest.approx(0.2)
    assert len(report.warnings) == 1 and "only 2 of the 10 generated captions (20.0%)" in report.warnings[0]


def test_no_distinct_share_warning_at_the_threshold(monkeypatch):
    _no_java(monkeypatch)
    candidates = ["a dog runs"] * 4 + ["a cat sits"] * 3 + ["a man rides"] * 3
    report = metrics.score_captions(candidates, [["a dog on grass"]] * 10)
    assert report.distinct_share == pytest.approx(0.3)
    assert report.warnings == []
    assert report.mean_length == pytest.approx(3.0)


def test_distinct_share_counts_tokenised_captions(monkeypatch):
    # Case and a trailing " ." do not make a caption distinct.
    _no_java(monkeypatch)
    candidates = ["A dog .", "a dog", "A DOG", "a cat runs"]
    report = metrics.score_captions(candidates, [["a dog"]] * 4)
    assert report.distinct_share == pytest.approx(0.5)
    assert report.mean_length == pytest.approx(2.25)


@pytest.mark.parametrize("candidates, references", [
    ([], []),
    (["a dog"], []),
    (["a dog"], [[]]),
])
def test_bad_inputs_raise(candidates, references):
    with pytest.raises(ValueError):
        metrics.score_captions(candidates, references, use_java=False, meteor=False)


@pytest.mark.slow
def test_human_captions_score_like_the_published_human_baseline(flickr8k):
    # One of each Flickr8k image's five captions scored against the other four: the classic
    # "human" row of captioning papers (COCO: BLEU-4 ~22, CIDEr ~85). Wrong tokenisation, wrong
    # keying of references or a wrong scale would land far outside these ranges. Measured on the
    # first 500 images: BLEU-1 68.8, BLEU-4 26.3, ROUGE-L 53.4, CIDEr-D 91.4 (both tokenisers).
    with open(flickr8k / "captions.txt", newline="", encoding="utf-8") as handle:
        by_image: dict[str, list[str]] = {}
        for row in csv.DictReader(handle):
            by_image.setdefault(row["image"], []).append(row["caption"])
    groups = [captions for _, captions in sorted(by_image.items())[:500]]
    candidates, references = [g[1] for g in groups], [g[:1] + g[2:] for g in groups]
    python = metrics.score_captions(candidates, references, use_java=False, meteor=False)
    assert 55 < python.scores["BLEU-1"] < 80 and 15 < python.scores["BLEU-4"] < 35
    assert 60 < python.scores["CIDEr-D"] < 130 and 40 < python.scores["ROUGE-L"] < 65
    assert python.distinct_share == 1.0 and 8 < python.mean_length < 14
    if HAS_JAVA:
        java = metrics.score_captions(candidates, references, use_java=True, meteor=False)
        for name, value in java.scores.items():
            assert python.scores[name] == pytest.approx(value, abs=0.05), name
