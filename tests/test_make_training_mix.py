"""scripts/make_training_mix.py: the recipe of the shipped model's training data, on tiny datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from captioning import config
from captioning.data.datasets import load_dataset, split_dataset

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "scripts"))

import make_training_mix as recipe  # noqa: E402


def _dataset(root: Path, names: list[str]) -> Path:
    (root / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for index, name in enumerate(names):
        Image.new("RGB", (8, 8), (index, 3, 5)).save(root / "Images" / name)
        lines += [f"{name},a photo called {name}", f"{name},picture {index}"]
    (root / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_the_mix_keeps_names_repeats_only_training_photos_and_holds_out_the_other_half(tmp_path):
    base = _dataset(tmp_path / "base", [f"b{i:02d}.jpg" for i in range(30)])
    extra = _dataset(tmp_path / "extra", [f"e{i:02d}.jpg" for i in range(40)])
    counts = recipe.make_mix(base, extra, tmp_path / "mix", tmp_path / "held", repeat=3)

    mix, held = load_dataset(tmp_path / "mix"), load_dataset(tmp_path / "held")
    tuning = [name for name in (f"e{i:02d}.jpg" for i in range(40)) if recipe.in_tuning_half(name)]
    assert 0 < len(tuning) < 40
    assert sorted(i.path.name for i in held.images) == sorted(set(f"e{i:02d}.jpg" for i in range(40)) - set(tuning))
    split = split_dataset(mix.images, config.SplitConfig())
    names_by_split = {part: {i.path.name for i in getattr(split, part)} for part in ("train", "val", "test")}
    copies = [i for i in mix.images if "_x" in i.path.name]
    assert len(copies) == counts["repeats"] > 0
    assert all(copy.path.name in names_by_split["train"] for copy in copies)  # never a val or test photo
    for copy in copies:  # a repeat is the original photo, under a new name, with its captions
        original = extra / "Images" / (copy.path.name.split("_x")[0] + ".jpg")
        assert copy.path.resolve() == original.resolve() and copy.captions == [
            f"a photo called {original.name}", f"picture {int(original.stem[1:])}"]
        assert original.name in names_by_split["train"]
    repeated_originals = {copy.path.name.split("_x")[0] + ".jpg" for copy in copies}
    assert all(sum(copy.path.name.startswith(name[:-4] + "_x") for copy in copies) == 2 for name in repeated_originals)
    # Base photos keep the split they have alone: same relative paths, same hashes.
    alone = split_dataset(load_dataset(base).images, config.SplitConfig())
    assert {i.path.name for i in alone.test} <= names_by_split["test"]
    assert json.loads((tmp_path / "mix" / "captions.json").read_text())[0].keys() == {"image", "caption"}


def test_existing_folders_are_refused_before_anything_is_written(tmp_path):
    base = _dataset(tmp_path / "base", ["b.jpg"])
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix" / "notes.txt").write_text("mine")
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "make_training_mix.py"), "--base", str(base),
                           "--extra", str(base), "--output", str(tmp_path / "mix"), "--held-out", str(tmp_path / "held")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [f"error: {tmp_path / 'mix'} exists; choose new folders"]
    assert [p.name for p in (tmp_path / "mix").iterdir()] == ["notes.txt"] and not (tmp_path / "held").exists()
