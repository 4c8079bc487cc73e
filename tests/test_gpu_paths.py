"""What makes GPU steps fast, checked on the CPU: training steps that never read device values back on
the host, metric updates in bulk, fused AdamW on CUDA only, batch scaling with the learning rate
following, compiled models without graph breaks."""

import types

import pytest
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCohenKappa, MulticlassF1Score
from torchmetrics.wrappers import ClasswiseWrapper

from cmap.data import SyntheticSITS
from cmap.ml.base import fused_adamw_applies
from cmap.ml.budget import ScaleBatch, scaled_learning_rate
from cmap.ml.classifiers import Classifier
from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.encoders import TempCNNEncoder
from cmap.ml.metrics import DeferredMetrics
from cmap.ml.tempcnn import FlattenClassification, MaskedBatchNorm1d

from .conftest import CLASSES, quiet_trainer, tiny_classifier

DATES = 8


def tempcnn_classifier(num_bands: int = 4) -> Classifier:
    encoder = TempCNNEncoder(
        n_layers=2, kernel_size=3, position_encoder=PositionalEncoding(16, 1000, 1000),
        bands_encoder=PixelEncoding([num_bands, 16]), d_model=16,
    )  # fmt: skip
    return Classifier(encoder, FlattenClassification(DATES, len(CLASSES), hidden=8), class_names=CLASSES)


def batch(size: int = 6, device: str = "cpu", days_high: int = 300) -> dict[str, torch.Tensor]:
    mask = torch.rand(size, DATES) > 0.3
    mask[:, 0] = True
    return {
        "values": torch.randn(size, DATES, 4, device=device),
        "days": torch.sort(torch.randint(0, days_high, (size, DATES)), dim=1).values.to(device),
        "mask": mask.to(device),
        "label": torch.randint(0, len(CLASSES), (size,), device=device),
    }


@pytest.mark.parametrize("model", [tempcnn_classifier, lambda: tiny_classifier(len(CLASSES), class_names=CLASSES)])
def test_a_training_step_never_reads_device_values_on_the_host(model):
    # Meta tensors have no values: .item(), a boolean selection, bincount or one_hot's range check
    # raise there. A step that runs on them queues work without waiting for a GPU.
    classifier = model().to("meta").train()
    classifier.train_metrics.to("meta")
    for _ in range(3):
        item = batch(device="meta")
        logits = classifier(item["values"], item["days"], item["mask"])
        loss = classifier.criterion(logits, item["label"])
        classifier.train_metrics.update(logits, item["label"])
        loss.backward()
    # The same step with per-batch metric updates (torchmetrics' own) does read values: the check bites.
    classifier.train_metrics.flush_every = 1
    with pytest.raises((RuntimeError, NotImplementedError)):
        classifier.train_metrics.update(logits, item["label"])


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_by_sums_matches_the_boolean_selection(momentum):
    # The GPU path (sums) against the CPU path (selection + fused kernel: the former implementation).
    by_sums, by_selection = MaskedBatchNorm1d(5, momentum=momentum), MaskedBatchNorm1d(5, momentum=momentum)
    with torch.no_grad():
        by_sums.weight.uniform_(0.5, 2), by_sums.bias.uniform_(-1, 1)
    by_selection.load_state_dict(by_sums.state_dict())
    few_valid = torch.zeros(3, 6, dtype=torch.bool)
    few_valid[1, 2] = True  # one valid date: the running statistics normalise it
    masks = [torch.rand(3, 6) > 0.4, few_valid, torch.rand(3, 6) > 0.2]
    for mask in masks:
        features = torch.randn(3, 6, 5) * 3 + 1
        outputs, inputs = [], []
        for norm, method in ((by_sums, "normalise_by_sums"), (by_selection, "normalise_selection")):
            inputs.append(features.clone().requires_grad_())
            outputs.append(getattr(norm, method)(inputs[-1], mask))
            (outputs[-1] * torch.arange(5.0)).sum().backward()
        torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
        assert outputs[0][~mask].abs().max() == 0
        torch.testing.assert_close(inputs[0].grad, inputs[1].grad, atol=1e-4, rtol=1e-4)
        for name in ("weight", "bias"):
            torch.testing.assert_close(
                getattr(by_sums, name).grad, getattr(by_selection, name).grad, atol=1e-4, rtol=1e-4
            )
        by_sums.zero_grad(), by_selection.zero_grad()
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(by_sums, name), getattr(by_selection, name))
    by_sums.eval(), by_selection.eval()
    features, mask = torch.randn(2, 6, 5), masks[0][:2]
    torch.testing.assert_close(by_sums.normalise_by_sums(features, mask), by_selection(features, mask))


