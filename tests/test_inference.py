"""The inference form of TempCNN classifiers (cmap.ml.inference): the reference path's logits and classes."""

import pytest
import torch

from cmap.data.contract import DateGrid
from cmap.mapping.classifier import WindowClassifier
from cmap.ml.classifiers import Classifier
from cmap.ml.decoders import DateGridClassification, FlattenClassification
from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.encoders import TempCNNEncoder, TransformerEncoder
from cmap.ml.inference import FoldedEnsemble, FoldedTempCNN, inference_form

CLASSES = ["a", "b", "c", "d"]
BANDS, DATES, STEP = 3, 10, 5
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}  # fp32: the folded weights and the interpolation's rounding


def classifier(head: str = "grid", seed: int = 0, empty_steps: str = "interpolate") -> Classifier:
    """A tiny TempCNN classifier in eval mode whose batch norms hold the statistics of a batch and affine
    weights that are not 1 and 0 (fresh ones would hide a wrong fold)."""
    torch.manual_seed(seed)
    encoder = TempCNNEncoder(
        n_layers=2, kernel_size=3, d_model=16, position_encoder=PositionalEncoding(16, 1000, 1000),
        bands_encoder=PixelEncoding([BANDS, 16]),
    )  # fmt: skip
    if head == "grid":
        decoder = DateGridClassification(
            len(CLASSES), hidden=8, date_grid=DateGrid(STEP, DATES), in_features=16, empty_steps=empty_steps
        )
    else:
        decoder = FlattenClassification(DATES, len(CLASSES), hidden=8, in_features=16)
    model = Classifier(encoder, decoder, class_names=CLASSES)
    norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm1d)]
    for norm in norms:
        norm.momentum = None  # one training batch sets the running statistics to its own
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.5, 0.5)
    with torch.no_grad():
        model.train()(*inputs(size=256, seed=seed + 10))
    return model.eval()


def inputs(size: int = 64, days: str = "shared", cloud: float = 0.3, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Values, days and mask of ``size`` series: a map's shared days on the grid, each series' own days
    (``irregular``), or shared days two of which fall on one step (``crowded``)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(size, DATES, generator=generator) >= cloud
    mask[-1] = False  # a series without any valid date: zeros in, the head's bias out
    values = torch.randn(size, DATES, BANDS, generator=generator)
    grid = torch.arange(DATES) * STEP
    if days == "irregular":
        day_values = grid + torch.randint(0, 3, (size, DATES), generator=generator)
    elif days == "crowded":
        day_values = torch.cat([grid[:1], grid[:-1] + 1]).expand(size, -1)  # dates 0 and 1 share step 0
    else:
        day_values = grid.expand(size, -1)
    return values * mask.unsqueeze(-1), day_values.contiguous(), mask


@pytest.mark.parametrize("days", ["shared", "irregular", "crowded"])
@pytest.mark.parametrize("chunk_size", [1024, 7])
def test_folded_date_grid_model_gives_the_reference_logits(days: str, chunk_size: int) -> None:
    model = classifier()
    folded = inference_form(model)
    assert isinstance(folded, FoldedTempCNN)
    folded.chunk_size = chunk_size  # chunks of 7 pixels: 10 chunks, the last one of 1
    values, day_values, mask = inputs(days=days)
    with torch.inference_mode():
        reference, fast = model(values, day_values, mask), folded(values, day_values, mask)
    assert fast.shape == (len(values), len(CLASSES))
    torch.testing.assert_close(fast, reference, **TOLERANCE)
    assert torch.equal(fast.argmax(-1), reference.argmax(-1))
    assert len(reference.argmax(-1).unique()) > 1 and reference.std(0).min() > 0.1  # a test that can fail


def test_dense_grid_takes_the_gather_free_path_only_when_steps_hold_one_date() -> None:
    folded = FoldedTempCNN(classifier())
    on_grid = torch.arange(DATES) * STEP
    assert torch.equal(folded.date_of_step(on_grid), torch.arange(DATES))
    late = torch.cat([on_grid[:-1], torch.tensor([10 * STEP * DATES])])  # the last date beyond the grid
    assert folded.date_of_step(late).tolist() == [*range(DATES - 1), -1]
    assert folded.date_of_step(torch.cat([on_grid[:1], on_grid[:-1] + 1])) is None


@pytest.mark.parametrize("head, empty_steps", [("grid", "zeros"), ("flatten", "interpolate")])
def test_other_heads_give_the_reference_logits(head: str, empty_steps: str) -> None:
    model = classifier(head, empty_steps=empty_steps)
    values, day_values, mask = inputs()
    with torch.inference_mode():
        torch.testing.assert_close(inference_form(model)(values, day_values, mask), model(values, day_values, mask))


def test_ensemble_gives_the_reference_mean_probabilities() -> None:
    model = classifier(seed=0)
    model.ensemble_with([classifier(seed=1), classifier(seed=2)], ["one.ckpt", "two.ckpt"])
    folded = inference_form(model)
    assert isinstance(folded, FoldedEnsemble) and len(folded.members) == 3
    values, day_values, mask = inputs()
    with torch.inference_mode():
        torch.testing.assert_close(folded(values, day_values, mask), model(values, day_values, mask), **TOLERANCE)


def test_bf16_form_keeps_the_classes() -> None:
    model = classifier()
    folded = inference_form(model).to(torch.bfloat16)
    values, day_values, mask = inputs(size=256)
    with torch.inference_mode():
        reference = model(values, day_values, mask)
        fast = folded(values.bfloat16(), day_values, mask)
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), reference, rtol=0.05, atol=0.05)
    assert (fast.float().argmax(-1) == reference.argmax(-1)).float().mean() >= 0.95


