"""Evaluation orchestration and report files, with a fake captioner (no TensorFlow), plus one
end-to-end ``evaluate`` run through the CLI with a real (tiny) bundle."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import config
from captioning.bundles.schema import BundleConfig
from captioning.bundles.store import read_bundle_config
from captioning.cli import main as cli
from captioning.data.datasets import load_dataset, split_dataset
from captioning.errors import BundleError, CaptioningError, DatasetError
from captioning.evaluation import evaluate as evaluation
from captioning.evaluation import ptb_tokenizer, report
from tests.support.bundles import config_without_dataset, shipped_architecture

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "stripe", "dot", "blob")


def make_dataset(root: Path, count: int = 40) -> Path:
    """A Flickr-layout dataset (Images/ + captions.txt) of plain coloured images, 3 captions each."""
    (root / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for index in range(count):
        colour = list(COLOURS)[index % len(COLOURS)]
        shape = SHAPES[index % len(SHAPES)]
        name = f"img{index:03d}.png"
        Image.new("RGB", (48, 40), COLOURS[colour]).save(root / "Images" / name)
        lines += [f"{name},A {colour} {shape} on a plain background .",
                  f"{name},a {shape} that is {colour}",
                  f"{name},The picture shows a {colour} {shape} number {index}"]
    (root / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


class FakeCaptioner:
    """Stands in for ``captioner.Captioner``: captions from a rule, and records each batch."""

    tags_asked: bool | None = None  # what Captioner.load was asked for (the fixture below)

    def __init__(self, caption_for=None, fail_names=()):
        self.caption_for = caption_for or (lambda path: "a picture")
        self.fail_names = set(fail_names)
        self.batches: list[int] = []

    def caption_many(self, paths, beam_size):
        from captioning.inference.captioner import CaptionResult

        self.batches.append(len(paths))
        return [CaptionResult(Path(p), None, f"{p}: cannot read image") if Path(p).name in self.fail_names
                else CaptionResult(Path(p), self.caption_for(Path(p))) for p in paths]


@pytest.fixture
def dataset_dir(tmp_path):
    return make_dataset(tmp_path / "shapes")


@pytest.fixture
def model_dir(tmp_path, dataset_dir):
    """A bundle folder with only what evaluation reads (config.json) plus files it must not touch."""
    dataset = load_dataset(dataset_dir)
    folder = tmp_path / "model"
    folder.mkdir()
    # A complete config.json (read_bundle_config checks every field), for a model never built here.
    bundle_config = {"format_version": 1, "encoder": {"name": "efficientnet_lite0", "weights_id": "none"},
                     "decoder": {"kind": "merge"}, "vocab_size": 10, "max_length": 8,
                     "feature_shape": [1280], "dataset": {"source": str(dataset_dir), "key": dataset.key},
                     "split": {"seed": 7, "val_fraction": 0.25, "test_fraction": 0.25}}
    (folder / "config.json").write_text(json.dumps(bundle_config), encoding="utf-8")
    (folder / "vocab.json").write_text('{"tokens": []}', encoding="utf-8")
    (folder / "model.weights.h5").write_bytes(b"weights stand-in")
    return folder


def _config(model_dir: Path) -> BundleConfig:
    return read_bundle_config(model_dir)


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def _path_hash(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:8]


def evaluation_root() -> Path:
    return config.DATA_DIR / config.EVALUATIONS_FOLDER


@pytest.fixture
def fake_captioner(monkeypatch) -> list:
    """Evaluate without TensorFlow models: ``Captioner.load`` gives a FakeCaptioner that
    repeats each image's first reference; returns the list of bundles it was asked to load."""
    from captioning.inference import captioner

    loaded = []

    def load(cls, path, tags=True):
        loaded.append(Path(path))
        FakeCaptioner.tags_asked = tags
        return FakeCaptioner(caption_for=_reference_caption)

    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: False)  # quick: no Java, no METEOR
    monkeypatch.setattr(captioner.Captioner, "load", classmethod(load))
    return loaded


