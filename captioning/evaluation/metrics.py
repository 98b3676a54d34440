"""Caption metrics, computed the way the COCO caption toolkit (pycocoevalcap) computes them.

Scoring only: this module takes generated captions and their references and returns numbers; it
neither captions images nor writes files.

Every caption (generated and reference) is first tokenised as the COCO toolkit does
(``ptb_tokenizer``: its Stanford jar with Java, an equivalent pure-Python tokeniser without).

Reported metrics, all on a 0-100 scale (x100) so they read like the tables in papers:

- ``BLEU-1..4``: NLTK ``corpus_bleu``, corpus-level (n-gram counts pooled over all images, not a
  mean of per-image scores), uniform weights, no smoothing, brevity penalty from the reference
  length closest to each hypothesis. That is the same definition as the COCO toolkit's.
- ``COCO-BLEU-1..4``: pycocoevalcap's own ``Bleu`` for comparison with papers. Same brevity
  penalty (closest reference length, ties to the shorter) and pooled clipped counts; it differs
  from NLTK in two small ways: (1) it adds 1e-15 / 1e-9 to every precision, so where some order has
  no match at all NLTK gives ~1e-76 (zero) and COCO a small positive number; (2) NLTK counts at
  least one n-gram per hypothesis (``max(1, count)``), so a caption shorter than n words (or
  empty) adds 1 to NLTK's n-gram denominator and lowers its BLEU-n. With captions of >= 4 words
  and matches at every order the two agree to ~1e-6.
- ``CIDEr-D``: pycocoevalcap's ``Cider`` (clipped n-gram counts and a Gaussian length penalty,
  sigma 6: the CIDEr-D of the COCO leaderboard). Its idf comes from the references of the images
  being scored, so it depends on the evaluation set.
- ``ROUGE-L``: pycocoevalcap's ``Rouge`` (LCS F-measure, beta 1.2, mean over images).
- ``METEOR``: pycocoevalcap's ``Meteor`` (METEOR 1.5 jar, ``-l en -norm``); needs Java and is
  skipped, with the reason, without it.
"""

from __future__ import annotations

import subprocess
import threading
import warnings
from dataclasses import dataclass, field

from captioning.evaluation import ptb_tokenizer

BLEU_ORDERS = (1, 2, 3, 4)
DISTINCT_SHARE_WARNING = 0.3
METEOR_TIMEOUT_S = 600.0

IMPLEMENTATIONS = {
    "BLEU": "NLTK corpus_bleu (nltk.translate.bleu_score): corpus-level, uniform weights, no smoothing, "
            "closest-reference-length brevity penalty",
    "COCO-BLEU": "pycocoevalcap Bleu: corpus-level, closest-reference-length brevity penalty "
                 "(the COCO caption toolkit's BLEU)",
    "CIDEr-D": "pycocoevalcap Cider: CIDEr-D (n=1..4, sigma=6, idf from the evaluated references)",
    "ROUGE-L": "pycocoevalcap Rouge: ROUGE-L F-measure (beta=1.2), mean over images",
    "METEOR": "pycocoevalcap Meteor: METEOR 1.5 jar (-l en -norm), run with Java",
}
# CIDEr-D is 10x a mean cosine similarity, so x100 puts it in 0-1000 (papers print e.g. 117.0).
SCALE = "x100: BLEU, METEOR and ROUGE-L in 0-100, CIDEr-D in 0-1000"


