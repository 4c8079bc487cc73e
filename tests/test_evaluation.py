"""Area-adjusted accuracy (cmap.evaluation, cmap area) against the worked example of Olofsson et al. (2014).

Source: P. Olofsson et al., Good practices for estimating area and assessing accuracy of land change,
Remote Sensing of Environment 148:42-57 (2014), section 5: a stratified random sample of 640
pixels from a map of 10,000,000 Landsat pixels (30 m, 0.09 ha) with four classes (table 8);
estimated proportions (table 9); accuracies and areas with 95 % confidence intervals
(sections 5.2.1 and 5.2.2), printed to two decimals and to the hectare.
"""

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.warp
from rasterio.transform import from_origin

from cmap.cli import main as cmap_main
from cmap.data.convert import read_sinop_samples
from cmap.data.raster import RasterStack
from cmap.evaluation import area_adjusted_accuracy, sample_counts
from tests.conftest import SHARED_DATA, require

CLASSES = ["deforestation", "forest_gain", "stable_forest", "stable_nonforest"]
# Table 8: sample counts, map class (stratum) in rows, reference class in columns.
COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
MAPPED_PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])
HECTARES_PER_PIXEL = 0.09


@pytest.fixture(scope="module")
def example():
    return area_adjusted_accuracy(COUNTS, MAPPED_PIXELS * HECTARES_PER_PIXEL, CLASSES)


def test_proportions_match_table_9(example):
    table_9 = [
        [0.0176, 0.0000, 0.0013, 0.0011],
        [0.0000, 0.0110, 0.0016, 0.0024],
        [0.0019, 0.0000, 0.2967, 0.0213],
        [0.0040, 0.0020, 0.0179, 0.6212],
    ]
    np.testing.assert_allclose(example.proportions, table_9, atol=5e-5)
    assert example.proportions.sum() == pytest.approx(1.0)


def test_accuracies_match_section_5_2_1(example):
    assert example.overall_accuracy == pytest.approx(0.95, abs=0.005)
    assert example.overall_accuracy_ci == pytest.approx(0.02, abs=0.005)
    np.testing.assert_allclose(example.users_accuracy, [0.88, 0.73, 0.93, 0.96], atol=0.005)
    np.testing.assert_allclose(example.users_accuracy_ci, [0.07, 0.10, 0.04, 0.02], atol=0.005)
    np.testing.assert_allclose(example.producers_accuracy, [0.75, 0.85, 0.93, 0.96], atol=0.005)
    # Printed: 0.21, 0.23, 0.03, 0.01. The paper's eq. 7 gives 0.254 and 0.018 for the second and
    # fourth (computed here by hand from eq. 7 and table 8 as well), so those two check eq. 7.
    np.testing.assert_allclose(example.producers_accuracy_ci, [0.21, 0.254, 0.03, 0.018], atol=0.005)


def test_areas_match_section_5_2_2(example):
    np.testing.assert_allclose(example.mapped_area, [18_000, 13_500, 288_000, 580_500])
    np.testing.assert_allclose(example.area, [21_158, 11_686, 285_770, 581_386], atol=1)
    # Printed half-widths (1.96 x standard error), in hectares.
    np.testing.assert_allclose(example.area_ci, [6_158, 3_756, 15_510, 16_282], atol=2)
    assert example.area.sum() == pytest.approx(example.mapped_area.sum())
    assert "21,158 ± 6,158" in example.table()


def test_unit_of_mapped_area_carries_through():
    pixels = area_adjusted_accuracy(COUNTS, MAPPED_PIXELS, CLASSES)
    np.testing.assert_allclose(pixels.area * HECTARES_PER_PIXEL, [21_158, 11_686, 285_770, 581_386], atol=1)
    np.testing.assert_allclose(pixels.users_accuracy, COUNTS.diagonal() / COUNTS.sum(axis=1))