@functools.lru_cache(maxsize=4)
def _first_references(root: Path) -> dict[Path, str]:
    return {image.path: image.captions[0] for image in load_dataset(root).images}


def _reference_caption(path: Path) -> str:
    """The first reference of a dataset image, so the fake captioner can be perfect."""
    return _first_references(path.parent.parent)[path]


# -------------------------------------------------------------------------------- choosing images

def test_training_dataset_gives_its_recomputed_held_out_split(model_dir, dataset_dir):
    dataset = load_dataset(dataset_dir)
    split_config = config.SplitConfig(seed=7, val_fraction=0.25, test_fraction=0.25)
    expected = split_dataset(dataset.images, split_config)
    for split in ("test", "val"):
        chosen = evaluation.choose_images(_config(model_dir), dataset, split, model_path=model_dir)
        assert chosen.seen_in_training and chosen.split_config == split_config
        assert [i.path for i in chosen.images] == [i.path for i in getattr(expected, split)]
        assert not {i.path for i in chosen.images} & {i.path for i in expected.train}
    assert 0 < len(expected.test) < len(dataset.images)


def test_a_training_dataset_that_is_not_on_this_machine_says_to_pass_dataset(model_dir, dataset_dir):
    """The shipped bundle names the folder it was trained from on the team's machine."""
    shutil.rmtree(dataset_dir)
    with pytest.raises(DatasetError) as error:
        evaluation.prepare(model_dir, None)
    message = str(error.value)
    assert f"trained on the dataset at {dataset_dir}, which is not on this machine" in message
    assert "--dataset PATH" in message and "\n" not in message


def test_unseen_dataset_is_all_test(model_dir, tmp_path):
    other = load_dataset(make_dataset(tmp_path / "other", count=10))
    chosen = evaluation.choose_images(_config(model_dir), other, "test", model_path=model_dir)
    assert not chosen.seen_in_training and chosen.split_config is None
    assert len(chosen.images) == 10 and "not used in training" in chosen.describe()
    with pytest.raises(CaptioningError, match="--split val.*use --split test"):
        evaluation.choose_images(_config(model_dir), other, "val", model_path=model_dir)


def test_limit_keeps_the_first_held_out_images(model_dir, dataset_dir):
    dataset = load_dataset(dataset_dir)
    full = evaluation.choose_images(_config(model_dir), dataset, "test")
    limited = evaluation.choose_images(_config(model_dir), dataset, "test", limit=3)
    assert limited.images == full.images[:3] and limited.available == len(full.images)
    assert limited.describe().startswith(f"3 of {len(full.images)} images")


def test_bundle_without_recorded_split_is_refused(model_dir, dataset_dir):
    bundle_config = dataclasses.replace(_config(model_dir), split=None)
    with pytest.raises(BundleError, match="does not record the train/val/test split"):
        evaluation.choose_images(bundle_config, load_dataset(dataset_dir), "test", model_path=model_dir)


def test_bundle_without_recorded_dataset_needs_dataset_option(model_dir):
    bundle_config = json.loads((model_dir / "config.json").read_text())
    del bundle_config["dataset"]
    (model_dir / "config.json").write_text(json.dumps(bundle_config), encoding="utf-8")
    with pytest.raises(BundleError, match="pass --dataset PATH"):
        evaluation.prepare(model_dir, None)


# -------------------------------------------------------------------------------- captioning, scores

def test_captions_in_batches_and_scores_against_all_references(model_dir, dataset_dir, monkeypatch):
    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: False)  # quick: no Java, no METEOR
    dataset = load_dataset(dataset_dir)
    chosen = evaluation.choose_images(config_without_dataset(), dataset, "test")  # unseen: all 40
    fake = FakeCaptioner(caption_for=_reference_caption)
    result = evaluation.evaluate_images(fake, chosen, beam_size=2, model_path=model_dir, progress=False)
    assert fake.batches == [32, 8]  # batched, never per image
    assert result.scores.scores["BLEU-4"] == pytest.approx(100.0)
    assert result.scores.num_images == 40 and result.scores.warnings == []


