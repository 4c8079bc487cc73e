"""Bounds on the YAML that cmap reads: document size and alias expansion.

A YAML document can name a node once (``&a``) and repeat it by alias (``*a``): nine levels of ten
aliases ("billion laughs") is a 1 kB file that stands for 10**9 values. PyYAML builds it as shared
references, but jsonargparse copies and walks every value, so ``cmap fit --config bomb.yaml`` grew to
gigabytes until it was killed. :func:`bounded_yaml_load` composes the document's node graph first
(aliases still shared, cheap) and counts the nodes it stands for; a document above
:data:`MAX_CONFIG_BYTES` or :data:`MAX_EXPANDED_NODES` is refused with an :class:`InputError` naming
the file, before anything is built. :func:`cmap.runtime.install` makes it jsonargparse's YAML loader,
so every config path (LightningCLI's ``--config``, ``--model``, ``--data``, ``--trainer.*`` files,
``cmap map --config``, ``cmap area --config``) and every YAML option value goes through it; YAML files
cmap reads itself (``cmap cv --config``) go through :func:`load_yaml_file`.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cmap.outputs import InputError

#: The largest YAML document read, in characters. cmap's configs are a few kB; a table of classes or
#: dates given inline stays far below this.
MAX_CONFIG_BYTES = 4 * 1024 * 1024

#: The most values (mappings, sequences and scalars, each alias counted as the nodes it repeats) a
#: document may stand for. cmap's largest shipped config has a few hundred.
MAX_EXPANDED_NODES = 200_000

#: The deepest nesting of mappings and sequences accepted (PyYAML's composer recurses once per level).
MAX_DEPTH = 200


class ConfigTooLarge(InputError):
    """A YAML document over cmap's limits: too large, too many values once aliases are expanded, too deep."""


class NotYAML(InputError):
    """A config file that is not valid YAML: its path, line and column, and what the parser expected."""


def _where(path: Any) -> str:
    # jsonargparse gives a config file's base name, read from inside its folder: this is its full path.
    return f"{os.path.abspath(path)}: " if path else "an option's YAML (a file or a value): "


def expanded_size(root: yaml.Node, limit: int = MAX_EXPANDED_NODES) -> int:
    """Nodes that ``root`` stands for once every alias is expanded, counting up to just over ``limit``.

    Each distinct node is sized once (aliases share node objects), so a bomb is measured in the
    time of its text. A node that contains itself (a recursive alias) stands for infinitely many.
    """
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            return limit + 1  # recursive: `&a [*a]`
        if depth > MAX_DEPTH:
            raise RecursionError
        if isinstance(node, yaml.ScalarNode):
            return 1
        in_progress.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > limit:
                break
        in_progress.discard(key)
        sizes[key] = total
        return total

    return size(root, 0)


def check_yaml(text: str, path: Any = None) -> None:
    """Raise :class:`ConfigTooLarge` when YAML ``text`` (from ``path``, for the message) is over the limits.

    Text that is not valid YAML passes: the loader that reads it reports that as it always did.
    """
    where = _where(path)
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigTooLarge(f"{where}{len(text):,} characters of YAML; cmap reads configs up to {MAX_CONFIG_BYTES:,}")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        nodes = expanded_size(root) if root is not None else 0
    except yaml.YAMLError:
        return
    except RecursionError:  # PyYAML's composer, or expanded_size past MAX_DEPTH
        raise ConfigTooLarge(f"{where}YAML nested deeper than {MAX_DEPTH} levels, the most cmap reads") from None
    if nodes > MAX_EXPANDED_NODES:
        raise ConfigTooLarge(
            f"{where}YAML that stands for more than {MAX_EXPANDED_NODES:,} values once its aliases (*name) are "
            "expanded, the most cmap reads (an alias bomb?)"
        )


def load_yaml_file(path: Path) -> Any:
    """A YAML file cmap reads itself (not through jsonargparse), under the same bounds and errors."""
    text = Path(path).read_text()
    check_yaml(text, path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise NotYAML(f"{path}: not valid YAML ({yaml_problem(error)})") from error


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's error on one line: ``line 2, column 1: did not find expected ',' or ']'``."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error)
    return where + " ".join(str(problem).split())


def bounded_loader(load: Callable[[str], Any]) -> Callable[..., Any]:
    """``load`` (a jsonargparse YAML loader) behind :func:`check_yaml`.

    jsonargparse passes ``path`` to loaders that accept it (a config file's path), so the refusal names
    it; a config file that is not YAML is then a :class:`NotYAML` naming it, its line and column (jsonargparse's
    own message names neither the file nor the option).
    """

    def bounded_yaml_load(stream: str, path: Any = None) -> Any:
        check_yaml(stream, path)
        try:
            return load(stream)
        except yaml.YAMLError as error:
            if not path:  # an option's value: jsonargparse takes text that is not YAML as a string
                raise
            raise NotYAML(f"{_where(path)}not valid YAML ({yaml_problem(error)})") from error

    bounded_yaml_load.bounds = load  # the loader it wraps: installing twice wraps once
    return bounded_yaml_load
