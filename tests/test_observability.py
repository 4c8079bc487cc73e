"""What a run leaves behind: TensorBoard scalars, figures, projector, hparams, checkpoints."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from cmap.data.contract import CHECKPOINT_KEY
from cmap.data.ucr import UCR_CROP_CLASSES
from cmap.lightning_cli import CMapCLI
from cmap.ml.classifiers import Classifier
from cmap.ml.weights import encoder_state_dict, export_encoder

from .conftest import CONFIGS

QUICK = [
    "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "3", "--trainer.limit_test_batches", "3",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--trainer.log_every_n_steps", "1",
]  # fmt: skip


# The config's checkpointing (best by validation accuracy, and last), keeping every epoch's for the resume test.
KEEP_EVERY_EPOCH = {"monitor": "val/overall_accuracy", "mode": "max", "save_last": True, "save_top_k": -1}


def fit(config: Path, root: Path, ucr_root: Path, *extra: str) -> CMapCLI:
    return CMapCLI(
        args=["fit", "--config", str(config), "--data.init_args.root", str(ucr_root),
              "--trainer.default_root_dir", str(root), *QUICK, *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, ucr_root) -> Path:
    """Three short epochs of the UCR Crop transformer config, then a test of the best checkpoint.

    Three epochs, not two, so that "attention maps at epoch index 1 only" is checked against both
    neighbours (0 and 2).
    """
    root = tmp_path_factory.mktemp("run")
    fit(
        CONFIGS / "ucr_crop_transformer.yaml", root, ucr_root, "--trainer.max_epochs", "3", "--test_after_fit", "true",
        "--trainer.callbacks", json.dumps([{"class_path": "ModelCheckpoint", "init_args": KEEP_EVERY_EPOCH}]),
    )  # fmt: skip
    return root / "lightning_logs" / "version_0"


@pytest.fixture(scope="module")
def events(classifier_run) -> EventAccumulator:
    # fit and the test after it each open an event file in the run's folder: read them all.
    accumulator = EventAccumulator(str(classifier_run), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_every_metric_is_logged_per_stage_and_class(events):
    scalars = set(events.Tags()["scalars"])
    for stage in ("train", "val", "test"):
        for name in ("loss", "overall_accuracy", "macro_f1", "kappa"):
            assert f"{stage}/{name}" in scalars
        # Per class, by name, where defined in the evaluated series (a few batches here): recall and
        # F1 of the classes with true series, precision of the predicted ones, F1 of either.
        named = {
            metric: {tag.split("/", 2)[2] for tag in scalars if tag.startswith(f"{stage}/{metric}/")}
            for metric in ("precision", "recall", "f1")
        }
        assert named["recall"] and named["precision"] and named["recall"] | named["precision"] == named["f1"]
        assert named["f1"] <= set(UCR_CROP_CLASSES)
    assert [event.step for event in events.Scalars("val/overall_accuracy")] == [3, 7, 11]  # once per epoch
    learning_rates = [event.value for event in events.Scalars("lr-AdamW/pg1")]
    assert len(learning_rates) >= 11 and max(learning_rates) > learning_rates[0]  # every step; warm-up rises


def test_hparams_tab_holds_the_final_metrics(events):
    """hp_metric is the final validation accuracy, and the session names the val and test metrics."""
    hp_metric = events.Scalars("hp_metric")
    assert hp_metric[-1].value == events.Scalars("val/overall_accuracy")[-1].value and hp_metric[-1].value != -1
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    names = {info.name.tag for info in HParamsPluginData.FromString(content).experiment.metric_infos}
    assert {"val/overall_accuracy", "val/macro_f1", "test/overall_accuracy", "test/kappa"} <= names


def test_figures_are_logged(events):
    images = set(events.Tags()["images"])
    expected = {
        "confusion_matrix/val", "confusion_matrix/test", "class_distribution/train_val", "class_distribution/test",
        "class_distribution/val_predicted_vs_true", "class_distribution/test_predicted_vs_true",
    }  # fmt: skip
    assert expected <= images
    # Every epoch (not the sanity check), on the step axis of the epoch-end scalars.
    epoch_ends = [event.step for event in events.Scalars("val/overall_accuracy")]
    assert [image.step for image in events.Images("confusion_matrix/val")] == epoch_ends


def test_attention_maps_only_at_epoch_one(events):
    layers = sorted(tag for tag in events.Tags()["images"] if tag.startswith("attention/"))
    assert layers == ["attention/layer_0", "attention/layer_1", "attention/layer_2"]  # config: 3 layers
    for tag in layers:
        assert [image.step for image in events.Images(tag)] == [7]  # the end of epoch index 1 (4 steps each)


def test_projector_embeddings_with_class_metadata(classifier_run):
    config = (classifier_run / "projector_config.pbtxt").read_text()
    assert "val_embeddings" in config
    (folder,) = [p for p in classifier_run.iterdir() if p.is_dir() and p.name.startswith("0")]
    assert folder.name == "00007"  # epoch index 1 only, at its last step
    rows = (next(folder.iterdir()) / "tensors.tsv").read_text().splitlines()
    metadata = (next(folder.iterdir()) / "metadata.tsv").read_text().split()
    assert len(rows) == len(metadata) > 0 and set(metadata) <= set(UCR_CROP_CLASSES)
    norms = torch.tensor([[float(v) for v in row.split("\t")] for row in rows]).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-4, rtol=0)  # spherized


def test_every_hyper_parameter_is_saved(classifier_run, events):
    hparams = yaml.safe_load((classifier_run / "hparams.yaml").read_text())
    assert hparams["encoder"]["init_args"]["n_att_layers"] == 3
    # The class names travel in the checkpoint's input contract, not in the hyper-parameters.
    checkpoint = torch.load(next(classifier_run.glob("checkpoints/*.ckpt")), weights_only=True)
    assert checkpoint[CHECKPOINT_KEY]["class_names"] == UCR_CROP_CLASSES
    assert hparams["batch_size"] == 128 and hparams["step_days"] == 8  # the data module's too
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = set(HParamsPluginData.FromString(content).session_start_info.hparams)
    assert {"max_lr", "focal_gamma", "encoder/init_args/d_model", "batch_size"} <= logged
    config = yaml.safe_load((classifier_run / "config.yaml").read_text())
    assert config["model"]["class_path"] == "cmap.ml.classifiers.Classifier"


def test_best_and_last_checkpoints_resume_and_export(classifier_run, ucr_root, tmp_path):
    checkpoints = classifier_run / "checkpoints"
    assert {"last.ckpt", "epoch=0-step=4.ckpt", "epoch=2-step=12.ckpt"} <= {p.name for p in checkpoints.iterdir()}
    callbacks = torch.load(checkpoints / "last.ckpt", weights_only=True)["callbacks"]
    (state,) = [value for key, value in callbacks.items() if key.startswith("ModelCheckpoint")]
    assert Path(state["best_model_path"]).exists()
    # Resume after the first epoch: the run goes on to the configured end.
    resumed = fit(
        CONFIGS / "ucr_crop_transformer.yaml", tmp_path, ucr_root, "--trainer.max_epochs", "3",
        "--ckpt_path", str(checkpoints / "epoch=0-step=4.ckpt"),
    )  # fmt: skip
    assert resumed.trainer.current_epoch == 3 and resumed.trainer.global_step == 12
    exported = export_encoder(checkpoints / "last.ckpt", tmp_path / "encoder.pt")
    model = Classifier.load_from_checkpoint(checkpoints / "last.ckpt")
    state = encoder_state_dict(exported)
    assert state.keys() == model.encoder.state_dict().keys()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(state[key], value), key
