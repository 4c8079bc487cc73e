"""The documented commands parse: each ``cmap`` command of the bash blocks of the README and of the
documentation pages (``docs/*.md``) is parsed as written.

LightningCLI commands and the jsonargparse ones (``cmap map``, ``cmap area``) get ``--print_config``
(parsed and resolved, nothing run); the argparse commands (``convert``, ``extract``, ``export``, ``cv``,
``audit``, ``suggest``, any other) are parsed and stopped before they run.
"""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from cmap.cli import main as cmap_main

from .conftest import REPO

#: the pages whose bash blocks hold commands a user copies: the README and every documentation page.
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands(document: Path) -> list[list[str]]:
    """Every ``cmap`` command line of ``document``'s bash blocks (continuations joined), from ``cmap`` on."""
    blocks = re.findall(r"```bash\n(.*?)```", document.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for words in shell_commands(block):
            starts = [i for i, word in enumerate(words) if word in ("cmap", "cmap.cli")]
            if starts:
                commands.append(words[starts[0] + 1 :])
    return commands


def shell_commands(block: str) -> list[list[str]]:
    """The words of each command of a bash block: continuations joined, and a quoted value (a YAML
    mapping) that runs over several lines kept whole, as bash reads it."""
    commands, pending = [], ""
    for line in block.replace("\\\n", " ").splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the value goes on on the next line
            continue
        commands.append(words)
        pending = ""
    assert not pending, f"a quote is never closed in: {pending}"
    return commands


#: the commands parsed by LightningCLI or jsonargparse, which take ``--print_config``.
PRINT_CONFIG_COMMANDS = ("fit", "validate", "test", "predict", "map", "area")


class Parsed(Exception):
    """Raised instead of running a command whose arguments parsed."""


COMMANDS = [
    (document.relative_to(REPO), command) for document in DOCUMENTS for command in documented_commands(document)
]


def test_the_documents_have_commands_of_every_kind():
    kinds = {command[0] for _, command in COMMANDS}
    assert {"fit", "test", "predict", "map", "area", "convert", "extract", "export"} <= kinds, kinds


def test_the_readme_walks_the_main_path():
    """The README's own commands go data -> store -> fit -> checkpoint -> map -> area."""
    kinds = [command[0] for document, command in COMMANDS if document.name == "README.md"]
    assert [kind for kind in kinds if kind in ("convert", "fit", "map", "area")][:4] == [
        "convert",
        "fit",
        "map",
        "area",
    ]


@pytest.mark.parametrize(
    ("document", "command"), COMMANDS, ids=[f"{document}: {' '.join(command)[:60]}" for document, command in COMMANDS]
)
def test_documented_command_parses(document, command, monkeypatch, capsys):
    if command[0] not in PRINT_CONFIG_COMMANDS:

        def parse_only(parser, args=None, namespace=None):
            raise Parsed(*argparse.ArgumentParser.parse_known_args(parser, args, namespace))

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
        with pytest.raises(Parsed) as parsed:
            cmap_main(command)
        _, unrecognised = parsed.value.args
        assert unrecognised == [], f"{document}: cmap {' '.join(command)}: unrecognised {unrecognised}"
        return
    monkeypatch.chdir(REPO)  # configs/... paths are relative to the repository
    with pytest.raises(SystemExit) as exit:
        cmap_main([*command, "--print_config"])
    assert exit.value.code in (0, None), capsys.readouterr().err[-2000:]
