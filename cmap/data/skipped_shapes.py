"""The labelled shapes ``cmap extract`` could not take: a table of them with their reason, and its messages.

A point (or polygon) gives no series when it lies outside the raster grid, when the class mask
(Sentinel-2's SCL: clouds, shadows, snow) hides it on every date, or when the rasters have no data
there on every date (nodata, DN 0, outside the valid range or every item's footprint). A user
cannot know that before reading the images, so ``cmap extract`` keeps every shape it can, writes the
others to ``skipped_points.csv`` in the store (:data:`FILE_NAME`) and says so in one line;
``--strict`` makes them an error naming them (:func:`strict_message`).
"""

from typing import Any

import numpy as np
import pandas as pd

#: The file of skipped shapes, written into the store with it (``cmap.data.store.write_store``'s ``extra_files``).
FILE_NAME = "skipped_points.csv"

#: Reasons, in the order they are reported: the ``reason`` column's values and what they mean.
REASONS = {
    "clouded": "masked on every date (clouds, shadows, snow: the SCL classes of --masked_classes)",
    "no_data": "no data on every date (nodata or DN 0, outside the valid range or every image's footprint)",
    "outside": "outside the raster grid (or a polygon covering no pixel centre)",
}

#: Indices named per reason in a message, before "and N more".
NAMED = 20


def skipped_table(shapes: Any, reasons: dict[int, str]) -> pd.DataFrame:
    """One row per skipped shape of ``shapes`` (a :class:`~cmap.data.samples.LabelledShapes`): its index in
    the labels file, its coordinates in the file's CRS and column names (a polygon: its bounding box's
    centre), its label and its ``reason`` (a key of :data:`REASONS`), by index."""
    x_name, y_name = shapes.coordinate_names
    indices = sorted(reasons)
    centres = [representative_point(shapes.geometries[i]) for i in indices]
    return pd.DataFrame(
        {
            "index": pd.Series(indices, dtype="int64"),
            x_name: pd.Series([x for x, _ in centres], dtype="float64"),
            y_name: pd.Series([y for _, y in centres], dtype="float64"),
            "label": pd.Series([shapes.labels[i] for i in indices], dtype="object"),
            "reason": pd.Series([reasons[i] for i in indices], dtype="object"),
        }
    )


def representative_point(geometry: dict[str, Any]) -> tuple[float, float]:
    """A point's coordinates; any other geometry's bounding-box centre."""
    if geometry["type"] == "Point":
        x, y = geometry["coordinates"][:2]
        return float(x), float(y)
    coordinates = np.array(list(flat_coordinates(geometry["coordinates"])), dtype=float)
    return float((coordinates[:, 0].min() + coordinates[:, 0].max()) / 2), float(
        (coordinates[:, 1].min() + coordinates[:, 1].max()) / 2
    )


def flat_coordinates(nested: Any):
    """The (x, y) pairs of a GeoJSON coordinates array of any depth."""
    if len(nested) and isinstance(nested[0], (int, float)):
        yield nested[0], nested[1]
        return
    for part in nested:
        yield from flat_coordinates(part)


def table_bytes(skipped: pd.DataFrame) -> bytes:
    """The CSV file of ``skipped`` (full precision coordinates)."""
    return skipped.to_csv(index=False, float_format="%.17g").encode()


def counts(skipped: pd.DataFrame) -> str:
    """``3 masked on every date (...), 2 no data on every date (...)``: the skipped shapes by reason."""
    by_reason = skipped["reason"].value_counts()
    return ", ".join(f"{by_reason[reason]} {text}" for reason, text in REASONS.items() if reason in by_reason)


def named(skipped: pd.DataFrame) -> str:
    """The skipped shapes' indices by reason: ``clouded: index 3, 5; outside: index 9``."""
    parts = []
    for reason in REASONS:
        indices = skipped.loc[skipped["reason"] == reason, "index"].tolist()
        if indices:
            more = f" and {len(indices) - NAMED} more" if len(indices) > NAMED else ""
            parts.append(f"{reason}: index {', '.join(map(str, indices[:NAMED]))}{more}")
    return "; ".join(parts)


def summary_line(skipped: pd.DataFrame, source: str, total: int, store: str, dropped_pixels: int = 0) -> str:
    """The one line ``cmap extract`` prints when it skipped shapes (or pixels of polygons it kept)."""
    pixels = f"; {dropped_pixels} pixels of kept polygons had no valid date and are left out" if dropped_pixels else ""
    if not len(skipped):
        return f"{source}: every shape kept{pixels}"
    return (
        f"{source}: skipped {len(skipped)} of {total} shapes: {counts(skipped)}{pixels}; listed with their reason "
        f"in {store}/{FILE_NAME} ({named(skipped)}); --strict makes them an error"
    )


def strict_message(skipped: pd.DataFrame, source: str, total: int) -> str:
    """The error of ``--strict`` (and of :func:`~cmap.data.samples.extract_samples`): one line naming them."""
    return (
        f"{source}: {len(skipped)} shapes cover no pixel with a valid date ({total} shapes in all), first at index "
        f"{skipped['index'].iloc[0]} ({named(skipped)}): {counts(skipped)}; remove them, or leave --strict out to "
        f"skip them and list them in the store's {FILE_NAME}"
    )


def nothing_kept_message(skipped: pd.DataFrame, source: str, total: int) -> str:
    """The error when no shape gives a series."""
    return (
        f"{source}: none of the {total} shapes gives a series: {counts(skipped)}; check the labels' CRS (--crs), "
        "the area (--bounds) and the dates of the images"
    )
