"""The ``cmap`` command: every sub-command of the package, one entry point.

``cmap fit|validate|test|predict --config run.yaml`` (or ``--model model.yaml --data data.yaml``) is
LightningCLI with case-insensitive class paths; ``cmap map`` classifies a raster stack into a crop
map (:mod:`cmap.map`), ``cmap convert`` and ``cmap extract`` write series stores
(:mod:`cmap.data.__main__`), ``cmap export`` writes a checkpoint's encoder weights
(:mod:`cmap.ml.weights`). ``cmap --help`` lists them; ``cmap COMMAND --help`` gives each one's options.
Models and data modules are given in subclass mode (``class_path`` / ``init_args``). Class names in
``class_path`` are matched case-insensitively, so the seed's ``cmap.ml.classifiers.classifier``
means ``cmap.ml.classifiers.Classifier``.
"""

import errno
import importlib
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import _typehints as jsonargparse_typehints
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cmap.ml.callbacks import (
    AttentionMapLogger,
    ClassDistributionLogger,
    ConfusionMatrixLogger,
    EmbeddingProjector,
    FinalMetrics,
)
from cmap.ml.fault_tolerance import (
    InterruptCheckpoint,
    RandomState,
    checkpoint_problem,
    last_checkpoint,
    use_atomic_checkpoints,
)
from cmap.ml.progress import LogProgress
from cmap.outputs import INPUT_ERROR_STATUS, InputError, MissingInput

PARSER_MODE = "yaml"


# Lightning calls a torch.utils._pytree API that torch deprecated: nothing a cmap user can change.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


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


def _resolve_class_path_case_insensitively(cls: Any, name: str) -> str:
    """jsonargparse's ``resolve_class_path_by_name``, then :func:`canonical_class_path` of the result.

    jsonargparse calls it only for a value given where the config declares a class type (model,
    data, callbacks, an ``init_args`` parameter typed as a class), with that type as ``cls``, and
    imports the module named by the result just after. So case-insensitive matching imports nothing
    that plain LightningCLI would not: a ``class_path`` key elsewhere (a value of a plain dict such as
    ``class_map``) is never imported.
    """
    class_path = _resolve_class_path_by_name(cls, name)
    if not isinstance(class_path, str) or "." not in class_path:
        return class_path
    return canonical_class_path(class_path, cls if isinstance(cls, (type, tuple)) else None)


_resolve_class_path_by_name = jsonargparse_typehints.resolve_class_path_by_name
jsonargparse_typehints.resolve_class_path_by_name = _resolve_class_path_case_insensitively


def namespace_dict(node: Any) -> Any:
    """A parsed config (jsonargparse Namespace) as plain dicts and lists."""
    return node.as_dict() if hasattr(node, "as_dict") else node


