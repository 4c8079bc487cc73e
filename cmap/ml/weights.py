"""Encoder weights: export them from a checkpoint, load them into a new model.

This is the bridge from pretraining (``AutoEncoder``) to fine-tuning (``Classifier``)::

    cmap export runs/pretrain/.../last.ckpt encoder.pt     # export (optional)
    cmap fit --config classifier.yaml --model.init_args.init_encoder_from encoder.pt

``init_encoder_from`` accepts the exported file or the Lightning checkpoint itself.
"""

import argparse
import io
from pathlib import Path

import torch
from torch import Tensor, nn

from cmap.outputs import InputError, MissingInput, check_outputs, write_bytes_atomically

ENCODER_FORMAT = "cmap-encoder-v1"


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint or exported encoder file, loaded safely (weights only: no code runs); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no such checkpoint or encoder weights file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({' '.join(str(error).split())})") from error
    if not isinstance(content, dict) or "state_dict" not in content:
        raise InputError(f"{path}: expected a Lightning checkpoint or a cmap encoder file with a 'state_dict' key")
    return content


def encoder_state_dict(path: str | Path, content: dict | None = None) -> dict[str, Tensor]:
    """Encoder weights from a Lightning checkpoint (its ``encoder.*`` entries) or an exported file.

    ``content``: the file already loaded, to read it once.
    """
    content = read_checkpoint(path) if content is None else content
    if content.get("format") == ENCODER_FORMAT:
        return content["state_dict"]
    prefix = "encoder."
    state = {key[len(prefix) :]: value for key, value in content["state_dict"].items() if key.startswith(prefix)}
    if not state:
        raise ValueError(f"{path}: the checkpoint's state_dict has no 'encoder.' weights")
    return state


def export_encoder(checkpoint: str | Path, output: str | Path) -> Path:
    """Write the encoder's weights (and its config, when the checkpoint has it) to ``output``.

    The file is written beside its final name, flushed, read back, then renamed, so it is complete or
    absent; it never replaces the checkpoint, nor an existing file that is not an encoder file.
    """
    output = Path(output)
    check_outputs([output], [checkpoint], is_encoder_file, "file of encoder weights")
    loaded = read_checkpoint(checkpoint)
    content = {
        "format": ENCODER_FORMAT,
        "state_dict": encoder_state_dict(checkpoint, loaded),
        "encoder": loaded.get("hyper_parameters", {}).get("encoder"),
        "source": str(checkpoint),
    }
    buffer = io.BytesIO()
    torch.save(content, buffer)
    output.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomically(output, buffer.getbuffer())


def is_encoder_file(path: Path) -> bool:
    """A file written by :func:`export_encoder`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("format") == ENCODER_FORMAT
    except Exception:  # anything unreadable is not one
        return False


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


def main(argv: list[str] | None = None, prog: str = "python -m cmap.ml.weights") -> None:
    """``cmap export CHECKPOINT OUTPUT`` (``python -m cmap.ml.weights`` is the same command)."""
    parser = argparse.ArgumentParser(prog=prog, description="Export the encoder weights of a cmap checkpoint.")
    parser.add_argument("checkpoint", help="Lightning checkpoint (.ckpt) of any cmap task (Classifier, AutoEncoder...)")
    parser.add_argument("output", help="file to write (a torch.save dict: format, state_dict, encoder config)")
    args = parser.parse_args(argv)
    print(export_encoder(args.checkpoint, args.output))


if __name__ == "__main__":
    main()
