"""``--help`` of every subcommand explains every option and shows the default it has."""

from __future__ import annotations

import argparse

import pytest

from captioning import config
from captioning.cli.arg_types import dropout_rate
from captioning.cli.main import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options(subparser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in subparser._actions if not isinstance(action, argparse._HelpAction)]


SUBCOMMANDS = sorted(_subparsers())


def test_every_subcommand_is_walked():
    # New subcommands join the walk by themselves; these must always be there.
    assert set(SUBCOMMANDS) >= {"train", "caption", "evaluate", "info", "extract", "ensemble", "default", "serve"}


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_option_has_help_that_names_its_default(command):
    subparser = _subparsers()[command]
    formatter = subparser._get_formatter()
    for action in _options(subparser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{command} {name}: no help"
        text = formatter._expand_help(action)  # %(default)s filled in, as --help shows it
        if action.default is None or isinstance(action.default, bool):
            continue  # nothing to show: absent, or a flag that is off unless given
        assert "default" in text, f"{command} {name}: help does not say its default: {text!r}"
        assert str(action.default).lower() in text.lower(), f"{command} {name}: {text!r}"


def test_the_options_that_lacked_help_now_show_their_defaults():
    train = _subparsers()["train"].format_help()
    decoder = config.DecoderConfig()
    for option, default in (("--embedding-dim", decoder.embedding_dim), ("--dropout", decoder.dropout),
                            ("--seed", config.TrainConfig.seed)):
        assert option in train and f"(default: {default}" in " ".join(train.split())
    evaluate = " ".join(_subparsers()["evaluate"].format_help().split())
    assert f"1 is greedy (default: {config.DEFAULT_BEAM_SIZE})" in evaluate


def test_train_defaults_are_the_offline_encoder_and_the_attention_decoder():
    args = build_parser().parse_args(["train"])
    assert (args.encoder, args.decoder) == ("efficientnet_lite0", "attention")
    assert (args.encoder, args.decoder) == (config.DEFAULT_ENCODER, config.DecoderConfig.kind)


@pytest.mark.parametrize("text, ok", [("0", True), ("0.5", True), ("1", False), ("-0.1", False), ("nan", False)])
def test_dropout_must_be_a_rate(text, ok):
    if ok:
        assert dropout_rate(text) == float(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            dropout_rate(text)
