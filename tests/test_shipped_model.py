"""The model that ships in saved_models/default captions the example photos sensibly, offline.

These checks fail for a missing, broken or untrained model: an untrained decoder gives the same
(or empty) caption for every photo and never names what is in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning import config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = PROJECT_ROOT / "examples"
PEOPLE = {"man", "woman", "person", "girl", "boy", "people", "lady", "men", "women", "child"}


@pytest.fixture(scope="module")
def example_captions() -> dict[str, str]:
    from captioning.inference.captioner import Captioner

    captioner = Captioner.load(config.DEFAULT_BUNDLE_DIR)
    photos = sorted(EXAMPLES.glob("*.jpg"))
    results = captioner.caption_many(photos, beam_size=config.DEFAULT_BEAM_SIZE)
    assert all(result.error is None for result in results), [r.error for r in results]
    return {result.path.stem: result.caption for result in results}


def test_default_bundle_is_a_real_offline_model():
    settings = json.loads((config.DEFAULT_BUNDLE_DIR / "config.json").read_text())
    assert settings["encoder"]["name"] == "efficientnet_lite0"  # works without network
    assert settings["encoder"]["weights_id"] == "imagenet" and not settings["encoder"].get("random_weights")
    assert (config.DEFAULT_BUNDLE_DIR / "MODEL_CARD.md").is_file()
    assert not (config.DEFAULT_BUNDLE_DIR / ".checkpoint").exists()  # no optimizer state shipped
    members = settings["ensemble"]["members"]  # the model card's ensemble, every member shipped
    assert len(members) == 3 and (config.DEFAULT_BUNDLE_DIR / "model-3.weights.h5").is_file()


def test_captions_differ_between_photos(example_captions):
    assert len(set(example_captions.values())) == len(example_captions), example_captions
    for caption in example_captions.values():
        assert len(caption.split()) >= 4, example_captions


def test_captions_name_the_people_in_the_photos(example_captions):
    for photo in ("astronaut", "camera"):  # a woman in a space suit; a man with a camera
        assert PEOPLE & set(example_captions[photo].split()), example_captions


def test_caption_command_writes_the_png_with_the_default_model(tmp_path):
    env = {**os.environ, "CAPTIONING_MODELS_DIR": str(tmp_path / "no-trained-models")}
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "image_captioning.py"), "caption",
                           str(EXAMPLES / "astronaut.jpg")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{EXAMPLES / 'astronaut.jpg'}: ")
    with Image.open(tmp_path / config.DEFAULT_CAPTION_PNG) as png:
        pixels = np.asarray(png.convert("L"))
    assert pixels.shape[0] > 512  # the photo plus the caption band beneath it
    assert pixels[-40:].min() < 100  # dark caption text in the band
