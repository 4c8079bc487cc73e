"""The `cmap` command and the seed config contract."""

import subprocess
import sys

import pytest
import torch
import yaml

from cmap.cli import main as cmap_main
from cmap.lightning_cli import CMapCLI
from cmap.ml.classifiers import Classifier
from cmap.ml.encoders import TransformerEncoder
from cmap.runtime import canonical_class_path

from .conftest import CONFIGS, help_and_modules_loaded

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def test_class_paths_resolve_case_insensitively():
    assert canonical_class_path("cmap.ml.classifiers.classifier") == "cmap.ml.classifiers.Classifier"
    assert canonical_class_path("cmap.ml.encoders.TRANSFORMERENCODER") == "cmap.ml.encoders.TransformerEncoder"
    assert canonical_class_path("cmap.ml.decoders.Nothing") == "cmap.ml.decoders.Nothing"  # left to jsonargparse
    assert canonical_class_path("Classifier") == "Classifier"


def test_seed_config_builds_the_seed_model_and_trains(seed_config, tmp_path):
    cli = CMapCLI(
        args=[
            "fit", "--model", str(seed_config), "--data", str(CONFIGS / "seed_data_synthetic.yaml"),
            "--trainer.max_steps", "3", "--trainer.limit_val_batches", "2", "--trainer.default_root_dir", str(tmp_path),
            *QUIET,
        ]
    )  # fmt: skip
    assert cli.trainer.global_step == 3
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    for model in (cli.model, Classifier.load_from_checkpoint(checkpoint)):
        encoder = model.encoder
        assert isinstance(encoder, TransformerEncoder) and encoder.d_model == 256
        assert len(encoder.transformer.layers) == 4
        assert all(layer.self_attn.num_heads == 8 for layer in encoder.transformer.layers)
        assert all(layer.dropout.p == 0.1 for layer in encoder.transformer.layers)
        assert encoder.bands_encoder.sizes == [9, 32, 64, 128, 256]
        position = encoder.position_encoder
        assert (position.d_model, position.tau, position.max_len) == (256, 10000, 10000)
        assert model.decoder.linear.out_features == 7
        assert (model.hparams.min_lr, model.hparams.max_lr) == (1e-5, 1e-4)
        # classes_weights are matched by name to the data module's class order.
        assert model.class_names == ["other", "ble_tendre", "mais", "orge", "colza", "tournesol", "ble_dur"]
        torch.testing.assert_close(model.criterion.alpha, torch.tensor([0.52, 0.52, 0.66, 1.12, 2.64, 3.25, 13.0]))
    # Models are not pickled: the hyper-parameters are the config tree.
    hparams = yaml.safe_load(next(tmp_path.rglob("hparams.yaml")).read_text())
    assert hparams["encoder"]["class_path"] == "cmap.ml.encoders.TransformerEncoder"
    assert (tmp_path / "lightning_logs" / "version_0" / "config.yaml").exists()


def test_console_script_prints_canonical_config(seed_config):
    result = subprocess.run(
        [sys.executable, "-m", "cmap.cli", "fit", "--model", str(seed_config), "--data",
         str(CONFIGS / "seed_data_synthetic.yaml"), "--print_config"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    config = yaml.safe_load(result.stdout)
    assert config["model"]["class_path"] == "cmap.ml.classifiers.Classifier"
    assert config["model"]["init_args"]["decoder"]["class_path"] == "cmap.ml.decoders.MultiClassClassification"


def test_unknown_class_path_is_reported(tmp_path, capsys):
    bad = tmp_path / "model.yaml"
    bad.write_text("class_path: cmap.ml.classifiers.classifer\ninit_args: {}\n")
    with pytest.raises(SystemExit):
        CMapCLI(args=["fit", "--model", str(bad), "--data", str(CONFIGS / "seed_data_synthetic.yaml")])
    assert "classifer" in capsys.readouterr().err


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("ucr_crop_*.yaml")), ids=lambda p: p.stem)
def test_every_config_trains_one_step(config, ucr_root, tmp_path):
    cli = CMapCLI(
        args=["fit", "--config", str(config), "--data.init_args.root", str(ucr_root), "--trainer.fast_dev_run", "true",
              "--trainer.default_root_dir", str(tmp_path), *QUIET]
    )  # fmt: skip
    assert cli.trainer.global_step == 1


