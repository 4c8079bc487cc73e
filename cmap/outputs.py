"""Writing results safely: nothing half-written, nothing overwritten that cmap did not write.

Every writer of the package (stores, checkpoints, crop maps, prediction tables) follows one rule:

1. **Check the output paths first** (:func:`check_outputs`): an output is never one of the command's
   inputs, and an existing file under an output name is replaced only when cmap wrote it (a
   previous map, store or table), never another file.
2. **Write under a hidden temporary name in the output's folder** (same file system, so the final
   rename is atomic), with write errors raised (:func:`gdal_errors` for GDAL, which otherwise only
   prints some of them).
3. **Verify before publishing**: the finished file is reopened and read back (every raster block,
   every table row, every checkpoint byte) and flushed to the disk (``fsync``).
4. **Rename** into place (:func:`publish`), then ``fsync`` the folder.

A failure at any step removes the temporary file and raises: under the output names there is either
the complete new file or what was there before, and the command exits with a non-zero status.

:class:`InputError` is the exception of bad inputs and arguments: its message names the file (and
the field, row, date or band) and what was expected, in one line; the ``cmap`` command prints it
without a traceback and exits with status 1.
"""

import contextlib
import errno
import glob
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

INPUT_ERROR_STATUS = 1


class InputError(ValueError):
    """A bad input or argument, named in one line: the ``cmap`` command prints it without a traceback."""


class MissingInput(InputError, FileNotFoundError):
    """An input file or folder that does not exist."""


class OutputPathError(InputError):
    """An output path that would overwrite an input, or a file cmap did not write."""


class ExistingOutput(OutputPathError, FileExistsError):
    """An output name already held by something cmap does not replace (not its own output, or no --overwrite)."""


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(os.path.abspath(a)).resolve() == Path(os.path.abspath(b)).resolve()


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)).resolve(), Path(os.path.abspath(folder)).resolve()
    return path == folder or folder in path.parents


def check_outputs(
    outputs: Sequence[str | Path],
    inputs: Iterable[str | Path],
    is_own: Callable[[Path], bool],
    what: str,
) -> None:
    """Refuse output paths that are inputs, hold inputs, or name an existing file cmap did not write.

    Args:
        outputs: every path the command will write (files or store folders).
        inputs: every file or folder the command reads (nothing is written into an input folder).
        is_own: True for an existing output that cmap wrote (it may be replaced).
        what: the kind of output, for the message ("crop map", "store", "prediction table").
    """
    inputs = [Path(path) for path in inputs]
    for output in map(Path, outputs):
        for source in inputs:
            if _same(output, source) or (source.exists() and _inside(source, output)):
                raise OutputPathError(
                    f"{output}: the {what} would overwrite the input {source}; choose another output path"
                )
            if source.is_dir() and _inside(output, source):  # e.g. a table written into the store it reads
                raise OutputPathError(
                    f"{output}: the {what} would be written into the input folder {source}; choose another output path"
                )
        if (output.exists() or output.is_symlink()) and not is_own(output):
            raise OutputPathError(
                f"{output}: exists and is not a {what} written by cmap; remove it or choose another output path"
            )


