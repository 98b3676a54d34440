"""Where ``caption`` and the menu write: never over a file of the user's (an input photo least of
all), never captioning their own earlier output, every output path checked before the model loads,
and the captions finished so far kept on Ctrl-C.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from captioning import config
from captioning.cli import main as cli
from captioning.inference.captioner import CaptionResult
from captioning.inference.inputs import gather_inputs, plan_outputs
from captioning.render.captioned_image import write_captioned_image
from captioning.render.tool_png import is_tool_png
from captioning.storage import atomic
from tests.test_caption_command import photo

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = PROJECT_ROOT / "examples"


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha1(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())
            if path.is_file()}


def examples_as_png(folder: Path, names=("chelsea", "coffee")) -> Path:
    """The issue's repro: examples saved into a folder of the user's as PNGs (Pillow, so no mark)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        with Image.open(EXAMPLES / f"{name}.jpg") as image:
            image.save(folder / f"{name}.png")
    return folder


# ------------------------------------------------------------------ 1. nothing of the user's is written over


def test_captioning_a_folder_into_itself_keeps_the_photos_and_does_not_grow(tmp_path, tiny_bundle, monkeypatch,
                                                                            capsys):
    photos = examples_as_png(tmp_path / "photos")
    originals = digests(photos)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["caption", "photos", "--model", str(tiny_bundle), "--output-dir", "photos"]) == 0
    out, err = capsys.readouterr()
    assert digests(photos).items() >= originals.items()  # both photos exactly as they were
    assert sorted(p.name for p in photos.iterdir()) == ["chelsea-2.png", "chelsea.png", "coffee-2.png", "coffee.png"]
    assert is_tool_png(photos / "chelsea-2.png") and not is_tool_png(photos / "chelsea.png")
    assert "note: 2 files in photos/ are not this tool's (chelsea.png, coffee.png)" in err

    # Again: the PNGs it drew are not captioned again, and are replaced in place.
    assert cli.main(["caption", "photos", "--model", str(tiny_bundle), "--output-dir", "photos"]) == 0
    out, err = capsys.readouterr()
    assert [line.split(": ")[0] for line in out.splitlines() if ": " in line] == ["photos/chelsea.png",
                                                                                 "photos/coffee.png"]
    assert "note: left out 2 images this tool drew (chelsea-2.png, coffee-2.png)" in err
    assert sorted(p.name for p in photos.iterdir()) == ["chelsea-2.png", "chelsea.png", "coffee-2.png", "coffee.png"]
    assert digests(photos).items() >= originals.items()


def test_a_users_file_in_the_output_folder_is_left_alone(tmp_path, tiny_bundle, monkeypatch, capsys):
    user = tmp_path / "user"
    photo(user / "camera.png", colour=(1, 2, 3))  # the user's own, not drawn by the tool
    (user / "coffee.png").mkdir()  # a folder in the way is passed over too
    mine = digests(user)
    monkeypatch.chdir(tmp_path)
    status = cli.main(["caption", str(EXAMPLES / "camera.jpg"), str(EXAMPLES / "coffee.jpg"),
                       "--model", str(tiny_bundle), "--output-dir", "user", "--json", "c.json"])
    assert status == 0
    assert digests(user).items() >= mine.items()
    entries = json.loads((tmp_path / "c.json").read_text())
    assert [entry["png"] for entry in entries] == ["user/camera-2.png", "user/coffee-2.png"]
    assert is_tool_png(user / "camera-2.png") and is_tool_png(user / "coffee-2.png")
    assert "note: 2 files in user/ are not this tool's" in capsys.readouterr().err