@pytest.mark.parametrize("pretraining", ["ucr_crop_autoencoder", "ucr_crop_contrastive"])
def test_pretraining_configs_fine_tune_into_the_classifier_config(pretraining, ucr_root, tmp_path, capsys):
    """docs/pretraining.md commands: the pretrained encoder loads into configs/ucr_crop_transformer.yaml."""
    common = ["--data.init_args.root", str(ucr_root), "--trainer.default_root_dir", str(tmp_path), *QUIET]
    pretrain = CMapCLI(
        args=["fit", "--config", str(CONFIGS / f"{pretraining}.yaml"), "--trainer.fast_dev_run", "true", *common]
    )
    assert "cmap fit finished: val/loss " in capsys.readouterr().out  # a pretraining summary: its loss
    checkpoint = tmp_path / "pretrained.ckpt"
    pretrain.trainer.save_checkpoint(checkpoint)
    fine_tune = CMapCLI(
        args=["fit", "--config", str(CONFIGS / "ucr_crop_transformer.yaml"), "--trainer.max_steps", "1",
              "--trainer.limit_val_batches", "0", "--model.init_args.init_encoder_from", str(checkpoint),
              "--model.init_args.min_lr", "1e-9", *common]
    )  # fmt: skip
    for name, weight in pretrain.model.encoder.state_dict().items():
        torch.testing.assert_close(fine_tune.model.encoder.state_dict()[name], weight, atol=1e-6, rtol=0)