def test_unreadable_images_are_listed_not_scored(model_dir, dataset_dir, monkeypatch):
    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: False)
    chosen = evaluation.choose_images(config_without_dataset(), load_dataset(dataset_dir), "test", limit=6)
    fake = FakeCaptioner(fail_names={"img001.png"})
    result = evaluation.evaluate_images(fake, chosen, beam_size=1, model_path=model_dir, progress=False)
    assert len(result.scored) == 5 and [o.path.name for o in result.failed] == ["img001.png"]
    assert "could not be read" in report.format_table(result)


def test_nothing_captioned_is_one_clear_error(model_dir, dataset_dir):
    chosen = evaluation.choose_images(config_without_dataset(), load_dataset(dataset_dir), "test", limit=2)
    fake = FakeCaptioner(fail_names={"img000.png", "img001.png"})
    with pytest.raises(CaptioningError, match="none of the 2 images could be captioned"):
        evaluation.evaluate_images(fake, chosen, beam_size=1, model_path=model_dir, progress=False)


def test_same_caption_everywhere_warns_in_the_table(model_dir, dataset_dir, monkeypatch):
    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: False)
    chosen = evaluation.choose_images(config_without_dataset(), load_dataset(dataset_dir), "test")
    result = evaluation.evaluate_images(FakeCaptioner(), chosen, beam_size=1, model_path=model_dir,
                                        progress=False)
    table = report.format_table(result)
    assert "warning: only 1 of the 40 generated captions (2.5%) are distinct" in table
    assert "distinct captions: 1 of 40 (2.5%)" in table
    assert "METEOR" in table and "Java is not installed" in table


def test_a_tagged_evaluation_says_how_many_captions_got_a_tag(model_dir, dataset_dir, monkeypatch):
    from types import SimpleNamespace

    from captioning.inference.captioner import CaptionResult
    from captioning.inference.guided import UsedTag

    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: False)

    class TaggingCaptioner(FakeCaptioner):
        tagger = SimpleNamespace(threshold=0.4, max_tags=1)

        def caption_many(self, paths, beam_size):
            return [CaptionResult(Path(p), "a dog", tags=(UsedTag("dog", 0.9, Path(p).stem.endswith("1")),))
                    for p in paths]

    chosen = evaluation.choose_images(config_without_dataset(), load_dataset(dataset_dir), "test")
    result = evaluation.evaluate_images(TaggingCaptioner(), chosen, beam_size=1, model_path=model_dir,
                                        progress=False)
    added = sum(image.path.stem.endswith("1") for image in chosen.images)
    assert added and result.to_dict()["tags"] == {"threshold": 0.4, "max_tags": 1,
                                                   "captions_with_added_tags": added}
    assert f"tags on (threshold 0.4): {added} caption(s) name a tag only because" in report.format_table(result)
    untagged = evaluation.evaluate_images(FakeCaptioner(), chosen, beam_size=1, model_path=model_dir,
                                          progress=False)
    assert untagged.to_dict()["tags"] is None and "tags on" not in report.format_table(untagged)


# -------------------------------------------------------------------------------- report files