def test_deferred_metrics_give_the_results_of_per_batch_updates():
    def collection(kind):
        return kind(
            {
                "overall_accuracy": MulticlassAccuracy(4, average="micro"),
                "macro_f1": MulticlassF1Score(4, average="macro"),
                "kappa": MulticlassCohenKappa(4),
                "f1": ClasswiseWrapper(MulticlassF1Score(4, average=None), list("abcd"), prefix="f1/"),
            },
            compute_groups=False,
        )

    deferred, plain = collection(lambda *a, **k: DeferredMetrics(*a, flush_every=3, **k)), collection(MetricCollection)
    for _epoch in range(2):
        for _ in range(7):
            logits, target = torch.randn(10, 4), torch.randint(0, 4, (10,))
            deferred.update(logits, target)
            plain.update(logits, target)
        assert len(deferred._pending) == 1  # 7 batches: flushed after the 3rd and the 6th
        results, expected = deferred.compute(), plain.compute()
        assert results.keys() == expected.keys() and len(results) == 3 + 4
        for key in expected:
            torch.testing.assert_close(results[key], expected[key])
        deferred.reset(), plain.reset()
        assert deferred._pending == []
    with pytest.raises(ValueError, match="flush_every"):
        DeferredMetrics({"a": MulticlassAccuracy(4)}, flush_every=0)


def test_fused_adamw_on_cuda_parameters_only():
    cuda_parameter = types.SimpleNamespace(device=torch.device("cuda"), is_floating_point=lambda: True)
    cuda_integer = types.SimpleNamespace(device=torch.device("cuda"), is_floating_point=lambda: False)
    assert fused_adamw_applies([cuda_parameter, cuda_parameter])
    assert not fused_adamw_applies([cuda_parameter, torch.nn.Parameter(torch.ones(2))])
    assert not fused_adamw_applies([cuda_parameter, cuda_integer]) and not fused_adamw_applies([])
    model = tiny_classifier(len(CLASSES), class_names=CLASSES)
    model.trainer = types.SimpleNamespace(estimated_stepping_batches=10, max_epochs=1, max_steps=-1)  # all it reads
    assert not model.configure_optimizers()["optimizer"].defaults["fused"]  # CPU: as before
    model.fused_optimizer = True
    assert model.configure_optimizers()["optimizer"].defaults["fused"]


def test_dates_are_checked_before_the_batch_moves_to_the_device():
    model = tempcnn_classifier()
    bad = batch(days_high=5000)  # the date encoding's max_len is 1000
    with pytest.raises(ValueError, match=r"max_len=1000\), got \[\d+, \d+\]"):
        model.on_before_batch_transfer(bad, 0)
    assert model.on_before_batch_transfer(batch(), 0)["days"].max() < 1000
    with pytest.raises(ValueError, match="max_len=1000"):  # on the CPU the encoding checks by itself
        model(bad["values"], bad["days"], bad["mask"])
    meta = bad | {key: value.to("meta") for key, value in bad.items()}
    model.to("meta")(meta["values"], meta["days"], meta["mask"])  # on a device it leaves it to the hook


def test_learning_rate_rules():
    assert scaled_learning_rate(0.002, 512, 128) == pytest.approx(0.004)
    assert scaled_learning_rate(0.002, 512, 128, "linear") == pytest.approx(0.008)
    assert scaled_learning_rate(0.002, 512, 128, "none") == 0.002
    with pytest.raises(ValueError, match="rule must be one of"):
        scaled_learning_rate(0.002, 512, 128, "cubic")
    with pytest.raises(ValueError, match="factor"):
        ScaleBatch(factor=0)


@pytest.mark.parametrize("gpu_only", [False, True])
def test_scale_batch_multiplies_the_batch_and_scales_the_learning_rates(gpu_only):
    data = SyntheticSITS(CLASSES, num_bands=4, num_dates=DATES, num_train=200, num_test=8, batch_size=8)
    model = tiny_classifier(len(CLASSES), max_lr=0.001, min_lr=0.0001)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[ScaleBatch(4, "sqrt", gpu_only=gpu_only)])
    trainer.fit(model, datamodule=data)
    factor = 1 if gpu_only else 4  # this CPU: a GPU-only scaling changes nothing
    assert data.batch_size == 8 * factor
    assert model.hparams.max_lr == pytest.approx(0.001 * factor**0.5)
    assert model.hparams.min_lr == pytest.approx(0.0001 * factor**0.5)
    assert trainer.global_step == len(data.datasets["train"]) // (8 * factor) > 4  # full batches of the new size
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == trainer.global_step  # the schedule follows


@pytest.mark.parametrize("model", [tempcnn_classifier, lambda: tiny_classifier(len(CLASSES), class_names=CLASSES)])
def test_compiled_training_step_is_one_graph(model):
    # A graph break (a host read, an unsupported op) splits the step and stops CUDA graphs from covering it.
    classifier = model().train()
    item = batch()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(classifier)(item["values"], item["days"], item["mask"])
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
