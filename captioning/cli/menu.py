"""The interactive menu: ``python image_captioning.py`` with no arguments.

The menu only asks questions and calls the same library functions as the subcommands; it holds no
logic of its own. Everything heavy (TensorFlow, the dataset readers) is imported inside the step
that needs it so the menu appears at once.

End of input (Ctrl-D, or a pipe running dry) exits cleanly at any prompt. Ctrl-C inside a step goes
back to the menu; at the menu itself it exits. A ``CaptioningError`` prints one line and the menu
carries on.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from captioning import config
from captioning.bundles import default_model
from captioning.bundles.store import read_bundle_config
from captioning.cli import runtime
from captioning.cli.prompts import (
    ask_choice,
    ask_int,
    ask_parsed,
    ask_path,
    ask_yes_no,
    enable_line_editing,
    say,
)
from captioning.errors import CaptioningError

if TYPE_CHECKING:
    from captioning.inference.captioner import Captioner

# ---------------------------------------------------------------- choosing a model bundle


def bundle_label(path: Path, default: bool = False) -> str:
    """One line naming a bundle for the model list: folder, encoder/decoder, creation time, and
    whether it is the default model."""
    try:
        bundle_config = read_bundle_config(path)
    except CaptioningError as error:  # still listed, so the user sees why it cannot be used
        return f"{path.name} (unreadable: {error})"
    created = (bundle_config.created or "?")[:16].replace("T", " ")
    mark = " - default" if default else ""
    return f"{path.name} ({default_model.architecture(bundle_config)}, {created}){mark}"


def choose_bundle() -> Path | None:
    """Pick a model bundle: the default model first (Enter picks it), then the rest newest first.

    Returns:
        The bundle folder, or None (with the reason printed) when there is none.
    """
    bundles, default = default_model.ordered_bundles()
    if not bundles:
        say(f"No trained model found in {config.MODELS_DIR}. Train one first (menu 1).")
        return None
    if default is not None and default.note:
        say(f"note: {default.note}")
    if len(bundles) == 1:
        chosen = bundles[0]
    else:
        labels = [bundle_label(path, default=default is not None and index == 0)
                  for index, path in enumerate(bundles)]
        order = "the default first, then newest first" if default else "newest first"
        chosen = bundles[ask_choice(f"Which model? ({order})", labels, default=1)]
    read_bundle_config(chosen)  # a broken or too-new bundle fails here, before TensorFlow loads
    return chosen


# ---------------------------------------------------------------- 1) train


def _ask_dataset() -> str:
    """Mini-COCO (downloaded) or a local folder; returns the ``--dataset`` value."""
    index = ask_choice("Dataset:", ["Mini-COCO (download with kagglehub)", "A local folder"], 1)
    if index == 0:
        return config.MINI_COCO_SOURCE
    from captioning.data.layouts import find_layout

    while True:
        folder = ask_path("Dataset folder", kind="dir")
        if folder is None:  # not without allow_empty; keeps the type checker sure
            continue
        try:
            find_layout(folder)  # a folder that is not a dataset is asked again now, not after 5 questions
        except CaptioningError as error:
            say(f"{error}")
            continue
        return str(folder)


def _pick(title: str, names: tuple[str, ...], default: str) -> str:
    return names[ask_choice(title, names, names.index(default) + 1)]


def _ask_encoder() -> str:
    """The encoder, saying up front which cannot get their ImageNet weights here (offline, nothing
    cached) and re-asking if one of those is chosen; efficientnet_lite0, the default, always can."""
    from captioning.encoders.keras_weights import unavailable_weights

    names = config.ENCODER_NAMES
    missing = unavailable_weights(names)
    for name, reason in missing.items():
        say(f"note: {name} cannot be used here: {reason}.")
    if missing:
        say(f"{config.DEFAULT_ENCODER} works offline (its weights ship with the tool's packages).")
    labels = [f"{name} (weights unavailable)" if name in missing else name for name in names]
    while True:
        name = names[ask_choice("Encoder:", labels, names.index(config.DEFAULT_ENCODER) + 1)]
        if name not in missing:
            return name
        say(f"{name}: {missing[name]}; choose another encoder.")


def train_step() -> None:
    """Ask for the training settings, train, and say where the bundle went."""
    # No TensorFlow yet.
    from captioning.storage.output_folder import check_output_folder
    from captioning.training.pipeline import TrainOptions, interrupted_run, output_folder, train_model

    dataset = _ask_dataset()
    encoder = _ask_encoder()
    decoder = _pick("Decoder:", config.DECODER_KINDS, config.DecoderConfig.kind)
    epochs = ask_int("epochs", config.TrainConfig.epochs)
    batch_size = ask_int("batch size", config.TrainConfig.batch_size)
    options = TrainOptions(dataset=dataset, encoder=encoder, decoder=config.DecoderConfig(kind=decoder),
                           train=config.TrainConfig(epochs=epochs, batch_size=batch_size),
                           progress=sys.stderr.isatty())
    check_output_folder(output_folder(options), default=True)  # before asking about resuming: train refuses it
    found = interrupted_run(options)
    if found is not None:
        say(f"An interrupted run of this model is saved in {found}.")
    options = dataclasses.replace(options, resume=ask_yes_no("Resume an interrupted run", default=found is not None))
    say("Training; Ctrl-C stops it and keeps the best epoch so far.")
    result = train_model(options, log=say, before_tensorflow=runtime.import_tensorflow)
    if result.bundle_dir is None:
        say("Stopped before the first epoch finished: nothing was saved.")
        return
    loss = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
    if result.interrupted:
        say(f"Stopped after {result.epochs_run} epochs. Model saved to {result.bundle_dir} "
            f"(validation loss {loss}); train again and answer y to resume.")
        return
    say(f"Model saved to {result.bundle_dir} (validation loss {loss}, {result.epochs_run} epochs).")
    _ask_make_default(result.bundle_dir)


def _ask_make_default(bundle_dir: Path) -> None:
    """Offer a finished model as the default; the default changes only on a yes."""
    if default_model.is_default(bundle_dir):
        say("It is the default model already (captioning and evaluation use it).")
        return
    if ask_yes_no("Use this model by default for captioning", default=False):
        default_model.set_default(bundle_dir, chosen_by="menu training")
        say(f"Captioning and evaluation now use {default_model.shown(bundle_dir)} by default.")
    else:
        say("The default model is unchanged.")


# ---------------------------------------------------------------- 2) caption


def caption_typed_path(captioner: Captioner, path: Path) -> None:
    """Caption an image or every image in a folder: print each caption and write its PNG.

    As ``caption`` does: the PNGs go to ``captioned_image.png`` or ``captioned_images/`` in the
    current folder, which is left out of a folder's search, and no file the tool did not draw is
    written over (a taken name gives way to ``<name>-2.png``).

    Args:
        captioner: a loaded ``Captioner``.
        path: an existing image file or folder.
    """
    from captioning.inference.inputs import gather_inputs, plan_outputs
    from captioning.render.captioned_image import write_captioned_image

    output_dir = Path.cwd() / config.DEFAULT_CAPTION_FOLDER
    found = gather_inputs([path], output_dir)
    plan = plan_outputs(found.entries, single=not path.is_dir(), output_dir=output_dir,
                        default_output=Path.cwd() / config.DEFAULT_CAPTION_PNG)
    for note in found.notes + plan.notes:
        say(note)
    results = captioner.caption_entries(found.entries, config.DEFAULT_BEAM_SIZE)
    for index, result in enumerate(results):
        if result.error:
            say(f"error: {result.error}")
            continue
        say(f"{result.path}: {result.caption}")
        target = plan.pngs[index]
        written = write_captioned_image(result.path, result.caption or "", target, replace=target in plan.replaces)
        say(f"  saved {written}")


def caption_step() -> None:
    """Choose and load a model once, then caption typed paths until Enter or ``q``."""
    bundle_dir = choose_bundle()
    if bundle_dir is None:
        return
    say(default_model.model_line(bundle_dir))
    tags = _ask_tags(bundle_dir)
    from captioning.inference.captioner import Captioner

    say(f"Loading {bundle_dir} ...")
    # TensorFlow only when the model has no exported form yet (it is made now, once).
    captioner = Captioner.load(bundle_dir, tags=tags, log=say, before_tensorflow=runtime.import_tensorflow)
    while True:
        path = ask_path("Image or folder (Enter or q to go back)", kind="any", allow_empty=True)
        if path is None:
            return
        try:
            caption_typed_path(captioner, path)
        except CaptioningError as error:  # one bad image must not end the visit
            say(f"error: {error}")


def _ask_tags(bundle_dir: Path) -> bool:
    """Whether captions name what the encoder's classifier is sure of (``--no-tags`` answers no);
    asked only of a model whose encoder has one (``captioning.tags``)."""
    if not read_bundle_config(bundle_dir).encoder.has_classifier:
        return False
    return ask_yes_no("Make captions name what the encoder's ImageNet classifier is sure of (tags)", default=True)


# ---------------------------------------------------------------- 3) evaluate and 4) info


def evaluate_step() -> None:
    """Score a chosen model on its held-out split, as ``evaluate`` does."""
    from captioning.cli.commands.evaluate import evaluate_model

    bundle_dir = choose_bundle()
    if bundle_dir is None:
        return
    dataset = None
    if ask_choice("Evaluate on:", ["the dataset it was trained on", "another dataset"], 1) == 1:
        dataset = _ask_dataset()
    split = config.EVALUATION_SPLITS[ask_choice("Which held-out images?", ["test split", "validation split"], 1)]
    evaluate_model(bundle_dir, dataset, split, tags=_ask_tags(bundle_dir), say=say)


def info_step() -> None:
    """Summarise a dataset or a model bundle, as ``info`` does."""
    from captioning.bundles.store import describe_bundle
    from captioning.data.datasets import load_dataset
    from captioning.data.summary import describe_dataset
    from captioning.tags.support import tag_support

    index = ask_choice("Show information about:", ["A dataset", "A trained model"], 1)
    if index == 0:
        say(describe_dataset(load_dataset(_ask_dataset())))
        return
    bundle_dir = choose_bundle()
    if bundle_dir is not None:
        say(default_model.model_line(bundle_dir))
        say(describe_bundle(bundle_dir))
        say(tag_support(bundle_dir).describe())


# ---------------------------------------------------------------- 5) the web page


def serve_step() -> None:
    """Serve the captioning page for a chosen model until Ctrl-C, then come back to the menu."""
    bundle_dir = choose_bundle()
    if bundle_dir is None:
        return
    from captioning.cli.arg_types import port_number  # the rule `serve --port` follows
    from captioning.web.server import serve

    port = ask_parsed("port", port_number, config.ServeConfig.port)

    say("Loading the model; the address to open follows. Ctrl-C stops the server and comes back here.")
    serve(bundle_dir, host=config.ServeConfig.host, port=port, log=say)


# ---------------------------------------------------------------- the loop

STEPS: tuple[tuple[str, Callable[[], None] | None], ...] = (
    ("Train a new model", train_step),
    ("Caption images", caption_step),
    ("Evaluate a model", evaluate_step),
    ("Dataset and model info", info_step),
    ("Serve the captioning web page", serve_step),
    ("Quit", None),
)


def _run_step(step: Callable[[], None]) -> None:
    """Run one step; expected failures and Ctrl-C print a line and return to the menu."""
    try:
        step()
    except CaptioningError as error:
        say(f"error: {error}")
    except KeyboardInterrupt:
        say("\nCancelled - back to the menu.")


def run() -> int:
    """Show the menu until Quit, Ctrl-C at the menu, or end of input.

    Returns:
        The exit status, 0.
    """
    enable_line_editing()
    say("Image captioning - Ctrl-C goes back, Ctrl-D quits.")
    labels = [label for label, _ in STEPS]
    try:
        while True:
            say()
            step = STEPS[ask_choice("What would you like to do?", labels, default=None)][1]
            if step is None:
                break
            _run_step(step)
    except (KeyboardInterrupt, EOFError):
        say()  # end the half-written prompt line
    say("Goodbye.")
    return 0
