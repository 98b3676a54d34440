"""A bundle's record of the photos it learnt from (by content), and evaluations that leave them out.

The case it exists for: a model trained on a mix of two datasets (a folder of links to Flickr8k's
photos and some of coco-mini's), evaluated on one of the two. That dataset is not its training
dataset, so without the record every photo of it, training photos included, would be a test photo.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from captioning import config
from captioning.bundles.combine import combine_bundles
from captioning.bundles.store import describe_bundle, read_bundle_config
from captioning.bundles.trained_photos import (
    FILE,
    photo_digest,
    photo_digests,
    read_trained_photos,
    write_trained_photos,
)
from captioning.data.datasets import load_dataset, split_dataset
from captioning.errors import BundleError, DatasetError
from captioning.evaluation import evaluate as evaluation
from tests.support.bundles import make_tiny_bundle


def _photos_dataset(root: Path, names: list[str], shade: int) -> Path:
    """A Flickr-layout dataset whose photos all differ in content (a different colour each)."""
    (root / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for index, name in enumerate(names):
        Image.new("RGB", (16, 16), (shade, index * 7 % 256, index * 13 % 256)).save(root / "Images" / name)
        lines += [f"{name},a photo number {index}", f"{name},picture {index} of a colour"]
    (root / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _mix(root: Path, *datasets: Path) -> Path:
    """A dataset of links to every photo of ``datasets`` (as a user gathers a training mix)."""
    (root / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for dataset in datasets:
        for line in (dataset / "captions.txt").read_text(encoding="utf-8").splitlines()[1:]:
            name = line.split(",", 1)[0]
            link = root / "Images" / f"{dataset.name}-{name}"
            if not link.exists():
                link.symlink_to(dataset / "Images" / name)
            lines.append(f"{link.name},{line.split(',', 1)[1]}")
    (root / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _bundle_trained_on(folder: Path, dataset_dir: Path, split: config.SplitConfig) -> Path:
    """A bundle folder (config.json only, as evaluation reads) trained on ``dataset_dir``'s split,
    with the record the training pipeline writes: its train and validation photos."""
    dataset = load_dataset(dataset_dir)
    folder.mkdir()
    bundle_config = {"format_version": 1, "encoder": {"name": "efficientnet_lite0", "weights_id": "none"},
                     "decoder": {"kind": "merge"}, "vocab_size": 10, "max_length": 8, "feature_shape": [1280],
                     "dataset": {"source": str(dataset_dir), "key": dataset.key},
                     "split": {"seed": split.seed, "val_fraction": split.val_fraction,
                               "test_fraction": split.test_fraction}}
    (folder / "config.json").write_text(json.dumps(bundle_config), encoding="utf-8")
    parts = split_dataset(dataset.images, split)
    write_trained_photos(folder, photo_digests(image.path for image in parts.train + parts.val))
    return folder


def test_a_digest_follows_the_bytes_not_the_name(tmp_path):
    first = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(first)
    copy = tmp_path / "elsewhere" / "renamed.png"
    copy.parent.mkdir()
    shutil.copyfile(first, copy)
    link = tmp_path / "link.png"
    link.symlink_to(first)
    other = tmp_path / "b.png"
    Image.new("RGB", (8, 8), (1, 2, 4)).save(other)
    assert photo_digest(first) == photo_digest(copy) == photo_digest(link) != photo_digest(other)
    assert photo_digest(tmp_path / "missing.png") is None
    assert photo_digests([first, copy, other, tmp_path / "missing.png"]) == {photo_digest(first), photo_digest(other)}


def test_the_record_round_trips_sorted_and_a_bad_one_is_one_line(tmp_path):
    digests = {"00ff00ff00ff00ff", "0123456789abcdef"}
    write_trained_photos(tmp_path, digests)
    assert read_trained_photos(tmp_path) == digests
    assert json.loads((tmp_path / FILE).read_text())["photos"] == sorted(digests)
    assert read_trained_photos(tmp_path / "no-record") is None
    for bad in ('{"photos": ["XYZ"]}', '{"photos": "0123456789abcdef"}', "[]", "[" * 100_000, "{"):
        (tmp_path / FILE).write_text(bad, encoding="utf-8")
        with pytest.raises(BundleError, match=f"{FILE}.*delete it|delete .*{FILE}") as error:
            read_trained_photos(tmp_path)
        assert "\n" not in str(error.value)


def test_evaluating_on_a_dataset_in_the_training_mix_leaves_out_its_trained_photos(tmp_path):
    first = _photos_dataset(tmp_path / "first", [f"f{i:02d}.png" for i in range(40)], shade=10)
    second = _photos_dataset(tmp_path / "second", [f"s{i:02d}.png" for i in range(20)], shade=200)
    mix = _mix(tmp_path / "mix", first, second)
    split = config.SplitConfig(seed=3, val_fraction=0.2, test_fraction=0.2)
    model = _bundle_trained_on(tmp_path / "model", mix, split)
    mixed = split_dataset(load_dataset(mix).images, split)
    trained = {photo_digest(image.path) for image in mixed.train + mixed.val}

    chosen = evaluation.choose_images(read_bundle_config(model), load_dataset(first), "test", model_path=model)
    assert not chosen.seen_in_training  # another dataset, yet not all of it is held out
    kept = {photo_digest(image.path) for image in chosen.images}
    assert kept and not kept & trained
    assert len(chosen.images) + chosen.left_out_trained == 40 and chosen.left_out_trained > 0
    # What is left is exactly the first dataset's share of the mix's test split.
    assert kept == {photo_digest(image.path) for image in mixed.test} & photo_digests(
        image.path for image in load_dataset(first).images)
    assert f"less the {chosen.left_out_trained} photos of it the model was trained on" in chosen.describe()
    assert "not used in training" not in chosen.describe()


def test_the_validation_split_of_its_own_dataset_is_scored_but_for_photos_it_also_learnt_from(tmp_path):
    """The record lists validation photos too (they chose the epoch); ``--split val`` still scores
    them, leaving out only a validation photo whose bytes are also a training photo's."""
    dataset_dir = _photos_dataset(tmp_path / "first", [f"f{i:02d}.png" for i in range(40)], shade=10)
    split = config.SplitConfig(seed=3, val_fraction=0.25, test_fraction=0.2)
    parts = split_dataset(load_dataset(dataset_dir).images, split)
    duplicate = parts.val[0].path
    shutil.copyfile(parts.train[0].path, duplicate)  # one photo under two names, as Flickr8k has
    model = _bundle_trained_on(tmp_path / "model", dataset_dir, split)

    chosen = evaluation.choose_images(read_bundle_config(model), load_dataset(dataset_dir), "val", model_path=model)
    assert chosen.seen_in_training and chosen.left_out_trained == 1
    assert [image.path for image in chosen.images] == [image.path for image in parts.val if image.path != duplicate]


