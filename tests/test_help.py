"""`--help` of every command: each option explained, with its default; readable usage lines."""

import argparse

import pytest

from keras_unet import cli


def _subparsers():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_option_has_a_help_text_and_shows_its_default(name):
    sub = _subparsers()[name]
    formatter = sub._get_formatter()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{name} {label} has no help text"
        shown = formatter._get_help_string(action) % {"default": action.default, "prog": sub.prog}
        if action.option_strings and action.nargs != 0 and not action.required:  # flags: off unless given
            assert "default" in shown, f"{name} {label}: the help does not say the default"


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_help_is_plain_text_with_a_clean_usage_line(name):
    text = _subparsers()[name].format_help()
    assert "```" not in text  # no raw Markdown fences
    assert "[H [W] ..." not in text and "H [W] [H" not in text  # the old garbled --image-size
    assert "Exit status: 0" in text and "--debug" in text


def test_one_line_summaries_read_alike():
    for name, sub in _subparsers().items():
        summary = next(a for a in cli.build_parser()._subparsers._group_actions[0]._choices_actions
                       if a.dest == name).help
        assert summary[0].islower() and not summary.endswith("."), (name, summary)