def test_one_command_lists_and_runs_every_sub_command():
    """``cmap --help`` names every sub-command; each has its own ``--help`` under ``cmap COMMAND``."""
    cmap = [sys.executable, "-c", "from cmap.cli import main; main()"]
    listing = subprocess.run([*cmap, "--help"], capture_output=True, text=True, check=True).stdout
    commands = ["fit", "validate", "test", "predict", "map", "area", "convert", "extract", "export"]
    assert all(f"\n  {command} " in listing for command in commands), listing
    for command in commands:
        result = subprocess.run([*cmap, command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        usage = result.stdout.split("\n", 1)[0]
        assert usage.startswith("usage: cmap") and (command in usage or command in ("convert", "extract")), usage


def test_every_option_of_every_command_has_help_text():
    """convert/extract (argparse), map (its docstring) and the forced callbacks of fit (their docstrings)."""
    import inspect

    from docstring_parser import parse

    from cmap.data.__main__ import build_parser
    from cmap.mapping import map_rasters
    from cmap.ml.callbacks import AttentionMapLogger, EmbeddingProjector, FinalMetrics
    from cmap.ml.progress import LogProgress

    subcommands = build_parser()._subparsers._group_actions[0].choices.values()
    missing = [f"{sub.prog} {action.dest}" for sub in subcommands for action in sub._actions if not action.help]
    documented = {param.arg_name for param in parse(inspect.getdoc(map_rasters)).params}
    missing += [f"map {name}" for name in inspect.signature(map_rasters).parameters if name not in documented]
    for callback in (AttentionMapLogger, EmbeddingProjector, FinalMetrics, LogProgress):
        documented = {param.arg_name for param in parse(inspect.getdoc(callback)).params}
        names = inspect.signature(callback).parameters
        missing += [f"{callback.__name__} {name}" for name in names if name not in documented]
    assert not missing, missing


def test_fit_ends_with_a_summary_of_metrics_folder_and_next_commands(tmp_path, capsys):
    from .conftest import fit_tiny_classifier

    init_args = {"class_names": ["a", "b"], "num_bands": 2, "num_train": 64, "batch_size": 16}
    data = {"class_path": "cmap.data.SyntheticSITS", "init_args": init_args}
    checkpoint = fit_tiny_classifier(tmp_path, data, num_bands=2, num_classes=2, steps=4)  # past one validation
    summary = capsys.readouterr().out.split("cmap fit finished: ")[-1]
    assert summary.startswith("val/overall_accuracy ") and f"run folder   {checkpoint.parent.parent}" in summary
    assert f"tensorboard --logdir {checkpoint.parent.parent.parent}" in summary
    assert f"cmap test --config {checkpoint.parent.parent / 'config.yaml'} --ckpt_path {checkpoint}" in summary


def test_a_pretraining_summary_suggests_fine_tuning_not_test_or_map(tmp_path):
    """After an AutoEncoder or ContrastivePretraining fit: its loss, and the README's next step,
    a classifier fine-tuned from its encoder (init_encoder_from); cmap test and cmap map need a classifier."""
    from cmap.lightning_cli import run_summary

    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.touch()
    metrics = {"val/loss": torch.tensor(0.25)}
    summary = run_summary(tmp_path, metrics, ["configs/ucr_crop_autoencoder.yaml"], classifier=False)
    assert "cmap fit finished: val/loss 0.2500" in summary
    assert "cmap fit --config <a Classifier config with this encoder> --test_after_fit true " in summary
    assert f"--model.init_args.init_encoder_from {checkpoint}   (fine-tune)" in summary
    assert "cmap test" not in summary and "cmap map" not in summary
    classifier = run_summary(tmp_path, {"val/overall_accuracy": 0.5}, ["configs/default.yaml"])
    assert "cmap test --config configs/default.yaml" in classifier and "init_encoder_from" not in classifier


def test_lightnings_install_advertisements_are_silenced_wherever_a_cmap_task_runs():
    """Lightning's "💡 Tip: ... try installing [litmodels] / [litlogger]" lines are dropped once cmap's
    tasks are imported (python -m cmap.mapping and Python use too, not only the cmap command); Lightning's
    other messages, another tip included, still print."""
    script = (
        "import cmap.ml\n"
        "import lightning as L\n"
        "from lightning.pytorch.utilities.rank_zero import rank_zero_info\n"
        "trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)\n"  # litlogger's
        "trainer._callback_connector._maybe_show_litmodels_tip()\n"  # litmodels', shown when a run starts
        "rank_zero_info('💡 Tip: another tip')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    output = result.stdout + result.stderr
    assert "litmodels" not in output and "litlogger" not in output, output
    assert "GPU available" in output and "💡 Tip: another tip" in output, output


def test_help_imports_neither_torch_nor_lightning():
    """``cmap --help`` answers from the entry point alone (issue 33: it took 7-10 s importing Lightning)."""
    output, loaded = help_and_modules_loaded([], ("torch", "lightning", "jsonargparse"))
    assert "usage: cmap COMMAND" in output and "--debug" in output
    assert loaded == [], output


def test_importing_cmap_changes_nothing_process_wide_until_an_entry_point_runs():
    """jsonargparse's YAML loader and class-path resolution, and the warnings filters, are cmap's only once
    cmap.runtime.install() ran (cmap.cli.main and CMapCLI call it), not when a cmap module is imported."""
    script = (
        "import warnings\n"
        "from jsonargparse import _typehints, get_loader\n"
        "def cmaps():  # cmap's filters (the libraries imported add their own)\n"
        "    patterns = [f[1].pattern for f in warnings.filters if f[1]]\n"
        "    return [p for p in patterns if 'LeafSpec' in p or 'batch_transfer' in p]\n"
        "before = (get_loader('yaml'), _typehints.resolve_class_path_by_name)\n"
        "import cmap.cli, cmap.lightning_cli, cmap.ml.base, cmap.ml.classifiers, cmap.mapping.run\n"
        "print(before == (get_loader('yaml'), _typehints.resolve_class_path_by_name), len(cmaps()))\n"
        "import cmap.runtime\n"
        "cmap.runtime.install()\n"
        "loader, resolve = get_loader('yaml'), _typehints.resolve_class_path_by_name\n"
        "cmap.runtime.install()\n"
        "print(loader is not before[0], resolve is not before[1], loader is get_loader('yaml'), len(cmaps()))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "0", "True", "True", "True", "2"], result.stdout


def alias_bomb(path, levels=9):
    path.write_text(alias_bomb_text(levels))
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", ["fit", "map", "area"])
def test_a_yaml_alias_bomb_is_refused_in_one_line_before_it_is_expanded(command, tmp_path, capsys):
    bomb = alias_bomb(tmp_path / "bomb.yaml")
    with pytest.raises(SystemExit) as stop:
        cmap_main([command, "--config", str(bomb)])
    assert stop.value.code == 1
    err = one_error_line(capsys)
    assert f"{bomb}: YAML that stands for more than 200,000 values" in err and "alias" in err


@pytest.mark.parametrize("option", ["--model", "--data"])
def test_a_yaml_alias_bomb_given_as_a_model_or_data_file_is_refused_naming_the_option(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cmap_main(["fit", option, str(alias_bomb(tmp_path / "bomb.yaml"))])
    assert stop.value.code != 0
    err = capsys.readouterr().err
    assert f'Parser key "{option[2:]}"' in err and "200,000 values once its aliases" in err and "Traceback" not in err


def test_yaml_bounds_pass_real_configs_and_refuse_recursion_depth_and_size(monkeypatch):
    from cmap import config_limits
    from cmap.config_limits import ConfigTooLarge, check_yaml

    for config in CONFIGS.glob("*.yaml"):
        check_yaml(config.read_text(), config)
    check_yaml(alias_bomb_text(levels=5))  # 10**5 values: under the limit
    with pytest.raises(ConfigTooLarge, match="more than 200,000 values"):
        check_yaml(alias_bomb_text(levels=6))
    with pytest.raises(ConfigTooLarge, match="more than 200,000 values"):
        check_yaml("a: &a [1, *a]\n")  # a list that contains itself
    with pytest.raises(ConfigTooLarge, match="nested deeper than 200 levels"):
        check_yaml("[" * 300 + "]" * 300)
    check_yaml("[" * 150 + "]" * 150)
    check_yaml("a: [unclosed\n")  # not YAML: left to the loader, which reports it as before
    monkeypatch.setattr(config_limits, "MAX_CONFIG_BYTES", 1000)
    with pytest.raises(ConfigTooLarge, match="run.yaml: 1,200 characters of YAML; cmap reads configs up to 1,000"):
        check_yaml("#" * 1200, "run.yaml")


def alias_bomb_text(levels: int) -> str:
    """ "billion laughs": ``levels`` levels of ten aliases, 10**levels strings from a few hundred bytes."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]" for level in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_debug_shows_the_traceback_the_one_line_error_hides(seed_config, tmp_path, capsys, monkeypatch):
    from cmap.outputs import MissingInput

    missing = tmp_path / "missing.ckpt"
    args = ["test", "--model", str(seed_config), "--data", str(CONFIGS / "seed_data_synthetic.yaml"), "--ckpt_path",
            str(missing), "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    with pytest.raises(SystemExit):
        cmap_main(args)
    assert f"{missing}: no such checkpoint (--ckpt_path)" in one_error_line(capsys)
    with pytest.raises(MissingInput, match="no such checkpoint"):
        cmap_main(["--debug", *args])
    monkeypatch.setenv("CMAP_DEBUG", "1")
    with pytest.raises(MissingInput, match="no such checkpoint"):
        cmap_main(args)
