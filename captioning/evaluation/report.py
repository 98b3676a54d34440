"""The evaluation report: a terminal table, ``metrics.json`` and a PNG grid of sample captions.

Each evaluation keeps its own folder, ``config.DATA_DIR / evaluations / <model> /
<dataset>-<split>[-firstN]-beamK/``, so results on another dataset, split, image count or beam size
never replace each other (the same settings again replace their own earlier results). The bundle's
own ``metrics.json`` and ``evaluation_samples.png`` are its record of its held-out test split: they
are replaced only by a full evaluation of that split at the default beam, and for the shipped
``saved_models/default`` (tracked in git) only when asked (``--update-bundle``). ``plan_reports``
decides this before anything is captioned.

Every file is written to a temp file beside its target and renamed over it, so an interrupted run
never leaves half a file and no other bundle file is touched. The grid is drawn by
``render.sample_grid``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioning import config
from captioning.bundles.default_model import shown
from captioning.bundles.layout import METRICS_FILE, SAMPLES_FILE
from captioning.errors import CaptioningError
from captioning.evaluation.evaluate import EvaluationResult, EvaluationSet, ImageOutcome
from captioning.evaluation.metrics import SCALE
from captioning.render.sample_grid import write_sample_grid
from captioning.storage import atomic
from captioning.storage.output_files import check_json_target
from captioning.storage.safe_text import escape

SAMPLE_COUNT = 12

# Display order and the short note printed beside each metric family.
_FAMILY_NOTES = {
    "BLEU": "NLTK corpus_bleu, corpus-level, no smoothing",
    "COCO-BLEU": "pycocoevalcap Bleu (as in papers)",
    "METEOR": "pycocoevalcap METEOR 1.5 (Java)",
    "ROUGE-L": "pycocoevalcap Rouge-L",
    "CIDEr-D": "pycocoevalcap CIDEr-D",
}


def _family(name: str) -> str:
    return name.rsplit("-", 1)[0] if name[-1].isdigit() else name


def format_table(result: EvaluationResult) -> str:
    """The terminal report: what was evaluated, one row per metric, and what was skipped or odd.

    Args:
        result: from ``evaluation.evaluate_images``.

    Returns:
        Multi-line text (no trailing newline).
    """
    scores = result.scores
    # The model is named by the command's first line (default_model.model_line), not repeated here.
    lines = [f"evaluated {result.evaluation_set.describe()}, beam size {result.beam_size}"]
    if result.tags is not None:
        lines.append(f"tags on (threshold {result.tags.threshold:g}): {result.tags.captions_with_added_tags:,} "
                     "caption(s) name a tag only because the search was made to (--no-tags turns this off)")
    if result.failed:
        lines.append(f"{len(result.failed)} image(s) could not be read and are not scored, e.g. "
                     f"{result.failed[0].error}")
    lines += ["", f"{'metric':<12}{'score':>8}  implementation", "-" * 62]
    for name, value in scores.scores.items():
        lines.append(f"{name:<12}{value:>8.2f}  {_FAMILY_NOTES.get(_family(name), '')}")
    for name, reason in scores.skipped.items():
        lines.append(f"{name:<12}{'skipped':>8}  {reason}")
    lines += ["-" * 62,
              f"scores {SCALE}; corpus-level BLEU with NLTK (no smoothing) beside the COCO toolkit's",
              f"tokenised with: {scores.tokenizer}",
              f"distinct captions: {round(scores.distinct_share * scores.num_images):,} of "
              f"{scores.num_images:,} ({scores.distinct_share:.1%});"
              f" mean length {scores.mean_length:.1f} words;"
              f" {result.caption_seconds:.1f} s captioning ({_rate(result)})"]
    lines += [f"note: {note}" for note in scores.notes]
    lines += [f"warning: {warning}" for warning in scores.warnings]
    return "\n".join(lines)


def _rate(result: EvaluationResult) -> str:
    if result.caption_seconds <= 0:
        return "-"
    return f"{len(result.outcomes) / result.caption_seconds:.1f} images/s"


# The top-level keys of ``EvaluationResult.to_dict`` (``metrics.json``, ``--json``), and the one
# added when the model's path is not UTF-8. A ``--json`` file is replaced only when it has exactly
# these: an earlier evaluation's.
_EVALUATION_KEYS = frozenset({
    "date", "model", "dataset", "split", "split_config", "num_images", "num_images_requested",
    "num_images_held_out", "num_images_left_out_as_trained_on", "beam_size", "tags", "seconds",
    "captioning_seconds", "scale", "scores", "implementations", "tokenizer", "skipped", "notes",
    "distinct_caption_share", "mean_caption_length_tokens", "warnings", "failed_images", "captions"})
_ESCAPED_KEY = "model_escaping"


def is_evaluation_json(data: Any) -> bool:
    """Whether parsed JSON is an evaluation's metrics (exactly the keys ``to_dict`` writes)."""
    return isinstance(data, dict) and set(data) - {_ESCAPED_KEY} == _EVALUATION_KEYS


