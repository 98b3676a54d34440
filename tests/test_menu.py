"""The interactive menu, driven for real through a pseudo-terminal (pexpect) and through a pipe.

The fast tests never reach a step that needs TensorFlow; the train-then-caption walk is marked slow.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from captioning import config
from captioning.bundles import default_model
from captioning.cli import menu, prompts
from tests.support.bundles import shipped_architecture
from tests.support.menu_session import (
    ENTRY,
    MENU_PROMPT,
    MODEL_LIST,
    QUIT,
    answer,
    expect_exit_ok,
    interrupt,
    menu_env,
    spawn_menu,
)

SHIPPED = shipped_architecture()


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path


# ---------------------------------------------------------------- start-up and exits


@pytest.mark.parametrize("stdin", [f"{QUIT}\n", ""])
def test_piped_stdin_exits_cleanly(workdir, stdin):
    done = subprocess.run([sys.executable, ENTRY], cwd=workdir, env=menu_env(workdir), input=stdin,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Goodbye." in done.stdout


def test_piped_stdin_running_dry_inside_a_step_exits_cleanly(workdir):
    done = subprocess.run([sys.executable, ENTRY], cwd=workdir, env=menu_env(workdir),
                          input="1\n2\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Dataset folder: " in done.stdout


def test_quit_from_menu(workdir):
    child = spawn_menu(workdir)
    answer(child, QUIT, "Goodbye.")
    expect_exit_ok(child)


def test_ctrl_c_at_the_menu_exits_zero(workdir):
    child = spawn_menu(workdir)
    interrupt(child, "Goodbye.")
    expect_exit_ok(child)


def test_end_of_input_at_the_menu_exits_zero(workdir):
    child = spawn_menu(workdir)
    child.sendeof()
    child.expect_exact("Goodbye.")
    expect_exit_ok(child)


def test_end_of_input_inside_a_step_exits_zero(workdir):
    child = spawn_menu(workdir)
    answer(child, "1", "Choose [1]: ")
    child.sendeof()
    child.expect_exact("Goodbye.")
    expect_exit_ok(child)


# ---------------------------------------------------------------- bad input re-prompts


def test_bad_menu_choices_reprompt(workdir):
    child = spawn_menu(workdir)
    for bad in ("x", "0", str(len(menu.STEPS) + 1), "", "1.5"):
        answer(child, bad, f"Please enter a number from 1 to {QUIT}")
        child.expect_exact(MENU_PROMPT)
    answer(child, QUIT, "Goodbye.")
    expect_exit_ok(child)


def test_every_train_prompt_reprompts_then_ctrl_c_returns_to_menu(workdir):
    not_a_folder = workdir / "notes.txt"
    not_a_folder.write_text("not a dataset")
    (workdir / "my data" / "Images").mkdir(parents=True)  # a dataset's layout (its photos are not read yet)
    (workdir / "my data" / "captions.txt").write_text("image,caption\n")
    (workdir / "no dataset").mkdir()
    child = spawn_menu(workdir)
    answer(child, "1", "Dataset:")
    child.expect_exact("Choose [1]: ")
    answer(child, "3", "Please enter a number from 1 to 2")
    answer(child, "2", "Dataset folder: ")
    answer(child, str(workdir / "missing"), f"Not found: {workdir / 'missing'}")
    answer(child, str(not_a_folder), f"Not a folder: {not_a_folder}")
    answer(child, "", "Please enter a path")
    answer(child, str(workdir / "no dataset"), "no dataset layout recognised")  # asked again at once
    child.expect_exact("Dataset folder: ")
    answer(child, f"'{workdir / 'my data'}'", "Encoder:")  # pasted with quotes
    answer(child, "resnet", f"Please enter a number from 1 to {len(config.ENCODER_NAMES)}")
    answer(child, "2", "Decoder:")
    answer(child, "9", "Please enter a number from 1 to 2")
    answer(child, "", "Epochs [20]: ")  # Enter keeps the default decoder
    answer(child, "0", "epochs must be a whole number >= 1")
    answer(child, "two", "epochs must be a whole number >= 1")
    answer(child, "3", "Batch size [64]: ")
    answer(child, "-4", "batch size must be a whole number >= 1")
    answer(child, "8", "Resume an interrupted run? [y/N]: ")
    answer(child, "maybe", "Please answer y or n")
    child.expect_exact("Resume an interrupted run? [y/N]: ")
    interrupt(child, "Cancelled - back to the menu.")
    child.expect_exact(MENU_PROMPT)
    answer(child, QUIT, "Goodbye.")
    expect_exit_ok(child)


def test_library_error_prints_one_line_and_menu_carries_on(workdir):
    broken = workdir / "saved_models" / "from-the-future"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text('{"format_version": 999}')
    child = spawn_menu(workdir)
    answer(child, "2", MODEL_LIST)  # the shipped model (the default) first, then the broken one
    answer(child, "2", "error: ")
    child.expect_exact("newer than this tool supports")
    child.expect_exact(MENU_PROMPT)
    answer(child, "4", "Show information about:")
    (workdir / "empty").mkdir()
    answer(child, "1", "Dataset:")
    answer(child, "2", "Dataset folder: ")
    answer(child, "empty", "no dataset layout recognised")  # relative to the current folder; asked again
    child.expect_exact("Dataset folder: ")
    interrupt(child, "Cancelled - back to the menu.")
    child.expect_exact(MENU_PROMPT)
    answer(child, QUIT, "Goodbye.")
    expect_exit_ok(child)


def _write_photo(path: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path)
    return path


def _assert_png(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes the whole file
        assert image.width >= 64


def test_caption_visit_loads_once_and_writes_pngs(workdir, tiny_bundle):
    models = workdir / "saved_models"
    for name in ("older", "newer"):
        shutil.copytree(tiny_bundle, models / name)
    photo = _write_photo(workdir / "my photos" / "red.jpg", (200, 0, 0))
    _write_photo(workdir / "my photos" / "deeper" / "red.png", (0, 0, 200))
    child = spawn_menu(workdir, timeout=120)
    answer(child, "2", MODEL_LIST)
    child.expect_exact(f"1) default ({SHIPPED}, ")  # shipped, the default
    child.expect_exact("Choose [1]: ")
    answer(child, "9", "Please enter a number from 1 to")
    answer(child, "2", "model: saved_models/")  # one of ours, named before it loads
    child.expect_exact(" (efficientnet_lite0 + merge)")
    child.expect_exact("Loading ")
    child.expect_exact("Image or folder (Enter or q to go back): ")
    answer(child, str(workdir / "nope.jpg"), f"Not found: {workdir / 'nope.jpg'}")
    answer(child, f'"{photo}"', f"{photo}: ")  # pasted with quotes
    child.expect_exact(f"saved {workdir / 'captioned_image.png'}")
    answer(child, "my photos", "saved ")  # a folder, relative to the current folder
    child.expect_exact("Image or folder (Enter or q to go back): ")
    answer(child, "q", MENU_PROMPT)
    answer(child, QUIT, "Goodbye.")
    expect_exit_ok(child)
    session = child.logfile_read.getvalue()
    assert session.count("Loading ") == 1  # once per visit, not per image
    _assert_png(workdir / "captioned_image.png")
    written = sorted(p.name for p in (workdir / "captioned_images").iterdir())
    assert written == ["red-2.png", "red.png"]
    for name in written:
        _assert_png(workdir / "captioned_images" / name)


def test_model_list_offers_the_chosen_default_first_and_every_step_names_its_model(workdir, tiny_bundle):
    models = workdir / "saved_models"
    shutil.copytree(tiny_bundle, models / "mine")
    (models / "default-model.json").write_text('{"model": "mine"}')
    child = spawn_menu(workdir)
    answer(child, "4", "Show information about:")
    answer(child, "2", MODEL_LIST)
    child.expect_exact("1) mine (efficientnet_lite0 + merge, ")
    child.expect_exact(") - default")
    child.expect_exact(f"2) default ({SHIPPED}, ")
    answer(child, "", "model: saved_models/mine (efficientnet_lite0 + merge, your default)")
    child.expect_exact("model bundle: ")
    child.expect_exact(MENU_PROMPT)

    shutil.rmtree(models / "mine")  # the chosen default is gone: the shipped one, with a note
    answer(child, "4", "Show information about:")
    answer(child, "2", "note: your default model saved_models/mine (named in saved_models/default-model.json) is gone")
    child.expect_exact("using the shipped ")
    # Only the shipped model is left: no list to choose from, its info comes at once.
    child.expect_exact("model: ")
    child.expect_exact(f"({SHIPPED}, shipped default)")
    child.expect_exact(MENU_PROMPT)
    answer(child, QUIT, "Goodbye.")
    expect_exit_ok(child)


def test_info_prompts_reprompt_and_ctrl_c_returns(workdir):
    child = spawn_menu(workdir)
    answer(child, "4", "Show information about:")
    answer(child, "x", "Please enter a number from 1 to 2")
    answer(child, "1", "Dataset:")
    answer(child, "2", "Dataset folder: ")
    answer(child, "~/surely-not-here-123", "Not found: ")
    child.expect_exact(str(Path("~/surely-not-here-123").expanduser()))
    child.expect_exact("Dataset folder: ")
    interrupt(child, "Cancelled - back to the menu.")
    child.expect_exact(MENU_PROMPT)
    answer(child, QUIT, "Goodbye.")
    expect_exit_ok(child)


# ---------------------------------------------------------------- prompt helpers


@pytest.mark.parametrize("typed, expected", [
    ("'/tmp/a b.jpg'", "/tmp/a b.jpg"),
    ('"/tmp/x"', "/tmp/x"),
    ("  /tmp/y  ", "/tmp/y"),
    ("~/pic.png", str(Path.home() / "pic.png")),
])
def test_clean_path_strips_quotes_and_expands_home(typed, expected):
    assert prompts.clean_path(typed) == Path(expected)


def _feed(monkeypatch, capsys, answers):
    """Answer prompts from a list; return a function giving what was printed."""
    replies = iter(answers)
    monkeypatch.setattr("builtins.input", lambda prompt="": next(replies))
    return lambda: capsys.readouterr().out


def test_ask_int_default_and_reprompt(monkeypatch, capsys):
    printed = _feed(monkeypatch, capsys, ["", "abc", "-1", "7"])
    assert prompts.ask_int("epochs", 20) == 20
    assert prompts.ask_int("epochs", 20) == 7
    assert printed().count("epochs must be a whole number >= 1") == 2


def test_the_menu_port_follows_the_serve_port_rule(monkeypatch, capsys):
    from captioning.cli.arg_types import port_number

    printed = _feed(monkeypatch, capsys, ["", "99999", "-1", "http", "0", "65535"])
    assert prompts.ask_parsed("port", port_number, 8000) == 8000
    assert prompts.ask_parsed("port", port_number, 8000) == 0  # a free port, as serve --port 0
    assert prompts.ask_parsed("port", port_number, 8000) == 65535
    lines = printed().splitlines()
    assert lines == ["port: expected a port from 0 to 65535, got 99999",
                     "port: expected a port from 0 to 65535, got -1",
                     "port: expected a port number, got 'http'"]


def test_ask_choice_returns_index_and_uses_default(monkeypatch, capsys):
    printed = _feed(monkeypatch, capsys, ["", "7", "3"])
    assert prompts.ask_choice("Pick:", ["a", "b", "c"], default=2) == 1
    assert prompts.ask_choice("Pick:", ["a", "b", "c"], default=2) == 2
    out = printed()
    assert "  3) c" in out and "Please enter a number from 1 to 3" in out


def test_ask_yes_no(monkeypatch, capsys):
    printed = _feed(monkeypatch, capsys, ["", "Y", "what", "no"])
    assert prompts.ask_yes_no("Resume", default=False) is False
    assert prompts.ask_yes_no("Resume") is True
    assert prompts.ask_yes_no("Resume", default=True) is False
    assert "Please answer y or n" in printed()


def test_ask_path_kinds_and_going_back(monkeypatch, capsys, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    printed = _feed(monkeypatch, capsys, [str(image), f'"{tmp_path}"', "q", str(tmp_path), str(image)])
    assert prompts.ask_path("Folder", kind="dir") == tmp_path
    assert prompts.ask_path("Image", kind="any", allow_empty=True) is None
    assert prompts.ask_path("Image", kind="file") == image
    out = printed()
    assert f"Not a folder: {image}" in out and f"Not a file: {tmp_path}" in out


# ---------------------------------------------------------------- after training: the default model


QUESTION = "Use this model by default for captioning? [y/N]: "
# Menu 1's answers after "a local folder" and its path: Enter for the encoder, decoder, epochs,
# batch size and resume questions.
DEFAULT_TRAIN_ANSWERS = ["", "", "", "", ""]


def _answer_prompts(monkeypatch, answers) -> list[str]:
    """Answer ``input()`` from a list; returns the prompts asked, in order."""
    asked, replies = [], iter(answers)

    def fake_input(prompt=""):
        asked.append(prompt)
        return next(replies)

    monkeypatch.setattr("builtins.input", fake_input)
    return asked


def _stand_in_training(monkeypatch, trained: Path, interrupted: bool = False) -> None:
    from captioning.training import pipeline as train_pipeline

    monkeypatch.setattr(train_pipeline, "train_model", lambda options, log, **_: train_pipeline.TrainResult(
        trained, 2.5, 2, {}, interrupted=interrupted))


def _dataset_layout(folder: Path) -> Path:
    """A folder the menu takes as a dataset (Images/ + captions.txt; training is stood in for)."""
    (folder / "Images").mkdir(exist_ok=True)
    (folder / "captions.txt").write_text("image,caption\n")
    return folder


@pytest.mark.parametrize("reply, becomes_default", [("", False), ("n", False), ("y", True)])
def test_training_asks_before_making_the_model_the_default(monkeypatch, capsys, tmp_path, tiny_bundle,
                                                           reply, becomes_default):
    # In-process, with training itself stood in for (the slow walk below trains for real): the
    # question, its default (no) and what each answer does to the default model.
    from captioning import config
    from captioning.cli import menu

    trained = shutil.copytree(tiny_bundle, config.MODELS_DIR / "trial-2-epochs")
    _stand_in_training(monkeypatch, trained)
    shipped = default_model.default_model().path
    asked = _answer_prompts(monkeypatch, ["2", str(_dataset_layout(tmp_path)), *DEFAULT_TRAIN_ANSWERS, reply])
    menu.train_step()
    out = capsys.readouterr().out
    assert asked[-1] == QUESTION
    assert default_model.default_model().path == (trained if becomes_default else shipped)
    assert ("now use" in out) == becomes_default and ("unchanged" in out) != becomes_default

    if becomes_default:  # training it again does not ask what is already so
        asked = _answer_prompts(monkeypatch, ["2", str(_dataset_layout(tmp_path)), *DEFAULT_TRAIN_ANSWERS])
        menu.train_step()
        assert QUESTION not in asked and "It is the default model already" in capsys.readouterr().out


TAGS_QUESTION = "Make captions name what the encoder's ImageNet classifier is sure of (tags)"


@pytest.mark.parametrize("reply, tags", [("", True), ("n", False)])
def test_evaluate_asks_about_tags_only_for_a_model_that_can_tag(monkeypatch, tiny_bundle, reply, tags):
    from captioning.cli import menu
    from captioning.cli.commands import evaluate

    asked_for = []
    monkeypatch.setattr(evaluate, "evaluate_model", lambda model, dataset, split, **options: asked_for.append(
        (Path(model), split, options["tags"])))
    # Only the shipped model (efficientnet_lite0 with its ImageNet classifier): tags, on by default.
    asked = _answer_prompts(monkeypatch, ["1", "2", reply])
    menu.evaluate_step()
    assert asked[-1].startswith(TAGS_QUESTION)
    assert asked_for == [(default_model.default_model().path, "val", tags)]
    # A model whose encoder has random weights has no classifier: nothing to ask, tags off.
    random = shutil.copytree(tiny_bundle, config.MODELS_DIR / "random-weights")
    asked = _answer_prompts(monkeypatch, ["2", "1", "1"])  # after the default: it; its dataset; test
    menu.evaluate_step()
    assert not any(prompt.startswith(TAGS_QUESTION) for prompt in asked)
    assert asked_for[-1] == (random, "test", False)


def test_an_interrupted_training_does_not_ask(monkeypatch, capsys, tmp_path, tiny_bundle):
    from captioning import config
    from captioning.cli import menu

    _stand_in_training(monkeypatch, shutil.copytree(tiny_bundle, config.MODELS_DIR / "stopped"),
                       interrupted=True)
    asked = _answer_prompts(monkeypatch, ["2", str(_dataset_layout(tmp_path)), *DEFAULT_TRAIN_ANSWERS])
    menu.train_step()
    assert QUESTION not in asked and "answer y to resume" in capsys.readouterr().out
    assert not (config.MODELS_DIR / config.DEFAULT_MODEL_POINTER).exists()


def test_training_into_a_bundle_holding_a_users_file_is_refused_before_the_resume_question(monkeypatch, capsys,
                                                                                           tmp_path, tiny_bundle):
    from captioning.training import pipeline as train_pipeline

    (tmp_path / "photos").mkdir()
    dataset = _dataset_layout(tmp_path / "photos")
    target = shutil.copytree(tiny_bundle, train_pipeline.default_output(
        "photos", config.DEFAULT_ENCODER, config.DecoderConfig.kind))  # where the menu trains to
    (target / "NOTES.md").write_text("mine")
    monkeypatch.setattr(train_pipeline, "train_model", lambda *args, **kwargs: pytest.fail("it trained"))
    asked = _answer_prompts(monkeypatch, ["2", str(dataset), *DEFAULT_TRAIN_ANSWERS])
    menu._run_step(menu.train_step)
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"error: {target} is a model bundle but also holds 1 file or folder that is not part of one (NOTES.md); "
        f"replacing it would delete it, so move it out first or train with --output naming a new folder "
        f"(e.g. {target}-model)")
    assert not any(prompt.startswith("Resume") for prompt in asked)
    assert (target / "NOTES.md").read_text() == "mine"


# ---------------------------------------------------------------- the whole walk (slow)


def _train_through_menu(child: pexpect.spawn, dataset: Path, epochs: int, resume: str) -> None:
    """Menu 1 with a local folder, efficientnet_lite0 (weights ship with pip), merge decoder."""
    answer(child, "1", "Dataset:")
    answer(child, "2", "Dataset folder: ")
    answer(child, str(dataset), "Encoder:")
    answer(child, "2", "Decoder:")
    answer(child, "1", "Epochs [20]: ")  # merge: quicker to train than the default, attention
    answer(child, str(epochs), "Batch size [64]: ")
    child.sendline("16")
    if resume == "y":  # the menu found the checkpoint and offers it by default
        child.expect_exact("An interrupted run of this model is saved in")
        child.expect_exact("Resume an interrupted run? [Y/n]: ")
    else:
        child.expect_exact("Resume an interrupted run? [y/N]: ")
    child.sendline(resume)


@pytest.mark.slow
def test_train_interrupt_resume_then_caption(workdir):
    from tests.support.shapes_dataset import write_shapes_dataset

    dataset = write_shapes_dataset(workdir / "shapes", n_images=48, seed=3)
    child = spawn_menu(workdir, timeout=300)
    _train_through_menu(child, dataset, epochs=40, resume="")
    child.expect(r"epoch 1/40: loss [0-9.]+, val loss [0-9.]+")
    interrupt(child, "Stopped after ")  # Ctrl-C during training: saved, back to the menu
    child.expect_exact("train again and answer y to resume.")
    child.expect_exact(MENU_PROMPT)
    bundle_dir = workdir / "saved_models" / "shapes-efficientnet_lite0-merge"
    assert (bundle_dir / "config.json").is_file()

    _train_through_menu(child, dataset, epochs=6, resume="y")
    child.expect_exact("resuming after epoch")
    child.expect_exact(f"Model saved to {bundle_dir} (validation loss ")
    child.expect_exact(QUESTION)
    answer(child, "y", "Captioning and evaluation now use saved_models/shapes-efficientnet_lite0-merge by default.")
    child.expect_exact(MENU_PROMPT)

    answer(child, "2", MODEL_LIST)
    child.expect_exact("1) shapes-efficientnet_lite0-merge (efficientnet_lite0 + merge, ")
    answer(child, "", "model: saved_models/shapes-efficientnet_lite0-merge (efficientnet_lite0 + merge, "
                      "your default)")
    child.expect_exact(TAGS_QUESTION)  # ImageNet weights: the encoder has a classifier
    answer(child, "", "Loading ")
    child.expect_exact("Image or folder (Enter or q to go back): ")
    image = sorted((dataset / "Images").iterdir())[0]
    answer(child, str(image), f"{image}: a ")  # shapes captions all start with "a"
    child.expect_exact(f"saved {workdir / 'captioned_image.png'}")
    child.expect_exact("Image or folder (Enter or q to go back): ")
    answer(child, "", MENU_PROMPT)
    answer(child, QUIT, "Goodbye.")
    expect_exit_ok(child)
    _assert_png(workdir / "captioned_image.png")