def test_reports_metrics_json_png_into_their_own_folder(model_dir, dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: False)
    before = _files(model_dir)
    dataset = load_dataset(dataset_dir)
    chosen = evaluation.choose_images(_config(model_dir), dataset, "val", model_path=model_dir)
    fake = FakeCaptioner(caption_for=lambda p: f"a {p.stem} thing")
    result = evaluation.evaluate_images(fake, chosen, beam_size=3, model_path=model_dir, progress=False)
    plan = report.plan_reports(model_dir, chosen, 3)
    written = report.write_reports(result, plan, json_path=tmp_path / "copy.json")

    assert _files(model_dir) == before  # the val split is not the bundle's record
    assert not plan.update_bundle and "this evaluation uses the val split" in plan.bundle_kept_because
    assert plan.folder == evaluation_root() / f"model-{_path_hash(model_dir)}" / f"{dataset.key}-val-beam3"
    assert sorted(p.name for p in plan.folder.iterdir()) == ["evaluation_samples.png", "metrics.json"]
    assert written["metrics"] == plan.folder / "metrics.json"
    data = json.loads(written["metrics"].read_text(encoding="utf-8"))
    assert data == json.loads((tmp_path / "copy.json").read_text(encoding="utf-8"))
    assert data["split"] == "val" and data["beam_size"] == 3
    assert data["num_images"] == len(chosen.images)
    assert data["dataset"] == {"source": str(dataset_dir), "key": dataset.key, "seen_in_training": True}
    assert data["split_config"] == {"seed": 7, "val_fraction": 0.25, "test_fraction": 0.25}
    assert data["scale"].startswith("x100") and data["date"].startswith("20")
    assert "NLTK" in data["implementations"]["BLEU"] and "Cider" in data["implementations"]["CIDEr-D"]
    assert data["skipped"]["METEOR"].startswith("Java is not installed")
    assert set(data["scores"]) >= {"BLEU-1", "BLEU-4", "COCO-BLEU-4", "ROUGE-L", "CIDEr-D"}
    assert data["captions"][0] == {"image": f"Images/{chosen.images[0].path.name}",
                                   "caption": f"a {chosen.images[0].path.stem} thing"}

    with Image.open(written["samples"]) as png:
        assert png.format == "PNG" and png.width > 600 and png.height > 300
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 10  # photos and text were drawn, not a blank canvas


def test_full_test_split_at_the_default_beam_also_replaces_the_bundles_record(model_dir, dataset_dir,
                                                                              monkeypatch):
    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: False)
    before = _files(model_dir)
    chosen = evaluation.choose_images(_config(model_dir), load_dataset(dataset_dir), "test")
    result = evaluation.evaluate_images(FakeCaptioner(), chosen, beam_size=config.DEFAULT_BEAM_SIZE,
                                        model_path=model_dir, progress=False)
    plan = report.plan_reports(model_dir, chosen, config.DEFAULT_BEAM_SIZE)
    assert plan.update_bundle and plan.bundle_kept_because is None
    written = report.write_reports(result, plan)
    assert {name: data for name, data in _files(model_dir).items() if name in before} == before
    assert (model_dir / "metrics.json").read_bytes() == written["metrics"].read_bytes()
    assert (model_dir / "evaluation_samples.png").read_bytes() == written["samples"].read_bytes()
    assert written["bundle_metrics"] == model_dir / "metrics.json"


def test_results_folder_names_every_setting_so_none_replaces_another(model_dir, dataset_dir, tmp_path):
    dataset = load_dataset(dataset_dir)
    other = load_dataset(make_dataset(tmp_path / "other", count=6))
    bundle_config = _config(model_dir)
    settings = [(dataset, "test", None, 3), (dataset, "val", None, 3), (dataset, "test", 2, 3),
                (dataset, "test", None, 1), (other, "test", None, 3), (other, "test", 4, 5)]
    folders = [report.evaluation_folder(model_dir, evaluation.choose_images(
        bundle_config, data, split, limit, model_dir), beam) for data, split, limit, beam in settings]
    model = evaluation_root() / f"model-{_path_hash(model_dir)}"
    assert [folder.relative_to(model).as_posix() for folder in folders] == [
        f"{dataset.key}-test-beam3", f"{dataset.key}-val-beam3", f"{dataset.key}-test-first2-beam3",
        f"{dataset.key}-test-beam1", f"{other.key}-test-beam3", f"{other.key}-test-first4-beam5"]
    # A limit that covers every held-out image is the full split.
    full = evaluation.choose_images(bundle_config, other, "test", limit=6)
    assert report.evaluation_folder(model_dir, full, 3).name == f"{other.key}-test-beam3"


