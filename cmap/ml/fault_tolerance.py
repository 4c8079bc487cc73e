"""Surviving interruptions: random state in checkpoints, a checkpoint on SIGTERM, finding the last one.

A run killed at any moment (SIGKILL, a lost node) resumes from its latest checkpoint with
``cmap fit ... --ckpt_path last``: :class:`LastCheckpoint` (in every config of ``configs/``) writes
``last.ckpt`` at every epoch's end, within long epochs every ``every_n_train_steps`` steps, and
when training ends. Lightning's checkpoint holds the weights, the optimiser and the
LR schedule; :class:`RandomState` adds the random number generators, so that a resumed
single-process run draws the same batches, dropout masks and augmentations as an uninterrupted
one and ends with the same weights. A run asked to stop (SIGTERM: ``kill``, a scheduler's
pre-emption or time limit) saves ``interrupted.ckpt`` first (:class:`InterruptCheckpoint`).
:func:`last_checkpoint` is what ``--ckpt_path last`` means for the ``cmap`` command: the newest
readable checkpoint across the run's ``version_N`` folders (Lightning alone would look only in the
new run's own, empty, folder and silently start from scratch), skipping damaged files with a
warning. :class:`AtomicCheckpointIO` writes every checkpoint atomically on its own file system, so
a full disk never leaves a truncated one.
"""

import io
import logging
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cmap.ml.weights import read_checkpoint
from cmap.outputs import write_bytes_atomically

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

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        finish_epoch_end(checkpoint)  # before Lightning restores its loops from it

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


def finish_epoch_end(checkpoint: dict[str, Any]) -> None:
    """Mark a checkpoint saved at an epoch's end (``on_train_epoch_end``) as the start of the next epoch.

    Lightning (2.6) restores such a checkpoint correctly when training is bounded by epochs only; with
    ``max_steps`` set it treats the run as restarting inside the finished epoch, which it then "runs"
    again with no batches left, and the next real epoch starts one epoch late, with other batches
    (Lightning-AI/pytorch-lightning#19617 is the same family). Here the loop progress is rewritten
    as the epoch's end completed and the next epoch's counters at zero, which is what Lightning's
    own reset makes of it without ``max_steps``. Checkpoints saved elsewhere (within an epoch, at
    validation end) are left alone.
    """
    loop = checkpoint.get("loops", {}).get("fit_loop")
    if not loop or "epoch_progress" not in loop:
        return
    total, current = loop["epoch_progress"]["total"], loop["epoch_progress"]["current"]
    if not (total["ready"] == total["started"] == total["processed"] == total["completed"] + 1):
        return
    total["completed"], current["completed"] = total["processed"], current["processed"]
    for key, progress in loop.items():
        if not key.startswith("epoch_loop.") or not isinstance(progress, dict):
            continue
        for counters in _current_counters(progress):
            counters.update(dict.fromkeys(counters, 0))
        if "is_last_batch" in progress:
            progress["is_last_batch"] = False


