"""docs/cli.md is what the argparse parsers render: the option tables and `--help` agree."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "scripts" / "cli_reference.py"


def load_script():
    spec = importlib.util.spec_from_file_location("cli_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_page_matches_the_parsers():
    module = load_script()
    assert module.PAGE.read_text(encoding="utf-8") == module.render(), (
        "docs/cli.md is stale: run python docs/scripts/cli_reference.py")


def test_every_option_of_every_subcommand_is_on_the_page():
    from keras_unet.cli import build_parser

    module = load_script()
    page = module.PAGE.read_text(encoding="utf-8")
    subcommands = module._subparsers(build_parser())
    assert set(subcommands) >= {"train", "export", "bench", "predict", "evaluate", "demo", "info"}
    for name, sub in subcommands.items():
        section = page.split(f"## keras-unet {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in section, f"{option} of keras-unet {name} is missing from docs/cli.md"


@pytest.mark.parametrize("columns", ["40", "200"])
def test_the_page_does_not_depend_on_the_terminal_width(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    module = load_script()
    assert module.render() == module.PAGE.read_text(encoding="utf-8")