@dataclass
class ScoreReport:
    """Metric values and how they were obtained.

    Attributes:
        scores: metric name -> value on the 0-100 scale, in display order.
        implementations: metric family (``BLEU``, ``COCO-BLEU``, ``CIDEr-D``, ...) -> description.
        tokenizer: which tokeniser produced the tokens every metric saw.
        skipped: metric name -> plain reason it was not computed.
        notes: anything else a reader must know (e.g. a Java tokeniser failure and its fallback).
        num_images: images scored.
        distinct_share: unique generated captions / images (after tokenisation).
        mean_length: mean generated caption length in tokens.
        warnings: problems with the captions themselves (e.g. a low distinct share).
    """

    scores: dict[str, float]
    implementations: dict[str, str]
    tokenizer: str
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    num_images: int = 0
    distinct_share: float = 0.0
    mean_length: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-ready view, with the scale stated next to the numbers."""
        return {
            "scale": SCALE,
            "scores": {name: round(value, 4) for name, value in self.scores.items()},
            "implementations": dict(self.implementations),
            "tokenizer": self.tokenizer,
            "skipped": dict(self.skipped),
            "notes": list(self.notes),
            "num_images": self.num_images,
            "distinct_caption_share": round(self.distinct_share, 4),
            "mean_caption_length_tokens": round(self.mean_length, 3),
            "warnings": list(self.warnings),
        }


def nltk_corpus_bleu(candidates: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus-level BLEU-1..4 with NLTK, unsmoothed, on already tokenised captions.

    Args:
        candidates: one space-joined token string per image.
        references: the tokenised references of each image, in the same order.

    Returns:
        ``{"BLEU-1": ..., ..., "BLEU-4": ...}`` on the 0-100 scale. An order with no matching
        n-gram anywhere in the corpus scores ~0 (NLTK's unsmoothed definition).
    """
    from nltk.translate.bleu_score import corpus_bleu  # imported when scoring, not at CLI start-up

    hypotheses = [candidate.split() for candidate in candidates]
    refs = [[ref.split() for ref in image_refs] for image_refs in references]
    scores = {}
    with warnings.catch_warnings():
        # NLTK warns when some order has zero matches; 0 is the documented unsmoothed result.
        warnings.simplefilter("ignore")
        for order in BLEU_ORDERS:
            weights = tuple([1.0 / order] * order)
            scores[f"BLEU-{order}"] = 100.0 * corpus_bleu(refs, hypotheses, weights=weights)
    return scores


def _as_coco_dicts(candidates: list[str], references: list[list[str]]) -> tuple[dict, dict]:
    """The ``gts``/``res`` dicts pycocoevalcap scorers take, keyed by image index."""
    gts = {index: list(refs) for index, refs in enumerate(references)}
    res = {index: [candidate] for index, candidate in enumerate(candidates)}
    return gts, res


