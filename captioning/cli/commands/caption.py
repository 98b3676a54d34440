"""``caption``: caption image files and folders with a trained bundle.

Prints the model it uses first, on stderr (``model: ...``, see ``default_model.model_line``), so
stdout holds only ``path: caption`` lines and the files written; one ``error: ...`` line per
unusable input goes to stderr. One image file: writes ``captioned_image.png`` (or ``--output``). Folders or several images:
one annotated PNG per image in ``--output-dir``, named after the image. Captions are printed batch
by batch as they are made, under a progress bar on stderr (terminals only); ``--json`` writes every
result in input order once all are done (on Ctrl-C, those finished so far). Exit status 0 when every
image was captioned, 1 when any failed.

Every output path is checked before the model loads, and no file the tool did not write itself is
ever written over (``inference.inputs.plan_outputs``): a taken name gives way to ``<name>-2.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from captioning import config
from captioning.cli.runtime import EXIT_FAILURE, EXIT_OK
from captioning.errors import CaptioningError
from captioning.inference.inputs import OutputPlan, gather_inputs, names_one_image, plan_outputs
from captioning.storage.atomic import write_json_atomic
from captioning.storage.output_files import check_json_target
from captioning.storage.safe_text import escape, json_text

# The keys of each entry of the --json file (``_write_json``): a captioned image's (``png`` too
# when its PNG was written) and a failed one's; a field whose text is not UTF-8 adds
# ``<field>_escaping``. A file is taken for the tool's own only when every entry has one of these
# key sets exactly, so a dataset's ``captions.json`` (``image`` and ``caption`` only) never is.
_CAPTIONED_KEYS = frozenset({"image", "caption", "score", "tags"})
_FAILED_KEYS = frozenset({"image", "caption", "error"})
_ESCAPED_FIELDS = ("image", "png", "error")


def run(args: argparse.Namespace) -> int:
    """Caption ``args.paths`` and write the annotated PNGs and JSON asked for.

    Each batch's captions are printed (and their PNGs written) as soon as that batch is done, so
    a folder of hundreds of photos shows its first lines within seconds; a progress bar on stderr
    counts the photos when it is a terminal.

    Args:
        args: Parsed ``caption`` options (paths, model, beam_size, no_tags, output, output_dir,
            no_png, json, attention_map).

    Returns:
        0 when every image was captioned, 1 when any input failed. A missing or broken model
        raises ``BundleError`` (one line, exit 1 through ``cli.run_command``).
    """
    from captioning.bundles import default_model
    from captioning.inference.captioner import Captioner, CaptionResult

    # Cheap checks first: a missing model, no usable input or an output path that cannot be
    # written is reported before TensorFlow loads.
    choice = default_model.choose_model(args.model)
    model_dir = choice.path
    print(default_model.model_line(model_dir), file=sys.stderr)  # reads config.json: fails if broken
    if choice.note:
        print(f"note: {choice.note}", file=sys.stderr)
    found = gather_inputs(args.paths, args.output_dir)
    entries = found.entries
    single = names_one_image(args.paths, entries)
    plan = _plan_outputs(args, entries, single)
    # Replace the --json file only when it is an earlier one of the tool's, known now.
    json_replace = bool(args.json) and check_json_target(args.json, "--json", "a captions file", _is_captions_json)
    for note in found.notes + plan.notes:
        print(note, file=sys.stderr)
    pngs = {} if args.no_png else dict(plan.pngs)
    saved: dict[int, Path] = {}  # the PNGs written so far, by entry index
    captioner = None
    results: list = []
    try:
        if all(error for _, error in entries):
            results = [CaptionResult(path, None, error) for path, error in entries]
            failed = _report(results, 0, pngs, saved, plan)
        else:
            images = sum(error is None for _, error in entries)
            print(f"captioning {images} image{'s' if images != 1 else ''} (beam size {args.beam_size})",
                  file=sys.stderr, flush=True)
            from captioning.cli.runtime import import_tensorflow

            # TensorFlow only when the model has no exported form yet (it is made now, once).
            captioner = Captioner.load(model_dir, tags=not args.no_tags, log=_note,
                                       before_tensorflow=import_tensorflow)
            failed = _caption_streaming(captioner, entries, args.beam_size, pngs, saved, plan, results)
        _say_saved(saved, len(entries))
        if args.attention_map and captioner is not None:
            failed |= _attention_maps(captioner, results, plan)
    except KeyboardInterrupt:
        if args.json:
            _write_json_when_interrupted(Path(args.json), entries, results, saved, json_replace)
        raise
    if args.json:
        _write_json(Path(args.json), results, saved, json_replace)
        print(f"wrote {escape(args.json)}")
    return EXIT_FAILURE if failed else EXIT_OK


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _plan_outputs(args: argparse.Namespace, entries, single: bool) -> OutputPlan:
    """Where each image's annotated PNG (and attention map) goes, by entry index.

    Chosen before captioning, so the names do not depend on which images fail and a path that
    cannot be written is refused before the model loads; an image that fails loses its entry.
    With ``--no-png`` and no ``--attention-map`` nothing is written, so nothing is planned.
    """
    if args.no_png and not args.attention_map:
        return OutputPlan()
    if args.output and not single:
        print(f"note: --output is for a single image; writing one PNG per image into {args.output_dir}/",
              file=sys.stderr)
    return plan_outputs(entries, single, args.output if single else None, args.output_dir,
                        attention_maps=args.attention_map)


def _is_captions_json(data: Any) -> bool:
    """Whether parsed JSON is a ``--json`` file of ``caption``'s: a non-empty list whose every entry
    has exactly the keys ``_write_json`` writes (see ``_CAPTIONED_KEYS``)."""
    return isinstance(data, list) and bool(data) and all(
        isinstance(entry, dict) and _entry_keys(entry) in (_CAPTIONED_KEYS, _CAPTIONED_KEYS | {"png"}, _FAILED_KEYS)
        for entry in data)


def _entry_keys(entry: dict) -> set:
    """The entry's keys less each ``<field>_escaping`` that stands beside its field."""
    return set(entry) - {f"{field}_escaping" for field in _ESCAPED_FIELDS if field in entry}


