"""Hostile and broken input gets one line, never a traceback or a hang (issue 15, item 7).

Every JSON the tool reads goes through ``safe_json`` (size, nesting, number and text limits; only
regular files); a bundle's config.json is checked field by field by ``BundleConfig`` before any
model is built; file names that are not UTF-8 are printed and written escaped. Anything that could
block (a FIFO, a device) runs in a subprocess with a timeout, so a regression fails here instead of
hanging the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from captioning import config
from captioning.bundles import store as bundle
from captioning.bundles.schema import BundleConfig
from captioning.cli import main as cli
from captioning.data.datasets import load_dataset
from captioning.data.text import RESERVED_TOKENS, Vocabulary, choose_max_length
from captioning.errors import BundleError, DatasetError, FeatureCacheError, InputFileError
from captioning.evaluation import evaluate as evaluation
from captioning.evaluation import ptb_tokenizer, report
from captioning.storage import safe_json, safe_text
from tests.support.bundles import config_without_dataset

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A subprocess that blocks on a FIFO never ends; this bounds it (generous: a busy 2-core host).
HANG_TIMEOUT_S = 180
DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "1" * 5000
NOT_UTF8 = b"caf\xe9"  # latin-1 "café": not valid UTF-8

# A complete config.json for the tiny fixture's architecture (merge over efficientnet_lite0).
VALID_CONFIG = {
    "format_version": 1, "created": "2026-01-01T00:00:00+00:00",
    "encoder": {"name": "efficientnet_lite0", "weights_id": "none", "random_weights": True},
    "decoder": {"kind": "merge", "embedding_dim": 16, "units": 16, "dropout": 0.0},
    "vocab_size": 14, "max_length": 8, "feature_shape": [1280],
}


def fsname(folder: Path, name: bytes) -> Path:
    """``folder / name`` for a name given as bytes (Python shows undecodable bytes as surrogates)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def write_config(folder: Path, text: str | None = None, **changes) -> Path:
    """A bundle folder holding only config.json: VALID_CONFIG with ``changes``, or ``text`` as is."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {**VALID_CONFIG, **changes}
    (folder / "config.json").write_text(text if text is not None else json.dumps(data), encoding="utf-8")
    return folder


def photo(path: Path, colour=(200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 32), colour).save(path, format="PNG")
    return path


def coco_dataset(root: Path, captions) -> Path:
    """Images/a.png and Images/b.png plus a captions.json (text, or a value dumped as JSON)."""
    photo(root / "Images" / "a.png")
    photo(root / "Images" / "b.png", (30, 30, 200))
    text = captions if isinstance(captions, str) else json.dumps(captions)
    (root / "captions.json").write_text(text, encoding="utf-8")
    return root


def run_python(code: str, timeout: int = HANG_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; a hang fails the test instead of the suite."""
    try:
        return subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                              timeout=timeout, encoding="utf-8", errors="backslashreplace")
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout}s (blocked on a FIFO?): {code}")