def test_one_image_replaces_its_own_png_but_not_a_users(tmp_path, tiny_bundle, monkeypatch, capsys):
    photo(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second run replaces the first run's PNG
        assert cli.main(["caption", "cat.jpg", "--model", str(tiny_bundle)]) == 0
    assert sorted(p.name for p in tmp_path.glob("captioned_image*")) == ["captioned_image.png"]
    capsys.readouterr()

    (tmp_path / "captioned_image.png").unlink()
    photo(tmp_path / "captioned_image.png", colour=(9, 9, 9))  # now the user's
    mine = digests(tmp_path)["captioned_image.png"]
    assert cli.main(["caption", "cat.jpg", "--model", str(tiny_bundle)]) == 0
    out, err = capsys.readouterr()
    assert "saved captioned_image-2.png" in out and "captioned_image.png" in err
    assert digests(tmp_path)["captioned_image.png"] == mine

    # Named with --output, a file of the user's is refused, not renamed; so is the photo itself,
    # even one the tool drew.
    assert cli.main(["caption", "cat.jpg", "--model", str(tiny_bundle), "--output", "captioned_image.png"]) == 1
    assert "is not an image this tool drew" in capsys.readouterr().err
    drawn = digests(tmp_path)["captioned_image-2.png"]
    assert cli.main(["caption", "captioned_image-2.png", "--model", str(tiny_bundle),
                     "--output", "captioned_image-2.png"]) == 1
    assert "is one of the images being captioned" in capsys.readouterr().err
    assert digests(tmp_path)["captioned_image.png"] == mine and digests(tmp_path)["captioned_image-2.png"] == drawn


def test_a_file_appearing_at_a_chosen_name_while_captioning_is_not_written_over(tmp_path):
    target = tmp_path / "late.png"

    with pytest.raises(FileExistsError), atomic.atomic_output(target, suffix=".png", replace=False) as temp:
        temp.write_bytes(b"new")
        target.write_bytes(b"the user's")  # appears between the plan and the write
    assert target.read_bytes() == b"the user's" and sorted(p.name for p in tmp_path.iterdir()) == ["late.png"]

    from captioning.errors import CaptioningError

    with pytest.raises(CaptioningError, match="appeared there"):
        write_captioned_image(photo(tmp_path / "x.png"), "a cat", target, replace=False)
    assert target.read_bytes() == b"the user's"
    write_captioned_image(tmp_path / "x.png", "a cat", tmp_path / "new.png", replace=False)
    assert is_tool_png(tmp_path / "new.png")


# ------------------------------------------------------------------ 2. the tool's own output is not captioned again


def test_captioning_the_current_folder_twice_leaves_out_the_output_folder(tmp_path, tiny_bundle, monkeypatch,
                                                                          capsys):
    for i in range(3):
        photo(tmp_path / f"{i}.jpg", colour=(60 * i, 80, 90))
    (tmp_path / "captioned_images").mkdir()
    photo(tmp_path / "captioned_images" / "holiday.jpg")  # the user's, kept out with the rest
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert cli.main(["caption", ".", "--model", str(tiny_bundle)]) == 0
        out, err = capsys.readouterr()
        assert [line.split(": ")[0] for line in out.splitlines() if ": " in line] == ["0.jpg", "1.jpg", "2.jpg"]
    assert "note: left out 4 images in captioned_images/, the output folder" in err
    assert sorted(p.name for p in (tmp_path / "captioned_images").iterdir()) == ["0.png", "1.png", "2.png",
                                                                                  "holiday.jpg"]


def test_gather_inputs_keeps_named_files_and_the_api_is_unchanged(tmp_path):
    write_captioned_image(photo(tmp_path / "a.jpg"), "a cat", tmp_path / "captioned_image.png")
    found = gather_inputs([tmp_path], tmp_path / "captioned_images")
    assert [path.name for path, _ in found.entries] == ["a.jpg"] and "captioned_image.png" in found.notes[0]
    named = gather_inputs([tmp_path / "captioned_image.png"], None)  # named on its own: captioned
    assert [path.name for path, _ in named.entries] == ["captioned_image.png"] and not named.notes
    only_output = gather_inputs([tmp_path / "captioned_image.png", tmp_path], None)
    assert len(only_output.entries) == 2


class _FakeCaptioner:
    """The menu's captioner, without a model: every image gets the same caption."""

    def caption_entries(self, entries, beam_size):
        return [CaptionResult(path, "a photo" if error is None else None, error) for path, error in entries]


def test_the_menu_leaves_out_its_output_folder_and_keeps_the_users_files(tmp_path, monkeypatch):
    from captioning.cli import menu

    said: list[str] = []
    monkeypatch.setattr(menu, "say", lambda line="": said.append(line))
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "dog.jpg")
    photo(tmp_path / "captioned_image.png", colour=(5, 5, 5))  # the user's
    menu.caption_typed_path(_FakeCaptioner(), Path("dog.jpg"))
    assert said[-1] == f"  saved {tmp_path / 'captioned_image-2.png'}"
    assert not is_tool_png(tmp_path / "captioned_image.png")
    said.clear()
    for _ in range(2):  # typing "." twice: the second time, its own PNGs are left out
        menu.caption_typed_path(_FakeCaptioner(), Path("."))
    assert [line for line in said if line.startswith("dog.jpg")] == ["dog.jpg: a photo"] * 2
    assert "captioned_image.png: a photo" in said  # the user's PNG is a photo like any other
    assert sorted(p.name for p in (tmp_path / "captioned_images").iterdir()) == ["captioned_image.png", "dog.png"]


# ------------------------------------------------------------------ 3. output paths answer before the model loads


