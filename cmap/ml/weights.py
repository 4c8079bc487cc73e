"""Encoder weights: export them from a checkpoint, load them into a new model.

This is the bridge from pretraining (``AutoEncoder``) to fine-tuning (``Classifier``)::

    python -m cmap.ml.weights runs/pretrain/.../last.ckpt encoder.pt     # export (optional)
    cmap fit --config classifier.yaml --model.init_args.init_encoder_from encoder.pt

``init_encoder_from`` accepts the exported file or the Lightning checkpoint itself.
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ENCODER_FORMAT = "cmap-encoder-v1"


def _load(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint or encoder weights file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error})") from error
    if not isinstance(content, dict) or "state_dict" not in content:
        raise ValueError(f"{path}: expected a Lightning checkpoint or a cmap encoder file with a 'state_dict' key")
    return content


def encoder_state_dict(path: str | Path, content: dict | None = None) -> dict[str, Tensor]:
    """Encoder weights from a Lightning checkpoint (its ``encoder.*`` entries) or an exported file.

    ``content``: the file already loaded, to read it once.
    """
    content = _load(path) if content is None else content
    if content.get("format") == ENCODER_FORMAT:
        return content["state_dict"]
    prefix = "encoder."
    state = {key[len(prefix) :]: value for key, value in content["state_dict"].items() if key.startswith(prefix)}
    if not state:
        raise ValueError(f"{path}: the checkpoint's state_dict has no 'encoder.' weights")
    return state


def export_encoder(checkpoint: str | Path, output: str | Path) -> Path:
    """Write the encoder's weights (and its config, when the checkpoint has it) to ``output``.

    The file is written under a temporary name then renamed, so it is complete or absent.
    """
    output = Path(output)
    loaded = _load(checkpoint)
    content = {
        "format": ENCODER_FORMAT,
        "state_dict": encoder_state_dict(checkpoint, loaded),
        "encoder": loaded.get("hyper_parameters", {}).get("encoder"),
        "source": str(checkpoint),
    }
    temporary = output.with_name(output.name + ".tmp")
    torch.save(content, temporary)
    os.replace(temporary, output)
    return output


def state_dict_mismatch(own: dict[str, Tensor], state: dict[str, Tensor]) -> str | None:
    """What keeps weights ``state`` (from a file) out of a model whose ``state_dict`` is ``own``, or None."""
    problems = [f"missing {key}" for key in sorted(own.keys() - state.keys())]
    problems += [f"unexpected {key}" for key in sorted(state.keys() - own.keys())]
    problems += [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in sorted(own.keys() & state.keys())
        if state[key].shape != own[key].shape
    ]
    if not problems:
        return None
    return "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Copy the weights of ``path`` into ``encoder``; every mismatch is named in the error."""
    state = encoder_state_dict(path)
    mismatch = state_dict_mismatch(encoder.state_dict(), state)
    if mismatch:
        raise ValueError(f"{path}: encoder weights do not fit the configured encoder: {mismatch}")
    encoder.load_state_dict(state)


@dataclass
class TrainedClassifier:
    """A classifier with what its inputs must look like, all read from its checkpoint."""

    model: nn.Module  # a cmap.ml.classifiers.Classifier, in eval mode
    band_names: list[str]
    class_names: list[str]
    mean: np.ndarray  # float32 (C,): series are normalised as (values - mean) / std
    std: np.ndarray


def load_classifier(path: str | Path) -> TrainedClassifier:
    """The classifier of a ``cmap fit`` checkpoint, with the band names, class names and normalisation
    statistics its data module saved there (so they are never re-specified by hand)."""
    from cmap.ml.classifiers import Classifier

    content = _load(path)
    # Lightning saves the data module's state_dict under the data module's class name.
    states = [v for v in content.values() if isinstance(v, dict) and {"band_names", "mean", "std"} <= v.keys()]
    if not states or states[0]["mean"] is None:
        raise ValueError(f"{path}: no data module state (band names, normalisation) in the checkpoint")
    try:
        model = Classifier.load_from_checkpoint(path, map_location="cpu")
    except Exception as error:
        raise ValueError(f"{path}: not a checkpoint of a cmap Classifier ({error})") from error
    state = states[0]
    return TrainedClassifier(
        model.eval(),
        list(state["band_names"]),
        list(model.class_names),
        np.asarray(state["mean"], dtype=np.float32),
        np.asarray(state["std"], dtype=np.float32),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export the encoder weights of a cmap checkpoint.")
    parser.add_argument("checkpoint", help="Lightning checkpoint (.ckpt) of a Classifier or AutoEncoder")
    parser.add_argument("output", help="file to write (a torch.save dict: format, state_dict, encoder config)")
    args = parser.parse_args(argv)
    print(export_encoder(args.checkpoint, args.output))


if __name__ == "__main__":
    main()
