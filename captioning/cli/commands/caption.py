"""``caption``: caption image files and folders with a trained bundle.

Prints the model it uses first, on stderr (``model: ...``, see ``default_model.model_line``), so
stdout holds only ``path: caption`` lines and the files written; one ``error: ...`` line per
unusable input goes to stderr. One image file: writes ``captioned_image.png`` (or ``--output``). Folders or several images:
one annotated PNG per image in ``--output-dir``, named after the image. Captions are printed batch
by batch as they are made, under a progress bar on stderr (terminals only); ``--json`` writes every
result in input order once all are done. Exit status 0 when every image was captioned, 1 when any failed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from captioning import config
from captioning.cli.runtime import EXIT_FAILURE, EXIT_OK
from captioning.errors import CaptioningError
from captioning.inference.inputs import expand_paths, names_one_image, png_targets
from captioning.storage.atomic import write_json_atomic
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

    # Cheap checks first: a missing model or no usable input is reported before TensorFlow loads.
    choice = default_model.choose_model(args.model)
    model_dir = choice.path
    print(default_model.model_line(model_dir), file=sys.stderr)  # reads config.json: fails if broken
    if choice.note:
        print(f"note: {choice.note}", file=sys.stderr)
    entries = expand_paths(args.paths)
    single = names_one_image(args.paths, entries)
    pngs = _png_targets(args, entries, single)
    captioner = None
    if all(error for _, error in entries):
        results = [CaptionResult(path, None, error) for path, error in entries]
        failed = _report(results, 0, pngs)
    else:
        images = sum(error is None for _, error in entries)
        print(f"captioning {images} image{'s' if images != 1 else ''} (beam size {args.beam_size})",
              file=sys.stderr, flush=True)
        from captioning.cli.runtime import import_tensorflow

        # TensorFlow only when the model has no exported form yet (it is made now, once).
        captioner = Captioner.load(model_dir, tags=not args.no_tags, log=_note, before_tensorflow=import_tensorflow)
        results, failed = _caption_streaming(captioner, entries, args.beam_size, pngs)
    _say_saved(pngs, len(entries))
    if args.attention_map and captioner is not None:
        failed |= _attention_maps(captioner, results, pngs)
    if args.json:
        _write_json(Path(args.json), results, pngs)
        print(f"wrote {escape(args.json)}")
    return EXIT_FAILURE if failed else EXIT_OK


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _png_targets(args: argparse.Namespace, entries, single: bool) -> dict[int, Path]:
    """Where each image's annotated PNG goes, by entry index (``--no-png``: nowhere).

    Planned before captioning, so the names do not depend on which images fail; an image that
    fails loses its entry.
    """
    if args.no_png:
        return {}
    if args.output and not single:
        print(f"note: --output is for a single image; writing one PNG per image into {args.output_dir}/",
              file=sys.stderr)
    planned = [_Entry(path, error is None) for path, error in entries]
    return png_targets(planned, single, args.output, args.output_dir)


@dataclass(frozen=True)
class _Entry:
    """An input as ``png_targets`` sees it before captioning: usable unless already failed."""

    path: Path
    ok: bool


def _caption_streaming(captioner, entries, beam_size: int, pngs: dict[int, Path]) -> tuple[list, bool]:
    """Caption ``entries`` a batch at a time, reporting each batch as soon as it is done.

    Returns:
        All results in input order, and whether any image failed.
    """
    from tqdm import tqdm

    results: list = []
    failed = False
    batch_size = config.CAPTION_BATCH_SIZE
    # Off when stderr is not a terminal (a log file would fill with redraws) or for one image.
    with tqdm(total=len(entries), unit="img", desc="captioning", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty() or len(entries) < 2) as bar:
        for start in range(0, len(entries), batch_size):
            batch = captioner.caption_entries(entries[start:start + batch_size], beam_size=beam_size)
            with tqdm.external_write_mode():  # lines go above the bar, which is redrawn after them
                failed |= _report(batch, start, pngs)
            results.extend(batch)
            bar.update(len(batch))
    return results, failed


def _report(results, offset: int, pngs: dict[int, Path]) -> bool:
    """Print each caption (writing its PNG) or its error; True when anything failed.

    Args:
        results: consecutive results, the first being entry number ``offset``.
        offset: index of ``results[0]`` among all entries (the keys of ``pngs``).
        pngs: PNG targets by entry index; a failed image's is removed.
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
                write_captioned_image(result.path, result.caption, pngs[index])
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
