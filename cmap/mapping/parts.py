"""The finished windows of a map being made, kept as parts until the map is published: a killed or
failed run resumes from them."""

import errno
import hashlib
import io
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cmap.data.raster import RasterStack
from cmap.outputs import write_bytes_atomically


def parts_path(output: Path) -> Path:
    """The hidden folder of the finished windows of a map being made (kept until the map is published)."""
    return output.with_name(f".{output.name}.partial-parts")


class MapParts:
    """The finished windows of a map being made: one ``.npz`` file per window in a hidden folder
    beside the output, named by the window and a key of everything that sets the pixels (inputs,
    model, options), so a rerun of the same command skips them and a changed command ignores them."""

    def __init__(self, output: Path, key: str) -> None:
        self.folder, self.key = parts_path(output), key

    def path(self, index: int) -> Path:
        return self.folder / f"window-{index:07d}-{self.key}.npz"

    def done(self, index: int) -> bool:
        return self.path(index).is_file()

    def save(self, index: int, **arrays: np.ndarray) -> None:
        """Written atomically (:func:`~cmap.outputs.write_bytes_atomically`): a part is whole or absent."""
        self.folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        # No scan of the folder per window (it grows with the map): remove() takes stale partials with it.
        write_bytes_atomically(self.path(index), buffer.getbuffer(), remove_stale=False)

    def load(self, index: int) -> dict[str, np.ndarray]:
        path = self.path(index)
        try:
            with np.load(path) as part:
                return {name: part[name] for name in part.files}
        except (OSError, ValueError, EOFError) as error:  # a part damaged after it was written
            path.unlink(missing_ok=True)
            raise OSError(
                errno.EIO, f"{path}: unreadable part of the map ({error}); removed: run the command again"
            ) from error

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def parts_key(stack: RasterStack, checkpoints: Sequence[str], options: dict[str, Any]) -> str:
    """A key of everything that sets a map's pixels: the stack (its files, their sizes and times), the
    checkpoints' files and the options. Parts written under another key are not reused."""

    def stamp(path: str | Path) -> list:
        if not os.path.exists(path):  # a URL
            return [str(path)]
        status = os.stat(path)
        return [os.path.abspath(path), status.st_size, status.st_mtime_ns]

    files = [stamp(path) for path in dict.fromkeys(path for paths in stack.paths for path in paths)]
    content = json.dumps(
        [repr(stack), files, [stamp(path) for path in checkpoints], options], sort_keys=True, default=str
    )
    return hashlib.sha256(content.encode()).hexdigest()[:16]
