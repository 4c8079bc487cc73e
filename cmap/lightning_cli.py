"""``cmap fit|validate|test|predict``: LightningCLI for cmap's tasks and data modules.

``cmap fit --config run.yaml`` (or ``--model model.yaml --data data.yaml``). Models and data modules are
given in subclass mode (``class_path`` / ``init_args``); class names in ``class_path`` are matched
case-insensitively (:func:`cmap.runtime.canonical_class_path`), so the seed's
``cmap.ml.classifiers.classifier`` means ``cmap.ml.classifiers.Classifier``. Importing this module
imports Lightning and torch: :mod:`cmap.cli` imports it only for these sub-commands.
"""

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from cmap.ml.base import hand_over_checkpoint, read_run_checkpoint
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
from cmap.outputs import InputError, MissingInput
from cmap.runtime import install

PARSER_MODE = "yaml"


def input_error_cause(error: BaseException) -> InputError | None:
    """The first :class:`InputError` among ``error``'s causes (``raise ... from``), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


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
        install()  # case-insensitive class paths, bounded YAML: for CMapCLI used from Python as well
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

    def instantiate_classes(self) -> None:
        # jsonargparse builds the model and data module inside its type checks, which turn any error of
        # their __init__ into "Does not validate against any of the Union subtypes ...": an input
        # error of cmap's (a store that is not one, a missing file) is raised as itself, in one line.
        try:
            super().instantiate_classes()
        except ValueError as error:
            cause = input_error_cause(error)
            if cause is None:
                raise
            raise cause from error

    def before_instantiate_classes(self) -> None:
        threads = self.config[self.subcommand].get("threads") if self.subcommand else None
        if threads:
            torch.set_num_threads(threads)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI rebuilds the model from the hyper-parameters of a --ckpt_path file, whatever
        # the config says; name the settings it replaces, so another architecture is no surprise.
        # A private method of LightningCLI (2.6), overridden: __init__ calls it right after parse_arguments
        # to read the file; no public hook replaces that read (doing it in parse_arguments would read twice).
        subcommand = self.config.get("subcommand")
        before = self.config[subcommand].get("model") if subcommand else None
        before = before.clone() if hasattr(before, "clone") else before
        self._read_ckpt_path()  # the checkpoint read once: its hyper-parameters, contract and weights
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

    def _read_ckpt_path(self) -> None:
        """Read a local ``--ckpt_path`` file once (:func:`~cmap.ml.base.read_run_checkpoint`) and rebuild the
        model from its hyper-parameters, as LightningCLI does; the run gets the same checkpoint before it
        starts (:meth:`_hand_over_checkpoint`)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self.checkpoint_read = (path, read_run_checkpoint(path)) if path and Path(path).is_file() else None
        hparams = dict(self.checkpoint_read[1].get("hyper_parameters", {})) if self.checkpoint_read else {}
        hparams.pop("_instantiator", None)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _hand_over_checkpoint(self) -> None:
        """The checkpoint of ``--ckpt_path`` (read once) to the model, data module and trainer before the run."""
        path = self.config_init[self.subcommand].get("ckpt_path")
        if path is None or "://" in str(path) or not Path(path).is_file():
            return
        if getattr(self, "checkpoint_read", None) is None or self.checkpoint_read[0] != path:  # e.g. `last` resolved
            self.checkpoint_read = (path, read_run_checkpoint(path))
        hand_over_checkpoint(self.trainer, self.model, self.datamodule, path, self.checkpoint_read[1])
        self.checkpoint_read = None  # the trainer holds it until its restore

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
            read = getattr(self, "checkpoint_read", None)  # read and checked already (_read_ckpt_path)
            problem = None if read is not None and read[0] == ckpt_path else checkpoint_problem(Path(ckpt_path))
            if problem is not None:
                raise InputError(f"{ckpt_path}: not a readable checkpoint ({problem})")

    def _before_run(self) -> None:
        self._resolve_last_checkpoint()
        self._hand_over_checkpoint()

    before_fit = before_validate = _before_run

    def _before_evaluation(self) -> None:
        self._before_run()
        members = self.config_init[self.subcommand].get("ensemble")
        if members:
            from cmap.predictions import load_classifier

            self.model.ensemble_with([load_classifier(path) for path in members], members)

    before_test = before_predict = _before_evaluation

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)  # a checkpoint on disk is complete, even when the disk fills up
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        configured = kwargs.get("logger", (config.get("trainer") or {}).get("logger"))
        if configured in (None, True) and [type(logger) for logger in trainer.loggers] == [TensorBoardLogger]:
            # FinalMetrics writes the real hp_metric; the placeholder of Lightning's default logger (-1,
            # logged again at every stage's start, after the final value) would hide it in the hparams
            # tab. The same logger as Lightning's default (logger_connector.configure_logger), without it.
            trainer.loggers = [
                TensorBoardLogger(
                    save_dir=trainer.default_root_dir, version=SLURMEnvironment.job_id(), default_hp_metric=False
                )
            ]
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
    # The run's own configuration (LightningCLI's SaveConfigCallback writes it into the run folder):
    # every --config, --model and --data of the fit merged, so `cmap test` gets the same data.
    saved = run / "config.yaml"
    if saved.is_file():
        config = f"--config {saved}"
    else:
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
