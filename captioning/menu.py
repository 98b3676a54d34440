"""The interactive menu: ``python image_captioning.py`` with no arguments.

The menu only asks questions and calls the same library functions as the subcommands; it holds no
logic of its own. Everything heavy (TensorFlow, the dataset readers) is imported inside the step
that needs it so the menu appears at once.

End of input (Ctrl-D, or a pipe running dry) exits cleanly at any prompt. Ctrl-C inside a step goes
back to the menu; at the menu itself it exits. A ``CaptioningError`` prints one line and the menu
carries on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from captioning import config
from captioning.errors import CaptioningError
from captioning.prompts import (
    ask_choice,
    ask_int,
    ask_path,
    ask_yes_no,
    enable_line_editing,
    say,
)

CAPTIONED_FOLDER = "captioned_images"


# ---------------------------------------------------------------- choosing a model bundle


def choose_bundle() -> Path | None:
    """Pick a model bundle: the newest by default, or one from a numbered list.

    Returns:
        The bundle folder, or None (with the reason printed) when there is none.
    """
    from captioning import bundle

    bundles = list(bundle.list_bundles())
    default = bundle.find_default_bundle()
    if default.is_dir() and default not in bundles:
        bundles.append(default)
    if not bundles:
        say(f"No trained model found in {config.MODELS_DIR}. Train one first (menu 1).")
        return None
    if len(bundles) == 1:
        say(f"Model: {bundle.describe_bundle(bundles[0])}")
        return bundles[0]
    labels = [bundle.describe_bundle(path) for path in bundles]
    number = bundles.index(default) + 1 if default in bundles else 1
    return bundles[ask_choice("Which model?", labels, default=number)]


# ---------------------------------------------------------------- 1) train


def _ask_dataset() -> str:
    """Mini-COCO (downloaded) or a local folder; returns the ``--dataset`` value."""
    index = ask_choice("Dataset:", ["Mini-COCO (download with kagglehub)", "A local folder"], 1)
    if index == 0:
        return config.MINI_COCO_SOURCE
    return str(ask_path("Dataset folder", kind="dir"))


def _pick(title: str, names: tuple[str, ...], default: str) -> str:
    return names[ask_choice(title, names, names.index(default) + 1)]


def train_step() -> None:
    """Ask for the training settings, train, and say where the bundle went."""
    dataset = _ask_dataset()
    encoder = _pick("Encoder:", config.ENCODER_NAMES, config.DEFAULT_ENCODER)
    decoder = _pick("Decoder:", config.DECODER_KINDS, config.DecoderConfig.kind)
    epochs = ask_int("epochs", config.TrainConfig.epochs)
    batch_size = ask_int("batch size", config.TrainConfig.batch_size)
    resume = ask_yes_no("Resume an interrupted run", default=False)
    from captioning import train_pipeline  # after the questions: it may pull in TensorFlow

    options = train_pipeline.TrainOptions(
        dataset=dataset, encoder=encoder, decoder=decoder, epochs=epochs,
        batch_size=batch_size, resume=resume,
    )
    say("Training (Ctrl-C stops after saving the last finished epoch) ...")
    result = train_pipeline.train_model(options)
    say(f"Model saved to {result.bundle_dir} (validation loss {result.best_val_loss:.4f}, "
        f"{result.epochs_run} epochs)")


# ---------------------------------------------------------------- 2) caption


def _caption_file(captioner, image: Path, output_png: Path) -> None:
    """Caption one image, print the caption and write the annotated PNG."""
    from captioning.annotate import write_captioned_image

    (result,) = captioner.caption_paths([image], config.DEFAULT_BEAM_SIZE)
    if result.error:
        say(f"{image}: {result.error}")
        return
    say(f"{image}: {result.caption}")
    write_captioned_image(image, result.caption, output_png)
    say(f"  -> {output_png}")


def _caption_folder(captioner, folder: Path) -> None:
    """Caption every image in a folder into ``captioned_images/`` in the current folder."""
    from captioning.annotate import write_captioned_image
    from captioning.images import find_images

    images = find_images(folder)
    if not images:
        say(f"No images found in {folder}")
        return
    out_dir = Path.cwd() / CAPTIONED_FOLDER
    out_dir.mkdir(parents=True, exist_ok=True)
    for result in captioner.caption_paths(images, config.DEFAULT_BEAM_SIZE):
        if result.error:
            say(f"{result.path}: {result.error}")
            continue
        output_png = out_dir / f"{Path(result.path).stem}.png"
        say(f"{result.path}: {result.caption}")
        write_captioned_image(result.path, result.caption, output_png)
        say(f"  -> {output_png}")


def caption_step() -> None:
    """Choose and load a model once, then caption typed paths until Enter or ``q``."""
    bundle_dir = choose_bundle()
    if bundle_dir is None:
        return
    from captioning.captioner import Captioner

    say(f"Loading {bundle_dir} ...")
    captioner = Captioner.from_bundle(bundle_dir)
    while True:
        path = ask_path("Image or folder (Enter or q to go back)", kind="any", allow_empty=True)
        if path is None:
            return
        try:
            if path.is_dir():
                _caption_folder(captioner, path)
            else:
                _caption_file(captioner, path, Path.cwd() / config.DEFAULT_CAPTION_PNG)
        except CaptioningError as error:  # one bad image must not end the visit
            say(f"error: {error}")


# ---------------------------------------------------------------- 3) evaluate and 4) info


def _run_subcommand(argv: list[str]) -> None:
    """Run a subcommand's handler with arguments parsed exactly as on the command line."""
    import importlib

    from captioning.cli import build_parser

    args = build_parser().parse_args(argv)
    importlib.import_module(f"captioning.commands.{args.command}").run(args)


def evaluate_step() -> None:
    """Score a chosen model on its held-out split."""
    bundle_dir = choose_bundle()
    if bundle_dir is None:
        return
    split = ("test", "val")[ask_choice("Which held-out images?", ["test split", "validation split"], 1)]
    _run_subcommand(["evaluate", "--model", str(bundle_dir), "--split", split])


def info_step() -> None:
    """Summarise a dataset or a model bundle."""
    index = ask_choice("Show information about:", ["A dataset folder", "A trained model"], 1)
    if index == 0:
        folder = ask_path("Dataset folder", kind="dir")
        _run_subcommand(["info", "--dataset", str(folder)])
        return
    bundle_dir = choose_bundle()
    if bundle_dir is not None:
        _run_subcommand(["info", "--model", str(bundle_dir)])


# ---------------------------------------------------------------- the loop

STEPS: tuple[tuple[str, Callable[[], None] | None], ...] = (
    ("Train a new model", train_step),
    ("Caption images", caption_step),
    ("Evaluate a model", evaluate_step),
    ("Dataset and model info", info_step),
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
