"""The Python API the README documents: load once, caption a path or many, get text and scores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import captioning
from captioning import Captioner, CaptionResult, config
from captioning.errors import BundleError, CaptioningError
from tests.support.bundles import WORDS

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _photo(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def captioner(tiny_bundle) -> Captioner:
    return Captioner.load(tiny_bundle)


def test_importing_the_package_is_cheap_and_names_the_api():
    code = ("import sys, captioning; assert 'numpy' not in sys.modules and 'tensorflow' not in sys.modules; "
            "from captioning import Captioner, CaptionResult; "
            "from captioning.inference import captioner; "
            "assert Captioner is captioner.Captioner and CaptionResult is captioner.CaptionResult")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)
    assert set(captioning.__all__) == {"Captioner", "CaptionResult", "__version__"}
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        captioning.Nothing  # noqa: B018


def test_caption_one_photo_gives_text_score_and_tokens(captioner, tmp_path):
    result = captioner.caption(_photo(tmp_path / "photo.jpg", 0))
    assert isinstance(result, CaptionResult) and result.ok and result.error is None
    assert result.caption and all(word in WORDS for word in result.caption.split())
    assert isinstance(result.score, float) and result.score < 0
    assert result.tokens and all(isinstance(token, int) for token in result.tokens)
    assert captioner.vocab.decode(result.tokens) == result.caption
    assert captioner.caption(tmp_path / "photo.jpg", beam_size=1).caption  # greedy


def test_caption_many_takes_files_and_folders_in_order(captioner, tmp_path):
    single = _photo(tmp_path / "a.jpg", 1)
    folder = tmp_path / "photos"
    inside = [_photo(folder / "y.png", 2), _photo(folder / "sub" / "x.jpg", 3)]
    results = captioner.caption_many([str(single), f"{folder}/"])
    assert [result.path for result in results] == [single, inside[1], inside[0]]
    assert all(result.ok for result in results)
    assert results[0] == captioner.caption(single)  # the same caption and score alone or in a batch


def test_a_bad_file_is_a_result_with_an_error_and_a_folder_is_refused(captioner, tmp_path):
    missing = captioner.caption(tmp_path / "gone.jpg")
    assert not missing.ok and missing.caption is None and "gone.jpg" in missing.error
    with pytest.raises(CaptioningError, match="a folder, not an image; caption_many"):
        captioner.caption(tmp_path)


def test_load_without_a_path_uses_the_default_model(tiny_bundle, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_BUNDLE_DIR", tiny_bundle)  # the shipped model, in this test
    assert Captioner.load().bundle.path == tiny_bundle
    with pytest.raises(BundleError, match="no model bundle there"):
        Captioner.load(tiny_bundle.parent / "nothing-here")
