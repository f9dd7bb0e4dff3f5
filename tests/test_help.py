"""`--help` of every command: each option explained with its default, shown in the usage line,
and every example built from options the command has."""

import argparse
import re
import shlex

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
    assert "Exit status: 0" in text and "--debug" in text
    usage = " ".join(text.split("\n\n")[0].split())
    for action in _subparsers()[name]._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            assert action.option_strings[0] in usage, f"{name}: {action.option_strings[0]} not in {usage}"


def _example_commands(text):
    """The example command lines of a help text, continuation lines joined, as word lists."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        match = re.match(r"\s*(?:\w+=\S+\s+)*(keras-unet|python -m keras_unet\.benchmarks)\s(.*)", line)
        if match:
            words = shlex.split(match.group(2).split(" #")[0])
            if match.group(1) == "keras-unet":
                commands.append((words[0], words[1:]))
            else:
                commands.append(("bench", words))
    return commands


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_example_uses_only_options_of_its_command(name):
    # An option renamed or dropped while an example still shows it is a help text that lies.
    examples = _example_commands(_subparsers()[name].format_help())
    assert examples, f"{name} --help shows no example"
    for command, words in examples:
        known = {o for a in _subparsers()[command]._actions for o in a.option_strings}
        unknown = [w for w in words if w.startswith("--") and w.split("=")[0] not in known]
        assert not unknown, f"{name} --help: the example `keras-unet {command} ...` uses {unknown}"


def test_one_line_summaries_read_alike():
    for name, sub in _subparsers().items():
        summary = next(a for a in cli.build_parser()._subparsers._group_actions[0]._choices_actions
                       if a.dest == name).help
        assert summary[0].islower() and not summary.endswith("."), (name, summary)
