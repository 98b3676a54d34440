"""Captions guided by tags: name what the encoder's classifier is sure of, when the caption does not.

For a batch of features: (1) the ordinary beam search (``constrained_beam_search`` with no
constraints is exactly that); (2) the confident tags from ``tags.Tagger``; (3) for each image whose
caption names none of the words of a confident tag (its forms or mentions: "kitten" names "cat",
"animal" names "dog"), constrained beam search with that tag's forms as a disjunctive constraint,
over those images only. A caption that already names its tags stays exactly as it was; where no
caption meeting the constraint fits in ``max_length``, the unconstrained one stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioning import config
from captioning.data.text import END
from captioning.inference.constrained_search import constrained_beam_search
from captioning.inference.repetition import RepetitionBlocking
from captioning.inference.search import Hypothesis, StepDecoder
from captioning.tags.tagger import Tag, Tagger


@dataclass(frozen=True)
class UsedTag:
    """A confident tag of an image, as reported to the user (``caption --json``)."""

    word: str
    confidence: float
    added: bool  # the caption names it only because the search was made to


@dataclass(frozen=True)
class GuidedCaption:
    """One image's caption and the tags behind it.

    Attributes:
        hypothesis: the caption chosen.
        tags: the image's confident tags the vocabulary can say, most confident first.
        added: the tags the caption names only because the search was made to (a subset of
            ``tags``); the others were named by the unconstrained caption already.
        unconstrained: the caption the ordinary search gave (the same as ``hypothesis`` when
            nothing was added).
    """

    hypothesis: Hypothesis
    tags: tuple[Tag, ...]
    added: tuple[str, ...]
    unconstrained: Hypothesis

    def used_tags(self) -> tuple[UsedTag, ...]:
        """The tags for the user: each with its confidence and whether it was added."""
        return tuple(UsedTag(tag.word, round(tag.confidence, 4), tag.word in self.added) for tag in self.tags)


def guided_beam_search(step_decoder: StepDecoder, features: np.ndarray, tagger: Tagger,
                       beam_size: int = config.DEFAULT_BEAM_SIZE, max_length: int = 20,
                       end_id: int = END, *, blocking: RepetitionBlocking | None = None,
                       length_alpha: float = 1.0) -> list[GuidedCaption]:
    """The best caption per image, made to name the image's confident tags.

    Args:
        step_decoder: object with ``initial_state`` and ``step`` (``search.StepDecoder``).
        features: ``(B, ...)`` image features, as the bundle's decoder and classifier expect them.
        tagger: gives each image's confident tags.
        beam_size: beam width (per constraint state in the constrained pass).
        max_length: caption length counted with START and END.
        end_id: the END token id.
        blocking: passed to both searches (None: repetitions allowed).
        length_alpha: passed to both searches.

    Returns:
        One GuidedCaption per image, in input order.
    """
    free = constrained_beam_search(step_decoder, features, [[]] * len(features), beam_size, max_length,
                                   end_id, blocking=blocking, length_alpha=length_alpha)
    best = [ranked[0] if ranked else Hypothesis((), 0.0, 0) for ranked in free]
    tags = tagger.tags(features)
    missing = [[tag for tag in image_tags if not tag.named_in(hypothesis.tokens)]
               for image_tags, hypothesis in zip(tags, best, strict=True)]
    todo = [i for i, image_missing in enumerate(missing) if image_missing]
    chosen = list(best)
    added: list[tuple[str, ...]] = [()] * len(best)
    if todo:
        forced = constrained_beam_search(
            step_decoder, features[todo], [[tag.token_ids for tag in missing[i]] for i in todo],
            beam_size, max_length, end_id, blocking=blocking, length_alpha=length_alpha)
        for i, ranked in zip(todo, forced, strict=True):
            if ranked:  # else nothing that names the tags fits: keep the caption as it was
                chosen[i], added[i] = ranked[0], tuple(tag.word for tag in missing[i])
    return [GuidedCaption(chosen[i], tuple(tags[i]), added[i], best[i]) for i in range(len(best))]
