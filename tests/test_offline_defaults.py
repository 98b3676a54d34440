"""Defaults that work offline: which encoders can get their ImageNet weights, said before anything
heavy loads, by the menu and by ``train``."""

from __future__ import annotations

import pytest

from captioning import config
from captioning.encoders import keras_weights
from captioning.errors import EncoderError

OFFLINE = "Name or service not known"


@pytest.fixture
def empty_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras" / "models"


def test_offline_without_a_cached_file_the_keras_encoders_are_unavailable(empty_keras_cache, monkeypatch):
    probed = []
    monkeypatch.setattr(keras_weights, "unreachable", lambda url: probed.append(url) or OFFLINE)
    missing = keras_weights.unavailable_weights(config.ENCODER_NAMES)
    assert set(missing) == {"resnet50", "densenet201"} and len(probed) == 1  # one probe for both
    assert OFFLINE in missing["resnet50"] and str(empty_keras_cache) in missing["resnet50"]
    with pytest.raises(EncoderError, match=f"cannot download the ResNet50 ImageNet weights \\({OFFLINE}\\).*"
                                           "--encoder efficientnet_lite0 \\(works offline\\)"):
        keras_weights.check_available("resnet50", "imagenet")
    for name, weights in (("efficientnet_lite0", "imagenet"), ("resnet50", "none"), ("resnet50", "/my/r.h5")):
        keras_weights.check_available(name, weights)  # nothing to download: no error


def test_a_cached_file_or_a_reachable_host_makes_them_available(empty_keras_cache, monkeypatch):
    monkeypatch.setattr(keras_weights, "unreachable", lambda url: OFFLINE)
    empty_keras_cache.mkdir(parents=True)
    (empty_keras_cache / keras_weights.PUBLISHED["resnet50"].file).write_bytes(b"cached")
    assert set(keras_weights.unavailable_weights(config.ENCODER_NAMES)) == {"densenet201"}
    keras_weights.check_available("resnet50", "imagenet")
    monkeypatch.setattr(keras_weights, "unreachable", lambda url: None)
    assert keras_weights.unavailable_weights(config.ENCODER_NAMES) == {}


def test_unreachable_names_the_reason(monkeypatch):
    import socket

    def refuse(address, timeout):
        raise socket.gaierror(-2, OFFLINE)

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert keras_weights.unreachable("https://storage.googleapis.com/x.h5") == OFFLINE


def test_the_menu_says_up_front_which_encoders_cannot_be_had_and_offers_efficientnet(monkeypatch, capsys):
    from captioning.cli import menu

    monkeypatch.setattr(keras_weights, "unavailable_weights",
                        lambda names: {"resnet50": f"ResNet50 ImageNet weights cannot be downloaded ({OFFLINE})"})
    replies = iter(["1", ""])  # resnet50 first: refused, asked again; then Enter
    monkeypatch.setattr("builtins.input", lambda prompt="": next(replies))
    assert menu._ask_encoder() == "efficientnet_lite0"
    out = capsys.readouterr().out
    assert out.index("note: resnet50 cannot be used here") < out.index("Encoder:")
    assert "efficientnet_lite0 works offline" in out
    assert "1) resnet50 (weights unavailable)" in out and "2) efficientnet_lite0\n" in out
    assert f"resnet50: ResNet50 ImageNet weights cannot be downloaded ({OFFLINE}); choose another" in out
