"""Surviving interruptions: random state in checkpoints, a checkpoint on SIGTERM, finding the last one.

A run killed at any moment (SIGKILL, a lost node) resumes from its latest epoch-end checkpoint with
``cmap fit ... --ckpt_path last``. Lightning's checkpoint holds the weights, the optimiser and the
LR schedule; :class:`RandomState` adds the random number generators, so that a resumed
single-process run draws the same batches, dropout masks and augmentations as an uninterrupted
one and ends with the same weights. A run asked to stop (SIGTERM: ``kill``, a scheduler's
pre-emption or time limit) saves ``interrupted.ckpt`` first (:class:`InterruptCheckpoint`).
:func:`last_checkpoint` is what ``--ckpt_path last`` means for the ``cmap`` command: the newest of
these files across the run's ``version_N`` folders (Lightning alone would look only in the new
run's own, empty, folder and silently start from scratch).
"""

import logging
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted.ckpt"


class RandomState(L.Callback):
    """Saves the global random number generators (torch, CUDA, NumPy, Python) in every checkpoint.

    Restored when a single-process run resumes. In a multi-process run each process has its own
    streams and only rank 0's are saved, so they are not restored (every process would then draw
    the same dropout masks); the sample order stays exact there, since Lightning's
    ``DistributedSampler`` shuffles with the seed and the epoch number.
    """

    def __init__(self) -> None:
        self.world_size = 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.world_size = trainer.world_size

    def state_dict(self) -> dict[str, Any]:
        # Tensors, tuples and ints only: checkpoints stay readable with torch.load(weights_only=True).
        kind, key, position, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(key.astype(np.int64)), position, has_gauss, gauss),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.world_size > 1:
            return
        torch.set_rng_state(state_dict["torch"])
        kind, key, position, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, key.numpy().astype(np.uint32), position, has_gauss, gauss))
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """Where the run's checkpoints go: the first ``ModelCheckpoint``'s folder, else Lightning's default."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"


class InterruptCheckpoint(L.Callback):
    """On SIGTERM during ``fit``, saves ``interrupted.ckpt`` beside the run's other checkpoints.

    Lightning turns SIGTERM into a ``SIGTERMException`` at the next batch boundary (on every
    process of a multi-process run at once), so the saved state is consistent; the ``cmap``
    command then exits with status 143 (128 + SIGTERM). ``--ckpt_path last`` resumes from this
    file when it is the newest: mid-epoch, so that epoch's remaining batches are drawn afresh
    (Lightning warns). Other exceptions save nothing: the state may be the cause.
    """

    def __init__(self) -> None:
        self.saved: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        self.saved = checkpoint_dir(trainer) / INTERRUPTED
        trainer.save_checkpoint(self.saved)
        if trainer.is_global_zero:
            log.warning(f"SIGTERM: saved {self.saved} (epoch {trainer.current_epoch}, step {trainer.global_step})")


def last_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest ``last*.ckpt`` or ``interrupted.ckpt`` of the run's checkpoint folders, or None.

    Those folders are every ``ModelCheckpoint``'s ``dirpath`` when set, and every
    ``<logger save_dir>/<name>/<version>/checkpoints`` (each run opens a new version), or
    ``<default_root_dir>/checkpoints`` when the run has no logger.
    """
    folders = {
        Path(callback.dirpath)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint) and callback.dirpath
    }
    if trainer.loggers:
        logger = trainer.loggers[0]
        root = Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "")
        folders.update(path for path in root.glob("*/checkpoints") if path.is_dir())
    else:
        folders.add(Path(trainer.default_root_dir) / "checkpoints")
    candidates = [
        path
        for folder in folders
        for path in folder.glob("*.ckpt")
        if path.name == INTERRUPTED or path.stem == "last" or path.stem.startswith("last-v")
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)
