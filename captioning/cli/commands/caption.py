"""``caption``: caption image files and folders with a trained bundle.

Prints the model it uses first, on stderr (``model: ...``, see ``default_model.model_line``), so
stdout holds only ``path: caption`` lines and the files written; one ``error: ...`` line per
unusable input goes to stderr. One image file: writes ``captioned_image.png`` (or ``--output``). Folders or several images:
one annotated PNG per image in ``--output-dir``, named after the image. ``--json`` writes every
result in input order. Exit status 0 when every image was captioned, 1 when any failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.cli.runtime import EXIT_FAILURE, EXIT_OK
from captioning.errors import CaptioningError
from captioning.inference.inputs import expand_paths, names_one_image, png_targets
from captioning.storage.atomic import write_json_atomic
from captioning.storage.safe_text import escape, json_text


def run(args: argparse.Namespace) -> int:
    """Caption ``args.paths`` and write the annotated PNGs and JSON asked for.

    Args:
        args: Parsed ``caption`` options (paths, model, beam_size, output, output_dir, no_png,
            json, attention_map).

    Returns:
        0 when every image was captioned, 1 when any input failed. A missing or broken model
        raises ``BundleError`` (one line, exit 1 through ``cli.run_command``).
    """
    from captioning.bundles import default_model
    from captioning.inference.captioner import Captioner, CaptionResult

    # Cheap checks first: a missing model or no usable input is reported before TensorFlow loads.
    choice = default_model.choose_model(args.model)
    model_dir = choice.path
    print(default_model.model_line(model_dir), file=sys.stderr)  # reads config.json: fails if broken
    if choice.note:
        print(f"note: {choice.note}", file=sys.stderr)
    entries = expand_paths(args.paths)
    captioner = None
    if all(error for _, error in entries):
        results = [CaptionResult(path, None, error) for path, error in entries]
    else:
        from captioning.cli.runtime import import_tensorflow

        # TensorFlow only when the model has no exported form yet (it is made now, once).
        captioner = Captioner.load(model_dir, log=_note, before_tensorflow=import_tensorflow)
        results = captioner.caption_entries(entries, beam_size=args.beam_size)
    pngs = _png_targets(args, results, single=names_one_image(args.paths, entries))
    failed = _report(results, pngs)
    if args.attention_map and captioner is not None:
        failed |= _attention_maps(captioner, results, pngs)
    if args.json:
        _write_json(Path(args.json), results, pngs)
        print(f"wrote {escape(args.json)}")
    return EXIT_FAILURE if failed else EXIT_OK


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _png_targets(args: argparse.Namespace, results, single: bool) -> dict[int, Path]:
    """Where each captioned image's annotated PNG goes, by result index (``--no-png``: nowhere)."""
    if args.no_png:
        return {}
    if args.output and not single:
        print(f"note: --output is for a single image; writing one PNG per image into {args.output_dir}/",
              file=sys.stderr)
    return png_targets(results, single, args.output, args.output_dir)


def _report(results, pngs: dict[int, Path]) -> bool:
    """Print each caption (writing its PNG) or its error; True when anything failed."""
    from captioning.render.captioned_image import write_captioned_image

    failed = False
    for index, result in enumerate(results):
        if not result.ok:
            print(f"error: {escape(result.error)}", file=sys.stderr)
            failed = True
            continue
        print(f"{escape(result.path)}: {result.caption}", flush=True)  # names need not be UTF-8
        if index in pngs:
            try:
                write_captioned_image(result.path, result.caption, pngs[index])
            except CaptioningError as error:
                print(f"error: {escape(error)}", file=sys.stderr)
                del pngs[index]
                failed = True
    if len(results) == 1 and 0 in pngs:
        print(f"saved {escape(pngs[0])}")
    elif pngs:
        print(f"saved {len(pngs)} annotated images in {escape(next(iter(pngs.values())).parent)}/")
    return failed


def _attention_maps(captioner, results, pngs: dict[int, Path]) -> bool:
    """Write ``<name>_attention.png`` per captioned image: where the decoder looked for each word.

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
        if not result.ok:
            continue
        base = pngs.get(index) or Path(f"{result.path.stem}.png")
        target = base.with_name(f"{base.stem}_attention.png")
        try:
            # The same loader and encoder as the caption, so the maps explain that caption.
            features = captioner.encode(load_image(result.path, captioner.encoder.input_size)[None])
            alphas = attention_for_tokens(captioner.step_decoder, features, result.tokens)
            words = [captioner.vocab.words[token] for token in result.tokens]
            write_attention_map(result.path, words, alphas, target)
            print(f"saved {target}")
        except (CaptioningError, ValueError) as error:
            print(f"error: {result.path}: no attention map ({error})", file=sys.stderr)
            failed = True
    return failed


def _write_json(path: Path, results, pngs: dict[int, Path]) -> None:
    """``[{"image", "caption", "score", "png"?, "error"?}]`` in input order, written atomically.

    A name that is not valid UTF-8 is written escaped (``caf\\xe9.jpg``) with
    ``"<field>_escaping": "backslashreplace"`` beside it (``captioning.storage.safe_text``).
    """
    entries = []
    for index, result in enumerate(results):
        entry = {**json_text("image", result.path), "caption": result.caption}
        if result.ok:
            entry["score"] = round(result.score, 6) if result.score is not None else None
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