def test_a_dataset_the_model_learnt_all_of_is_one_clear_error(tmp_path):
    first = _photos_dataset(tmp_path / "first", [f"f{i:02d}.png" for i in range(12)], shade=10)
    model = _bundle_trained_on(tmp_path / "model", first, config.SplitConfig(seed=1, val_fraction=0.0,
                                                                             test_fraction=0.0))
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)  # the same photos in another folder: another dataset key
    with pytest.raises(DatasetError, match="trained on all 12 photos of its test split"):
        evaluation.choose_images(read_bundle_config(model), load_dataset(copy), "test", model_path=model)


def test_a_bundle_without_the_record_is_evaluated_as_before(tmp_path):
    first = _photos_dataset(tmp_path / "first", [f"f{i:02d}.png" for i in range(10)], shade=10)
    model = _bundle_trained_on(tmp_path / "model", first, config.SplitConfig())
    (model / FILE).unlink()
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    chosen = evaluation.choose_images(read_bundle_config(model), load_dataset(copy), "test", model_path=model)
    assert len(chosen.images) == 10 and chosen.left_out_trained == 0


def test_an_ensemble_records_what_any_member_saw_or_nothing_if_a_member_cannot_say(tmp_path):
    members = [make_tiny_bundle(tmp_path / f"member-{seed}", seed=seed) for seed in (1, 2)]
    write_trained_photos(members[0], {"0000000000000001", "0000000000000002"})
    write_trained_photos(members[1], {"0000000000000002", "0000000000000003"})
    ensemble = combine_bundles(members, tmp_path / "ensemble")
    assert read_trained_photos(ensemble) == {"0000000000000001", "0000000000000002", "0000000000000003"}
    (members[1] / FILE).unlink()
    assert read_trained_photos(combine_bundles(members, tmp_path / "unknown")) is None
    assert "photos it learnt from: 3, recorded by content" in describe_bundle(ensemble)
    assert "photos it learnt from" not in describe_bundle(tmp_path / "unknown")
