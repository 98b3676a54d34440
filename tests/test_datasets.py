"""Dataset layouts, problem reporting, the kagglehub source and the deterministic split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from captioning import config
from captioning.data.datasets import CaptionedImage, Dataset, load_dataset, split_dataset
from captioning.errors import DatasetError
from tests.support.datasets import make_flickr_csv, make_images


def test_flickr_csv_layout_and_every_problem_counted(tmp_path):
    dataset = load_dataset(make_flickr_csv(tmp_path / "flickr"))
    assert dataset.layout == "flickr-csv"
    assert dataset.root == (tmp_path / "flickr").resolve()
    assert [image.relative_path for image in dataset.images] == ["Images/a.jpg", "Images/b.jpg", "Images/c.jpg"]
    first = dataset.images[0]
    assert first.path.is_absolute() and first.path == dataset.root / "Images" / "a.jpg"
    assert first.captions == ['A dog, brown and "happy", runs .', "A dog runs"]
    assert dataset.images[1].captions == ["Two cats sleep ."]
    assert dataset.num_captions == 4 and dataset.captions_read == 7  # rows with an image and a caption
    problems = dataset.problems
    assert problems.counts == {"missing_image": 1, "image_without_captions": 1, "empty_caption": 1,
                               "duplicate_caption": 1, "malformed_entry": 1}
    assert problems.examples["missing_image"] == ["missing.jpg"]
    assert problems.examples["image_without_captions"] == ["lonely.jpg"]
    assert "line 9" in problems.examples["malformed_entry"][0]
    assert "1 captions whose image file is missing" in problems.summary()
    assert dataset.relative(first.path) == "Images/a.jpg"


def test_bad_utf8_is_decoded_with_replacement_and_counted(tmp_path):
    root = tmp_path / "bad"
    make_images(root / "Images", ["a.jpg"])
    (root / "captions.txt").write_bytes(b"image,caption\na.jpg,A caf\xe9 table\na.jpg,A dog\n")
    dataset = load_dataset(root)
    assert dataset.problems.counts == {"undecodable_text": 1}
    assert dataset.problems.examples["undecodable_text"] == ["captions.txt line 2"]
    assert dataset.images[0].captions == ["A caf\ufffd table", "A dog"]


def test_original_flickr8k_token_layout(tmp_path):
    root = tmp_path / "Flickr8k"
    make_images(root / "Flicker8k_Dataset", ["1_a.jpg", "2_b.jpg"])
    (root / "Flickr8k_text").mkdir()
    (root / "Flickr8k_text" / "Flickr8k.lemma.token.txt").write_text("1_a.jpg#0\tlemma caption\n")
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_text(
        "1_a.jpg#0\tA child climbs .\n1_a.jpg#1\tA girl , in pink .\n2_b.jpg#0\tA dog\nbroken line\n")
    dataset = load_dataset(root)
    assert dataset.layout == "flickr-token"
    assert dataset.root == root.resolve()
    assert [(i.relative_path, i.captions) for i in dataset.images] == [
        ("Flicker8k_Dataset/1_a.jpg", ["A child climbs .", "A girl , in pink ."]),
        ("Flicker8k_Dataset/2_b.jpg", ["A dog"]),
    ]
    assert dataset.problems.counts == {"malformed_entry": 1}


def test_token_format_shipped_as_captions_txt(tmp_path):
    root = tmp_path / "tok"
    make_images(root / "Images", ["x.jpg"])
    (root / "captions.txt").write_text("x.jpg#0\tA cat\nx.jpg#1\tA small cat\n")
    dataset = load_dataset(root)
    assert dataset.layout == "flickr-token"
    assert dataset.images[0].captions == ["A cat", "A small cat"]


def test_coco_format_json(tmp_path):
    root = tmp_path / "coco"
    make_images(root / "Images", ["000000000001.jpg", "000000000002.jpg"])
    data = {
        "images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"},
                   {"file_name": "no-id.jpg"}],
        "annotations": [{"image_id": 1, "id": 10, "caption": "A plane."},
                        {"image_id": 2, "id": 11, "caption": "A train."},
                        {"image_id": 2, "id": 12, "caption": "A long train on tracks."},
                        {"image_id": 99, "caption": "Unknown image."},
                        {"image_id": 1, "caption": 5}],
    }
    (root / "captions.json").write_text(json.dumps(data))
    dataset = load_dataset(root)
    assert dataset.layout == "coco-json"
    assert [len(i.captions) for i in dataset.images] == [1, 2]
    assert dataset.problems.counts == {"malformed_entry": 3}


def test_bare_annotations_map_ids_to_existing_coco_names(tmp_path):
    root = tmp_path / "bare"
    make_images(root / "Images", ["COCO_train2014_000000000007.jpg", "000000000008.jpg",
                                  "COCO_val2014_000000000009.jpg"])
    notes = [{"image_id": 7, "caption": "seven"}, {"image_id": 8, "caption": "eight"},
             {"image_id": "9", "caption": "nine"}, {"image_id": 10, "caption": "ten"}]
    (root / "captions.json").write_text(json.dumps({"annotations": notes}))
    dataset = load_dataset(root)
    assert [i.path.name for i in dataset.images] == ["000000000008.jpg", "COCO_train2014_000000000007.jpg",
                                                     "COCO_val2014_000000000009.jpg"]
    assert dataset.problems.examples["missing_image"] == ["COCO_train2014_000000000010.jpg"]


def test_list_of_records_json(tmp_path):
    root = tmp_path / "records"
    make_images(root / "images", ["p.jpg", "q.png", "COCO_train2014_000000000003.jpg"])
    records = [{"image": "p.jpg", "caption": "A pear"}, {"file_name": "q.png", "caption": "A quince"},
               {"image_id": 3, "caption": "Three"}, {"image": "p.jpg", "captions": ["A ripe pear"]},
               {"caption": "no image"}, "junk"]
    (root / "data.json").write_text(json.dumps(records))
    dataset = load_dataset(root)
    assert dataset.captions_file.name == "data.json"
    assert {i.path.name: i.captions for i in dataset.images} == {
        "p.jpg": ["A pear", "A ripe pear"], "q.png": ["A quince"],
        "COCO_train2014_000000000003.jpg": ["Three"]}
    assert dataset.problems.counts == {"malformed_entry": 2}


def test_mapping_json_and_images_beside_the_file(tmp_path):
    root = tmp_path / "mapping"
    make_images(root, ["one.jpg", "two.jpg"])
    (root / "captions.json").write_text(json.dumps({"one.jpg": ["First", "Number one"], "two.jpg": "Second",
                                                    "three.jpg": {"bad": 1}}))
    dataset = load_dataset(root)
    assert [i.relative_path for i in dataset.images] == ["one.jpg", "two.jpg"]
    assert dataset.problems.counts == {"malformed_entry": 1}


def test_official_coco_annotations_folder(tmp_path):
    root = tmp_path / "coco2014"
    make_images(root / "train2014", ["COCO_train2014_000000000005.jpg"])
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train2014.json").write_text("{}")
    (root / "annotations" / "captions_train2014.json").write_text(json.dumps({
        "images": [{"id": 5, "file_name": "COCO_train2014_000000000005.jpg"}],
        "annotations": [{"image_id": 5, "caption": "Five"}]}))
    dataset = load_dataset(root)
    assert dataset.root == root.resolve()
    assert dataset.images[0].relative_path == "train2014/COCO_train2014_000000000005.jpg"


def test_layout_found_one_level_down(tmp_path):
    make_flickr_csv(tmp_path / "download" / "flickr8k")
    dataset = load_dataset(tmp_path / "download")
    assert dataset.root == (tmp_path / "download" / "flickr8k").resolve()


def test_a_cluttered_sibling_folder_does_not_hide_the_dataset_one_level_down(tmp_path):
    make_flickr_csv(tmp_path / "download" / "flickr8k")
    notes = tmp_path / "download" / "notes"  # two caption JSON files: no layout can be chosen there
    notes.mkdir()
    (notes / "caps.json").write_text("[]")
    (notes / "mine.json").write_text("[]")
    assert load_dataset(tmp_path / "download").root == (tmp_path / "download" / "flickr8k").resolve()
    (tmp_path / "download" / "flickr8k" / "captions.txt").unlink()  # now the cluttered one is all there is
    with pytest.raises(DatasetError, match="several caption JSON files"):
        load_dataset(tmp_path / "download")


@pytest.mark.parametrize("content, fragment", [
    ('{"images": [', "invalid JSON"),
    ('{"images": []}', "no captions found"),
    ("42", "no captions found"),
])
def test_broken_json_is_a_clear_error(tmp_path, content, fragment):
    make_images(tmp_path / "Images", ["a.jpg"])
    (tmp_path / "captions.json").write_text(content)
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path)
    message = str(caught.value)
    assert fragment in message and "captions.json" in message and "\n" not in message


def test_garbage_captions_txt_is_a_clear_error(tmp_path):
    make_images(tmp_path / "Images", ["a.jpg"])
    (tmp_path / "captions.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    with pytest.raises(DatasetError, match=r"captions\.txt.*(header|CSV)"):
        load_dataset(tmp_path)


def test_unknown_layout_lists_accepted_layouts(tmp_path):
    make_images(tmp_path / "photos", ["a.jpg"])
    with pytest.raises(DatasetError, match="no dataset layout recognised.*captions.json.*captions.txt.*token"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_nothing_usable_is_an_error_with_the_reasons(tmp_path):
    make_images(tmp_path / "Images", ["a.jpg"])
    (tmp_path / "captions.txt").write_text("image,caption\nother.jpg,A dog\na.jpg,...\n")
    with pytest.raises(DatasetError, match="no image with a usable caption.*1 captions whose image file is missing"):
        load_dataset(tmp_path)


def test_key_is_stable_short_and_depends_on_the_root(tmp_path):
    one = load_dataset(make_flickr_csv(tmp_path / "My Data!"))
    again = load_dataset(tmp_path / "My Data!")
    other = load_dataset(make_flickr_csv(tmp_path / "elsewhere" / "My Data!"))
    assert one.key == again.key
    assert one.key != other.key
    assert one.key.startswith("my-data-") and len(one.key) == len("my-data-") + 8


def test_mini_coco_download_failure_says_what_to_do(kaggle_home, monkeypatch):
    import kagglehub

    def offline(handle, *args, **kwargs):
        assert handle == config.MINI_COCO_HANDLE
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(DatasetError) as caught:
        load_dataset("mini-coco")
    message = str(caught.value)
    assert "could not download Mini-COCO" in message
    assert "no network connection" in message
    assert "--dataset PATH" in message and "captions.json" in message and "captions.txt" in message


def test_mini_coco_download_other_failure_keeps_short_reason(kaggle_home, monkeypatch):
    import kagglehub

    def forbidden(handle, *args, **kwargs):
        raise PermissionError("403 Forbidden: you do not have access")

    monkeypatch.setattr(kagglehub, "dataset_download", forbidden)
    with pytest.raises(DatasetError, match="PermissionError: 403 Forbidden"):
        load_dataset(config.MINI_COCO_SOURCE)


def test_mini_coco_download_success_uses_the_downloaded_folder(tmp_path, kaggle_home, monkeypatch):
    import kagglehub

    download = tmp_path / "kagglehub" / "versions" / "1"
    root = download / "coco2014"
    make_images(root / "Images", ["COCO_train2014_000000000001.jpg"])
    (root / "captions.json").write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "A cat."}]}))
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: str(download))
    dataset = load_dataset("mini-coco")
    assert dataset.source == "mini-coco" and dataset.layout == "coco-json"
    assert dataset.root == root.resolve()
    assert dataset.key.startswith("mini-coco-")
    assert dataset.images[0].captions == ["A cat."]


def _synthetic(count: int, prefix: str = "img") -> list[CaptionedImage]:
    return [CaptionedImage(Path(f"/data/{prefix}{i}.jpg"), ["a caption"], f"Images/{prefix}{i}.jpg")
            for i in range(count)]


def test_split_is_deterministic_disjoint_and_roughly_right():
    images = _synthetic(4000)
    split = split_dataset(images, config.SplitConfig())
    again = split_dataset(list(images), config.SplitConfig())
    assert split == again
    names = [{i.relative_path for i in part} for part in (split.train, split.val, split.test)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert sum(map(len, names)) == 4000
    assert 0.08 < len(split.val) / 4000 < 0.12 and 0.08 < len(split.test) / 4000 < 0.12
    other_seed = split_dataset(images, config.SplitConfig(seed=7))
    assert other_seed.test != split.test


def test_split_of_an_image_does_not_change_when_others_are_added():
    base = _synthetic(500)
    grown = base + _synthetic(500, prefix="new")
    before = split_dataset(base, config.SplitConfig())
    after = split_dataset(sorted(grown, key=lambda i: i.relative_path), config.SplitConfig())
    for part in ("train", "val", "test"):
        old = {i.relative_path for i in getattr(before, part)}
        assert old <= {i.relative_path for i in getattr(after, part)}


def test_split_depends_on_relative_path_not_machine_location():
    here = [CaptionedImage(Path(f"/home/a/ds/Images/{i}.jpg"), ["c"], f"Images/{i}.jpg") for i in range(300)]
    there = [CaptionedImage(Path(f"/mnt/b/Images/{i}.jpg"), ["c"], f"Images/{i}.jpg") for i in range(300)]
    one, two = split_dataset(here, config.SplitConfig()), split_dataset(there, config.SplitConfig())
    assert [i.relative_path for i in one.test] == [i.relative_path for i in two.test]


def test_split_follows_the_documented_hash_scheme():
    # Recomputed here from the documented rule, so a change of algorithm cannot pass unnoticed
    # (it would silently move images between train and test for existing models).
    images = _synthetic(200)
    split = split_dataset(images, config.SplitConfig(seed=99, val_fraction=0.2, test_fraction=0.3))
    for image in images:
        digest = hashlib.sha1(f"99:{image.relative_path}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        expected = split.test if position < 0.3 else split.val if position < 0.5 else split.train
        assert image in expected


def test_split_rejects_impossible_fractions():
    with pytest.raises(ValueError):
        split_dataset(_synthetic(3), config.SplitConfig(val_fraction=0.5, test_fraction=0.5))


@pytest.mark.slow
def test_real_flickr8k(flickr8k):
    dataset = load_dataset(flickr8k)
    assert dataset.layout == "flickr-csv"
    assert len(dataset.images) == 7091 and dataset.captions_read == 35455
    # 18 annotator duplicates (same words, differing only in case/punctuation) are dropped.
    assert dataset.problems.counts == {"duplicate_caption": 18}
    assert dataset.num_captions == 35455 - 18
    split = split_dataset(dataset.images, config.SplitConfig())
    assert len(split.train) + len(split.val) + len(split.test) == 7091


@pytest.mark.slow
def test_real_coco_mini(coco_mini):
    dataset = load_dataset(coco_mini)
    assert dataset.layout == "coco-json"
    assert len(dataset.images) == 442 and dataset.captions_read == 2210
    assert dataset.problems.counts == {"duplicate_caption": 2}
    assert isinstance(dataset, Dataset) and all(i.path.is_file() for i in dataset.images[:20])