def test_sample_counts_rebuild_table_8():
    rows, columns = np.nonzero(COUNTS)
    map_classes = np.repeat(rows, COUNTS[rows, columns])
    reference_classes = np.repeat(columns, COUNTS[rows, columns])
    np.testing.assert_array_equal(sample_counts(map_classes, reference_classes, 4), COUNTS)


def test_proportional_sample_gives_plain_accuracy():
    # Map areas proportional to the sample sizes: every sample weighs the same.
    counts = np.array([[40, 10], [5, 45]])
    result = area_adjusted_accuracy(counts, [100, 100])
    assert result.overall_accuracy == pytest.approx(85 / 100)
    np.testing.assert_allclose(result.area, [90, 110])


def test_zero_area_class_without_samples_weighs_nothing():
    counts = np.array([[40, 10, 0], [5, 45, 0], [0, 0, 0]])
    result = area_adjusted_accuracy(counts, [100, 100, 0])
    assert result.overall_accuracy == pytest.approx(0.85)
    np.testing.assert_allclose(result.users_accuracy[:2], [0.8, 0.9])
    # 0/0: no sample mapped as class 2, none labelled with it; both accuracies undefined, not 0.
    assert np.isnan(result.users_accuracy[2]) and np.isnan(result.producers_accuracy[2])
    assert np.isnan(result.users_accuracy_ci[2]) and np.isfinite(result.overall_accuracy_ci)
    assert "| 2 | 0 | 0 ± 0 | undefined | undefined |" in result.table()


@pytest.mark.parametrize(
    ("counts", "area", "message"),
    [
        (np.ones((2, 3)), [1, 1], "square"),
        (COUNTS, [1, 2, 3], "mapped_area"),
        (-COUNTS, MAPPED_PIXELS, "non-negative"),
        (np.array([[1, 0], [3, 5]]), [10, 10], r"map classes \['0'\]"),
    ],
)
def test_errors_name_the_problem(counts, area, message):
    with pytest.raises(ValueError, match=message):
        area_adjusted_accuracy(counts, area)


def test_sample_counts_reject_unknown_classes():
    with pytest.raises(ValueError, match="reference_classes"):
        sample_counts([0, 1], [0, 4], num_classes=3)


# ``cmap area``: the same worked example through the command, from a class map and reference points.

WIDTH, ORIGIN, PIXEL = 2500, (500_000.0, 5_000_000.0), 30.0  # 30 m Landsat pixels: 0.09 ha


@pytest.fixture(scope="module")
def example_map(tmp_path_factory):
    """The paper's map (10,000,000 pixels: its four classes in row bands) and its 640 reference points
    (table 8: n_ij points labelled j on pixels of map class i)."""
    folder = tmp_path_factory.mktemp("olofsson")
    rows = MAPPED_PIXELS // WIDTH  # 80, 60, 1280, 2580 rows
    classes = np.repeat(np.arange(4, dtype=np.uint8), rows)[:, None].repeat(WIDTH, axis=1)
    with rasterio.open(
        folder / "map.tif", "w", driver="GTiff", width=WIDTH, height=int(rows.sum()), count=1, dtype="uint8",
        crs="EPSG:32631", transform=from_origin(*ORIGIN, PIXEL, PIXEL), nodata=255, tiled=True, compress="deflate",
    ) as dataset:  # fmt: skip
        dataset.write(classes, 1)
        dataset.update_tags(class_names=json.dumps(CLASSES))
    points, first_row = [], np.concatenate([[0], np.cumsum(rows)[:-1]])
    for i in range(4):
        column = 0
        for j in range(4):
            for _ in range(COUNTS[i, j]):
                row, col = first_row[i] + column // WIDTH, column % WIDTH
                points.append((ORIGIN[0] + (col + 0.5) * PIXEL, ORIGIN[1] - (row + 0.5) * PIXEL, CLASSES[j]))
                column += 7  # distinct pixels of the class's band
    pd.DataFrame(points, columns=["x", "y", "label"]).to_csv(folder / "reference.csv", index=False)
    return folder


