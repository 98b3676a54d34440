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
import os
import sys
from pathlib import Path

from captioning import config
from captioning.cli.runtime import EXIT_FAILURE, EXIT_OK
from captioning.errors import CaptioningError, InputFileError
from captioning.inference.inputs import OutputPlan, gather_inputs, names_one_image, plan_outputs
from captioning.storage.atomic import write_json_atomic
from captioning.storage.output_files import OutputFileError, check_file_target
from captioning.storage.safe_json import read_json_file
from captioning.storage.safe_text import escape, json_text


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
    if args.json:
        _check_json_target(Path(args.json))
    for note in found.notes + plan.notes:
        print(note, file=sys.stderr)
    pngs = {} if args.no_png else dict(plan.pngs)
    captioner = None
    results: list = []
    try:
        if all(error for _, error in entries):
            results = [CaptionResult(path, None, error) for path, error in entries]
            failed = _report(results, 0, pngs, plan)
        else:
            images = sum(error is None for _, error in entries)
            print(f"captioning {images} image{'s' if images != 1 else ''} (beam size {args.beam_size})",
                  file=sys.stderr, flush=True)
            from captioning.cli.runtime import import_tensorflow

            # TensorFlow only when the model has no exported form yet (it is made now, once).
            captioner = Captioner.load(model_dir, tags=not args.no_tags, log=_note,
                                       before_tensorflow=import_tensorflow)
            failed = _caption_streaming(captioner, entries, args.beam_size, pngs, plan, results)
        _say_saved(pngs, len(entries))
        if args.attention_map and captioner is not None:
            failed |= _attention_maps(captioner, results, plan)
    except KeyboardInterrupt:
        if args.json:
            _write_json_when_interrupted(Path(args.json), entries, results, pngs)
        raise
    if args.json:
        _write_json(Path(args.json), results, pngs)
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


def _check_json_target(path: Path) -> None:
    """Refuse a ``--json`` path that cannot be written, or that holds a file this tool did not write.

    An earlier captions file of the tool's (a JSON list of objects with ``image`` and ``caption``)
    is replaced; any other file there is the user's and is left alone.
    """
    check_file_target(path, "--json")
    if os.path.lexists(path) and not _is_captions_json(path):
        raise OutputFileError(f"--json {escape(path)} already exists and is not a captions file this tool "
                              "wrote; move it or choose another --json path")


def _is_captions_json(path: Path) -> bool:
    try:
        data = read_json_file(path, config.MAX_CAPTIONS_JSON_BYTES, allow_nan=True, allow_surrogates=True)
    except InputFileError:
        return False
    return isinstance(data, list) and all(isinstance(entry, dict) and "image" in entry and "caption" in entry
                                          for entry in data)


def _caption_streaming(captioner, entries, beam_size: int, pngs: dict[int, Path], plan: OutputPlan,
                       results: list) -> bool:
    """Caption ``entries`` a batch at a time, reporting each batch as soon as it is done.

    Args:
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
                failed |= _report(batch, start, pngs, plan)
            bar.update(len(batch))
    return failed


def _report(results, offset: int, pngs: dict[int, Path], plan: OutputPlan | None = None) -> bool:
    """Print each caption (writing its PNG) or its error; True when anything failed.

    Args:
        results: consecutive results, the first being entry number ``offset``.
        offset: index of ``results[0]`` among all entries (the keys of ``pngs``).
        pngs: PNG targets by entry index; a failed image's is removed.
        plan: which targets hold the tool's own earlier output (replaced); every other target,
            and every target when there is no plan, must still be free when written.
    """
    from captioning.render.captioned_image import write_captioned_image

    failed = False
    for index, result in enumerate(results, start=offset):
        if not result.ok:
            pngs.pop(index, None)
            print(f"error: {escape(result.error)}", file=sys.stderr, flush=True)
            failed = True
            continue
        print(f"{escape(result.path)}: {result.caption}", flush=True)  # names need not be UTF-8
        if index in pngs:
            try:
                write_captioned_image(result.path, result.caption, pngs[index],
                                      replace=plan is not None and pngs[index] in plan.replaces)
            except CaptioningError as error:
                print(f"error: {escape(error)}", file=sys.stderr, flush=True)
                del pngs[index]
                failed = True
    return failed


def _say_saved(pngs: dict[int, Path], count: int) -> None:
    """One line on where the annotated PNGs of ``count`` inputs went."""
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
    from captioning.data.images import load_image
    from captioning.inference.attention_weights import attention_for_tokens
    from captioning.render.attention_map import write_attention_map

    failed = False
    for index, result in enumerate(results):
        target = plan.attention_maps.get(index)
        if not result.ok or target is None:
            continue
        try:
            # The same loader and encoder as the caption, so the maps explain that caption.
            features = captioner.encode(load_image(result.path, captioner.encoder.input_size)[None])
            alphas = attention_for_tokens(captioner.step_decoder, features, result.tokens)
            words = [captioner.vocab.words[token] for token in result.tokens]
            write_attention_map(result.path, words, alphas, target, replace=target in plan.replaces)
            print(f"saved {escape(target)}")
        except (CaptioningError, ValueError) as error:
            print(f"error: {escape(result.path)}: no attention map ({escape(error)})", file=sys.stderr)
            failed = True
    return failed


def _write_json_when_interrupted(path: Path, entries, results, pngs: dict[int, Path]) -> None:
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
        _write_json(path, [*results, *rest], pngs)
    except CaptioningError as error:
        print(f"note: interrupted; {escape(path)} was not written ({escape(error)})", file=sys.stderr, flush=True)
        return
    print(f"note: interrupted; wrote {escape(path)} with the {done} caption{'s' if done != 1 else ''} finished "
          f"(the other {len(rest)} entries say not captioned)", file=sys.stderr, flush=True)


def _write_json(path: Path, results, pngs: dict[int, Path]) -> None:
    """``[{"image", "caption", "score", "tags", "png"?, "error"?}]`` in input order, written atomically.

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
        write_json_atomic(path, entries)
    except OSError as error:
        raise CaptioningError(f"cannot write {path}: {error.strerror or error}; choose a writable --json path") from None