def test_bundles_are_told_apart_by_name_inside_the_models_folder_else_by_name_and_path(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_BUNDLE_DIR", tmp_path / "repo" / "saved_models" / "default")
    assert report._model_folder_name(config.MODELS_DIR / "flickr-merge") == "flickr-merge"
    assert report._model_folder_name(config.DEFAULT_BUNDLE_DIR) == "default"
    # A bundle named "default" that is not the shipped one, and bundles kept elsewhere, add a hash.
    for path in (config.MODELS_DIR / "default", tmp_path / "elsewhere" / "flickr-merge"):
        assert report._model_folder_name(path) == f"{path.name}-{_path_hash(path)}"


def test_samples_are_deterministic_and_spread(model_dir, dataset_dir):
    chosen = evaluation.choose_images(config_without_dataset(), load_dataset(dataset_dir), "test")
    outcomes = [evaluation.ImageOutcome(i.path, i.captions, "x") for i in chosen.images]
    picked = report.choose_samples(outcomes)
    assert [o.path.name for o in picked] == [f"img{i * 40 // 12:03d}.png" for i in range(12)]
    assert report.choose_samples(outcomes) == picked
    assert len(report.choose_samples(outcomes[:5])) == 5


def test_json_into_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(CaptioningError, match="cannot write .*missing"):
        report.write_json_atomic(tmp_path / "missing" / "m.json", {"a": 1})


# -------------------------------------------------------------------------------- CLI

def test_evaluate_command_with_a_limit_leaves_the_bundle_alone(model_dir, dataset_dir, tmp_path,
                                                                fake_captioner, capsys):
    before = _files(model_dir)
    code = cli.main(["evaluate", "--model", str(model_dir), "--split", "test", "--limit", "5",
                     "--beam-size", "2", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == f"model: {model_dir} (efficientnet_lite0 + merge)"
    assert "BLEU-4" in out and "100.00" in out and "scores x100" in out
    assert _files(model_dir) == before
    folder = evaluation_root() / f"model-{_path_hash(model_dir)}" / f"{load_dataset(dataset_dir).key}-test-first5-beam2"
    assert f"results saved in {folder}/" in out
    assert f"metrics written to {folder / 'metrics.json'}" in out
    assert f"sample captions drawn in {folder / 'evaluation_samples.png'}" in out
    assert (f"the bundle's own record {model_dir / 'metrics.json'} was left as it was: it records the full "
            "test split of its training dataset at beam 3, and this evaluation uses the first 5 of") in out
    assert json.loads((tmp_path / "out.json").read_text())["beam_size"] == 2
    assert json.loads((folder / "metrics.json").read_text())["num_images"] == 5


@pytest.mark.parametrize("target, expected", [
    ("a_file.jpg/x.json", "error: --json a_file.jpg/x.json cannot be created"),
    ("folder", "error: --json folder is a folder; give a file name"),
    ("notes.json", "error: --json notes.json already exists and is not an evaluation file this tool wrote"),
    # A caption run's --json is not an evaluation's either.
    ("captions.json", "error: --json captions.json already exists and is not an evaluation file"),
])
def test_evaluate_json_is_checked_before_the_model_loads(model_dir, dataset_dir, tmp_path, fake_captioner,
                                                         monkeypatch, capsys, target, expected):
    (tmp_path / "a_file.jpg").write_text("a file")
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.json").write_text('{"beam_size": 3, "mine": true}')
    (tmp_path / "captions.json").write_text('[{"image": "a.jpg", "caption": "a cat", "score": -1.0, "tags": null}]')
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    monkeypatch.chdir(tmp_path)
    assert cli.main(["evaluate", "--model", str(model_dir), "--limit", "3", "--json", target]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(expected)
    assert not fake_captioner  # refused before the model was loaded
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()} == before


def test_evaluate_replaces_only_an_earlier_evaluations_json(model_dir, dataset_dir, tmp_path, fake_captioner):
    out = tmp_path / "out.json"
    assert cli.main(["evaluate", "--model", str(model_dir), "--limit", "3", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert report.is_evaluation_json(data) and data["beam_size"] == 3
    assert cli.main(["evaluate", "--model", str(model_dir), "--limit", "3", "--beam-size", "1",
                     "--json", str(out)]) == 0
    assert json.loads(out.read_text())["beam_size"] == 1
    for changed in ({**data, "mine": 1}, {key: value for key, value in data.items() if key != "captions"}, [data]):
        assert not report.is_evaluation_json(changed)


def test_evaluate_keeps_each_evaluation_apart(model_dir, dataset_dir, tmp_path, fake_captioner, capsys):
    other = make_dataset(tmp_path / "other", count=6)
    runs = [[], ["--split", "val"], ["--limit", "3"], ["--beam-size", "1"], ["--dataset", str(other)]]
    for extra in runs:
        assert cli.main(["evaluate", "--model", str(model_dir), *extra]) == 0
    out = capsys.readouterr().out
    assert out.count("the bundle's own record was updated") == 1  # only the full test split at beam 3
    folders = sorted((evaluation_root() / f"model-{_path_hash(model_dir)}").iterdir())
    assert len(folders) == len(runs)
    results = {folder.name: json.loads((folder / "metrics.json").read_text()) for folder in folders}
    key, other_key = load_dataset(dataset_dir).key, load_dataset(other).key
    assert results[f"{key}-val-beam3"]["split"] == "val"
    assert results[f"{key}-test-first3-beam3"]["num_images"] == 3
    assert results[f"{key}-test-beam1"]["beam_size"] == 1
    assert results[f"{other_key}-test-beam3"]["dataset"]["seen_in_training"] is False
    assert json.loads((model_dir / "metrics.json").read_text()) == results[f"{key}-test-beam3"]
    assert (model_dir / "evaluation_samples.png").read_bytes() == (
        folders[[f.name for f in folders].index(f"{key}-test-beam3")] / "evaluation_samples.png").read_bytes()


def test_evaluate_without_tags_keeps_its_own_folder_and_never_the_record(model_dir, dataset_dir,
                                                                        fake_captioner, capsys):
    settings = json.loads((model_dir / "config.json").read_text())
    # Random weights have no classifier: --no-tags changes nothing, so the results share a folder.
    assert settings["encoder"]["weights_id"] == "none"
    assert cli.main(["evaluate", "--model", str(model_dir), "--no-tags", "--split", "val"]) == 0
    key = load_dataset(dataset_dir).key
    assert (evaluation_root() / f"model-{_path_hash(model_dir)}" / f"{key}-val-beam3" / "metrics.json").is_file()
    settings["encoder"]["weights_id"] = "imagenet"  # now it has one: tags are on unless --no-tags
    (model_dir / "config.json").write_text(json.dumps(settings), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(model_dir), "--no-tags"]) == 0
    out = capsys.readouterr().out
    assert FakeCaptioner.tags_asked is False
    folder = evaluation_root() / f"model-{_path_hash(model_dir)}" / f"{key}-test-beam3-notags"
    assert json.loads((folder / "metrics.json").read_text())["tags"] is None  # the fake has no tagger
    assert not (model_dir / "metrics.json").exists() and "uses no tags" in out
    assert cli.main(["evaluate", "--model", str(model_dir), "--no-tags", "--update-bundle"]) == 1
    assert "no tags" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(model_dir)]) == 0
    assert FakeCaptioner.tags_asked is True and (model_dir / "metrics.json").is_file()


def test_the_shipped_bundles_record_changes_only_with_update_bundle(model_dir, fake_captioner, monkeypatch,
                                                                    capsys):
    monkeypatch.setattr(config, "DEFAULT_BUNDLE_DIR", model_dir)  # model_dir plays the shipped bundle
    before = _files(model_dir)
    assert cli.main(["evaluate"]) == 0  # no --model: the shipped one is the default
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("(efficientnet_lite0 + merge, shipped default)")
    assert _files(model_dir) == before
    assert "it is the shipped model's record (tracked in git); pass --update-bundle to replace it" in out
    assert cli.main(["evaluate", "--update-bundle"]) == 0
    assert "the bundle's own record was updated" in capsys.readouterr().out
    assert set(_files(model_dir)) == {*before, "metrics.json", "evaluation_samples.png"}


@pytest.mark.parametrize("options, difference", [
    (["--limit", "2"], "the first 2 of"), (["--beam-size", "5"], "beam 5"), (["--split", "val"], "the val split"),
])
def test_update_bundle_for_another_evaluation_is_refused_before_captioning(model_dir, fake_captioner, capsys,
                                                                           options, difference):
    before = _files(model_dir)
    assert cli.main(["evaluate", "--model", str(model_dir), "--update-bundle", *options]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --update-bundle: ") and err.count("\n") == 1
    assert difference in err and "drop --update-bundle" in err
    assert fake_captioner == [] and _files(model_dir) == before  # refused before any model loaded
    assert not evaluation_root().exists()


def test_evaluating_the_real_shipped_model_partially_leaves_its_files_alone(flickr8k, coco_mini,
                                                                            fake_captioner, capsys):
    # Issue 15's attack: `evaluate --limit 50` (or on another dataset) overwrote the shipped model's
    # metrics.json and evaluation_samples.png, files tracked in git. Captions come from a stand-in;
    # which files get written is decided without it.
    shipped = config.DEFAULT_BUNDLE_DIR
    before = _files(shipped)
    # --dataset: the bundle records the absolute path it was trained from, which only exists on
    # the machine that trained it (a CI clone elsewhere would evaluate another copy).
    assert cli.main(["evaluate", "--model", str(shipped), "--dataset", str(flickr8k), "--limit", "50"]) == 0
    assert cli.main(["evaluate", "--dataset", str(coco_mini), "--limit", "10"]) == 0
    out = capsys.readouterr().out
    assert _files(shipped) == before
    assert out.count(f"({shipped_architecture()}, shipped default)") == 2
    assert sorted(p.name for p in (evaluation_root() / "default").iterdir()) == [
        f"{load_dataset(coco_mini).key}-test-first10-beam3", f"{load_dataset(flickr8k).key}-test-first50-beam3"]


def test_evaluate_command_bad_model_is_one_line(tmp_path, capsys):
    code = cli.main(["evaluate", "--model", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow
def test_evaluate_a_model_trained_on_shapes(tmp_path, monkeypatch, capsys):
    # End to end: train a small model on the shapes dataset, then `evaluate` with no --dataset:
    # the bundle's own dataset, its recorded split, only the test images. The captions follow
    # from the pixels, so a model that learnt scores high on images it never saw. (~60 s on CPU)
    from captioning.training.pipeline import TrainOptions, train_model
    from tests.support.shapes_dataset import write_shapes_dataset

    monkeypatch.setattr(ptb_tokenizer, "java_available", lambda: False)  # METEOR's jar: tested elsewhere
    split_config = config.SplitConfig(seed=3, val_fraction=0.2, test_fraction=0.2)
    dataset_dir = write_shapes_dataset(tmp_path / "shapes", 144, seed=0)
    options = TrainOptions(
        dataset=str(dataset_dir), encoder="efficientnet_lite0", encoder_weights="imagenet",
        decoder=config.DecoderConfig(kind="merge", embedding_dim=32, units=64, dropout=0.0),
        train=config.TrainConfig(epochs=10, batch_size=32, learning_rate=3e-3,
                                 early_stopping_patience=50),
        vocab=config.VocabConfig(min_count=1), split=split_config, output=tmp_path / "model")
    bundle_dir = train_model(options, log=lambda line: None).bundle_dir

    code = cli.main(["evaluate", "--model", str(bundle_dir)])  # its full test split, default beam
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads((bundle_dir / "metrics.json").read_text(encoding="utf-8"))
    [kept] = evaluation_root().glob(f"model-*/*-test-beam{config.DEFAULT_BEAM_SIZE}/metrics.json")
    assert json.loads(kept.read_text(encoding="utf-8")) == data
    test_images = split_dataset(load_dataset(dataset_dir).images, split_config).test
    assert data["dataset"]["seen_in_training"] is True and data["split"] == "test"
    assert sorted(c["image"] for c in data["captions"]) == sorted(i.relative_path for i in test_images)
    assert data["scores"]["BLEU-4"] > 50 and data["scores"]["CIDEr-D"] > 200, out
    assert data["distinct_caption_share"] > 0.3
    with Image.open(bundle_dir / "evaluation_samples.png") as png:
        assert png.format == "PNG"
