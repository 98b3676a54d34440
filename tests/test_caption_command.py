"""``caption`` as a user runs it: a subprocess, its output lines, PNGs, JSON and exit status.

Every run loads TensorFlow (seconds), so each subprocess test checks a whole scenario at once.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from captioning import config
from captioning.cli import main as cli
from tests.support.bundles import WORDS, shipped_architecture

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_caption(*args, cwd: Path, models_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CAPTIONING_MODELS_DIR=str(models_dir or cwd / "no_models"))
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "image_captioning.py"), "caption",
                           *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def photo(path: Path, colour=(200, 40, 40), size=(64, 48), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    image.paste((250, 250, 250), (10, 10, 30, 30))
    image.save(path, format=fmt)
    return path


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A PNG whose header claims side x side pixels (400 MP) with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def caption_words_ok(caption: str) -> bool:
    return all(word in WORDS for word in caption.split())


def test_one_image_writes_captioned_image_png_and_json(tmp_path, tiny_bundle):
    image = photo(tmp_path / "my photo é.jpg", size=(300, 200))
    result = run_caption(image.name, "--model", tiny_bundle, "--json", "out/captions.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # The model it used comes first, on stderr, so stdout is the captions (and files) alone.
    assert result.stderr.splitlines()[0] == f"model: {tiny_bundle} (efficientnet_lite0 + merge)"
    lines = result.stdout.splitlines()
    caption = lines[0].split(": ", 1)[1]
    assert lines[0] == f"{image.name}: {caption}" and caption_words_ok(caption)
    assert f"saved {config.DEFAULT_CAPTION_PNG}" in lines
    png = tmp_path / config.DEFAULT_CAPTION_PNG
    with Image.open(png) as annotated:
        annotated.load()
        assert annotated.format == "PNG"
        # The photo is shown at least at its own height; the caption band adds to it.
        assert annotated.height > 200 * annotated.width / 300
    entries = json.loads((tmp_path / "out" / "captions.json").read_text(encoding="utf-8"))
    # "tags": null: this bundle's encoder has random weights, so no classifier to tag with.
    assert entries == [{"image": image.name, "caption": caption, "score": entries[0]["score"],
                        "tags": None, "png": config.DEFAULT_CAPTION_PNG}]
    assert isinstance(entries[0]["score"], float) and entries[0]["score"] < 0
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic write left no temp file


def test_every_bad_input_gets_one_line_and_the_rest_are_captioned(tmp_path, tiny_bundle):
    good = photo(tmp_path / "good.png")
    album = tmp_path / "album"
    photo(album / "b" / "good.jpg", colour=(30, 30, 200))  # same stem as the first: unique names
    photo(album / "a.png", colour=(30, 200, 30))
    (album / "readme.txt").write_text("not an image, skipped inside folders")
    disguised = photo(tmp_path / "disguised.jpg", fmt="PNG")  # content sniffed, works
    (tmp_path / "empty_folder").mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    truncated = tmp_path / "truncated.jpg"
    photo(truncated, size=(400, 300))
    truncated.write_bytes(truncated.read_bytes()[:300])
    zero = tmp_path / "zero.jpg"
    zero.touch()
    bomb = bomb_png(tmp_path / "bomb.png")
    bad = [tmp_path / "missing.jpg", tmp_path / "empty_folder", notes, truncated, zero, bomb]
    inputs = [good, bad[0], album, bad[1], notes, disguised, truncated, zero, bomb]
    result = run_caption(*inputs, "--model", tiny_bundle, "--json", tmp_path / "all.json",
                         "--output-dir", tmp_path / "pngs", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for path, line in zip(bad, errors, strict=True):
        assert str(path) in line
    reasons = " | ".join(errors)
    for reason in ("no such file", "no images", "not an image", "cannot decode", "empty", "too large"):
        assert reason in reasons
    captioned = [line.split(": ", 1)[0] for line in result.stdout.splitlines() if ": " in line]
    assert captioned == [str(good), str(album / "a.png"), str(album / "b" / "good.jpg"), str(disguised)]
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["a.png", "disguised.png",
                                                                     "good-2.png", "good.png"]
    entries = json.loads((tmp_path / "all.json").read_text(encoding="utf-8"))
    assert [e["image"] for e in entries] == [str(good), str(bad[0]), str(album / "a.png"),
                                             str(album / "b" / "good.jpg"), str(bad[1]), str(notes),
                                             str(disguised), str(truncated), str(zero), str(bomb)]
    assert [e["caption"] is None for e in entries] == [False, True, False, False, True, True,
                                                       False, True, True, True]
    assert all(("error" in e) == (e["caption"] is None) for e in entries)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_is_reported(tmp_path, tiny_bundle):
    locked = photo(tmp_path / "locked.png")
    locked.chmod(0)
    result = run_caption(locked, photo(tmp_path / "ok.png"), "--model", tiny_bundle, "--no-png",
                         cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert any("locked.png" in line and "permission" in line for line in result.stderr.splitlines())


def test_options_no_png_beam_size_and_attention_note(tmp_path, tiny_bundle, monkeypatch, capsys):
    # In-process (TensorFlow is already loaded by other tests): same parser and run() as the CLI.
    folder = tmp_path / "pics"
    for i in range(3):
        photo(folder / f"{i}.png", colour=(80 * i, 100, 50))
    monkeypatch.chdir(tmp_path)
    status = cli.main(["caption", str(folder), "--model", str(tiny_bundle), "--no-png",
                       "--beam-size", "1", "--attention-map"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert err.splitlines()[0] == f"model: {tiny_bundle} (efficientnet_lite0 + merge)"
    assert [line.split(": ")[0] for line in out.splitlines()] == [str(folder / f"{i}.png") for i in range(3)]
    assert not (tmp_path / "captioned_images").exists() and not (tmp_path / "captioned_image.png").exists()
    notes = [line for line in err.splitlines() if "attention" in line]
    assert len(notes) == 1 and "merge" in notes[0]


def test_nothing_to_caption_fails_fast(tmp_path, tiny_bundle):
    result = run_caption(tmp_path / "nope.jpg", "--model", tiny_bundle, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nope.jpg" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_says_how_to_train_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config, "DEFAULT_BUNDLE_DIR", tmp_path / "no_default")
    assert cli.main(["caption", str(photo(tmp_path / "x.png"))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: no model bundle") and "image_captioning.py train" in err[0]


def test_without_model_it_uses_the_shipped_one_not_the_newest_trained(tmp_path, tiny_bundle):
    # Issue 15: a quick trial run used to become the model `caption` used, and caption never said
    # which model it used. The image is missing, so no model is loaded: the choice alone is checked.
    models = tmp_path / "saved_models"
    shutil.copytree(tiny_bundle, models / "trial-2-epochs")
    result = run_caption("missing.jpg", cwd=tmp_path, models_dir=models)
    assert result.returncode == 1 and result.stdout == ""
    first, *rest = result.stderr.splitlines()
    assert first == f"model: {config.DEFAULT_BUNDLE_DIR} ({shipped_architecture()}, shipped default)"
    assert len(rest) == 1 and rest[0].startswith("error: missing.jpg: no such file")


def test_the_chosen_default_is_used_and_a_gone_one_falls_back_with_a_note(tmp_path, tiny_bundle):
    models = tmp_path / "saved_models"
    shutil.copytree(tiny_bundle, models / "mine")
    (models / config.DEFAULT_MODEL_POINTER).write_text('{"model": "mine"}')
    image = photo(tmp_path / "x.png")
    result = run_caption(image, "--no-png", cwd=tmp_path, models_dir=models)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "model: saved_models/mine (efficientnet_lite0 + merge, your default)"
    assert result.stdout.splitlines()[0].startswith(f"{image}: ")

    shutil.rmtree(models / "mine")
    result = run_caption("missing.jpg", cwd=tmp_path, models_dir=models)
    first, note, error = result.stderr.splitlines()
    assert first.endswith(f"({shipped_architecture()}, shipped default)")
    assert note.startswith("note: your default model saved_models/mine") and "is gone" in note
    assert error.startswith("error: ") and result.returncode == 1


def test_model_folder_that_is_not_a_bundle(tmp_path):
    result = run_caption(photo(tmp_path / "x.png"), "--model", tmp_path / "nowhere", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "nowhere" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("encoder", ["efficientnet_lite0", "efficientnet_lite2"])  # 7x7, 9x9 grid
def test_attention_map_for_an_attention_model(tmp_path, monkeypatch, capsys, encoder):
    from tests.support.bundles import make_tiny_bundle

    model = make_tiny_bundle(tmp_path / "tiny-attention", kind="attention", encoder=encoder)
    image = photo(tmp_path / "cat.png", size=(120, 90))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["caption", str(image), "--model", str(model), "--attention-map",
                     "--json", "out.json"]) == 0
    assert json.loads((tmp_path / "out.json").read_text())[0]["caption"]
    out = capsys.readouterr().out
    assert "saved captioned_image.png" in out
    assert "saved captioned_image_attention.png" in out
    with Image.open(tmp_path / "captioned_image_attention.png") as attention:
        attention.load()
        assert attention.width > 100


def test_captions_are_printed_batch_by_batch_not_all_at_the_end(tmp_path, tiny_bundle, monkeypatch, capsys):
    from captioning.inference.captioner import Captioner

    folder = tmp_path / "album"
    for i in range(5):
        photo(folder / f"{i}.png", colour=(50 * i, 90, 120))
    monkeypatch.setattr(config, "CAPTION_BATCH_SIZE", 2)
    printed_before_each_batch, err = [], ""
    caption_entries = Captioner.caption_entries

    def recording(self, entries, *args, **kwargs):
        nonlocal err
        out, more_err = capsys.readouterr()
        printed_before_each_batch.append(out.count(": "))
        err += more_err
        return caption_entries(self, entries, *args, **kwargs)

    monkeypatch.setattr(Captioner, "caption_entries", recording)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["caption", str(folder), "--model", str(tiny_bundle), "--json", "all.json"]) == 0
    rest, more_err = capsys.readouterr()
    err += more_err
    # Batches of 2, 2 and 1: each batch's two lines were out before the next batch started.
    assert printed_before_each_batch == [0, 2, 2]
    assert rest.count(": ") == 1 and "wrote all.json" in rest
    assert len(json.loads((tmp_path / "all.json").read_text())) == 5
    assert "captioning 5 images (beam size 3)" in err.splitlines()[:2]
    assert "%|" not in err  # no progress bar when stderr is not a terminal


def test_a_terminal_gets_a_progress_bar_above_which_captions_stream(tmp_path, tiny_bundle):
    import pexpect

    folder = tmp_path / "album"
    for i in range(3):
        photo(folder / f"{i}.png", colour=(50 * i, 90, 120))
    env = dict(os.environ, CAPTIONING_MODELS_DIR=str(tmp_path / "models"), TERM="dumb")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it
    child = pexpect.spawn(sys.executable, [str(PROJECT_ROOT / "image_captioning.py"), "caption", str(folder),
                                           "--model", str(tiny_bundle), "--no-png"],
                          cwd=str(tmp_path), env=env, encoding="utf-8", timeout=300, dimensions=(40, 160))
    child.expect_exact("captioning 3 images (beam size 3)")
    child.expect(r"captioning: +\d+%\|")  # the bar, drawn while the model loads and captions
    child.expect_exact(f"{folder / '0.png'}: ")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in child.before and "WARNING" not in child.before and "E0000" not in child.before
