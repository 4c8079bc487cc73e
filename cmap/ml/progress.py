"""Progress for logs: plain lines instead of a progress bar when the output is not a terminal.

A progress bar redraws itself many times a second; written to a file (a batch job's log, ``cmap
fit ... > run.log``) it leaves thousands of carriage-return lines. The ``cmap`` command shows
Lightning's bar on a terminal and, elsewhere, turns it off and adds :class:`LogProgress`: one line
at the end of each validation, and one every ``every_n_seconds`` of training in between.
"""

import sys
import time

import lightning as L


def _format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


class LogProgress(L.Callback):
    """Plain progress lines (epoch, step, loss and accuracy, elapsed time) on standard output.

    Silent when the run has a progress bar, so it can be added to every run.

    Args:
        every_n_seconds: at most one line per this many seconds during training; a line at the end of
            every validation in any case.
    """

    def __init__(self, every_n_seconds: float = 30.0) -> None:
        self.every_n_seconds = every_n_seconds
        self._start = self._last = 0.0

    def _active(self, trainer: L.Trainer) -> bool:
        return trainer.progress_bar_callback is None and trainer.is_global_zero and not trainer.sanity_checking

    def _line(self, trainer: L.Trainer, what: str) -> None:
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.count("/") == 1 and name.split("/")[1] in ("loss", "overall_accuracy") and value.numel() == 1
        }
        shown = "  ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items()))
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        steps = f"/{int(trainer.estimated_stepping_batches)}" if trainer.max_steps < 0 and trainer.max_epochs else ""
        print(
            f"{what}: epoch {trainer.current_epoch + 1}{epochs}  step {trainer.global_step}{steps}  {shown}  "
            f"elapsed {_format_seconds(time.monotonic() - self._start)}",
            file=sys.stdout,
            flush=True,
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._active(trainer) and time.monotonic() - self._last >= self.every_n_seconds:
            self._last = time.monotonic()
            self._line(trainer, "training")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active(trainer) and trainer.state.fn == "fit":
            self._last = time.monotonic()
            self._line(trainer, "validated")
