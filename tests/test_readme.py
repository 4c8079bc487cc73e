"""The README's commands parse: each ``cmap`` command of its bash blocks is parsed as written.

LightningCLI and ``cmap map`` commands get ``--print_config`` (parsed and resolved, nothing run);
the argparse commands (``convert``, ``extract``, ``export``) are parsed and stopped before they run.
"""

import argparse
import re
import shlex

import pytest

from cmap.cli import main as cmap_main

from .conftest import REPO


def readme_commands() -> list[list[str]]:
    """Every ``cmap`` command line of the README's bash blocks (continuations joined), from ``cmap`` on."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            starts = [i for i, word in enumerate(words) if word in ("cmap", "cmap.cli")]
            if starts:
                commands.append(words[starts[0] + 1 :])
    return commands


class Parsed(Exception):
    """Raised instead of running a command whose arguments parsed."""


COMMANDS = readme_commands()


def test_the_readme_has_commands_of_every_kind():
    kinds = {command[0] for command in COMMANDS}
    assert {"fit", "test", "predict", "map", "convert", "extract", "export"} <= kinds, kinds


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_readme_command_parses(command, monkeypatch, capsys):
    if command[0] in ("convert", "extract", "export"):

        def parse_only(parser, args=None, namespace=None):
            raise Parsed(argparse.ArgumentParser.parse_known_args(parser, args, namespace))

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
        with pytest.raises(Parsed):
            cmap_main(command)
        return
    monkeypatch.chdir(REPO)  # configs/... paths are relative to the repository
    with pytest.raises(SystemExit) as exit:
        cmap_main([*command, "--print_config"])
    assert exit.value.code in (0, None), capsys.readouterr().err[-2000:]
