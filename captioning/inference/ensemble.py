"""Ensembles: several decoders of one architecture, trained apart, captioning together.

(Members may read different encoders' features: ``inference.encoder_set`` hands each its own.)

At every step each member predicts the next word from its own LSTM state, and the search ranks
words by the members' *averaged probabilities*. Decoders trained with different regularisation
make different mistakes, so the average is better than any of them: the standard cheap gain in
captioning (Vinyals et al. 2015 ensembled their best COCO model). On Flickr8k validation photos
three attention decoders together scored BLEU-4 20.8 where the best alone scored 20.2
(``saved_models/default/MODEL_CARD.md``).

``bundles.combine.combine_bundles`` writes an ensemble bundle from trained bundles (the
``ensemble`` command); ``bundles.store.load_bundle`` loads every member; ``EnsembleStepDecoder``
steps them together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_PROBABILITY = 1e-30  # keeps log() finite for words every member rules out


class EnsembleStepDecoder:
    """Steps several step decoders in lockstep and averages their next-word probabilities.

    The state is the members' states concatenated (every array batch-first), so beam search can
    reorder it like a single decoder's.
    """

    def __init__(self, members: Sequence):
        """Args:
            members: step decoders (``models.make_step_decoder``) over the same vocabulary.
        """
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = list(members)
        self._arity: list[int] = []

    def initial_state(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every member's initial state for the batch, concatenated."""
        states = [member.initial_state(features) for member in self.members]
        self._arity = [len(state) for state in states]
        return tuple(array for state in states for array in state)

    def _split(self, state: tuple) -> list[tuple]:
        parts, start = [], 0
        for count in self._arity:
            parts.append(tuple(state[start:start + count]))
            start += count
        return parts

    def step(self, tokens: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """Log of the members' mean next-word probability ``(B, V)``, and the new state."""
        log_probs, new_state, _ = self._advance("step", tokens, state)
        return _mean_probability_log(log_probs), new_state

    def step_with_attention(self, tokens: np.ndarray, state: tuple):
        """As ``step``, plus the members' mean attention over the grid ``(B, P)`` (attention maps).

        Members that read another encoder's grid (``inference.encoder_set``) attend over other
        cells; the mean is over the members on the first member's grid, the bundle's own encoder's.
        """
        log_probs, new_state, alphas = self._advance("step_with_attention", tokens, state)
        same_grid = [alpha for alpha in alphas if alpha.shape == alphas[0].shape]
        return _mean_probability_log(log_probs), new_state, np.mean(same_grid, axis=0)

    def _advance(self, method: str, tokens: np.ndarray, state: tuple):
        """Call ``member.<method>`` on every member: (log-probs per member, joined state, extras)."""
        log_probs, new_state, extras = [], [], []
        for member, member_state in zip(self.members, self._split(state), strict=True):
            member_log_probs, member_state, *extra = getattr(member, method)(tokens, member_state)
            log_probs.append(member_log_probs)
            new_state.extend(member_state)
            extras.extend(extra)
        return log_probs, tuple(new_state), extras


def _mean_probability_log(log_probs: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(log_probs)
    # log(mean(exp(x))) computed stably: shift by the per-word maximum before exponentiating.
    peak = stacked.max(axis=0)
    mean = np.mean(np.exp(stacked - peak), axis=0)
    return np.maximum(peak + np.log(mean), np.log(MIN_PROBABILITY)).astype(np.float32)


def make_ensemble_step_decoder(step_decoders: Sequence):
    """One step decoder from a bundle's members: the member itself when there is only one."""
    return step_decoders[0] if len(step_decoders) == 1 else EnsembleStepDecoder(step_decoders)


__all__ = ["EnsembleStepDecoder", "make_ensemble_step_decoder"]