def check_json_path(json_path: str | Path) -> bool:
    """Refuse a ``--json`` path that cannot be written or holds a file that is not an earlier
    evaluation's (call before the model loads).

    Returns:
        True when an earlier evaluation's file is there (``write_reports`` replaces it).

    Raises:
        OutputFileError: the path cannot be written, or something of the user's is there.
    """
    return check_json_target(json_path, "--json", "an evaluation file", is_evaluation_json)


def write_json_atomic(path: str | Path, data: dict, replace: bool = True) -> Path:
    """Write JSON to a temp file beside ``path`` and rename it over ``path``.

    Args:
        path: the target file; its folder must exist.
        data: JSON-serialisable dict.
        replace: False writes only where nothing is at ``path`` yet.

    Returns:
        The path written.

    Raises:
        CaptioningError: the folder is missing or not writable, the disk is full, or
            (``replace=False``) a file is at ``path``, which is left alone.
    """
    path = Path(path)
    try:
        return atomic.write_json_atomic(path, data, replace=replace)
    except FileExistsError:
        raise CaptioningError(f"cannot write {escape(path)}: a file appeared there while evaluating; it was "
                              "left alone, choose another --json path") from None
    except OSError as error:
        raise _write_error(path, error) from None


def _write_error(path: Path, error: OSError) -> CaptioningError:
    return CaptioningError(f"cannot write {path}: {error.strerror or error}; check the folder "
                           "exists and is writable")