def test_models_without_an_inference_form_run_the_reference_path() -> None:
    assert inference_form(classifier().train()) is None
    transformer = TransformerEncoder(n_att_head=2, n_att_layers=1, d_model=16, bands_encoder=PixelEncoding([BANDS, 16]))
    grid_head = DateGridClassification(len(CLASSES), hidden=8, date_grid=DateGrid(STEP, DATES), in_features=16)
    assert inference_form(Classifier(transformer, grid_head, class_names=CLASSES).eval()) is None
    model = classifier()
    model.ensemble_with([Classifier(transformer, grid_head, class_names=CLASSES)], ["transformer.ckpt"])
    assert inference_form(model) is None  # one member without a form: the whole ensemble runs as it is
    with pytest.raises(ValueError, match="training mode"):
        FoldedTempCNN(classifier().train())


def test_days_out_of_range_are_refused_as_by_the_reference() -> None:
    values, day_values, mask = inputs()
    with pytest.raises(ValueError, match="max_len"):
        inference_form(classifier())(values, day_values + 2000, mask)


def test_map_windows_get_the_reference_probabilities_from_the_fast_path() -> None:
    """``cmap map``'s prediction module runs the inference form by default (``--inference reference``:
    the model itself); class probabilities agree within 1e-5 and the classes are the same."""
    height, width = 12, 10
    values, day_values, mask = inputs(size=height * width - 20)
    pixels = torch.randperm(height * width, generator=torch.Generator().manual_seed(0))[: len(values)]
    item = {"values": values, "days": day_values, "mask": mask, "pixels": pixels, "window": torch.tensor(0),
            "shape": torch.tensor([height, width]), "core": torch.tensor([1, 1, height - 2, width - 2])}  # fmt: skip
    model = classifier()
    fast, reference = WindowClassifier(model, batch_size=32), WindowClassifier(model, batch_size=32, fast=False)
    assert isinstance(fast.inference, FoldedTempCNN) and reference.inference is None
    with torch.inference_mode():
        fast_out, reference_out = fast.predict_step(item, 0), reference.predict_step(item, 0)
    assert torch.equal(fast_out["valid"], reference_out["valid"]) and not fast_out["valid"].all()
    valid = reference_out["valid"]
    torch.testing.assert_close(
        fast_out["probabilities"][:, valid], reference_out["probabilities"][:, valid], **TOLERANCE
    )
    assert torch.equal(fast_out["probabilities"].argmax(0)[valid], reference_out["probabilities"].argmax(0)[valid])
