"""``cmap extract`` on the real Sentinel-2 L2A SAFE (../shared/data/sentinel2_l2a_real, 5 October 2022,
tile 29UNU, cloud cover 60 %): points under clouds or on no data never abort the extraction.

The points are picked here by reading the product with rasterio, in a 20 x 20 pixel area of the
60 m grid (rows 1680-1699, columns 830-849: the edge of the orbit's swath, where clear land, clouds
and DN 0 meet; found by counting SCL classes in 20 x 20 blocks of the SCL_60m file): clear points
where the 20 m SCL (the one cmap reads) is vegetation, bare soil or water and B02 > 0; clouded ones
where it is a cloud (8, 9, 10) and B02 > 0; no-data ones where B02 is 0 (DN 0, SCL 0); and one
point of the tile outside the area read (``--bounds``).
"""

from pathlib import Path

import fiona
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import xy
from rasterio.windows import Window

from cmap.cli import main as cmap_main
from cmap.data import open_store

from .conftest import SHARED_DATA, require

PRODUCTS = SHARED_DATA / "sentinel2_l2a_real" / "safe"
SAFE = PRODUCTS / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
CRS = "EPSG:32629"
BANDS = ["B02", "B8A", "B11"]
AREA = Window(830, 1680, 20, 20)  # of the 60 m grid
PICKS = {"clear": ([4, 5, 6], 3), "clouded": ([8, 9, 10], 3), "no_data": ([0], 2)}


def band_file(band: str, metres: int = 60) -> Path:
    return next((require(SAFE) / "GRANULE").glob(f"*/IMG_DATA/R{metres}m/*_{band}_{metres}m.jp2"))