def choose_samples(outcomes: list[ImageOutcome], count: int = SAMPLE_COUNT) -> list[ImageOutcome]:
    """A deterministic spread of captioned images: evenly spaced through the evaluation order.

    Args:
        outcomes: evaluated images (failed ones are left out).
        count: how many to pick.

    Returns:
        Up to ``count`` outcomes, the same ones every run on the same images.
    """
    scored = [outcome for outcome in outcomes if outcome.error is None]
    if len(scored) <= count:
        return scored
    return [scored[index * len(scored) // count] for index in range(count)]


@dataclass(frozen=True)
class ReportPlan:
    """Where an evaluation's files go, decided before anything is captioned.

    Attributes:
        folder: this evaluation's own folder (``metrics.json`` and ``evaluation_samples.png``).
        model_path: the bundle folder.
        update_bundle: also replace the bundle's own ``metrics.json`` and ``evaluation_samples.png``.
        bundle_kept_because: why the bundle's own record is left alone (None when it is replaced).
    """

    folder: Path
    model_path: Path
    update_bundle: bool
    bundle_kept_because: str | None


def _model_folder_name(model_path: Path) -> str:
    """The bundle's folder name when that names it unambiguously, else the name and a path hash.

    Bundles in ``config.MODELS_DIR`` (and the shipped one) are told apart by name; a bundle kept
    anywhere else may share its name with one of them, so its results get ``<name>-<8 hex>``.
    """
    resolved, shipped = model_path.resolve(), Path(config.DEFAULT_BUNDLE_DIR).resolve()
    if resolved == shipped or (resolved.parent == Path(config.MODELS_DIR).resolve()
                               and resolved.name != shipped.name):
        return resolved.name
    return f"{resolved.name}-{hashlib.sha1(os.fsencode(resolved)).hexdigest()[:8]}"


def evaluation_folder(model_path: str | Path, evaluation_set: EvaluationSet, beam_size: int,
                      tags_off: bool = False) -> Path:
    """``DATA_DIR/evaluations/<model>/<dataset key>-<split>[-first<N>]-beam<K>[-notags]`` (read at
    call time).

    Args:
        model_path: the bundle folder.
        evaluation_set: the chosen images.
        beam_size: the beam width.
        tags_off: ``--no-tags`` for a bundle that would otherwise use tags.

    Returns:
        The folder (not created here).
    """
    chosen = evaluation_set
    name = f"{chosen.dataset.key}-{chosen.split}"
    if len(chosen.images) < chosen.available:
        name += f"-first{len(chosen.images)}"
    return (Path(config.DATA_DIR) / config.EVALUATIONS_FOLDER / _model_folder_name(Path(model_path))
            / f"{name}-beam{beam_size}{'-notags' if tags_off else ''}")


def _differences_from_record(evaluation_set: EvaluationSet, beam_size: int, tags_off: bool = False) -> list[str]:
    """How an evaluation differs from the bundle's record (full test split, default beam)."""
    chosen = evaluation_set
    differences = []
    if not chosen.seen_in_training:
        differences.append(f"dataset {chosen.dataset.key}, not its training dataset")
    elif chosen.split != "test":
        differences.append(f"the {chosen.split} split")
    if len(chosen.images) < chosen.available:
        differences.append(f"the first {len(chosen.images):,} of {chosen.available:,} images")
    if beam_size != config.DEFAULT_BEAM_SIZE:
        differences.append(f"beam {beam_size}")
    if tags_off:
        differences.append("no tags")
    return differences


def plan_reports(model_path: str | Path, evaluation_set: EvaluationSet, beam_size: int,
                 update_bundle: bool = False, tags_off: bool = False) -> ReportPlan:
    """Decide where an evaluation's files go (call before captioning: it may refuse).

    Args:
        model_path: the bundle folder.
        evaluation_set: the chosen images.
        beam_size: the beam width.
        update_bundle: the user asked to replace the bundle's own record (``--update-bundle``).
        tags_off: ``--no-tags`` for a bundle that would otherwise use tags (its own folder; never
            the bundle's record, which is made with its default decoding).

    Returns:
        The ReportPlan: always the evaluation's own folder; the bundle's record too for a full
        evaluation of its test split at the default beam, unless it is the shipped model and
        ``update_bundle`` was not given.

    Raises:
        CaptioningError: ``update_bundle`` for an evaluation that is not the bundle's record.
    """
    model_path = Path(model_path)
    folder = evaluation_folder(model_path, evaluation_set, beam_size, tags_off)
    record = model_path / METRICS_FILE
    differences = _differences_from_record(evaluation_set, beam_size, tags_off)
    record_kind = f"the full test split of its training dataset at beam {config.DEFAULT_BEAM_SIZE}"
    if differences:
        if update_bundle:
            raise CaptioningError(f"--update-bundle: {shown(record)} records {record_kind}, but this "
                                  f"evaluation uses {' and '.join(differences)}; drop --update-bundle "
                                  f"(the results then go to {shown(folder)})")
        return ReportPlan(folder, model_path, False, f"it records {record_kind}, and this evaluation "
                                                     f"uses {' and '.join(differences)}")
    if not update_bundle and model_path.resolve() == Path(config.DEFAULT_BUNDLE_DIR).resolve():
        return ReportPlan(folder, model_path, False, "it is the shipped model's record (tracked in git); "
                                                     "pass --update-bundle to replace it")
    return ReportPlan(folder, model_path, True, None)


def write_reports(result: EvaluationResult, plan: ReportPlan,
                  json_path: str | Path | None = None, json_replace: bool = False) -> dict[str, Path]:
    """Write ``metrics.json`` and ``evaluation_samples.png`` where ``plan`` says, and ``--json FILE``.

    The evaluation's own folder is written first, so its results are kept even when the bundle
    folder turns out not to be writable.

    Args:
        result: from ``evaluation.evaluate_images``.
        plan: from ``plan_reports``.
        json_path: an extra copy of the metrics JSON, or None (checked by ``check_json_path``).
        json_replace: ``json_path`` held an earlier evaluation's file when checked; otherwise it
            is written only where nothing is yet, so a file that appeared meanwhile is left alone.

    Returns:
        ``{"metrics", "samples"}`` in the evaluation's folder, plus ``"json"`` when asked and
        ``"bundle_metrics"``, ``"bundle_samples"`` when the bundle's record was replaced.

    Raises:
        CaptioningError: a file cannot be written (the message names it).
    """
    data = result.to_dict()
    try:
        plan.folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(plan.folder, error) from None
    written = {"metrics": write_json_atomic(plan.folder / METRICS_FILE, data)}
    title = (f"{escape(result.model_path.name)}: {result.evaluation_set.split} images of "
             f"{result.evaluation_set.dataset.key}, beam {result.beam_size}")
    written["samples"] = write_sample_grid(choose_samples(result.outcomes), plan.folder / SAMPLES_FILE, title)
    if json_path:
        written["json"] = write_json_atomic(json_path, data, replace=json_replace)
    if plan.update_bundle:
        try:
            written["bundle_metrics"] = write_json_atomic(plan.model_path / METRICS_FILE, data)
            written["bundle_samples"] = _copy_atomic(written["samples"], plan.model_path / SAMPLES_FILE)
        except CaptioningError as error:
            raise CaptioningError(f"{error} (the results are saved in {plan.folder})") from None
    return written


def _copy_atomic(source: Path, target: Path) -> Path:
    try:
        with atomic.atomic_output(target, suffix=target.suffix) as temp:
            shutil.copyfile(source, temp)
    except OSError as error:
        raise _write_error(target, error) from None
    return target