def _caption_streaming(captioner, entries, beam_size: int, pngs: dict[int, Path], saved: dict[int, Path],
                       plan: OutputPlan, results: list) -> bool:
    """Caption ``entries`` a batch at a time, reporting each batch as soon as it is done.

    Args:
        saved: receives each PNG as it is written (``_report``).
        results: receives every result in input order as its batch finishes, so an interrupted
            run still knows the captions it finished.

    Returns:
        Whether any image failed.
    """
    from tqdm import tqdm

    failed = False
    batch_size = config.CAPTION_BATCH_SIZE
    # Off when stderr is not a terminal (a log file would fill with redraws) or for one image.
    with tqdm(total=len(entries), unit="img", desc="captioning", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty() or len(entries) < 2) as bar:
        for start in range(0, len(entries), batch_size):
            batch = captioner.caption_entries(entries[start:start + batch_size], beam_size=beam_size)
            results.extend(batch)
            with tqdm.external_write_mode():  # lines go above the bar, which is redrawn after them
                failed |= _report(batch, start, pngs, saved, plan)
            bar.update(len(batch))
    return failed


def _report(results, offset: int, pngs: dict[int, Path], saved: dict[int, Path],
            plan: OutputPlan | None = None) -> bool:
    """Print each caption (writing its PNG) or its error; True when anything failed.

    Args:
        results: consecutive results, the first being entry number ``offset``.
        offset: index of ``results[0]`` among all entries (the keys of ``pngs``).
        pngs: PNG targets by entry index.
        saved: receives each PNG once it is written, so the ``--json`` of a run stopped midway
            names only PNGs that exist.
        plan: which targets hold the tool's own earlier output (replaced); every other target,
            and every target when there is no plan, must still be free when written.
    """
    from captioning.render.captioned_image import write_captioned_image

    failed = False
    for index, result in enumerate(results, start=offset):
        if not result.ok:
            print(f"error: {escape(result.error)}", file=sys.stderr, flush=True)
            failed = True
            continue
        print(f"{escape(result.path)}: {result.caption}", flush=True)  # names need not be UTF-8
        if index in pngs:
            try:
                saved[index] = write_captioned_image(result.path, result.caption, pngs[index],
                                                     replace=plan is not None and pngs[index] in plan.replaces)
            except CaptioningError as error:
                print(f"error: {escape(error)}", file=sys.stderr, flush=True)
                failed = True
    return failed