def replaced_keys(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted keys of config tree ``before`` set (not None) to another value in ``after``."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(before.keys() | after.keys())
        return [key for k in keys for key in replaced_keys(before.get(k), after.get(k), f"{prefix}{k}.")]
    return [] if before is None or before == after else [prefix.rstrip(".")]


class CMapCLI(LightningCLI):
    """LightningCLI for any cmap task and data module, parsed with case-insensitive class paths."""

    def __init__(self, *args: Any, parser_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        parser_kwargs = {"parser_mode": PARSER_MODE, "prog": "cmap", **(parser_kwargs or {})}
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        # The tasks configure their own optimiser and schedule (SITSTask.configure_optimizers):
        # LightningCLI's --optimizer / --lr_scheduler would do nothing, so they are not offered.
        kwargs.setdefault("auto_configure_optimizers", False)
        # Runs are reproducible by default (LightningCLI would pick a random seed and warn about it).
        kwargs.setdefault("seed_everything_default", 0)
        # A progress bar on a terminal; plain lines (LogProgress) in a log file.
        trainer_defaults = {"enable_progress_bar": sys.stdout.isatty(), **(kwargs.pop("trainer_defaults", None) or {})}
        kwargs["trainer_defaults"] = trainer_defaults
        super().__init__(*args, parser_kwargs=parser_kwargs, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        # Forced callbacks: every run logs these, each configurable (`--attention_maps.every_n_epochs 5`).
        parser.add_lightning_class_args(ClassDistributionLogger, "class_distribution")
        parser.add_lightning_class_args(ConfusionMatrixLogger, "confusion_matrix")
        parser.add_lightning_class_args(AttentionMapLogger, "attention_maps")
        parser.add_lightning_class_args(EmbeddingProjector, "embeddings")
        parser.add_lightning_class_args(FinalMetrics, "final_metrics")
        parser.add_lightning_class_args(LearningRateMonitor, "learning_rate")
        parser.add_lightning_class_args(LogProgress, "log_progress")
        # Fault tolerance (cmap.ml.fault_tolerance): exact resumption, a checkpoint on SIGTERM.
        parser.add_lightning_class_args(RandomState, "random_state")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit only: when training ends, test the model as it is (the end of its LR schedule)",
        )
        parser.add_argument(
            "--ensemble",
            type=list[str] | None,
            default=None,
            help="test, predict: more checkpoints of the same data whose class probabilities are averaged with "
            "the model's (--ckpt_path), e.g. other seeds: '[seed1.ckpt, seed2.ckpt]'",
        )
        parser.add_argument(
            "--threads",
            type=int | None,
            default=None,
            help="CPU threads of PyTorch (default: PyTorch's, one per core); set it to the free cores when "
            "other jobs share the machine (two 2-thread jobs on 2 cores ran 5-8x slower than one thread each)",
        )

    def parse_arguments(self, parser: Any, args: Any) -> None:
        # LightningCLI warns when ``args`` and sys.argv are both given; cmap's own entry point passes
        # sys.argv[1:] itself (after choosing the sub-command), which is not the mistake it warns about.
        self.config = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        threads = self.config[self.subcommand].get("threads") if self.subcommand else None
        if threads:
            torch.set_num_threads(threads)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI rebuilds the model from the hyper-parameters of a --ckpt_path file, whatever
        # the config says; name the settings it replaces, so another architecture is no surprise.
        subcommand = self.config.get("subcommand")
        before = self.config[subcommand].get("model") if subcommand else None
        before = before.clone() if hasattr(before, "clone") else before
        try:
            super()._parse_ckpt_path()
        except Exception as error:  # torch raises several types for truncated or foreign files
            message = " ".join(str(error).split())
            raise InputError(f"{self.config[subcommand].ckpt_path}: not a readable checkpoint ({message})") from error
        if before is None:
            return
        after = self.config[subcommand].get("model")
        replaced = replaced_keys(namespace_dict(before), namespace_dict(after))
        if replaced:
            shown = ", ".join(f"model.{key}" for key in replaced[:8])
            more = f" and {len(replaced) - 8} more" if len(replaced) > 8 else ""
            warnings.warn(
                f"{self.config[subcommand].ckpt_path}: the model is built from the checkpoint's hyper-parameters, "
                f"which replace the configured {shown}{more}",
                stacklevel=1,
            )

    def _resolve_last_checkpoint(self) -> None:
        """``--ckpt_path last``: the newest readable checkpoint of this run's earlier versions.

        Left as ``last`` when there is none: Lightning then warns and starts from scratch, so a job
        script can always pass it. A local ``--ckpt_path FILE`` that is missing or damaged is an
        :class:`InputError` naming it (one line from the ``cmap`` command), before any work.
        """
        config = self.config_init[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            path = last_checkpoint(self.trainer)
            if path is not None:
                config["ckpt_path"] = str(path)
        elif ckpt_path not in (None, "best", "hpc", "registry") and "://" not in str(ckpt_path):
            if not Path(ckpt_path).is_file():
                raise MissingInput(f"{ckpt_path}: no such checkpoint (--ckpt_path)")
            problem = checkpoint_problem(Path(ckpt_path))
            if problem is not None:
                raise InputError(f"{ckpt_path}: not a readable checkpoint ({problem})")

    before_fit = before_validate = _resolve_last_checkpoint

    def _before_evaluation(self) -> None:
        self._resolve_last_checkpoint()
        members = self.config_init[self.subcommand].get("ensemble")
        if members:
            from cmap.predictions import load_classifier

            self.model.ensemble_with([load_classifier(path) for path in members], members)

    before_test = before_predict = _before_evaluation

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)  # a checkpoint on disk is complete, even when the disk fills up
        for logger in trainer.loggers:
            # FinalMetrics writes the real hp_metric; Lightning's placeholder (-1, logged again at
            # every stage's start, after the final value) would hide it in the hparams tab.
            if isinstance(logger, TensorBoardLogger):
                logger._default_hp_metric = False
        return trainer

    def after_fit(self) -> None:
        metrics = dict(self.trainer.callback_metrics)  # the validation's, before a test replaces them
        if self.config.fit.test_after_fit:
            self.trainer.test(self.model, datamodule=self.datamodule)
            metrics |= self.trainer.callback_metrics
        run = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # every process: log_dir broadcasts
        if self.trainer.is_global_zero:
            from cmap.ml.classifiers import Classifier

            classifier = isinstance(self.model, Classifier)
            print(run_summary(run, metrics, self.config.fit.get("config"), classifier), flush=True)


def run_summary(run: Path, metrics: dict[str, Any], configs: Any, classifier: bool = True) -> str:
    """What a fit in ``run`` leaves and what next: metrics, run folder, checkpoints, TensorBoard, next commands.

    ``classifier``: the run trained a classifier (accuracy and macro F1; next: test it, map); else a
    pretraining task (its loss; next: fine-tune a classifier from its encoder, ``init_encoder_from``).
    """
    names = ("overall_accuracy", "macro_f1") if classifier else ("loss",)
    shown = [
        f"{name} {float(metrics[name]):.4f}"
        for stage in ("val", "test")
        for name in (f"{stage}/{metric}" for metric in names)
        if name in metrics
    ]
    found = sorted((run / "checkpoints").glob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    checkpoint = next((path for path in found if path.name == "last.ckpt"), found[-1] if found else None)
    config = f"--config {configs[0]}" if configs else "<your --config / --model --data>"
    lines = [
        "",
        "cmap fit finished: " + ("  ".join(shown) or "no metrics logged"),
        f"  run folder   {run}",
        f"  checkpoints  {', '.join(path.name for path in found) or 'none'}",
        f"  TensorBoard  tensorboard --logdir {run.parent}",
    ]
    if checkpoint is not None and classifier:
        lines += [
            f"  next         cmap test {config} --ckpt_path {checkpoint}",
            f"               cmap map --checkpoint {checkpoint} --rasters FOLDER --output map.tif   (a crop map)",
        ]
    elif checkpoint is not None:  # pretraining: its encoder starts a classifier of the same encoder
        lines += [
            "  next         cmap fit --config <a Classifier config with this encoder> --test_after_fit true "
            f"--model.init_args.init_encoder_from {checkpoint}   (fine-tune)",
        ]
    return "\n".join(lines)


def _map(args: list[str]) -> None:
    from cmap.map import main as map_main

    map_main(args, prog="cmap map")


def _data(command: str) -> Any:
    def run(args: list[str]) -> None:
        from cmap.data.__main__ import main as data_main

        data_main([command, *args], prog="cmap")

    return run


def _area(args: list[str]) -> None:
    from cmap.area import main as area_main

    area_main(args, prog="cmap area")


def _export(args: list[str]) -> None:
    from cmap.ml.weights import main as export_main

    export_main(args, prog="cmap export")


#: Sub-commands besides LightningCLI's, each with its entry point (imported when used).
COMMANDS = {
    "map": _map, "area": _area, "convert": _data("convert"), "extract": _data("extract"), "export": _export,
}  # fmt: skip

USAGE = """usage: cmap COMMAND [options]    (cmap COMMAND --help for a command's options)

Crop-type maps from satellite image time series.

commands:
  fit        train a model (LightningCLI: --config run.yaml, or --model/--data YAML files)
  validate   evaluate a model on the validation split
  test       evaluate a model on the test split (--ckpt_path a checkpoint)
  predict    predict the test split (with cmap.predictions.PredictionWriter: a table)
  map        classify rasters (a folder, STAC items, Sentinel-2 products) into a crop map GeoTIFF
  area       accuracy and error-adjusted class areas of a crop map, from reference points
  convert    convert a dataset's original files, or your own table, to a series store
  extract    a store of the pixel series of rasters under labelled points or polygons
  export     write a checkpoint's encoder weights, to fine-tune from them
"""


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``cmap`` console script; ``args`` replaces ``sys.argv[1:]``."""
    args = sys.argv[1:] if args is None else list(args)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        if not args:
            sys.exit(2)
        return
    try:
        if args[0] in COMMANDS:
            COMMANDS[args[0]](args[1:])
            return
        CMapCLI(args=args)
    except SIGTERMException:
        # Stopped by SIGTERM (its checkpoint is saved): not a success for the calling script.
        sys.exit(128 + signal.SIGTERM)
    except InputError as error:
        # A bad input or argument: its one-line message (file, date, band, expected value), no traceback.
        print(f"cmap {args[0]}: error: {input_error_message(error)}", file=sys.stderr)
        sys.exit(INPUT_ERROR_STATUS)
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        # A full disk, a quota, a read-only or forbidden folder: the writers published nothing half-written.
        print(f"cmap {args[0]}: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(INPUT_ERROR_STATUS)


#: Write failures the cmap command reports in one line (the writers of cmap.outputs leave nothing
#: half-written under an output name): full disk, file too large, quota, read-only, forbidden, I/O error.
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO}


def input_error_message(error: InputError) -> str:
    """The error's message on one line (a DataLoader worker's re-raised error carries its traceback: its last line)."""
    text = str(error).strip()
    if text.startswith("Caught ") and "DataLoader worker" in text:
        # "Caught InputError in DataLoader worker ...", then tracebacks; the error itself is the last line
        # that is not indented: "cmap.outputs.InputError: <message>".
        last = [line for line in text.splitlines() if line and not line.startswith(" ")][-1]
        text = last.split(": ", 1)[-1]
    return " ".join(text.split())


if __name__ == "__main__":
    main()
