"""The ``cmap`` command: every sub-command of the package, one entry point.

``cmap fit|validate|test|predict`` is LightningCLI (:mod:`cmap.lightning_cli`); ``cmap map`` classifies
a raster stack into a crop map, ``cmap area`` reports areas, ``cmap convert`` and ``cmap extract`` write
series stores (:mod:`cmap.data.__main__`), ``cmap export`` writes a checkpoint's encoder weights
(:mod:`cmap.ml.weights`). ``cmap --help`` lists them; ``cmap COMMAND --help`` gives each one's options.

This module imports nothing heavy: :func:`main` chooses the sub-command first and imports only what
it needs (``cmap --help`` imports neither torch nor Lightning), then installs cmap's process-wide
settings (:func:`cmap.runtime.install`). A bad input ends in one line naming it; ``--debug`` (or
``CMAP_DEBUG=1``) shows the full traceback instead.
"""

import errno
import os
import signal
import sys
from typing import Any

from cmap.outputs import INPUT_ERROR_STATUS, InputError


def _map(args: list[str]) -> None:
    from cmap.mapping.command import main as map_main

    map_main(args, prog="cmap map")


def _data(command: str) -> Any:
    def run(args: list[str]) -> None:
        from cmap.data.__main__ import main as data_main

        data_main([command, *args], prog="cmap")

    return run


def _area(args: list[str]) -> None:
    from cmap.area import main as area_main

    area_main(args, prog="cmap area")


def _lightning(args: list[str]) -> None:
    from cmap.lightning_cli import CMapCLI

    CMapCLI(args=args)


def _leave_process_group() -> None:
    """Destroy the process group a multi-process run (``fit`` or ``map`` with DDP) left open, as PyTorch
    asks before exit.

    Lightning leaves it to the script; left to the interpreter's exit, gloo's worker threads can be
    destroyed while still joinable: a process aborted ("terminate called without an active exception",
    status -6) after a successful fit and test (pytorch/pytorch#190489).
    """
    distributed = sys.modules.get("torch.distributed")  # imported only when Lightning ran
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def _labelling(command: str) -> Any:
    def run(args: list[str]) -> None:
        import importlib

        importlib.import_module(f"cmap.labelling.{command}").main(args, prog=f"cmap {command}")

    return run


def _export(args: list[str]) -> None:
    from cmap.ml.weights import main as export_main

    export_main(args, prog="cmap export")


#: Sub-commands besides LightningCLI's, each with its entry point (imported when used).
COMMANDS = {
    "map": _map, "area": _area, "convert": _data("convert"), "extract": _data("extract"), "export": _export,
    "cv": _labelling("cv"), "audit": _labelling("audit"), "suggest": _labelling("suggest"),
}  # fmt: skip

#: Commands that parse with argparse and import neither jsonargparse nor Lightning: cmap.runtime's
#: settings (a YAML loader and class paths for jsonargparse, Lightning's warnings) would only slow their start.
PLAIN_ARGPARSE_COMMANDS = {"convert", "extract"}

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
  cv         k-fold cross-validation of a config on a store: report, out-of-fold probabilities
  audit      the doubtful labels of a store (confident learning), ranked, and a cleaned store
  suggest    the series to label next, from a trained model: uncertain and diverse

options:
  --debug    before COMMAND (or CMAP_DEBUG=1): show the full traceback of an error, not one line
             (an option's usage error: JSONARGPARSE_DEBUG=true, jsonargparse's own switch)
"""

#: The environment variable of ``--debug``: set (and not 0), errors keep their tracebacks.
DEBUG_VARIABLE = "CMAP_DEBUG"


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``cmap`` console script; ``args`` replaces ``sys.argv[1:]``."""
    args = sys.argv[1:] if args is None else list(args)
    debug = os.environ.get(DEBUG_VARIABLE, "0") not in ("", "0")
    if args[:1] == ["--debug"]:
        args, debug = args[1:], True
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        if not args:
            sys.exit(2)
        return
    if args[0] not in PLAIN_ARGPARSE_COMMANDS:
        from cmap.runtime import install

        install()
    try:
        if args[0] in COMMANDS:
            COMMANDS[args[0]](args[1:])
        else:  # fit, validate, test, predict; LightningCLI reports any other word
            _lightning(args)
        _leave_process_group()  # after a success only: on one rank's error, the others may wait in a collective
    except SystemExit as stop:
        if not stopped_by_sigterm(stop):
            raise
        # Stopped by SIGTERM (its checkpoint is saved): not a success for the calling script.
        sys.exit(128 + signal.SIGTERM)
    except InputError as error:
        if debug:
            raise
        # A bad input or argument: its one-line message (file, date, band, expected value), no traceback.
        print(f"cmap {args[0]}: error: {input_error_message(error)}", file=sys.stderr)
        sys.exit(INPUT_ERROR_STATUS)
    except OSError as error:
        if error.errno not in WRITE_ERRNOS or debug:
            raise
        # A full disk, a quota, a read-only or forbidden folder: the writers published nothing half-written.
        print(f"cmap {args[0]}: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(INPUT_ERROR_STATUS)


def stopped_by_sigterm(stop: SystemExit) -> bool:
    """Lightning's loops stopped by SIGTERM (a SystemExit of status None, i.e. 0, without this check)."""
    exceptions = sys.modules.get("lightning.pytorch.utilities.exceptions")  # imported when Lightning ran
    return exceptions is not None and isinstance(stop, exceptions.SIGTERMException)


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
