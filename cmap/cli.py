"""The ``cmap`` command: LightningCLI with case-insensitive class paths.

``cmap fit|validate|test|predict --config run.yaml`` (or ``--model model.yaml --data data.yaml``);
``cmap map`` classifies a raster stack into a crop map (:mod:`cmap.map`).
Models and data modules are given in subclass mode (``class_path`` / ``init_args``). Class names in
``class_path`` are matched case-insensitively, so the seed's ``cmap.ml.classifiers.classifier``
means ``cmap.ml.classifiers.Classifier``.
"""

import importlib
import sys
from typing import Any

from jsonargparse import get_loader, set_loader
from lightning.pytorch.cli import LightningCLI

from cmap.ml.callbacks import AttentionMapLogger, ClassDistributionLogger, ConfusionMatrixLogger, EmbeddingProjector

PARSER_MODE = "cmap_yaml"


def canonical_class_path(class_path: str) -> str:
    """``pkg.module.classname`` -> ``pkg.module.ClassName`` when exactly one class matches.

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
    matches = [attr for attr in dir(module) if attr.lower() == name.lower() and isinstance(getattr(module, attr), type)]
    return f"{module_name}.{matches[0]}" if len(matches) == 1 else class_path


def canonicalise_class_paths(node: Any) -> Any:
    """Rewrite, in place, every ``class_path`` string of a parsed config tree."""
    if isinstance(node, dict):
        if isinstance(node.get("class_path"), str):
            node["class_path"] = canonical_class_path(node["class_path"])
        for value in node.values():
            canonicalise_class_paths(value)
    elif isinstance(node, list):
        for value in node:
            canonicalise_class_paths(value)
    return node


_yaml_loader = get_loader("yaml")
set_loader(PARSER_MODE, lambda text: canonicalise_class_paths(_yaml_loader(text)))


class CMapCLI(LightningCLI):
    """LightningCLI for any cmap task and data module, parsed with case-insensitive class paths."""

    def __init__(self, *args: Any, parser_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        parser_kwargs = {"parser_mode": PARSER_MODE, **(parser_kwargs or {})}
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        super().__init__(*args, parser_kwargs=parser_kwargs, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        # Forced callbacks: every run logs these, each configurable (`--attention_maps.every_n_epochs 5`).
        parser.add_lightning_class_args(ClassDistributionLogger, "class_distribution")
        parser.add_lightning_class_args(ConfusionMatrixLogger, "confusion_matrix")
        parser.add_lightning_class_args(AttentionMapLogger, "attention_maps")
        parser.add_lightning_class_args(EmbeddingProjector, "embeddings")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit only: when training ends, test the model as it is (the end of its LR schedule)",
        )

    def after_fit(self) -> None:
        if self.config.fit.test_after_fit:
            self.trainer.test(self.model, datamodule=self.datamodule)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``cmap`` console script; ``args`` replaces ``sys.argv[1:]``.

    ``cmap map ...`` makes a crop map from rasters (:mod:`cmap.map`); every other sub-command is
    LightningCLI's.
    """
    args = sys.argv[1:] if args is None else list(args)
    if args[:1] == ["map"]:
        from cmap.map import main as map_main

        map_main(args[1:])
        return
    CMapCLI(args=args)


if __name__ == "__main__":
    main()