def test_the_worked_example_through_the_command(example_map, tmp_path):
    output = tmp_path / "area.md"
    cmap_main(["area", "--map", str(example_map / "map.tif"), "--reference", str(example_map / "reference.csv"),
               "--output", str(output), "--x_column", "x", "--y_column", "y", "--crs", "EPSG:32631"])  # fmt: skip
    table = pd.read_csv(output.with_suffix(".csv")).set_index("class")
    np.testing.assert_allclose(table.loc[CLASSES, "samples"], COUNTS.sum(axis=1))
    np.testing.assert_allclose(table.loc[CLASSES, "mapped_area_ha"], MAPPED_PIXELS * HECTARES_PER_PIXEL)
    # Section 5.2.2 (areas and 95 % half-widths, hectares) and 5.2.1 (accuracies), as printed.
    np.testing.assert_allclose(table.loc[CLASSES, "adjusted_area_ha"], [21_158, 11_686, 285_770, 581_386], atol=1)
    np.testing.assert_allclose(table.loc[CLASSES, "adjusted_area_ci_ha"], [6_158, 3_756, 15_510, 16_282], atol=2)
    np.testing.assert_allclose(table.loc[CLASSES, "users_accuracy"], [0.88, 0.73, 0.93, 0.96], atol=0.005)
    np.testing.assert_allclose(table.loc[CLASSES, "producers_accuracy"], [0.75, 0.85, 0.93, 0.96], atol=0.005)
    assert table.loc["overall", "users_accuracy"] == pytest.approx(0.95, abs=0.005)
    expected = area_adjusted_accuracy(COUNTS, MAPPED_PIXELS * HECTARES_PER_PIXEL, CLASSES).table()
    assert expected in output.read_text() and "areas in ha (0.09 ha per pixel)" in output.read_text()


def test_bad_reference_points_are_named(example_map, tmp_path, capsys):
    reference = tmp_path / "reference.csv"
    reference.write_text("x,y,label\n500015,4999985,forest\n")
    args = ["area", "--map", str(example_map / "map.tif"), "--reference", str(reference),
            "--output", str(tmp_path / "a.md"), "--x_column", "x", "--y_column", "y",
            "--crs", "EPSG:32631"]  # fmt: skip
    with pytest.raises(SystemExit) as exit:
        cmap_main(args)
    assert exit.value.code == 1 and "reference labels ['forest'] are not classes of the map" in capsys.readouterr().err
    reference.write_text("x,y,label\n0,0,deforestation\n")
    with pytest.raises(SystemExit):
        cmap_main(args)
    assert "1 reference points fall outside the map or on nodata, first at row 0" in capsys.readouterr().err
    assert not (tmp_path / "a.md").exists() and not (tmp_path / "a.csv").exists()


# ``cmap area`` on the Sinop cube (../shared/data/sits_sinop_modis_cube) with its own 18 reference points.

SINOP = SHARED_DATA / "sits_sinop_modis_cube"
SINOP_CLASSES = ["Cerrado", "Forest", "Pasture", "Soy_Corn", "Soy_Cotton"]  # the last: a class absent here