def _say_saved(pngs: dict[int, Path], count: int) -> None:
    """One line on where the annotated PNGs of ``count`` inputs went (``pngs``: those written)."""
    if count == 1 and 0 in pngs:
        print(f"saved {escape(pngs[0])}")
    elif pngs:
        print(f"saved {len(pngs)} annotated images in {escape(next(iter(pngs.values())).parent)}/")


def _attention_maps(captioner, results, plan: OutputPlan) -> bool:
    """Write ``<name>_attention.png`` beside each captioned image's PNG: where the decoder looked
    for each word.

    Returns:
        True when a map could not be written.
    """
    if not captioner.has_attention:
        where = captioner.path if captioner.path is not None else "this model"
        print(f"note: --attention-map needs an attention model; {where} uses the "
              f"{captioner.decoder_kind} decoder (train one with --decoder attention)", file=sys.stderr)
        return False
    from captioning.inference.attention_weights import attention_for_tokens
    from captioning.render.attention_map import write_attention_map

    failed = False
    for index, result in enumerate(results):
        target = plan.attention_maps.get(index)
        if not result.ok or target is None:
            continue
        try:
            # The same loader and encoder as the caption, so the maps explain that caption.
            features = captioner.encode(captioner.load_pixels(result.path)[None])
            alphas = attention_for_tokens(captioner.step_decoder, features, result.tokens)
            words = [captioner.vocab.words[token] for token in result.tokens]
            write_attention_map(result.path, words, alphas, target, replace=target in plan.replaces)
            print(f"saved {escape(target)}")
        except (CaptioningError, ValueError) as error:
            print(f"error: {escape(result.path)}: no attention map ({escape(error)})", file=sys.stderr)
            failed = True
    return failed


def _write_json_when_interrupted(path: Path, entries, results, pngs: dict[int, Path], replace: bool) -> None:
    """On Ctrl-C, write the captions finished so far (atomically), or say the file was not written.

    Images not reached get ``caption: null`` and an ``error`` saying so, so the file still has one
    entry per image in input order.
    """
    from captioning.inference.captioner import CaptionResult

    done = sum(result.ok for result in results)
    if not done:
        print(f"note: interrupted before any image was captioned; {escape(path)} was not written",
              file=sys.stderr, flush=True)
        return
    rest = [CaptionResult(image, None, error or f"{escape(image)}: not captioned (interrupted)")
            for image, error in entries[len(results):]]
    try:
        _write_json(path, [*results, *rest], pngs, replace)
    except CaptioningError as error:
        print(f"note: interrupted; {escape(path)} was not written ({escape(error)})", file=sys.stderr, flush=True)
        return
    print(f"note: interrupted; wrote {escape(path)} with the {done} caption{'s' if done != 1 else ''} finished "
          f"(the other {len(rest)} entries say not captioned)", file=sys.stderr, flush=True)


def _write_json(path: Path, results, pngs: dict[int, Path], replace: bool) -> None:
    """``[{"image", "caption", "score", "tags", "png"?, "error"?}]`` in input order, written atomically.

    ``pngs``: the PNGs written, by entry index. ``replace``: ``path`` held an earlier file of the
    tool's when the run started; otherwise the file is published only where nothing is yet, so one
    that appeared meanwhile (or a symlink) is left alone.

    ``tags``: the classifier's confident tags, ``[{"tag", "confidence", "added"}]`` (``added``: the
    caption names it only because the search was made to), or null when tags were off.
    A name that is not valid UTF-8 is written escaped (``caf\\xe9.jpg``) with
    ``"<field>_escaping": "backslashreplace"`` beside it (``captioning.storage.safe_text``).
    """
    entries = []
    for index, result in enumerate(results):
        entry = {**json_text("image", result.path), "caption": result.caption}
        if result.ok:
            entry["score"] = round(result.score, 6) if result.score is not None else None
            entry["tags"] = None if result.tags is None else [
                {"tag": tag.word, "confidence": tag.confidence, "added": tag.added} for tag in result.tags]
            if index in pngs:
                entry.update(json_text("png", pngs[index]))
        else:
            entry.update(json_text("error", result.error))
        entries.append(entry)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, entries, replace=replace)
    except FileExistsError:
        raise CaptioningError(f"cannot write {escape(path)}: a file appeared there while captioning; it was left "
                              "alone, caption again with another --json path") from None
    except OSError as error:
        raise CaptioningError(f"cannot write {path}: {error.strerror or error}; choose a writable --json path") from None