def run_cli(*args, cwd: Path, timeout: int = HANG_TIMEOUT_S) -> subprocess.CompletedProcess:
    """The CLI as a user on a UTF-8 terminal runs it (strict UTF-8 streams), bounded in time."""
    env = dict(os.environ, CAPTIONING_MODELS_DIR=str(cwd / "no_models"), CAPTIONING_DATA_DIR=str(cwd / "data"),
               PYTHONIOENCODING="utf-8:strict")
    try:
        return subprocess.run([sys.executable, str(PROJECT_ROOT / "image_captioning.py"), *map(str, args)],
                              cwd=cwd, env=env, capture_output=True, timeout=timeout, encoding="utf-8",
                              errors="backslashreplace")
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(map(str, args))}` still running after {timeout}s")


def one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    """Assert the run failed with one ``error:`` line and no traceback; returns that line."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


# ----------------------------------------------------------------------- safe_json: the limits

@pytest.mark.parametrize("text", [DEEP, '{"a":' * 100_000 + "1" + "}" * 100_000, "[" * 100_000])
def test_deeply_nested_json_is_one_line_not_a_recursion_error(tmp_path, text):
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(InputFileError, match=f"nested more than {safe_json.MAX_DEPTH} levels"):
        safe_json.read_json_file(path, 10**7)


def test_nesting_depth_counts_only_brackets_outside_strings():
    assert safe_json.nesting_depth('"[[["') == 0
    assert safe_json.nesting_depth('{"a": "]]}{[", "b": [1, {"c": "\\\\"}, "\\"[["]}') == 3
    assert safe_json.nesting_depth("[" * 64 + "]" * 64) == 64
    assert safe_json.nesting_depth("[" * 100_000 + "]" * 100_000) == 65  # stops counting past the limit
    assert safe_json.parse_json("[" * 64 + "]" * 64) is not None


def test_a_5000_digit_integer_is_one_line(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(f'{{"max_length": {HUGE_INT}}}')
    with pytest.raises(InputFileError, match="a number of 5000 digits"):
        safe_json.read_json_file(path, 10**6)
    assert safe_json.parse_json('{"id": 123456789012345678901234567890}')["id"] == 123456789012345678901234567890


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]", "[-Infinity]", "[1e999]"])
def test_nan_and_infinity_are_refused_unless_allowed(text):
    with pytest.raises(ValueError, match="NaN|Infinity|too large"):
        safe_json.parse_json(text)
    assert len(safe_json.parse_json(text, allow_nan=True)) == 1  # history.json may hold a NaN loss


def test_lone_surrogates_are_refused_unless_the_caller_handles_them():
    with pytest.raises(ValueError, match="unpaired surrogate"):
        safe_json.parse_json('{"words": ["\\udce9"]}')
    assert safe_json.parse_json('["\\udce9"]', allow_surrogates=True) == ["\udce9"]
    assert safe_json.parse_json('["\\ud83d\\ude00"]') == ["\U0001F600"]  # a proper pair is text


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as handle:
        handle.truncate(100 * config.MIB)  # sparse: nothing is really written
    with pytest.raises(InputFileError, match=r"the file is 104\.9 MB, over the 4\.2 MB"):
        safe_json.read_json_file(path, config.MAX_BUNDLE_JSON_BYTES)


def test_text_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"a": "caf\xe9"}')
    with pytest.raises(InputFileError, match="not UTF-8 text"):
        safe_json.read_json_file(path, 1000)


# --------------------------------------------------------------- FIFOs and devices never block

def test_a_fifo_or_a_device_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    code = ("from captioning.storage import safe_json\n"
            "from captioning.errors import InputFileError\n"
            f"for path in ({str(fifo)!r}, '/dev/zero'):\n"
            "    try:\n"
            "        safe_json.read_json_file(path, 10**6)\n"
            "    except InputFileError as error:\n"
            "        print(error.reason)\n")
    result = run_python(code)
    assert result.stdout.splitlines() == ["a FIFO (named pipe), not a regular file",
                                          "a character device, not a regular file"], result.stderr


def test_fifo_as_a_bundles_config_json_is_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    os.mkfifo(model / "config.json")
    one_line_error(run_cli("info", "--model", model, cwd=tmp_path), "config.json", "FIFO")
    one_line_error(run_cli("caption", "--model", model, "x.jpg", cwd=tmp_path), "config.json", "FIFO")


def test_fifo_as_a_datasets_captions_json_is_one_line(tmp_path):
    root = tmp_path / "dataset"
    photo(root / "Images" / "a.png")
    os.mkfifo(root / "captions.json")
    one_line_error(run_cli("info", "--dataset", root, cwd=tmp_path), "captions.json", "FIFO")


def test_caption_names_a_fifo_or_a_device_for_what_it_is(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    model = write_config(tmp_path / "model")
    result = run_cli("caption", "--model", model, "--no-png", "pipe.jpg", "/dev/zero", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "pipe.jpg: a FIFO (named pipe), not a regular file" in result.stderr
    assert "/dev/zero: a character device, not a regular file" in result.stderr
    assert "no such file" not in result.stderr


def test_a_fifo_inside_a_folder_is_reported_not_read(tmp_path):
    photo(tmp_path / "photos" / "ok.png")
    os.mkfifo(tmp_path / "photos" / "pipe.jpg")
    code = ("from captioning.inference.inputs import expand_paths\n"
            "from captioning.data.images import load_image\n"
            "from captioning.errors import ImageError\n"
            f"entries = expand_paths([{str(tmp_path / 'photos')!r}])\n"
            "print(sorted(p.name for p, error in entries))\n"
            "for path, _ in entries:\n"
            "    try:\n"
            "        print(path.name, load_image(path, 32).shape)\n"
            "    except ImageError as error:\n"
            "        print(error)\n")
    lines = run_python(code).stdout.splitlines()
    assert lines[0] == "['ok.png', 'pipe.jpg']"
    assert lines[1] == "ok.png (32, 32, 3)"
    assert lines[2].endswith("pipe.jpg: a FIFO (named pipe), not a regular file; give an image file")


def test_fifo_feature_cache_sidecar_is_one_line(tmp_path):
    cache = tmp_path / "cache"
    (cache / "shards").mkdir(parents=True)
    os.mkfifo(cache / "shards" / "0.json")
    code = ("from pathlib import Path\n"
            "from captioning.features.cache import FeatureCache\n"
            "from captioning.errors import FeatureCacheError\n"
            "try:\n"
            f"    FeatureCache(Path({str(cache)!r})).read_state()\n"
            "except FeatureCacheError as error:\n"
            "    print(error)\n")
    assert "unreadable (a FIFO (named pipe), not a regular file); delete" in run_python(code).stdout


def test_fifo_checkpoint_state_is_one_line(tmp_path):
    checkpoints = tmp_path / ".checkpoint"
    checkpoints.mkdir()
    os.mkfifo(checkpoints / "state.json")
    code = ("from pathlib import Path\n"
            "from captioning.training.checkpoint_layout import ResumeError, read_checkpoint_state\n"
            "try:\n"
            f"    read_checkpoint_state(Path({str(checkpoints)!r}))\n"
            "except ResumeError as error:\n"
            "    print(error)\n")
    assert "state.json: unusable checkpoint (a FIFO (named pipe), not a regular file)" in run_python(code).stdout


# -------------------------------------------------------------------- config.json: the schema

def test_the_shipped_config_loads_unchanged():
    data = json.loads((PROJECT_ROOT / "saved_models" / "default" / "config.json").read_text())
    settings = BundleConfig.from_json(data, "default/config.json")
    assert settings.encoder.name == "efficientnet_lite1" and settings.encoder.feature_kind == "grid"
    assert settings.decoder == config.DecoderConfig(kind="attention")
    assert (settings.vocab_size, settings.max_length, settings.feature_shape) == (2976, 19, (8, 8, 1280))
    assert settings.member_count == 10 and settings.ensemble[1].decoder.attention_regularization == 1.0
    assert [spec.name for spec in settings.encoders] == ["efficientnet_lite1", "efficientnet_lite0"]
    assert settings.split == config.SplitConfig() and settings.dataset.train_images == 6545
    assert settings.training.epochs_run == 7 and settings.weights_dtype == "float16"
    assert bundle.read_bundle_config(PROJECT_ROOT / "saved_models" / "default") == settings
    assert settings.to_json() == data  # written back, it is the same file


@pytest.mark.parametrize(("changes", "message"), [
    ({"decoder": None}, "decoder must be set, got null"),
    ({"decoder": "merge"}, "decoder must be an object"),
    ({"decoder": {"kind": "merge", "units": "256"}}, "decoder.units must be a whole number"),
    ({"decoder": {"kind": "merge", "units": 10**6}}, "decoder.units must be between 1 and 4096"),
    ({"decoder": {"kind": "transformer"}}, "decoder.kind must be one of merge, attention"),
    ({"decoder": {"kind": "merge", "dropout": 1.5}}, "decoder.dropout must be at least 0.0 and below 1.0"),
    ({"max_length": 1}, "max_length must be between 3 and 100, got 1"),
    ({"max_length": 100_000}, "max_length must be between 3 and 100, got 100000"),
    ({"max_length": 8.5}, "max_length must be a whole number"),
    ({"max_length": True}, "max_length must be a whole number"),
    ({"vocab_size": 10_000_004}, "vocab_size must be between 4 and 200000"),
    ({"vocab_size": None}, "vocab_size must be set"),
    ({"feature_shape": [6]}, "feature_shape [6] does not fit the merge decoder over the efficientnet_lite0"),
    ({"feature_shape": [7, 7, 1280]}, "feature_shape [7, 7, 1280] does not fit the merge decoder"),
    ({"feature_shape": "1280"}, "feature_shape must be a list of whole numbers"),
    ({"encoder": None}, "encoder must be set"),
    ({"encoder": {"name": "vgg16"}}, "encoder.name must be one of resnet50, efficientnet_lite0"),
    ({"encoder": {"name": "resnet50"}}, "does not fit the merge decoder over the resnet50 encoder"),
    ({"encoder": {"name": "efficientnet_lite0", "feature_kind": "grid"}}, "encoder.feature_kind is grid"),
    ({"ensemble": {"members": "three"}}, "no list of members"),
    ({"ensemble": {"members": [{}] * 17}}, "ensemble.members lists 17 decoders"),
    ({"ensemble": {"members": [5]}}, "ensemble.members[0] must be an object"),
    ({"ensemble": {"members": [{"decoder": {"units": -1}}]}}, "ensemble.members[0].decoder.units"),
    ({"split": {"val_fraction": 0.6, "test_fraction": 0.5}}, "split.val_fraction and test_fraction must sum"),
    ({"dataset": {"source": 5}}, "dataset.source must be text"),
    ({"training": {"epochs_run": "9"}}, "training.epochs_run must be a whole number"),
    ({"format_version": "1"}, "no format_version"),
    ({"format_version": 2}, "bundle format 2 is newer than this tool supports"),
    ({"vocab_size": 200_000, "decoder": {"kind": "merge", "embedding_dim": 4096, "units": 4096}},
     "over the 300,000,000 this tool loads"),
])
def test_each_config_field_is_checked_with_one_line_naming_it(tmp_path, changes, message):
    model = write_config(tmp_path / "model", **changes)
    with pytest.raises(BundleError, match="config.json: ") as error:
        bundle.read_bundle_config(model)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_nan_where_a_number_matters_is_refused_but_a_nan_loss_is_kept(tmp_path):
    text = json.dumps({**VALID_CONFIG, "decoder": {"kind": "merge", "dropout": float("nan")}})
    with pytest.raises(BundleError, match="decoder.dropout must be a finite number, got nan"):
        bundle.read_bundle_config(write_config(tmp_path / "nan-dropout", text=text))
    diverged = json.dumps({**VALID_CONFIG, "training": {"best_val_loss": float("nan")}})
    assert "NaN" in diverged
    assert bundle.read_bundle_config(write_config(tmp_path / "nan-loss", text=diverged)).training


@pytest.mark.parametrize("changes", [
    {"decoder": None}, {"max_length": 1}, {"max_length": 100_000}, {"vocab_size": 10_000_004},
])
def test_load_bundle_refuses_before_any_model_is_built(tiny_bundle, tmp_path, monkeypatch, changes):
    import captioning.models

    def must_not_build(*args, **kwargs):
        raise AssertionError("a model was built from an unchecked config")

    monkeypatch.setattr(captioning.models, "build_decoder", must_not_build)
    broken = shutil.copytree(tiny_bundle, tmp_path / "broken")
    data = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**data, **changes}))
    with pytest.raises(BundleError, match="config.json: (decoder|max_length|vocab_size)"):
        bundle.load_bundle(broken)


def test_a_huge_vocab_json_is_refused_before_it_is_read(tiny_bundle, tmp_path):
    broken = shutil.copytree(tiny_bundle, tmp_path / "broken")
    data = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**data, "vocab_size": 150_000}))
    with open(broken / "vocab.json", "wb") as handle:  # 10M words would be ~110 MB
        handle.truncate(110 * config.MIB)
    with pytest.raises(BundleError, match=r"vocab.json: cannot read the vocabulary \(the file is 115\.3 MB"):
        bundle.load_bundle(broken)


def test_a_vocabulary_with_too_many_words_is_refused(tmp_path):
    words = [*RESERVED_TOKENS, *(f"w{i}" for i in range(config.MAX_VOCAB_SIZE))]
    (tmp_path / "vocab.json").write_text(json.dumps({"format": 1, "words": words}))
    with pytest.raises(BundleError, match="200,004 words, more than the 200,000"):
        Vocabulary.load(tmp_path / "vocab.json")


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "history.json"])
@pytest.mark.parametrize("text", [DEEP, f'{{"a": {HUGE_INT}}}'])
def test_bundle_json_files_within_limits(tiny_bundle, tmp_path, name, text):
    broken = shutil.copytree(tiny_bundle, tmp_path / "broken")
    (broken / name).write_text(text)
    with pytest.raises(BundleError, match=f"{name}: .*(nested more than|a number of 5000 digits)"):
        bundle.load_bundle(broken)


def test_training_never_writes_a_bundle_the_loader_refuses(monkeypatch):
    assert choose_max_length([500, 3, 4], 100) == config.MAX_CAPTION_LENGTH
    monkeypatch.setattr(config, "MAX_VOCAB_SIZE", 6)
    assert len(Vocabulary.build(["a b c d e f g"] * 5, min_count=1)) == 6
    assert len(Vocabulary.build(["a b c d e f g"] * 5, min_count=1, max_size=100)) == 6


# ----------------------------------------------------------------------- dataset captions files

def test_a_list_where_an_id_belongs_is_a_malformed_entry(tmp_path):
    root = coco_dataset(tmp_path / "ds", {
        "images": [{"id": [1], "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [{"image_id": [2], "caption": "a blue square"}, {"image_id": {"x": 1}, "caption": "x"},
                        {"image_id": 2, "caption": "a blue square"}]})
    dataset = load_dataset(root)
    assert [image.path.name for image in dataset.images] == ["b.png"]
    assert dataset.problems.count("malformed_entry") == 3
    examples = dataset.problems.examples["malformed_entry"]
    assert any("image_id must be a number or text, got [2]" in example for example in examples)


def test_a_5000_digit_image_id_text_is_a_malformed_entry(tmp_path):
    root = coco_dataset(tmp_path / "ds", {"annotations": [{"image_id": HUGE_INT, "caption": "a thing"}]})
    photo(root / "Images" / "COCO_train2014_000000000007.jpg")
    with pytest.raises(DatasetError, match="no image with a usable caption.*malformed"):
        load_dataset(root)


@pytest.mark.parametrize("text", [DEEP, f'{{"annotations": [{{"image_id": {HUGE_INT}, "caption": "x"}}]}}'])
def test_a_hostile_captions_json_is_one_line(tmp_path, text):
    with pytest.raises(DatasetError, match="captions.json: (JSON nested more than|a number of 5000 digits)"):
        load_dataset(coco_dataset(tmp_path / "ds", text))


def test_surrogate_escaped_file_names_are_malformed_entries(tmp_path):
    root = coco_dataset(tmp_path / "ds", '[{"image": "\\udce9.png", "caption": "a red thing"},'
                                         ' {"image": "\\ud800.png", "caption": "a red thing"},'
                                         ' {"image": "a.png", "caption": "a red \\udce9 square"},'
                                         ' {"image": "b.png", "caption": "a blue square"}]')
    photo(fsname(root / "Images", b"\xe9.png"))  # the file the escape would name exists
    dataset = load_dataset(root)
    assert [image.path.name for image in dataset.images] == ["a.png", "b.png"]
    assert dataset.problems.count("malformed_entry") == 2
    assert "'\\xe9.png': a file name that is not text" in dataset.problems.examples["malformed_entry"][0]
    assert dataset.images[0].captions == ["a red \ufffd square"]  # repaired, and counted
    assert dataset.problems.count("undecodable_text") == 1


def test_info_on_a_dataset_with_names_that_are_not_utf8(tmp_path):
    root = coco_dataset(fsname(tmp_path, b"donn\xe9es"), '[{"image": "a.png", "caption": "a red square"},'
                                                          ' {"image": "\\udce9.png", "caption": "x"}]')
    photo(fsname(root / "Images", NOT_UTF8 + b".png"))  # an image without captions: an example
    result = run_cli("info", "--dataset", root, cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "donn\\xe9es" in result.stdout and "caf\\xe9.png" in result.stdout
    assert len(load_dataset(root).key) > 0  # the cache key hashes the folder's bytes


# -------------------------------------------------------------- names that are not UTF-8: output

def test_escape_shows_undecodable_bytes_and_leaves_text_alone():
    name = os.fsdecode(b"/photos/" + NOT_UTF8 + b".jpg")
    assert safe_text.escape(name) == "/photos/caf\\xe9.jpg"
    assert safe_text.escape("/photos/café.jpg") == "/photos/café.jpg"
    assert safe_text.escape("\ud800") == "\\ud800"
    assert safe_text.json_text("image", name) == {"image": "/photos/caf\\xe9.jpg",
                                                  "image_escaping": "backslashreplace"}
    assert safe_text.json_text("image", "café.jpg") == {"image": "café.jpg"}


def test_caption_report_prints_escaped_names_to_a_strict_utf8_stream(capsys):
    from captioning.cli.commands.caption import _report
    from captioning.inference.captioner import CaptionResult

    bad = Path(os.fsdecode(NOT_UTF8 + b".jpg"))
    failed = _report([CaptionResult(bad, "a red square"), CaptionResult(bad, None, f"{bad}: cannot read")], 0, {}, {})
    out, err = capsys.readouterr()  # capsys encodes strictly as UTF-8: a raw surrogate would raise
    assert failed and out == "caf\\xe9.jpg: a red square\n" and err == "error: caf\\xe9.jpg: cannot read\n"


def test_caption_json_and_terminal_with_names_that_are_not_utf8(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "photos"
    photo(fsname(folder, NOT_UTF8 + b".jpg"))
    photo(folder / "plain.png")
    missing = fsname(tmp_path, b"gone-" + NOT_UTF8 + b".jpg")
    out_json = tmp_path / "captions.json"
    code = cli.main(["caption", "--model", str(tiny_bundle), "--no-png", "--json", str(out_json),
                     str(folder), str(missing)])
    out, err = capsys.readouterr()
    assert code == 1  # the missing file
    assert "photos/caf\\xe9.jpg: " in out and "gone-caf\\xe9.jpg" in err
    entries = json.loads(out_json.read_bytes().decode("utf-8"))  # strict UTF-8, standard JSON
    assert entries[0]["image"].endswith("photos/caf\\xe9.jpg")
    assert entries[0]["image_escaping"] == "backslashreplace" and entries[0]["caption"]
    assert entries[1]["image"].endswith("plain.png") and "image_escaping" not in entries[1]
    assert entries[2]["error_escaping"] == "backslashreplace" and "gone-caf\\xe9.jpg" in entries[2]["error"]


def test_metrics_json_and_sample_grid_with_names_that_are_not_utf8(tmp_path, monkeypatch):
    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: False)  # no Java: no METEOR
    root = coco_dataset(fsname(tmp_path, b"donn\xe9es"), [{"image": "a.png", "caption": "a red square"},
                                                          {"image": "b.png", "caption": "a blue square"}])
    model = fsname(tmp_path, b"mod\xe8le")
    model.mkdir()
    dataset = load_dataset(root)
    chosen = evaluation.choose_images(config_without_dataset(), dataset, "test")  # unseen: all test

    class Captioner:
        def caption_many(self, paths, beam_size):
            from captioning.inference.captioner import CaptionResult

            return [CaptionResult(Path(p), "a red square") if Path(p).name == "a.png"
                    else CaptionResult(Path(p), None, f"{p}: cannot read image") for p in paths]

    result = evaluation.evaluate_images(Captioner(), chosen, beam_size=1, model_path=model, progress=False)
    written = report.write_reports(result, report.plan_reports(model, chosen, beam_size=1))
    data = json.loads(written["metrics"].read_bytes().decode("utf-8"))
    assert data["model"].endswith("mod\\xe8le") and data["model_escaping"] == "backslashreplace"
    assert data["dataset"]["source"].endswith("donn\\xe9es") and data["dataset"]["source_escaping"]
    assert data["captions"] == [{"image": "Images/a.png", "caption": "a red square"}]
    assert data["failed_images"][0]["image_escaping"] == "backslashreplace"
    assert written["samples"].is_file()


# ----------------------------------------------------------------- checkpoints and feature cache

@pytest.mark.parametrize(("text", "reason"), [
    (DEEP, "nested more than"),
    (f'{{"version": 1, "folder": "epoch-0001", "fit": {{"epoch": {HUGE_INT}}}}}', "a number of 5000 digits"),
    ('{"version": 1, "folder": "epoch-0001", "fit": {"epoch": "3"}}', "fit.epoch is not a valid count"),
    ('{"version": 1, "folder": "../../elsewhere", "fit": {}}', "no epoch folder named"),
    ('{"version": 1, "folder": "epoch-0001", "fit": [1]}', "'fit' and 'fingerprint' must be objects"),
])
def test_a_hostile_checkpoint_state_is_one_line(tmp_path, text, reason):
    from captioning.training.checkpoint_layout import ResumeError, read_checkpoint_state

    checkpoints = tmp_path / ".checkpoint"
    (checkpoints / "epoch-0001").mkdir(parents=True)
    (checkpoints / "epoch-0001" / "model.keras").write_bytes(b"stand-in")
    (checkpoints / "state.json").write_text(text)
    with pytest.raises(ResumeError, match="state.json: unusable checkpoint") as error:
        read_checkpoint_state(checkpoints)
    assert reason in str(error.value)


@pytest.mark.parametrize(("index", "reason"), [
    (DEEP, "unreadable (JSON nested more than"),
    ('{"version": 1, "row_shape": 5, "features": null, "rows": [], "signatures": 3}', "damaged (row_shape"),
    ('{"version": 1, "row_shape": [4], "features": "../x.npy", "rows": {}, "signatures": {}}', "damaged (features"),
    ('{"version": 1, "row_shape": [4], "features": "features-0.npy", "rows": {"a": [1]}, "signatures": {}}',
     "damaged (rows"),
])
def test_a_hostile_feature_cache_index_is_one_line(tmp_path, index, reason):
    from captioning.features.cache import FeatureCache

    (tmp_path / "index.json").write_text(index)
    with pytest.raises(FeatureCacheError, match="delete .* to rebuild") as error:
        FeatureCache(tmp_path).read_state()
    assert reason in str(error.value)


def test_a_feature_cache_index_pointing_past_its_rows_is_one_line(tmp_path):
    import numpy as np

    from captioning.features.cache import FeatureCache

    np.save(tmp_path / "features-0.npy", np.zeros((2, 4), np.float16))
    (tmp_path / "index.json").write_text(json.dumps({
        "version": 1, "features": "features-0.npy", "row_shape": [4], "rows": {"a.png": 0, "b.png": 9},
        "signatures": {"a.png": [1, 2], "b.png": [1, 2]}}))
    cache = FeatureCache(tmp_path)
    with pytest.raises(FeatureCacheError, match="rows numbered up to 9"):
        cache.open_features(cache.read_state())