def fsync_path(path: str | Path, directory: bool = False) -> None:
    """Flush a file (or a folder's entries) to the disk. File systems without fsync on folders are skipped."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if not directory or error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


def publish(temporary: str | Path, final: str | Path) -> Path:
    """Flush ``temporary`` to the disk and rename it to ``final`` (same folder), then flush the folder."""
    temporary, final = Path(temporary), Path(final)
    fsync_path(temporary)
    os.replace(temporary, final)
    fsync_path(final.parent, directory=True)
    return final


def write_bytes_atomically(path: str | Path, data: bytes | memoryview, remove_stale: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically on its own file system: a hidden temporary file in the same
    folder, written, flushed, ``fsync``-ed and read back (compared byte for byte), then renamed.

    A failure (a full disk, a read-back mismatch) removes the temporary file and raises: ``path`` keeps
    its previous content. A killed process can only leave the hidden ``.<name>.partial-<pid>`` file,
    which the next write of ``path`` removes (``remove_stale=False``: the caller cleans its folder
    itself, as the map's parts do once per run rather than once per window).
    """
    path = Path(path)
    if remove_stale:
        remove_stale_partials(path)
    temporary = temporary_path(path)
    view = memoryview(data).cast("B")
    chunk = 1 << 24
    try:
        with open(temporary, "wb") as file:
            for start in range(0, len(view), chunk):
                file.write(view[start : start + chunk])
            file.flush()
            os.fsync(file.fileno())
        with open(temporary, "rb") as file:
            for start in range(0, len(view), chunk):
                if file.read(chunk) != view[start : start + chunk]:
                    raise OSError(errno.EIO, f"{temporary}: read back differs from what was written at byte {start}")
            if file.read(1):
                raise OSError(errno.EIO, f"{temporary}: longer than what was written")
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):  # Python's write errors do not name the file
            raise OSError(error.errno or errno.EIO, f"{path}: not written, nothing changed ({error})") from error
        raise
    fsync_path(path.parent, directory=True)
    return path


def temporary_path(path: str | Path, suffix: str = "") -> Path:
    """The hidden temporary name of ``path`` in its folder for this process: ``.name.partial-<pid>``
    (+ suffix). The process id keeps two runs writing the same output from sharing a temporary file."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{os.getpid()}{suffix}")


def remove_stale_partials(path: str | Path, markers: Sequence[str] = (".partial-",)) -> list[Path]:
    """Remove the temporary files (or folders) of ``path`` left by killed processes: hidden
    ``.<name><marker><pid>...`` entries whose process is gone."""
    path = Path(path)
    removed = []
    for marker in markers:
        prefix = f".{path.name}{marker}"
        for partial in path.parent.glob(f"{glob.escape(prefix)}*"):
            pid = partial.name[len(prefix) :].split(".")[0]
            if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
            if partial.is_dir() and not partial.is_symlink():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class _GDALErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "signalled an error" in message or record.levelno >= logging.ERROR:
            self.messages.append(message)


@contextlib.contextmanager
def gdal_errors(path: str | Path) -> Iterator[None]:
    """Raise ``OSError`` naming ``path`` when GDAL signals an error inside the block.

    GDAL reports some write failures (a full disk while blocks are flushed at close) only to its
    error handler, not as a failed call; inside :class:`rasterio.Env` rasterio logs them, and this
    turns them into an exception.
    """
    import rasterio

    handler = _GDALErrors()
    logger = logging.getLogger("rasterio")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if level == logging.NOTSET or level > logging.INFO else level)
    try:
        with rasterio.Env():
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    if handler.messages:
        raise OSError(errno.EIO, f"{path}: GDAL failed to write it ({'; '.join(handler.messages[:3])})")


def verify_raster(path: str | Path, count: int, shape: tuple[int, int]) -> None:
    """Reopen a written raster and read every block of every band (and every overview): ``OSError`` if it fails."""
    import rasterio

    path = Path(path)
    try:
        with gdal_errors(path), rasterio.open(path) as dataset:
            if dataset.count != count or (dataset.height, dataset.width) != tuple(shape):
                raise OSError(
                    errno.EIO,
                    f"{path}: written with {dataset.count} bands of {dataset.height}x{dataset.width}, "
                    f"expected {count} of {shape[0]}x{shape[1]}",
                )
            for _, window in dataset.block_windows(1):
                dataset.read(window=window)
            for factor in dataset.overviews(1):
                dataset.read(out_shape=(count, max(1, dataset.height // factor), max(1, dataset.width // factor)))
    except rasterio.errors.RasterioError as error:
        raise OSError(errno.EIO, f"{path}: the written file is unreadable ({error})") from error