def _run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, reporting whether TensorFlow got imported."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from captioning.cli.main import main
        status = main({argv!r})
        print("tensorflow imported:", "tensorflow" in sys.modules)
        sys.exit(status)
    """)
    env = dict(os.environ, CAPTIONING_MODELS_DIR=str(cwd / "no_models"))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


CAMERA, COFFEE = str(EXAMPLES / "camera.jpg"), str(EXAMPLES / "coffee.jpg")


@pytest.mark.parametrize("args, expected", [
    ([CAMERA, "--json", "folder"], "error: --json folder is a folder; give a file name"),
    ([CAMERA, "--json", "/proc/nope/x.json"], "error: --json /proc/nope/x.json cannot be written"),
    ([CAMERA, "--json", "a_file.jpg/x.json"], "error: --json a_file.jpg/x.json cannot be created"),
    ([CAMERA, "--json", "notes.json"], "error: --json notes.json already exists and is not a captions file"),
    ([CAMERA, COFFEE, "--output-dir", "a_file.jpg"], "error: --output-dir a_file.jpg is a file, not a folder"),
    ([CAMERA, "--output", "folder.png"], "error: --output folder.png is a folder"),
    ([CAMERA, "--output", "a_file.jpg/x.png"], "error: --output a_file.jpg/x.png cannot be created"),
    ([CAMERA, "--output", "mine.png"], "error: --output mine.png already exists and is not an image this tool drew"),
])
def test_output_paths_that_cannot_be_written_are_one_line_before_tensorflow(tmp_path, tiny_bundle, args, expected):
    if "/proc/" in args[-1] and not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "a_file.jpg").write_text("a file")
    (tmp_path / "notes.json").write_text('{"mine": true}')
    photo(tmp_path / "mine.png")
    before = digests(tmp_path)
    done = _run_cli(["caption", *args, "--model", str(tiny_bundle)], tmp_path)
    assert done.returncode == 1, done.stderr
    first, *rest = done.stderr.splitlines()
    assert first.startswith("model: ") and len(rest) == 1 and rest[0].startswith(expected), done.stderr
    assert "tensorflow imported: False" in done.stdout
    assert digests(tmp_path) == before and not (tmp_path / "captioned_image.png").exists()


def test_an_output_that_is_not_png_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["caption", CAMERA, "--output", str(tmp_path / "out.jpg")])
    assert exit_info.value.code == 2
    assert "give a name ending in .png" in capsys.readouterr().err
    assert not (tmp_path / "out.jpg").exists()


def test_an_earlier_captions_file_is_replaced(tmp_path, tiny_bundle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "x.png")
    photo(tmp_path / "y.png", colour=(200, 30, 60))
    # The first run writes both kinds of entry (a PNG's, and a failed image's), the second another image.
    assert cli.main(["caption", "x.png", "missing.png", "--model", str(tiny_bundle), "--json", "c.json"]) == 1
    first = json.loads((tmp_path / "c.json").read_text())
    assert [entry["image"] for entry in first] == ["x.png", "missing.png"] and "png" in first[0]
    assert "error" in first[1]
    assert cli.main(["caption", "y.png", "--model", str(tiny_bundle), "--no-png", "--json", "c.json"]) == 0
    assert [entry["image"] for entry in json.loads((tmp_path / "c.json").read_text())] == ["y.png"]


def test_a_datasets_captions_json_is_never_written_over(tmp_path, tiny_bundle, monkeypatch, capsys):
    # The review's repro: the dataset format of README's "captions.json" (image and caption only).
    images = tmp_path / "ds" / "Images"
    images.mkdir(parents=True)
    (images / "chelsea.jpg").write_bytes((EXAMPLES / "chelsea.jpg").read_bytes())
    dataset = tmp_path / "ds" / "captions.json"
    dataset.write_text('[{"image":"chelsea.jpg","caption":"a cat"},{"image":"chelsea.jpg","caption":"a kitten"}]')
    before = dataset.read_bytes()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["caption", "ds/Images", "--model", str(tiny_bundle), "--json", "ds/captions.json",
                     "--no-png"]) == 1
    assert dataset.read_bytes() == before
    assert "error: --json ds/captions.json already exists and is not a captions file" in capsys.readouterr().err


@pytest.mark.parametrize("data", [
    [{"image": "a.jpg", "caption": "a cat"}],
    [{"image": "a.jpg", "caption": "a cat", "score": -1.0, "tags": None, "mine": 1}],
    [{"image": "a.jpg", "caption": None, "error": "x", "score": 1.0}],
    [],
    {"image": "a.jpg", "caption": "a cat", "score": -1.0, "tags": None},
])
def test_only_exactly_what_caption_writes_is_taken_for_its_own(data):
    from captioning.cli.commands.caption import _is_captions_json

    assert not _is_captions_json(data)
    assert _is_captions_json([{"image": "caf\\xe9.jpg", "image_escaping": "backslashreplace", "caption": "a cat",
                               "score": -1.0, "tags": None, "png": "out/a.png"},
                              {"image": "b.jpg", "caption": None, "error": "b.jpg: unreadable"}])


def test_a_symlink_or_a_file_appearing_at_the_json_path_is_left_alone(tmp_path, tiny_bundle, monkeypatch):
    from captioning.cli.commands import caption

    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "x.png")
    assert cli.main(["caption", "x.png", "--model", str(tiny_bundle), "--no-png", "--json", "c.json"]) == 0
    # A link to the tool's own file is still the user's link: replacing it would lose it.
    (tmp_path / "link.json").symlink_to("c.json")
    assert cli.main(["caption", "x.png", "--model", str(tiny_bundle), "--no-png", "--json", "link.json"]) == 1
    assert (tmp_path / "link.json").is_symlink()
    # Free at the start, taken by the end: the newcomer is kept.
    write_json = caption._write_json

    def someone_writes_first(path, *args):
        path.write_text("theirs")
        return write_json(path, *args)

    monkeypatch.setattr(caption, "_write_json", someone_writes_first)
    assert cli.main(["caption", "x.png", "--model", str(tiny_bundle), "--no-png", "--json", "new.json"]) == 1
    assert (tmp_path / "new.json").read_text() == "theirs" and not list(tmp_path.glob(".new.json*"))


# ------------------------------------------------------------------ 4. Ctrl-C keeps the captions finished so far


def test_ctrl_c_writes_the_captions_finished_so_far(tmp_path, tiny_bundle, monkeypatch, capsys):
    from captioning.inference.captioner import Captioner

    folder = tmp_path / "album"
    for i in range(5):
        photo(folder / f"{i}.png", colour=(50 * i, 90, 120))
    monkeypatch.setattr(config, "CAPTION_BATCH_SIZE", 2)
    caption_entries = Captioner.caption_entries
    calls = []

    def interrupted_on_the_second_batch(self, entries, *args, **kwargs):
        calls.append(len(entries))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return caption_entries(self, entries, *args, **kwargs)

    monkeypatch.setattr(Captioner, "caption_entries", interrupted_on_the_second_batch)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["caption", "album", "--model", str(tiny_bundle), "--json", "all.json"]) == 130
    err = capsys.readouterr().err
    assert "note: interrupted; wrote all.json with the 2 captions finished" in err
    entries = json.loads((tmp_path / "all.json").read_text())
    assert [entry["image"] for entry in entries] == [f"album/{i}.png" for i in range(5)]
    assert [entry["caption"] is not None for entry in entries] == [True, True, False, False, False]
    assert all("interrupted" in entry["error"] for entry in entries[2:])
    assert not list(tmp_path.glob(".all.json*"))  # written atomically


def test_ctrl_c_while_writing_pngs_names_only_the_pngs_written(tmp_path, tiny_bundle, monkeypatch, capsys):
    from captioning.cli.commands import caption
    from captioning.render import captioned_image

    folder = tmp_path / "album"
    for i in range(3):
        photo(folder / f"{i}.png", colour=(50 * i, 90, 120))
    write = captioned_image.write_captioned_image
    written = []

    def interrupted_on_the_second_png(*args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(write(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(captioned_image, "write_captioned_image", interrupted_on_the_second_png)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["caption", "album", "--model", str(tiny_bundle), "--json", "all.json"]) == 130
    entries = json.loads((tmp_path / "all.json").read_text())
    assert [entry["caption"] is not None for entry in entries] == [True, True, True]  # one batch
    assert [entry.get("png") for entry in entries] == [str(written[0]), None, None]
    assert (tmp_path / entries[0]["png"]).is_file() and caption._is_captions_json(entries)


def test_ctrl_c_before_any_caption_says_the_json_was_not_written(tmp_path, tiny_bundle, monkeypatch, capsys):
    from captioning.inference.captioner import Captioner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Captioner, "load", interrupted)
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "x.png")
    assert cli.main(["caption", "x.png", "--model", str(tiny_bundle), "--json", "c.json"]) == 130
    assert "c.json was not written" in capsys.readouterr().err and not (tmp_path / "c.json").exists()


def test_plan_outputs_names_each_png_after_its_image_case_insensitively_apart(tmp_path):
    paths = [Path("a/cat.jpg"), Path("b/cat.png"), Path("Cat.jpg"), Path("dog.jpg"), Path("c/cat.jpg")]
    plan = plan_outputs([(path, None) for path in paths], single=False, output_dir=tmp_path)
    assert [plan.pngs[index].name for index in range(5)] == ["cat.png", "cat-2.png", "Cat-3.png", "dog.png",
                                                             "cat-4.png"]


def test_plan_outputs_never_names_an_input_even_one_the_tool_drew(tmp_path):
    drawn = write_captioned_image(photo(tmp_path / "a.jpg"), "a cat", tmp_path / "out" / "a.png")
    plan = plan_outputs([(drawn, None)], single=False, output_dir=tmp_path / "out")
    assert plan.pngs == {0: tmp_path / "out" / "a-2.png"} and not plan.replaces