def coco_scores(candidates: list[str], references: list[list[str]]) -> dict[str, float]:
    """COCO toolkit BLEU-1..4, CIDEr-D and ROUGE-L on tokenised captions (pure Python, no Java).

    Args:
        candidates: one space-joined token string per image.
        references: the tokenised references of each image, in the same order.

    Returns:
        ``COCO-BLEU-1..4``, ``CIDEr-D`` and ``ROUGE-L`` on the 0-100 scale.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _as_coco_dicts(candidates, references)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"COCO-BLEU-{order}": 100.0 * value for order, value in zip(BLEU_ORDERS, bleu, strict=True)}
    scores["CIDEr-D"] = 100.0 * float(Cider().compute_score(gts, res)[0])
    scores["ROUGE-L"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
    return scores


def meteor_score(candidates: list[str], references: list[list[str]],
                 timeout_s: float = METEOR_TIMEOUT_S) -> float:
    """METEOR 1.5 through pycocoevalcap's jar, on tokenised captions.

    Args:
        candidates: one space-joined token string per image.
        references: the tokenised references of each image, in the same order.
        timeout_s: give up (and stop the Java process) after this many seconds.

    Returns:
        METEOR on the 0-100 scale.

    Raises:
        RuntimeError: Java is missing, the jar failed, or it timed out; the message says which.
    """
    if not ptb_tokenizer.java_available():
        raise RuntimeError("Java is not installed (no 'java' on PATH); METEOR runs a Java jar")
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = _as_coco_dicts(candidates, references)
    try:
        meteor = Meteor()
    except OSError as error:
        raise RuntimeError(f"could not start the METEOR jar: {error}") from None
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["score"] = float(meteor.compute_score(gts, res)[0])
        except Exception as error:  # any jar or protocol failure becomes a skip
            outcome["error"] = error

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout_s)
    process = meteor.meteor_p
    if worker.is_alive() or "error" in outcome:
        process.kill()
        stderr = _drain(process)
        reason = f"timed out after {timeout_s:.0f} s" if worker.is_alive() else repr(outcome["error"])
        raise RuntimeError(f"the METEOR jar failed: {reason}{': ' + stderr if stderr else ''}")
    process.stdin.close()
    process.wait(timeout=30)
    return 100.0 * outcome["score"]


def _drain(process: subprocess.Popen) -> str:
    """The last line the dead METEOR process wrote to stderr (its error), if any."""
    try:
        process.wait(timeout=10)
        output = process.stderr.read() if process.stderr is not None else b""
        lines = output.decode("utf-8", "replace").strip().splitlines()
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return ""
    return lines[-1] if lines else ""


def caption_statistics(candidates: list[str]) -> tuple[float, float]:
    """Distinct-caption share and mean length of tokenised generated captions.

    Args:
        candidates: one space-joined token string per image.

    Returns:
        (unique captions / images, mean tokens per caption); (0, 0) for no captions.
    """
    if not candidates:
        return 0.0, 0.0
    share = len(set(candidates)) / len(candidates)
    mean_length = sum(len(candidate.split()) for candidate in candidates) / len(candidates)
    return share, mean_length


def score_captions(candidates: list[str], references: list[list[str]],
                   use_java: bool | None = None, meteor: bool = True) -> ScoreReport:
    """Tokenise like the COCO toolkit and compute every metric.

    Args:
        candidates: one raw generated caption per image.
        references: all raw reference captions of each image (at least one each), same order.
        use_java: force (True) or forbid (False) the Java tokeniser; None uses Java if installed.
        meteor: compute METEOR when Java is installed (False skips it, e.g. in quick tests).

    Returns:
        A ScoreReport with BLEU-1..4 (NLTK), COCO-BLEU-1..4, METEOR (or why it was skipped),
        ROUGE-L and CIDEr-D, all x100, plus caption statistics and warnings.

    Raises:
        ValueError: no images, mismatched lengths, or an image without references.
    """
    _check_inputs(candidates, references)
    flat_refs = [ref for refs in references for ref in refs]
    tokens, tokenizer, notes = ptb_tokenizer.tokenize_all(list(candidates) + flat_refs, use_java)
    cand_tokens = tokens[:len(candidates)]
    ref_tokens = _regroup(tokens[len(candidates):], [len(refs) for refs in references])

    scores = nltk_corpus_bleu(cand_tokens, ref_tokens)
    coco = coco_scores(cand_tokens, ref_tokens)
    scores.update({name: value for name, value in coco.items() if name.startswith("COCO-BLEU")})
    skipped: dict[str, str] = {}
    if not meteor:
        skipped["METEOR"] = "not requested"
    else:
        try:
            scores["METEOR"] = meteor_score(cand_tokens, ref_tokens)
        except RuntimeError as error:
            skipped["METEOR"] = str(error)
    scores["ROUGE-L"] = coco["ROUGE-L"]
    scores["CIDEr-D"] = coco["CIDEr-D"]
    share, mean_length = caption_statistics(cand_tokens)
    implementations = {name: text for name, text in IMPLEMENTATIONS.items()
                       if name != "METEOR" or "METEOR" in scores}
    return ScoreReport(scores=scores, implementations=implementations, tokenizer=tokenizer,
                       skipped=skipped, notes=notes, num_images=len(candidates),
                       distinct_share=share, mean_length=mean_length,
                       warnings=_caption_warnings(share, len(candidates)))


def _check_inputs(candidates: list[str], references: list[list[str]]) -> None:
    if not candidates:
        raise ValueError("no captions to score")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} captions but {len(references)} reference lists")
    empty = [index for index, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"image #{empty[0]} has no reference captions")


def _regroup(flat: list[str], sizes: list[int]) -> list[list[str]]:
    groups, start = [], 0
    for size in sizes:
        groups.append(flat[start:start + size])
        start += size
    return groups


def _caption_warnings(share: float, count: int) -> list[str]:
    if count >= 2 and share < DISTINCT_SHARE_WARNING:
        return [f"only {round(share * count)} of the {count} generated captions ({share:.1%}) are "
                f"distinct (below {DISTINCT_SHARE_WARNING:.0%}): the model says nearly the same "
                "thing for every image; check that training converged and that captioning "
                "preprocesses images as training did"]
    return []
