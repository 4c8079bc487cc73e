"""TempCNNEncoder, FlattenClassification and LTAEEncoder: shapes, masking, the decoder contract, YAML configs."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cmap.data.contract import DateGrid
from cmap.lightning_cli import CMapCLI
from cmap.ml.classifiers import Classifier
from cmap.ml.decoders import DateGridClassification, FlattenClassification, MultiClassClassification, masked_mean
from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.encoders import LTAEEncoder, SeriesEncoder, TempCNNEncoder
from cmap.ml.layers import MaskedBatchNorm1d
from cmap.ml.weights import load_encoder_weights

from .conftest import synthetic_sits

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def tempcnn(num_bands: int = 3, d_model: int = 16, dropout_p: float = 0.0, **options) -> TempCNNEncoder:
    return TempCNNEncoder(
        position_encoder=PositionalEncoding(d_model, tau=1000, max_len=1000),
        bands_encoder=PixelEncoding([num_bands, d_model]), d_model=d_model, dropout_p=dropout_p, **options,
    )  # fmt: skip


def series(b: int = 8, t: int = 12, c: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Values, days and a mask with clouds inside the series and padding at its end."""
    values = torch.randn(b, t, c)
    days = torch.sort(torch.randint(0, 365, (b, t)), dim=1).values
    mask = torch.rand(b, t) > 0.3
    mask[:, 0] = True
    mask[: b // 2, -3:] = False  # padding
    return values * mask.unsqueeze(-1), days, mask


def test_shapes_and_the_receptive_field_of_the_convolutions():
    encoder = tempcnn(n_layers=3, kernel_size=5).eval()
    values, days, mask = series(t=30)
    features = encoder(values, days, torch.ones_like(mask))
    assert isinstance(encoder, SeriesEncoder) and features.shape == (8, 30, 16)
    # Date 20 sees dates 14..26 (3 layers of kernel 5) and none further.
    changed = values.clone()
    changed[:, 0] += 5.0
    after = encoder(changed, days, torch.ones_like(mask))
    torch.testing.assert_close(after[:, 7:], features[:, 7:])
    assert not torch.allclose(after[:, 6], features[:, 6])


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_valid_dates_ignore_masked_values_and_masked_dates_are_zero(training):
    encoder = tempcnn().train(training)
    values, days, mask = series()
    garbage = values.masked_fill(~mask.unsqueeze(-1), 1e3) + 7.0 * (~mask).unsqueeze(-1)
    shifted_days = torch.where(mask, days, days + 50)
    # The masked batch norm counts valid dates only, so even training-mode statistics agree.
    torch.manual_seed(1)
    features = encoder(values, days, mask)
    torch.manual_seed(1)
    other = encoder(garbage, shifted_days, mask)
    torch.testing.assert_close(other[mask], features[mask])
    assert features[~mask].abs().max() == 0 and other[~mask].abs().max() == 0


def test_padding_at_the_end_changes_nothing():
    encoder = tempcnn().eval()
    values, days, mask = series()
    padded = encoder(
        torch.cat([values, torch.randn(8, 4, 3)], dim=1),
        torch.cat([days, torch.full((8, 4), 400)], dim=1),
        torch.cat([mask, torch.zeros(8, 4, dtype=torch.bool)], dim=1),
    )
    torch.testing.assert_close(padded[:, :12], encoder(values, days, mask))


def test_masked_batch_norm_statistics_count_valid_dates_only():
    norm = MaskedBatchNorm1d(4, momentum=1.0)
    features = torch.randn(6, 10, 4)
    mask = torch.rand(6, 10) > 0.4
    out = norm(features.masked_fill(~mask.unsqueeze(-1), 100.0), mask)
    valid = features[mask]
    torch.testing.assert_close(norm.running_mean, valid.mean(dim=0))
    torch.testing.assert_close(norm.running_var, valid.var(dim=0))
    torch.testing.assert_close(out[mask].mean(dim=0), torch.zeros(4), atol=1e-5, rtol=0)
    assert out[~mask].abs().max() == 0


def test_decoders_bind_to_the_encoder_width():
    encoder = tempcnn(d_model=16)
    values, days, mask = series()
    for decoder in (MultiClassClassification(num_classes=5), FlattenClassification(num_dates=12, num_classes=5)):
        model = Classifier(encoder, decoder, class_names=list("abcde")).eval()
        assert decoder.in_features == 16
        assert model(values, days, mask).shape == (8, 5)
    with pytest.raises(ValueError, match="width 32 but the encoder's d_model is 16"):
        Classifier(encoder, FlattenClassification(num_dates=12, num_classes=5, in_features=32))


def test_flatten_classification_keeps_the_date_order_and_needs_its_number_of_dates():
    decoder = FlattenClassification(num_dates=12, num_classes=5, in_features=16).eval()
    features, mask = torch.randn(8, 12, 16), torch.ones(8, 12, dtype=torch.bool)
    reversed_logits = decoder(features.flip(1), mask)
    assert not torch.allclose(reversed_logits, decoder(features, mask))  # a masked mean would not tell
    # Masked dates enter as zeros, whatever their features.
    mask[:, 3] = False
    torch.testing.assert_close(decoder(features, mask), decoder(features.index_fill(1, torch.tensor([3]), 0.0), mask))
    with pytest.raises(ValueError, match="num_dates=12 dates per series, got 10"):
        decoder(features[:, :10], mask[:, :10])


def test_date_grid_head_is_the_flatten_head_on_a_regular_grid_and_places_dates_by_day():
    grid = DateGrid(step=8, num_steps=12)
    flatten = FlattenClassification(num_dates=12, num_classes=5, in_features=16).eval()
    on_grid = DateGridClassification(num_classes=5, date_grid=grid, in_features=16).eval()
    on_grid.load_state_dict(flatten.state_dict())
    features, mask = torch.randn(8, 12, 16), torch.ones(8, 12, dtype=torch.bool)
    days = torch.arange(12).expand(8, 12) * 8
    torch.testing.assert_close(on_grid(features, mask, days + 3), flatten(features, mask))  # within half a step
    # Irregular series: dates sit at their day's step, not their index; an empty step takes the mean of
    # its neighbours (linear interpolation in steps), or zeros with empty_steps="zeros".
    kept = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    gap_filled = features.clone()
    gap_filled[:, 3] = (features[:, 2] + features[:, 4]) / 2
    torch.testing.assert_close(on_grid(features[:, kept], mask[:, kept], days[:, kept]), flatten(gap_filled, mask))
    zeros = DateGridClassification(num_classes=5, date_grid=grid, in_features=16, empty_steps="zeros").eval()
    zeros.load_state_dict(flatten.state_dict())
    torch.testing.assert_close(
        zeros(features[:, kept], mask[:, kept], days[:, kept]),
        flatten(features.index_fill(1, torch.tensor([3]), 0.0), mask),
    )
    # Before the first date and after the last: the nearest date's features; no date at all: zeros.
    inner = features[:, 2:10]
    edges = features.clone()
    edges[:, :2], edges[:, 10:] = features[:, 2:3], features[:, 9:10]
    torch.testing.assert_close(on_grid(inner, mask[:, 2:10], days[:, 2:10]), flatten(edges, mask))
    none = on_grid(features, torch.zeros_like(mask), days)
    torch.testing.assert_close(none, flatten(features, torch.zeros_like(mask)))
    # Two dates in one step are averaged; dates beyond the grid are ignored.
    first_twice = features.clone()
    first_twice[:, 0] = 2 * features[:, 0]
    extra = torch.cat([first_twice, torch.zeros(8, 1, 16), torch.randn(8, 1, 16)], dim=1)  # day 2: 0s; day 500
    extra_days = torch.cat([days, torch.full((8, 1), 2), torch.full((8, 1), 500)], dim=1)
    all_valid = torch.ones(8, 14, dtype=torch.bool)
    torch.testing.assert_close(on_grid(extra, all_valid, extra_days), flatten(features, mask))
    with pytest.raises(ValueError, match="leave date_grid out"):
        on_grid.bind_date_grid(DateGrid(step=5, num_steps=12))


def test_both_tempcnn_heads_keep_the_state_dict_keys_of_their_checkpoints():
    """Both heads build their dense tail in one place (DenseTail) with the layers on the head itself:
    the keys and shapes checkpoints saved before it hold (``decoder.dense.weight``, ...) load strictly."""
    saved = {  # a head of 12 dates x 16 features, hidden 8, 5 classes, as in checkpoints before DenseTail
        "dense.weight": (8, 192), "norm.weight": (8,), "norm.bias": (8,), "norm.running_mean": (8,),
        "norm.running_var": (8,), "norm.num_batches_tracked": (), "linear.weight": (5, 8), "linear.bias": (5,),
    }  # fmt: skip
    heads = [
        FlattenClassification(num_dates=12, num_classes=5, hidden=8, in_features=16),
        DateGridClassification(num_classes=5, hidden=8, date_grid=DateGrid(step=8, num_steps=12), in_features=16),
    ]
    for head in heads:
        assert {key: tuple(value.shape) for key, value in head.state_dict().items()} == saved
        head.load_state_dict({key: torch.ones(shape) for key, shape in saved.items()}, strict=True)


def test_the_date_grid_comes_from_the_training_series():
    days = np.array([[0, 10, 20, 30, 40], [5, 15, 25, 35, 45]])
    mask = np.array([[True] * 5, [True, True, False, True, False]])
    assert DateGrid.of(days, mask) == DateGrid(step=10, num_steps=5)  # last valid day 40 -> steps 0..4
    data = synthetic_sits()
    data.setup("fit")
    model = Classifier(tempcnn(num_bands=4, d_model=16), DateGridClassification())
    model.set_input_contract(data.input_contract)
    assert model.decoder.date_grid == data.input_contract.date_grid
    batch = next(iter(data.train_dataloader()))
    assert model(batch["values"], batch["days"], batch["mask"]).shape == (16, 3)


def test_a_training_batch_of_one_series_passes_the_flatten_head():
    decoder = FlattenClassification(num_dates=12, num_classes=5, in_features=16).train()
    assert decoder(torch.randn(1, 12, 16), torch.ones(1, 12, dtype=torch.bool)).shape == (1, 5)


def test_kernel_size_must_be_odd():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        tempcnn(kernel_size=4)


def ltae(num_bands: int = 3, d_model: int = 16, **options) -> LTAEEncoder:
    return LTAEEncoder(
        position_encoder=PositionalEncoding(d_model, tau=1000, max_len=1000),
        bands_encoder=PixelEncoding([num_bands, d_model]), d_model=d_model, n_head=4, d_k=4, **options,
    )  # fmt: skip


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_ltae_pools_valid_dates_and_meets_the_per_date_contract(training):
    encoder = ltae(dropout_p=0.0).train(training)
    values, days, mask = series()
    features = encoder(values, days, mask)
    assert isinstance(encoder, SeriesEncoder) and features.shape == (8, 12, 16)
    assert features[~mask].abs().max() == 0
    # The pooled vector on every valid date: the masked mean of the pooling decoders gives it back.
    pooled = encoder.pool(values, days, mask)
    torch.testing.assert_close(masked_mean(features, mask), pooled)
    torch.testing.assert_close(features, pooled.unsqueeze(1) * mask.unsqueeze(-1))
    # Masked dates' values and days change nothing.
    garbage = values.masked_fill(~mask.unsqueeze(-1), 1e3)
    torch.testing.assert_close(encoder(garbage, torch.where(mask, days, days + 50), mask), features)
    # Valid dates' days matter: the attention sees when each date is.
    assert not torch.allclose(encoder(values, days + 30 * mask, mask), features)


def test_ltae_in_a_classifier_and_its_head_count():
    model = Classifier(ltae(), MultiClassClassification(num_classes=5), class_names=list("abcde")).eval()
    values, days, mask = series()
    assert model(values, days, mask).shape == (8, 5)
    with pytest.raises(ValueError, match="n_head=3 must divide d_model=16"):
        LTAEEncoder(position_encoder=PositionalEncoding(16), bands_encoder=PixelEncoding([3, 16]), d_model=16, n_head=3)


def tiny_config(root: Path) -> Path:
    """A TempCNN + FlattenClassification run on SyntheticSITS, 3 steps."""
    d_model = 8
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 3, "default_root_dir": str(root), "limit_val_batches": 1,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}
            ],
        },
        "model": {
            "class_path": "cmap.ml.classifiers.Classifier",
            "init_args": {
                "encoder": {
                    "class_path": "cmap.ml.encoders.TempCNNEncoder",
                    "init_args": {
                        "position_encoder": {
                            "class_path": "cmap.ml.embeddings.position.PositionalEncoding",
                            "init_args": {"d_model": d_model, "tau": 1000, "max_len": 1000},
                        },
                        "bands_encoder": {"class_path": "cmap.ml.embeddings.bands.PixelEncoding",
                                          "init_args": {"sizes": [2, d_model]}},
                        "d_model": d_model, "n_layers": 2, "kernel_size": 3,
                    },
                },
                "decoder": {"class_path": "cmap.ml.decoders.FlattenClassification",
                            "init_args": {"num_dates": 10, "num_classes": 3, "hidden": 16}},
                "max_lr": 0.001, "focal_gamma": 0.0,
            },
        },
        "data": {
            "class_path": "cmap.data.SyntheticSITS",
            "init_args": {"class_names": ["a", "b", "c"], "num_bands": 2, "num_dates": 10, "num_train": 64,
                          "num_test": 16, "batch_size": 16, "augmentation": {"date_dropout": 0.2}},
        },
        "attention_maps": {"first_epoch": 1000},
        "embeddings": {"first_epoch": 1000},
    }  # fmt: skip
    path = root / "config.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_yaml_config_trains_and_the_checkpoint_rebuilds_the_model(tmp_path):
    cli = CMapCLI(args=["fit", "--config", str(tiny_config(tmp_path)), *QUIET])
    assert cli.trainer.global_step == 3
    assert isinstance(cli.model.encoder, TempCNNEncoder) and isinstance(cli.model.decoder, FlattenClassification)
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    loaded = Classifier.load_from_checkpoint(checkpoint).eval()
    cli.model.eval()
    values, days, mask = series(c=2, t=10)
    days = days.clamp(max=999)
    torch.testing.assert_close(loaded(values, days, mask), cli.model(values, days, mask))
    # init_encoder_from: the trained encoder's weights (batch-norm statistics included) load into a new one.
    fresh = TempCNNEncoder(
        position_encoder=PositionalEncoding(8, tau=1000, max_len=1000), bands_encoder=PixelEncoding([2, 8]),
        d_model=8, n_layers=2, kernel_size=3,
    )  # fmt: skip
    load_encoder_weights(fresh, str(checkpoint))
    for name, tensor in loaded.encoder.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor)


