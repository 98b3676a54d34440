"""Whether a bundle captions with tags, told from its files alone (no TensorFlow): for ``info`` and
for ``evaluate``'s choice of results folder before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from captioning import config
from captioning.bundles.schema import EncoderSpec
from captioning.errors import BundleError
from captioning.tags.table import ImageNetWords


@dataclass(frozen=True)
class TagSupport:
    """What tags a bundle can use.

    Attributes:
        available: its encoder has an ImageNet classifier, so captions are guided by default.
        reason: one line saying why or why not.
        sayable: the tag words its vocabulary has at least one form of (empty when unavailable).
        unsayable: the table's tag words its vocabulary lacks.
        vocabulary_problem: why the vocabulary could not be read (the words are then unknown).
    """

    available: bool
    reason: str
    sayable: tuple[str, ...] = ()
    unsayable: tuple[str, ...] = ()
    vocabulary_problem: str | None = None

    def describe(self) -> str:
        """The ``info --model`` line(s)."""
        if not self.available:
            return f"  tags: off ({self.reason})"
        total = len(self.sayable) + len(self.unsayable)
        first = (f"  tags: on ({self.reason}); a caption that misses a tag the classifier is sure of "
                 f"(threshold {config.TAG_THRESHOLD:g}) is made to name it; --no-tags turns this off")
        if self.vocabulary_problem is not None:
            return f"{first}\n    which tag words it can say is unknown: {self.vocabulary_problem}"
        return "\n".join([
            first,
            f"    {len(self.sayable)} of {total} tag words are in this vocabulary: {', '.join(self.sayable)}",
            f"    not in it (never added): {', '.join(self.unsayable) or 'none'}",
        ])


def classifier_reason(encoder: EncoderSpec) -> str:
    """One phrase saying why ``encoder`` has (``encoder.has_classifier``) or lacks an ImageNet classifier."""
    if encoder.name not in config.ENCODERS_WITH_CLASSIFIER:
        return f"the {encoder.name} encoder's weights have no ImageNet classifier"
    if encoder.has_random_weights:
        return f"the {encoder.name} encoder has random weights, so its classifier knows nothing"
    return f"the {encoder.name} encoder's own ImageNet classifier"


def tag_support(bundle_path: str | Path) -> TagSupport:
    """Read a bundle's config.json and vocabulary and say what tags it can use.

    Raises:
        BundleError: the bundle's config.json cannot be read (a vocabulary that cannot be read
            is reported in the result: ``info`` still describes such a bundle).
    """
    from captioning.bundles.store import VOCAB_FILE, read_bundle_config
    from captioning.data.text import Vocabulary

    bundle_path = Path(bundle_path)
    encoder = read_bundle_config(bundle_path).encoder
    reason = classifier_reason(encoder)
    if not encoder.has_classifier:
        return TagSupport(False, reason)
    try:
        words = set(Vocabulary.load(bundle_path / VOCAB_FILE).words)
    except BundleError as error:
        return TagSupport(True, reason, vocabulary_problem=str(error))
    table = ImageNetWords.load()
    sayable = tuple(name for name, tag in table.tags.items() if words & set(tag.forms))
    unsayable = tuple(name for name in table.tags if name not in sayable)
    return TagSupport(True, reason, sayable, unsayable)
