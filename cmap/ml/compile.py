"""``torch.compile`` for any cmap run, from a config (LightningCLI cannot wrap the model itself)."""

from typing import Any

import lightning as L
import torch


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

    While the run lasts, PyTorch's fused transformer inference kernel (``torch.backends.mha`` fast
    path, a global switch, restored at teardown) is off: to Inductor it is one opaque op, around
    which it could not fuse biases, activations and attention (``benchmarks/inference.py`` measured
    compiled prediction slower than eager with it on, faster with it off).

    On a GPU, ``mode: reduce-overhead`` also records the compiled steps as CUDA graphs (one launch
    replays the hundreds of kernels of a small model's step: the host's per-kernel work was the
    bound); a new step is marked at every batch (``torch.compiler.cudagraph_mark_step_begin``), so
    the previous step's outputs may be overwritten. Steps must not wait for the device (no ``.item()``
    in the model: cmap's encoders and losses have none) and shapes should repeat (training drops the
    last partial batch; each other size records its own graph).

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
        self._fast_path = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        options: dict[str, Any] | None = None
        if stage == "predict" and self.freeze_for_predict and self.mode is None and self.backend == "inductor":
            options = {"freezing": True}
        pl_module.compile(backend=self.backend, mode=self.mode, dynamic=self.dynamic, options=options)
        self._fast_path = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def _mark_step(self) -> None:
        if self.mode in ("reduce-overhead", "max-autotune"):  # the modes that use CUDA graphs
            torch.compiler.cudagraph_mark_step_begin()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._mark_step()

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._mark_step()

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._mark_step()

    def on_predict_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._mark_step()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        torch.backends.mha.set_fastpath_enabled(self._fast_path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        torch.backends.mha.set_fastpath_enabled(self._fast_path)
