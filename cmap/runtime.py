"""Every process-wide effect of cmap, in one place, installed by its entry points, never at import.

:func:`install` is called by :func:`cmap.cli.main` (the ``cmap`` command) and by
:class:`cmap.lightning_cli.CMapCLI` (LightningCLI from Python); importing any cmap module changes
nothing in jsonargparse, Lightning or the warnings filters. It installs:

- a bounded YAML loader for jsonargparse (:mod:`cmap.config_limits`), through its public
  ``set_loader``: every config file and YAML option value of every command is size- and alias-bounded;
- case-insensitive class paths (``cmap.ml.classifiers.classifier`` means ``...Classifier``, as the seed
  config spells it): jsonargparse (4.53) has no public hook for how a class path is resolved, so this
  one wraps its private ``_typehints.resolve_class_path_by_name``; if a jsonargparse release renames
  it, case-insensitive paths stop working and the exact names still do (a warning says so);
- warnings filters for two Lightning/torch warnings a cmap user cannot act on.

The one other process-wide effect of cmap stays where it is on purpose: :mod:`cmap.ml` adds a logging
filter that drops Lightning's install advertisements wherever a cmap task runs (Python use included).
"""

import importlib
import warnings
from typing import Any

_installed = False


def install() -> None:
    """Install cmap's process-wide settings (once; calling it again does nothing)."""
    global _installed
    if _installed:
        return
    _installed = True
    _filter_warnings()
    _bound_yaml()
    _resolve_class_paths_case_insensitively()


def _filter_warnings() -> None:
    # Lightning calls a torch.utils._pytree API that torch deprecated: nothing a cmap user can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Lightning warns whenever a LightningModule overrides a batch-transfer hook and a data module is given
    # (either could hold it); cmap's data modules leave it alone, so SITSTask's runs as meant.
    warnings.filterwarnings("ignore", message="You have overridden `on_before_batch_transfer` in `LightningModule`")


def _bound_yaml() -> None:
    from jsonargparse import get_loader, set_loader
    from yaml import YAMLError

    from cmap.config_limits import bounded_loader

    load = get_loader("yaml")
    if not hasattr(load, "bounds"):
        set_loader("yaml", bounded_loader(load), exceptions=(YAMLError,))


def canonical_class_path(class_path: str, base: Any = None) -> str:
    """``pkg.module.classname`` -> ``pkg.module.ClassName`` when exactly one class (a subclass of
    ``base``, when given) matches.

    Anything else (short names, unknown modules, ambiguous names) is returned unchanged for
    jsonargparse to resolve or report.
    """
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        return class_path
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return class_path
    if isinstance(getattr(module, name, None), type):
        return class_path

    def fits(attr: str) -> bool:
        value = getattr(module, attr)
        if attr.lower() != name.lower() or not isinstance(value, type):
            return False
        try:
            return base is None or issubclass(value, base)
        except TypeError:  # a typing construct as base: jsonargparse checks it
            return True

    matches = [attr for attr in dir(module) if fits(attr)]
    return f"{module_name}.{matches[0]}" if len(matches) == 1 else class_path


def _resolve_class_paths_case_insensitively() -> None:
    """Wrap jsonargparse's private ``resolve_class_path_by_name`` with :func:`canonical_class_path`.

    jsonargparse calls it only for a value given where the config declares a class type (model,
    data, callbacks, an ``init_args`` parameter typed as a class), with that type as ``cls``, and
    imports the module named by the result just after. So case-insensitive matching imports nothing
    that plain LightningCLI would not: a ``class_path`` key elsewhere (a value of a plain dict such as
    ``class_map``) is never imported. Its public options (``set_parsing_settings``) cover which import
    paths are allowed, not how a name is matched; hence the private.
    """
    from jsonargparse import _typehints

    resolve = getattr(_typehints, "resolve_class_path_by_name", None)
    if resolve is None:
        warnings.warn(
            "this jsonargparse has no _typehints.resolve_class_path_by_name: class paths must be spelled exactly",
            stacklevel=2,
        )
        return

    def resolve_case_insensitively(cls: Any, name: str) -> str:
        class_path = resolve(cls, name)
        if not isinstance(class_path, str) or "." not in class_path:
            return class_path
        return canonical_class_path(class_path, cls if isinstance(cls, (type, tuple)) else None)

    _typehints.resolve_class_path_by_name = resolve_case_insensitively