def area_kinds() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What each 60 m pixel of the area is (20 x 20: ``clear``, ``clouded``, ``no_data`` as ``PICKS`` says,
    or ``other``), and the x and y of the pixel centres."""
    with rasterio.open(band_file("B02")) as b02:
        transform, dn = b02.transform, b02.read(1, window=AREA)
    rows, cols = np.mgrid[AREA.row_off : AREA.row_off + 20, AREA.col_off : AREA.col_off + 20]
    xs, ys = (np.reshape(values, (20, 20)) for values in xy(transform, rows.ravel(), cols.ravel()))
    with rasterio.open(band_file("SCL", 20)) as scl:  # the 20 m pixel under each 60 m pixel's centre
        classes = np.array([value[0] for value in scl.sample(zip(xs.ravel(), ys.ravel(), strict=True))])
    kinds = np.full(400, "other", dtype=object)
    for kind, (scl_classes, _) in PICKS.items():
        kinds[np.isin(classes, scl_classes) & ((dn.ravel() == 0) if kind == "no_data" else (dn.ravel() > 0))] = kind
    return kinds.reshape(20, 20), xs, ys


def pick_points() -> pd.DataFrame:
    """Points at 60 m pixel centres of the area, by kind (``PICKS``), mixed, and one outside it."""
    kinds, xs, ys = area_kinds()
    chosen = []
    for kind, (_, count) in PICKS.items():
        where = (kinds == kind).ravel()
        spread = np.flatnonzero(where)[:: max(1, where.sum() // count)][:count]  # spread over the area
        assert len(spread) == count, (kind, where.sum())
        chosen += [(xs.flat[i], ys.flat[i], kind) for i in spread]
    # One point of the tile 10 pixels east of the area read: outside the grid cmap reads.
    chosen.append((xs[0, 19] + 600, ys[0, 19], "outside"))
    order = [0, 3, 6, 1, 4, 8, 7, 2, 5]  # clear, clouded, no data, ... mixed in the file
    points = pd.DataFrame([chosen[i] for i in order], columns=["x", "y", "kind"])
    points["crop"] = np.where(np.arange(len(points)) % 2, "grass", "other")
    return points


def extract_command(points: Path, output: Path, *options: str) -> list[str]:
    transform = rasterio.Affine(60, 0, 499_980, 0, -60, 5_900_040)  # the tile's 60 m grid
    left, top = transform * (AREA.col_off, AREA.row_off)
    bounds = f"[{left}, {top - 60 * AREA.height}, {left + 60 * AREA.width}, {top}]"
    return ["extract", str(PRODUCTS), str(points), str(output), "--bands", *BANDS, "--bounds", bounds,
            "--label_field", "crop", "--x_column", "x", "--y_column", "y", "--crs", CRS, *options]  # fmt: skip


def test_clouded_and_no_data_points_of_the_real_safe_are_skipped_and_listed(tmp_path, capsys):
    points = pick_points()
    labels = tmp_path / "points.csv"
    points[["x", "y", "crop"]].to_csv(labels, index=False)
    store = tmp_path / "store"
    cmap_main(extract_command(labels, store))
    out = capsys.readouterr().out
    # The store holds the clear points, in file order, read as (DN - 1000) / 10000 (baseline 04.00).
    series, metadata = open_store(store)
    clear = points.index[points.kind == "clear"].to_numpy()
    assert metadata["band_names"] == BANDS and np.asarray(series.groups).tolist() == clear.tolist()
    assert [metadata["class_names"][label] for label in series.labels] == points.crop[clear].tolist()
    values = np.asarray(series.values)
    assert values.shape == (3, 1, 3) and np.isfinite(values).all()
    for c, band in enumerate(BANDS):
        with rasterio.open(band_file(band)) as dataset:
            dn = np.array([value[0] for value in dataset.sample(zip(points.x[clear], points.y[clear], strict=True))])
        np.testing.assert_allclose(values[:, 0, c], (dn.astype(np.float32) - 1000) * np.float32(1e-4), rtol=1e-6)
    # The others, with their reason and their coordinates and label as in the labels file.
    skipped = pd.read_csv(store / "skipped_points.csv")
    others = points[points.kind != "clear"]
    assert skipped["index"].tolist() == others.index.tolist()
    assert skipped.reason.tolist() == others.kind.tolist()
    assert skipped.label.tolist() == others.crop.tolist()
    np.testing.assert_array_equal(skipped[["x", "y"]].to_numpy(), others[["x", "y"]].to_numpy())
    # One summary line: how many, why, where they are listed.
    lines = [line for line in out.splitlines() if "skipped" in line]
    assert len(lines) == 1, out
    assert "skipped 6 of 9 shapes: 3 masked on every date" in lines[0]
    assert "2 no data on every date" in lines[0] and "1 outside the raster grid" in lines[0]
    assert f"{store}/skipped_points.csv" in lines[0] and "--strict" in lines[0]
    # The points picked on SCL 8-10 are clouds to cmap too: clear once the mask is lifted (the store, with
    # its list of skipped points, is replaced).
    cmap_main(extract_command(labels, store, "--masked_classes", "[]", "--overwrite"))
    assert pd.read_csv(store / "skipped_points.csv").reason.tolist() == ["no_data", "outside", "no_data"]
    assert len(open_store(store)[0].labels) == 6


def test_strict_makes_the_skipped_points_one_error_line_naming_them(tmp_path, capsys):
    points = pick_points()
    labels = tmp_path / "points.csv"
    points[["x", "y", "crop"]].to_csv(labels, index=False)
    with pytest.raises(SystemExit) as stop:
        cmap_main(extract_command(labels, tmp_path / "store", "--strict"))
    assert stop.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"cmap extract: error: {labels}: 6 shapes cover no pixel with a valid date")
    assert "clouded: index 1, 4, 8; no_data: index 2, 6; outside: index 5" in lines[0]
    assert not (tmp_path / "store").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["points.csv"]
    # Every point outside the area: nothing to write, one line whatever --strict.
    points[["x", "y", "crop"]].iloc[[5]].to_csv(labels, index=False)
    with pytest.raises(SystemExit):
        cmap_main(extract_command(labels, tmp_path / "store"))
    assert "none of the 1 shapes gives a series: 1 outside the raster grid" in capsys.readouterr().err


def test_a_polygon_keeps_its_clear_pixels_and_one_without_any_is_listed(tmp_path, capsys):
    """Two fields: one of 1 x 2 pixels, clear and DN 0 (the swath's edge), keeps its clear pixel; one of
    2 x 2 pixels under clouds is listed, by its bounding box's centre."""
    kinds, xs, ys = area_kinds()
    edge = next((r, c) for r in range(20) for c in range(19) if [*kinds[r, c : c + 2]] == ["clear", "no_data"])
    cloud = next((r, c) for r in range(19) for c in range(19) if (kinds[r : r + 2, c : c + 2] == "clouded").all())
    labels = tmp_path / "fields.gpkg"
    schema = {"geometry": "Polygon", "properties": {"crop": "str"}}
    with fiona.open(labels, "w", driver="GPKG", crs=CRS, schema=schema) as layer:
        for (row, col), height, crop in ((edge, 1, "grass"), (cloud, 2, "other")):
            left, top, right, bottom = (
                xs[row, col] - 30,
                ys[row, col] + 30,
                xs[row, col] + 90,
                ys[row, col] + 30 - 60 * height,
            )
            ring = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top)]
            layer.write({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"crop": crop}})
    store = tmp_path / "store"
    command = extract_command(labels, store)
    cmap_main(command[: command.index("--x_column")] + ["--crs", CRS])
    series, metadata = open_store(store)
    assert np.asarray(series.groups).tolist() == [0] and metadata["class_names"] == ["grass", "other"]
    assert np.isfinite(np.asarray(series.values)).all()
    skipped = pd.read_csv(store / "skipped_points.csv")
    assert skipped[["index", "label", "reason"]].values.tolist() == [[1, "other", "clouded"]]
    np.testing.assert_allclose(skipped[["x", "y"]].to_numpy()[0], (xs[cloud] + 30, ys[cloud] - 30))
    line = capsys.readouterr().out.splitlines()[-1]
    assert "skipped 1 of 2 shapes: 1 masked on every date" in line
    assert "; 1 pixels of kept polygons had no valid date and are left out" in line
