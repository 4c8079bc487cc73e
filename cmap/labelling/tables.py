"""Sample tables of the labelling commands: ids of a store's rows, optional coordinates, and the
CSV / GeoPackage outputs (written under a temporary name, read back, then renamed).

A store keeps no coordinates (``cmap.data.store``); ``--coordinates TABLE`` gives them: a CSV or
Parquet table with ``longitude`` and ``latitude`` columns (or ``--xy x y``), keyed by
``sample_id`` (the store's ids) or by ``row`` (the store's row numbers, for stores without ids).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from cmap.outputs import InputError, MissingInput, check_outputs, publish, temporary_path, write_bytes_atomically


def sample_ids(series) -> np.ndarray:
    """The store's sample ids (text), or its row numbers as text when it keeps none."""
    if series.sample_ids is None:
        return np.arange(len(series)).astype(str).astype(object)
    return np.asarray(series.sample_ids[:]).astype(str).astype(object)


def read_coordinates(
    path: str | Path, ids: np.ndarray, columns: tuple[str, str] = ("longitude", "latitude")
) -> np.ndarray:
    """float64 (N, 2) coordinates of the store rows whose ids are ``ids``, from the table ``path``."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: coordinates table not found")
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"sample_id": str})
    key = "sample_id" if "sample_id" in table.columns else "row" if "row" in table.columns else None
    missing = [name for name in (*columns, key or "sample_id") if name not in table.columns]
    if missing:
        raise InputError(f"{path}: columns {missing} missing (expected sample_id or row, {columns[0]}, {columns[1]})")
    keys = table[key].astype(str)
    if keys.duplicated().any():
        row = int(np.flatnonzero(keys.duplicated())[0])
        raise InputError(f"{path}: {key} {keys.iloc[row]!r} appears twice (row {row})")
    indexed = table.set_index(keys)[list(columns)]
    absent = [sample for sample in ids if sample not in indexed.index]
    if absent:
        raise InputError(f"{path}: {key} {absent[0]!r} of the store has no coordinates ({len(absent)} missing)")
    coordinates = indexed.loc[list(ids)].to_numpy(np.float64)
    bad = ~np.isfinite(coordinates).all(axis=1)
    if bad.any():
        raise InputError(
            f"{path}: {key} {ids[np.flatnonzero(bad)[0]]!r}: {columns} must be numbers, got {coordinates[bad][0]}"
        )
    return coordinates


#: The first columns of these commands' tables: a store's samples, and a map's pixels (``cmap suggest --map``).
OWN_HEADERS = ("row,sample_id", "pixel_row,pixel_column,sample_id")


def is_own_table(path: Path) -> bool:
    """An output of these commands: a CSV whose columns start with one of :data:`OWN_HEADERS`, or a GeoPackage."""
    if path.suffix == ".gpkg":
        return path.is_file()
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().startswith(OWN_HEADERS) or path.name.startswith("cv_")
    except (OSError, UnicodeDecodeError):
        return False


def write_csv(table: pd.DataFrame, path: Path) -> Path:
    """``table`` as CSV, atomically, read back and checked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, table.to_csv(index=False).encode())
    return path


def write_points(table: pd.DataFrame, coordinates: np.ndarray, path: Path, crs: str = "EPSG:4326") -> Path:
    """``table`` as a GeoPackage of points (layer named after the file), written under a temporary
    name, read back (feature count and ids), then renamed."""
    import fiona

    types = pd.api.types
    columns = {
        name: "float" if types.is_float_dtype(dtype) else "int" if types.is_integer_dtype(dtype) else "str"
        for name, dtype in table.dtypes.items()
    }
    schema = {"geometry": "Point", "properties": columns}
    temporary = temporary_path(path, ".gpkg")
    temporary.unlink(missing_ok=True)
    with fiona.open(temporary, "w", driver="GPKG", crs=crs, schema=schema, layer=path.stem) as layer:
        for (x, y), record in zip(coordinates, table.to_dict("records"), strict=True):
            properties = {
                key: (value.item() if isinstance(value, np.generic) else value) for key, value in record.items()
            }
            layer.write({"geometry": {"type": "Point", "coordinates": (float(x), float(y))}, "properties": properties})
    with fiona.open(temporary, layer=path.stem) as layer:
        written = [feature["properties"]["sample_id"] for feature in layer]
    if written != list(table["sample_id"]):
        temporary.unlink(missing_ok=True)
        raise OSError(f"{path}: read back differs from what was written")
    return publish(temporary, path)


def check_table_output(output: Path) -> None:
    """``output`` names the CSV table: the GeoPackage beside it takes the same name with ``.gpkg``, so an
    ``output`` named ``.gpkg`` would be overwritten by the CSV."""
    if output.suffix.lower() == ".gpkg":
        raise InputError(f"{output}: OUTPUT is the CSV table (e.g. next.csv); the GeoPackage is written beside it")


def write_outputs(
    table: pd.DataFrame, output: Path, inputs: list, coordinates: np.ndarray | None, crs: str = "EPSG:4326"
) -> list[Path]:
    """``output`` (.csv), and beside it a GeoPackage (.gpkg) when ``coordinates`` are given."""
    check_table_output(output)
    paths = [output] + ([output.with_suffix(".gpkg")] if coordinates is not None else [])
    check_outputs(paths, inputs, is_own_table, "sample table")
    if coordinates is not None:
        table = table.assign(longitude=coordinates[:, 0], latitude=coordinates[:, 1])
        write_points(table, coordinates, paths[1], crs)
    write_csv(table, output)
    return paths
