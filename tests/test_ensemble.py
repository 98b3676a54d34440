"""Ensemble bundles: members combined with checks, loaded together, captioning by averaged probabilities."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from captioning.bundles import store as bundles
from captioning.bundles.combine import combine_bundles
from captioning.cli.main import main
from captioning.errors import BundleError
from captioning.inference.captioner import Captioner
from captioning.inference.ensemble import EnsembleStepDecoder
from tests.support.bundles import WORDS, make_tiny_bundle

GRID = (7, 7, 1280)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny attention bundles with different random weights, same vocabulary and sizes."""
    root = tmp_path_factory.mktemp("members")
    return [make_tiny_bundle(root / f"member-{seed}", kind="attention", seed=seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def ensemble(members, tmp_path_factory):
    return combine_bundles(members, tmp_path_factory.mktemp("ensembles") / "pair")


@pytest.fixture(scope="module")
def grids():
    return np.random.default_rng(0).normal(size=(3, *GRID)).astype(np.float32)


def _steps(step_decoder, grids, tokens_per_step):
    """Log-probabilities after feeding each token batch in turn."""
    state = step_decoder.initial_state(grids)
    outputs = []
    for tokens in tokens_per_step:
        log_probs, state = step_decoder.step(np.asarray(tokens, dtype=np.int32), state)
        outputs.append(log_probs)
    return outputs


def test_ensemble_bundle_holds_every_member_and_describes_them(members, ensemble):
    config = json.loads((ensemble / bundles.CONFIG_FILE).read_text())
    assert [m["source"] for m in config["ensemble"]["members"]] == [p.name for p in members]
    weights = bundles.read_bundle_config(ensemble).weights_files
    assert weights == ["model.weights.h5", "model-2.weights.h5"]
    for name, member in zip(weights, members, strict=True):
        assert (ensemble / name).read_bytes() == (member / "model.weights.h5").read_bytes()
    assert "ensemble of 2 decoders" in bundles.describe_bundle(ensemble)
    assert len(bundles.load_bundle(ensemble).members) == 2


def test_ensemble_probabilities_are_the_mean_of_the_members(members, ensemble, grids):
    tokens = [[2, 2, 2], [4, 5, 6], [7, 3, 4]]
    member_outputs = [_steps(Captioner.load(m).step_decoder, grids, tokens) for m in members]
    combined = Captioner.load(ensemble).step_decoder
    assert isinstance(combined, EnsembleStepDecoder)
    for step, log_probs in enumerate(_steps(combined, grids, tokens)):
        expected = np.log(np.mean([np.exp(outputs[step]) for outputs in member_outputs], axis=0))
        np.testing.assert_allclose(log_probs, expected, atol=1e-5)
        np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-4)
    single = _steps(Captioner.load(members[0]).step_decoder, grids, tokens)
    assert not np.allclose(single[-1], _steps(combined, grids, tokens)[-1], atol=1e-3)  # both members count


def test_an_ensemble_of_one_model_twice_captions_exactly_like_it(members, grids):
    alone = Captioner.load(members[0])
    doubled = Captioner.load(members[0])
    doubled.step_decoder = EnsembleStepDecoder([doubled.step_decoder, Captioner.load(members[0]).step_decoder])
    for beam in (1, 3):  # beam search reorders the concatenated state like a single decoder's
        assert [h.tokens for h in doubled.decode_features(grids, beam)] == \
               [h.tokens for h in alone.decode_features(grids, beam)]


def test_one_model_twice_is_refused_by_name_or_by_its_weights(members, tmp_path):
    """``ensemble m1 m1`` (or m1 and a copy of it) would caption as m1 does, at twice the cost."""
    with pytest.raises(BundleError, match="is named twice; an ensemble needs different trained models"):
        combine_bundles([members[0], members[1], members[0]], tmp_path / "twice")
    twin = shutil.copytree(members[0], tmp_path / "twin")
    with pytest.raises(BundleError, match=f"twin has the same weights as {members[0]}"):
        combine_bundles([members[0], twin], tmp_path / "copies")
    assert not (tmp_path / "twice").exists() and not (tmp_path / "copies").exists()


def test_attention_of_an_ensemble_is_the_members_mean(members, ensemble, grids):
    combined = Captioner.load(ensemble).step_decoder
    tokens = np.full(3, 2, dtype=np.int32)
    _, _, alpha = combined.step_with_attention(tokens, combined.initial_state(grids))
    member_alphas = [m.step_with_attention(tokens, m.initial_state(grids))[2] for m in combined.members]
    np.testing.assert_allclose(alpha, np.mean(member_alphas, axis=0), atol=1e-6)


def test_fewer_than_two_members_is_refused(members, tmp_path):
    with pytest.raises(BundleError, match="at least two"):
        combine_bundles(members[:1], tmp_path / "one")


def test_the_output_may_not_be_a_member(members):
    with pytest.raises(BundleError, match="overwrite one of its members"):
        combine_bundles(members, members[1])
    assert bundles.load_bundle(members[1])  # untouched


def test_members_with_another_vocabulary_are_refused(members, tmp_path):
    other = make_tiny_bundle(tmp_path / "other-words", kind="attention", words=[*WORDS[:-1], "grass"])
    with pytest.raises(BundleError, match="vocabulary differs"):
        combine_bundles([members[0], other], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()


def test_members_of_another_size_are_refused(members, tmp_path):
    wider = make_tiny_bundle(tmp_path / "wider", kind="attention", units=24)
    with pytest.raises(BundleError, match="share one architecture"):
        combine_bundles([members[0], wider], tmp_path / "mixed")


def test_members_of_another_decoder_kind_are_refused(members, tmp_path):
    merge = make_tiny_bundle(tmp_path / "merge", kind="merge")
    with pytest.raises(BundleError, match="share one architecture"):
        combine_bundles([members[0], merge], tmp_path / "mixed")


def test_a_differing_setting_is_named_by_the_fields_that_differ(members, tmp_path):
    resized = shutil.copytree(members[1], tmp_path / "resized")
    settings = json.loads((resized / "config.json").read_text())
    settings["encoder"]["input_size"] = 260
    (resized / "config.json").write_text(json.dumps(settings))
    with pytest.raises(BundleError) as error:
        combine_bundles([members[0], resized], tmp_path / "mixed")
    assert "its encoder differs" in str(error.value) and "(input_size 260 vs " in str(error.value)
    assert "EncoderSpec(" not in str(error.value)


def test_an_ensemble_named_brings_its_members_so_an_ensemble_grows(members, ensemble, tmp_path):
    third = make_tiny_bundle(tmp_path / "member-3", kind="attention", seed=3)
    grown = combine_bundles([ensemble, third], tmp_path / "grown")
    config = json.loads((grown / bundles.CONFIG_FILE).read_text())
    assert [m["source"] for m in config["ensemble"]["members"]] == [p.name for p in (*members, third)]
    for name, source in zip(bundles.read_bundle_config(grown).weights_files, (*members, third), strict=True):
        assert (grown / name).read_bytes() == (source / "model.weights.h5").read_bytes()
    assert len(bundles.load_bundle(grown).members) == 3
    again = combine_bundles([third, ensemble], tmp_path / "grown-other-way")  # a single bundle first works too
    assert [m["source"] for m in json.loads((again / bundles.CONFIG_FILE).read_text())["ensemble"]["members"]] == \
        [p.name for p in (third, *members)]


def test_a_member_already_in_the_named_ensemble_is_refused(members, ensemble, tmp_path):
    with pytest.raises(BundleError, match=r"member-1 has the same weights as .*pair \(its member member-1\); an "
                                          r"ensemble needs different"):
        combine_bundles([ensemble, members[0]], tmp_path / "twice")
    with pytest.raises(BundleError, match="at least two"):
        combine_bundles([members[0]], tmp_path / "alone")


def test_more_decoders_than_a_bundle_may_hold_are_refused_before_anything_is_written(members, ensemble, tmp_path,
                                                                                     monkeypatch):
    from captioning.bundles import combine

    keep = make_tiny_bundle(tmp_path / "keep", kind="attention", seed=4)
    before = (keep / bundles.CONFIG_FILE).read_bytes()
    third = make_tiny_bundle(tmp_path / "member-3", kind="attention", seed=3)
    monkeypatch.setattr(combine, "MAX_ENSEMBLE_MEMBERS", 2)
    with pytest.raises(BundleError, match="hold 3 decoders, more than the 2 an ensemble may have; name fewer"):
        combine_bundles([ensemble, third], keep)
    assert (keep / bundles.CONFIG_FILE).read_bytes() == before


def test_a_missing_member_weights_file_is_refused_on_load(ensemble, tmp_path):
    broken = shutil.copytree(ensemble, tmp_path / "broken")
    (broken / "model-2.weights.h5").unlink()
    with pytest.raises(BundleError, match="model-2.weights.h5: file missing"):
        bundles.load_bundle(broken)


def test_ensemble_command_writes_the_bundle_and_reports_errors_in_one_line(members, tmp_path, capsys):
    assert main(["ensemble", *map(str, members), "--output", str(tmp_path / "cli")]) == 0
    assert "ensemble of 2 models saved" in capsys.readouterr().out
    third = make_tiny_bundle(tmp_path / "member-3", kind="attention", seed=3)
    assert main(["ensemble", str(tmp_path / "cli"), str(third), "--output", str(tmp_path / "grown")]) == 0
    assert "ensemble of 3 models saved" in capsys.readouterr().out
    assert len(bundles.load_bundle(tmp_path / "cli").members) == 2
    assert main(["ensemble", str(members[0]), "--output", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "at least two" in err and "\n" not in err


def test_menu_model_list_says_it_is_an_ensemble(ensemble, members):
    from captioning.cli.menu import bundle_label

    assert "2 x attention ensemble" in bundle_label(ensemble)
    assert "ensemble" not in bundle_label(members[0])


def test_an_ensemble_entry_without_members_is_a_clear_error(ensemble, tmp_path):
    broken = shutil.copytree(ensemble, tmp_path / "no-members")
    config = json.loads((broken / bundles.CONFIG_FILE).read_text())
    config["ensemble"] = {"members": "three"}
    (broken / bundles.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(BundleError, match="no list of members"):
        bundles.load_bundle(broken)
    # config.json is checked as a whole now: info says what is wrong, the menu lists it as unreadable.
    with pytest.raises(BundleError, match="no list of members"):
        bundles.describe_bundle(broken)
    from captioning.cli.menu import bundle_label

    assert "unreadable" in bundle_label(broken) and "no list of members" in bundle_label(broken)
