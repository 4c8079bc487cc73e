"""``torch.compile`` for any cmap run, from a config (LightningCLI cannot wrap the model itself)."""

from typing import Any

import lightning as L


class CompileModel(L.Callback):
    """Compile the task with ``torch.compile`` before it runs (fit, validate, test, predict, ``cmap map``).

    ::

        trainer:
          callbacks:
            - class_path: cmap.ml.compile.CompileModel

    The module is compiled in place (``nn.Module.compile``): parameter names, checkpoints and
    hyper-parameters are those of the plain model, so checkpoints load with or without it. Compilation
    happens at the first batch (seconds to a minute on a CPU), and once more at the first batch of
    another size, which is then compiled with a dynamic batch size. Steps call the module itself
    (``self(...)``), which is what runs compiled.

    Args:
        backend, mode, dynamic: as ``torch.compile`` (``mode`` excludes ``freeze_for_predict``).
        freeze_for_predict: when predicting, let Inductor fold the weights into the graph as constants
            (its ``freezing`` option; on CPUs, weights prepacked for oneDNN). Predict only: the weights
            must not change after compilation.
    """

    def __init__(
        self,
        backend: str = "inductor",
        mode: str | None = None,
        dynamic: bool | None = None,
        freeze_for_predict: bool = True,
    ) -> None:
        self.backend, self.mode, self.dynamic = backend, mode, dynamic
        self.freeze_for_predict = freeze_for_predict

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        options: dict[str, Any] | None = None
        if stage == "predict" and self.freeze_for_predict and self.mode is None and self.backend == "inductor":
            options = {"freezing": True}
        pl_module.compile(backend=self.backend, mode=self.mode, dynamic=self.dynamic, options=options)