@pytest.fixture(scope="module")
def sinop_map(tmp_path_factory):
    """A class map of the Sinop cube: each pixel's nearest class mean of sits' 1,218 real NDVI samples
    (a minimum-distance classifier, enough to be a real map with real confusions), written as ``cmap
    map`` writes one, with a fifth class of the model mapped nowhere."""
    samples = read_sinop_samples(require(SINOP / "samples_modis_ndvi.rda"))
    assert samples.class_names == SINOP_CLASSES[:4]
    ndvi, labels = samples.series.values[..., 0], samples.series.labels
    means = np.stack([np.nanmean(ndvi[labels == k], axis=0) for k in range(4)])  # (classes, 12 dates)
    stack = RasterStack.from_folder(SINOP, r"_(?P<band>NDVI)_(?P<date>\d{4}-\d{2}-\d{2})", ["NDVI"], scale=1e-4,
                                    valid_range=(-2000, 10000))  # fmt: skip
    cube = stack.read()[:, 0].transpose(1, 2, 0)  # (rows, cols, dates)
    filled = np.where(np.isnan(cube), np.nanmean(cube), cube)
    classes = ((filled[:, :, None, :] - means) ** 2).sum(axis=-1).argmin(axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("sinop") / "sinop.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        count=1,
        dtype="uint8",
        nodata=255,
        width=stack.shape[1],
        height=stack.shape[0],
        crs=stack.profile["crs"],
        transform=stack.profile["transform"],
    ) as out:
        out.write(classes, 1)
        out.update_tags(class_names=json.dumps(SINOP_CLASSES))  # fmt: skip
    return path


def area_args(map_path, reference, output) -> list[str]:
    return ["area", "--map", str(map_path), "--reference", str(reference), "--output", str(output)]


def test_sinop_reference_points_too_few_on_a_mapped_class_say_where_they_fell(sinop_map, tmp_path, capsys):
    reference = require(SINOP / "samples_sinop_crop.csv")
    points = pd.read_csv(reference)
    with rasterio.open(sinop_map) as dataset:
        xs, ys = rasterio.warp.transform("EPSG:4326", dataset.crs, points.longitude, points.latitude)
        mapped = [SINOP_CLASSES[value[0]] for value in dataset.sample(zip(xs, ys, strict=True))]
    cerrado = points.label == "Cerrado"
    assert cerrado.sum() == 3 and sorted(np.array(mapped)[cerrado]) == ["Cerrado", "Forest", "Forest"]
    with pytest.raises(SystemExit) as exit:
        cmap_main(area_args(sinop_map, reference, tmp_path / "area.md"))
    error = capsys.readouterr().err.strip()
    assert exit.value.code == 1 and len(error.splitlines()) == 1 and "Traceback" not in error
    assert "need at least 2 reference points on pixels mapped as each class" in error
    assert (
        "Cerrado: 1 point(s) on pixels mapped as Cerrado" in error and "of the 3 labelled Cerrado, 2 on Forest" in error
    )
    assert "Add reference points on pixels mapped as Cerrado (a stratified random sample" in error
    assert "Forest:" not in error and "Soy_Cotton" not in error  # enough points; no mapped pixel
    assert not list(tmp_path.iterdir())

    # The way forward: one more Cerrado point, on a pixel mapped as Cerrado.
    with rasterio.open(sinop_map) as dataset:
        row, col = np.argwhere(dataset.read(1) == 0)[0]
        x, y = dataset.xy(row, col)
        (lon,), (lat,) = rasterio.warp.transform(dataset.crs, "EPSG:4326", [x], [y])
    added = tmp_path / "reference.csv"
    pd.concat([points, pd.DataFrame({"id": [19], "longitude": [lon], "latitude": [lat], "label": ["Cerrado"]})]).to_csv(
        added, index=False
    )
    cmap_main(area_args(sinop_map, added, tmp_path / "area.md"))
    table = pd.read_csv(tmp_path / "area.csv").set_index("class")
    assert table.loc["Cerrado", "samples"] == 2 and table.loc["Cerrado", "users_accuracy"] == 1.0
    # Soy_Cotton: no mapped pixel, no reference point: 0/0 accuracies are undefined, not 0.
    assert table.loc["Soy_Cotton", "mapped_area_ha"] == 0 and table.loc["Soy_Cotton", "samples"] == 0
    assert np.isnan(table.loc["Soy_Cotton", "users_accuracy"]) and np.isnan(
        table.loc["Soy_Cotton", "producers_accuracy"]
    )
    assert "| Soy_Cotton | 0 | 0 ± 0 | undefined | undefined |" in (tmp_path / "area.md").read_text()