def test_ucr_crop_tempcnn_config_parses(capsys):
    with pytest.raises(SystemExit):
        CMapCLI(args=["fit", "--config", str(CONFIGS / "ucr_crop_tempcnn.yaml"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    model = config["model"]["init_args"]
    assert model["encoder"]["class_path"] == "cmap.ml.encoders.TempCNNEncoder"
    assert config["data"]["class_path"] == "cmap.data.UCRCrop"
    assert any(c["class_path"] == "cmap.ml.fault_tolerance.LastCheckpoint" for c in config["trainer"]["callbacks"])


def test_ucr_crop_ltae_config_parses(capsys):
    with pytest.raises(SystemExit):
        CMapCLI(args=["fit", "--config", str(CONFIGS / "ucr_crop_ltae.yaml"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["encoder"]["class_path"] == "cmap.ml.encoders.LTAEEncoder"


@pytest.mark.parametrize("encoder", [TempCNNEncoder, LTAEEncoder, SeriesEncoder])
def test_embeddings_default_to_the_encoders_width(encoder):
    # A config states d_model once; the embeddings are built from it (date encoding over days 0-999,
    # tau 1000; bands from the data).
    built = encoder(d_model=32)
    assert (built.position_encoder.d_model, built.position_encoder.tau, built.position_encoder.max_len) == (
        32,
        1000,
        1000,
    )
    assert built.bands_encoder.sizes == [None, 32] and built.num_bands is None
    built.bind_bands(3)
    assert built.num_bands == 3 and built.bands_encoder.d_model == 32
    with pytest.raises(ValueError, match="position_encoder produces width 16, expected d_model=32"):
        encoder(d_model=32, position_encoder=PositionalEncoding(16))