def _current_counters(progress: dict[str, Any]):
    """The ``current`` counter dicts of a Lightning progress state (nested for optimizers)."""
    for key, value in progress.items():
        if key == "current" and isinstance(value, dict):
            yield value
        elif isinstance(value, dict):
            yield from _current_counters(value)


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """Where the run's checkpoints go: the first ``ModelCheckpoint``'s folder, else Lightning's default."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the run's state at every epoch's end, within long epochs, and when training ends.

    Lightning's ``ModelCheckpoint(save_last=True, save_top_k=0)`` writes ``last.ckpt`` only when
    training ends (2.6: ``save_last`` copies checkpoints that top-k saving writes, and
    ``save_top_k=0`` writes none), so a killed run left nothing to resume from. This is a
    ``ModelCheckpoint`` without a monitor that keeps one file named ``last.ckpt`` (Lightning's
    ``filename="last"``, ``save_top_k=1``, no version counter: every save replaces it, atomically
    with :class:`AtomicCheckpointIO`), saved:

    - at every epoch's end (``on_train_epoch_end``: after the epoch's validation, and also in epochs
      without one, ``check_val_every_n_epoch``), which a resumed single-process run continues to
      the same weights as an uninterrupted one (see :func:`finish_epoch_end`);
    - within an epoch, once ``every_n_train_steps`` optimizer steps have passed since the last
      save (0: never), for epochs too long to lose: resuming from such a checkpoint continues at
      its step, but Lightning draws that epoch's remaining batches afresh, so the end is not
      bit-identical;
    - when training ends (``max_steps`` can end it within an epoch), so that a finished run can
      be tested, mapped or extended from its final state.

    Args:
        every_n_train_steps: optimizer steps after which a save is due within an epoch (0: off).
        dirpath: the folder (default: the run's ``checkpoints`` folder, as ``ModelCheckpoint``).
    """

    def __init__(self, every_n_train_steps: int = 1000, dirpath: str | None = None) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True
        )
        self.step_interval = every_n_train_steps
        self.saved_step = -1

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_train_steps=self.step_interval, last=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.saved_step = trainer.global_step  # a resumed run counts from its checkpoint

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.saved_step = trainer.global_step  # any checkpoint of the run (its state is the same)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if self.step_interval and trainer.global_step - self.saved_step >= self.step_interval:
            self.save_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:  # as ModelCheckpoint: a smoke test saves nothing (and has no dirpath)
            return
        if trainer.global_step != self.saved_step or not self.file_exists(self.last_path(), trainer):
            self.save_now(trainer)

    def last_path(self) -> str:
        return self.format_checkpoint_name({})

    def save_now(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run:
            return
        trainer.save_checkpoint(self.last_path())
        self.best_model_path = self.last_path()


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, atomic on the checkpoint's own file system.

    Lightning (2.6) writes a local checkpoint to a temporary file in the system's temporary folder and
    moves it into place; across file systems the move is a copy, and a full disk leaves a truncated
    checkpoint under the final name. Here the file is written beside its final name, flushed,
    ``fsync``-ed and read back before the rename (:func:`cmap.outputs.write_bytes_atomically`): a
    checkpoint on disk is complete, and a failed save leaves the previous one untouched. Remote paths
    (``s3://...``) keep Lightning's writer. The ``cmap`` command installs it (:func:`use_atomic_checkpoints`).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_bytes_atomically(path, buffer.getbuffer())


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Make ``trainer`` save checkpoints with :class:`AtomicCheckpointIO` (unless another writer was configured)."""
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    elif getattr(current, "_checkpoint_io", "absent") is None:  # a wrapper (AsyncCheckpointIO) of the default
        current.checkpoint_io = AtomicCheckpointIO()


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint, or None.

    A PyTorch checkpoint is a zip archive: every member's CRC is checked (a truncated or damaged file
    fails), then it is loaded weights-only, as Lightning loads it (a pickle that would run code, or
    hold objects other than tensors and plain values, fails without running anything).
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"member {bad} is damaged"
        read_checkpoint(path)
    except (OSError, ValueError, zipfile.BadZipFile, RuntimeError, EOFError) as error:
        return " ".join(str(error).split())
    return "not a zip archive" if not path.is_file() else None


def last_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest readable checkpoint of the run's checkpoint folders, or None.

    Those folders are every ``ModelCheckpoint``'s ``dirpath`` when set, and every
    ``<logger save_dir>/<name>/<version>/checkpoints`` (each run opens a new version), or
    ``<default_root_dir>/checkpoints`` when the run has no logger. Newest by modification time; at
    equal times ``last*.ckpt`` and ``interrupted.ckpt`` come first. An unreadable file (truncated
    by a full disk, damaged) is skipped with a warning naming it.
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

    def preferred(path: Path) -> bool:
        return path.name == INTERRUPTED or path.stem == "last" or path.stem.startswith("last-v")

    candidates = sorted(
        (path for folder in folders for path in folder.glob("*.ckpt") if path.is_file()),
        key=lambda path: (path.stat().st_mtime, preferred(path)),
        reverse=True,
    )
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        message = f"{path}: skipped by --ckpt_path last, not a readable checkpoint ({problem})"
        log.warning(message)
        warnings.warn(message, stacklevel=2)
    return None
