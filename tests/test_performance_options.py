"""Faster inference options: bf16 weights (Lightning's ``bf16-true``) keep the date encoding exact."""

import copy

import lightning as L
import torch

from cmap.data import SyntheticSITS
from cmap.ml.classifiers import Classifier
from cmap.ml.decoders import MultiClassClassification
from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.encoders import TransformerEncoder

CLASSES = ["a", "b", "c"]


def test_positional_encoding_cast_to_bf16_computes_angles_in_float32():
    encoding = PositionalEncoding(d_model=64, tau=10000, max_len=10000)
    days = torch.tensor([[0, 7, 365, 1234, 9999]])
    reference = encoding(days)
    cast = copy.deepcopy(encoding).to(torch.bfloat16)
    encoded = cast(days)
    assert encoded.dtype == torch.bfloat16
    # Only the output is rounded to bf16 (half an ulp of values in [-1, 1] is 2^-9); rounded
    # frequencies times days in the thousands would be off by whole radians.
    torch.testing.assert_close(encoded.float(), reference, atol=2**-8, rtol=0)


def tiny_classifier() -> Classifier:
    encoder = TransformerEncoder(PositionalEncoding(32, 1000, 1000), PixelEncoding([2, 32]), 32, 4, 2, 0.0)
    return Classifier(encoder, MultiClassClassification(32, len(CLASSES)), class_names=CLASSES)


def predict(model: Classifier, data: SyntheticSITS, precision: str) -> dict[str, torch.Tensor]:
    trainer = L.Trainer(
        accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    batches = trainer.predict(copy.deepcopy(model), datamodule=data)
    return {key: torch.cat([batch[key] for batch in batches]) for key in ("probabilities", "prediction")}


def test_bf16_true_prediction_matches_float32():
    data = SyntheticSITS(CLASSES, num_bands=2, num_dates=20, num_train=64, num_test=256, batch_size=128)
    model = tiny_classifier().eval()
    reference, bf16 = predict(model, data, "32-true"), predict(model, data, "bf16-true")
    assert bf16["probabilities"].dtype == torch.float32  # predict_step returns float32 probabilities
    torch.testing.assert_close(bf16["probabilities"], reference["probabilities"], atol=0.02, rtol=0)
    assert (bf16["prediction"] == reference["prediction"]).float().mean() > 0.95
