"""The input contract: what a trained model's inputs must look like, from the data to the map.

A model learns from series that were read, scaled, normalised and placed on a time axis in one
particular way; ``cmap predict`` and ``cmap map`` must do exactly the same to new inputs. The
:class:`InputContract` holds all of it in one object::

    data module (store metadata + training statistics) -> InputContract
        -> checkpoint[CHECKPOINT_KEY] (written by the task) -> Classifier.input_contract
        -> cmap predict / cmap map (its model_inputs and time_axis)

- band names (in the order the encoder reads them) and class names (in output order);
- the per-band normalisation (mean and standard deviation of the training split), applied by
  :meth:`InputContract.model_inputs`, the one normalisation function of the package;
- the :class:`~cmap.data.time_axis.TimeAxis`: how acquisition dates become the day offsets the encoders see;
- optionally the raw-value convention of the source rasters (:class:`RawValues`), the default of
  ``cmap map``'s ``--scale``, ``--offset`` and ``--valid_range``.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmap.data.time_axis import TimeAxis

#: The checkpoint entry holding :meth:`InputContract.to_dict`.
CHECKPOINT_KEY = "cmap_input_contract"


@dataclass(frozen=True)
class RawValues:
    """The raw-value convention of raster sources: physical value = raw * scale + offset; raw values
    outside ``valid_range`` (and the files' nodata) are missing dates."""

    scale: float = 1.0
    offset: float = 0.0
    valid_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.valid_range is not None:
            low, high = (float(v) for v in self.valid_range)
            if not low <= high:
                raise ValueError(f"valid_range must be [low, high] with low <= high, got {list(self.valid_range)}")
            object.__setattr__(self, "valid_range", (low, high))

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset": self.offset, "valid_range": self.valid_range and list(self.valid_range)}

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> "RawValues":
        return cls(content["scale"], content["offset"], content.get("valid_range"))


@dataclass(frozen=True)
class DateGrid:
    """The training series' calendar as a regular grid of days: ``num_steps`` steps of ``step`` days
    from day 0, step ``i`` holding the dates of days in ``[i - 1/2, i + 1/2) * step``.

    ``step`` is the median number of days between consecutive valid dates of the training series
    (their acquisition cadence); ``num_steps`` covers their last day. Series on one date grid (UCR
    Crop every 8 days, MOD13Q1 every 16) have one date per step; irregular ones several or none.
    Heads that keep where in the season a feature is use it
    (:class:`~cmap.ml.tempcnn.DateGridClassification`).
    """

    step: int
    num_steps: int

    def __post_init__(self) -> None:
        if self.step < 1 or self.num_steps < 1:
            raise ValueError(f"DateGrid needs step >= 1 and num_steps >= 1, got {self.step}, {self.num_steps}")

    @classmethod
    def of(cls, days: np.ndarray, mask: np.ndarray) -> "DateGrid":
        """The grid of series ``days`` (N, T) whose valid dates are ``mask`` (N, T)."""
        if not mask.any():
            raise ValueError("DateGrid: no valid date")
        ordered = np.sort(np.where(mask, days, np.nan), axis=1)  # masked dates last, as NaN
        gaps = np.diff(ordered, axis=1)
        valid_gaps = gaps[gaps > 0]  # a NaN gap (a masked date) compares False
        step = max(1, int(np.median(valid_gaps))) if valid_gaps.size else 1
        last_day = int(days[mask].max())
        return cls(step, int(np.floor(last_day / step + 0.5)) + 1)

    def to_dict(self) -> dict[str, int]:
        return {"step": self.step, "num_steps": self.num_steps}


@dataclass(frozen=True, eq=False)
class InputContract:
    """Band names, class names, normalisation, time axis and raw values of a model's inputs.

    Attributes:
        band_names: the bands of each date, in the order the encoder reads them.
        mean, std: float32 (C,) per-band statistics of the training split; inputs are
            ``(values - mean) / std``.
        time_axis: how dates become days.
        class_names: the classes in output order (None for tasks without classes).
        raw_values: the raw-value convention of the source rasters, when the data came from rasters.
        date_grid: the training series' calendar (:class:`DateGrid`; None in checkpoints made before it).
    """

    band_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    time_axis: TimeAxis = field(default_factory=TimeAxis)
    class_names: tuple[str, ...] | None = None
    raw_values: RawValues | None = None
    date_grid: DateGrid | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "band_names", tuple(self.band_names))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        for name in ("mean", "std"):
            array = np.asarray(getattr(self, name), dtype=np.float32).reshape(-1)
            if array.shape != (len(self.band_names),):
                raise ValueError(
                    f"input contract: {name} has {array.size} values for {len(self.band_names)} bands {self.band_names}"
                )
            object.__setattr__(self, name, array)
        if not (np.isfinite(self.std).all() and (self.std > 0).all()):
            raise ValueError(f"input contract: std must be finite and > 0, got {self.std.tolist()}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InputContract) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable arrays inside: not hashable

    @property
    def num_bands(self) -> int:
        return len(self.band_names)

    def model_inputs(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw series (..., T, C) -> (normalised values, mask (..., T)).

        A date with any NaN or infinite band value is masked (a cloud, a gap, padding) and its
        values are zeroed, as the batch contract asks.
        """
        mask = np.isfinite(values).all(axis=-1)
        normalised = ((values - self.mean) / self.std).astype(np.float32, copy=False)
        normalised[~mask] = 0.0
        return normalised, mask

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, strings, floats): safe for ``torch.load(weights_only=True)`` and YAML."""
        return {
            "band_names": list(self.band_names),
            "class_names": None if self.class_names is None else list(self.class_names),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "time_axis": self.time_axis.to_dict(),
            "raw_values": None if self.raw_values is None else self.raw_values.to_dict(),
            "date_grid": None if self.date_grid is None else self.date_grid.to_dict(),
        }

    @classmethod
    def from_dict(cls, content: dict[str, Any]) -> "InputContract":
        return cls(
            band_names=content["band_names"],
            mean=content["mean"],
            std=content["std"],
            time_axis=TimeAxis.from_dict(content["time_axis"]),
            class_names=content.get("class_names"),
            raw_values=None if content.get("raw_values") is None else RawValues.from_dict(content["raw_values"]),
            date_grid=None if content.get("date_grid") is None else DateGrid(**content["date_grid"]),
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], path: str) -> "InputContract":
        """The contract a ``cmap fit`` checkpoint carries (``path`` names it in errors)."""
        if CHECKPOINT_KEY not in checkpoint:
            raise ValueError(
                f"{path}: the checkpoint has no input contract ({CHECKPOINT_KEY!r}): it was not made by `cmap fit` "
                "with a cmap data module (or by a cmap version before the contract); retrain it"
            )
        return cls.from_dict(checkpoint[CHECKPOINT_KEY])


#: Every input setting, flat (the raw-value convention as its three parts), in the order they are resolved.
INPUT_SETTINGS = (
    "band_names",
    "class_names",
    "mean",
    "std",
    "time_axis",
    "scale",
    "offset",
    "valid_range",
    "date_grid",
)


def contract_settings(contract: InputContract) -> dict[str, Any]:
    """The input settings (:data:`INPUT_SETTINGS`) of ``contract``; None where it has none."""
    return {
        "band_names": contract.band_names, "class_names": contract.class_names, "mean": contract.mean,
        "std": contract.std, "time_axis": contract.time_axis, **raw_value_settings(contract.raw_values),
        "date_grid": contract.date_grid,
    }  # fmt: skip


def raw_value_settings(raw_values: RawValues | None) -> dict[str, Any]:
    """The ``scale``, ``offset`` and ``valid_range`` settings of ``raw_values`` (None without them)."""
    if raw_values is None:
        return dict.fromkeys(("scale", "offset", "valid_range"))
    return {"scale": raw_values.scale, "offset": raw_values.offset, "valid_range": raw_values.valid_range}


def resolve_input_settings(
    explicit: Mapping[str, Any] | None = None,
    checkpoint: InputContract | None = None,
    defaults: Mapping[str, Any | Callable[[], Any]] | None = None,
) -> dict[str, Any]:
    """Each input setting (:data:`INPUT_SETTINGS`) from the first source that gives it (not None):
    an ``explicit`` option, else the ``checkpoint``'s contract, else ``defaults`` (the data's own, or a
    command's), as timm's ``resolve_data_config`` does for a model's input size and normalisation.

    A default may be a function, called only when neither an option nor the checkpoint gives the
    setting: a data module's statistics are computed only when no checkpoint brings them.
    """
    explicit, defaults = dict(explicit or {}), dict(defaults or {})
    unknown = sorted((explicit.keys() | defaults.keys()) - set(INPUT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown input settings {unknown}; the settings are {list(INPUT_SETTINGS)}")
    carried = {} if checkpoint is None else contract_settings(checkpoint)
    resolved = {}
    for name in INPUT_SETTINGS:
        for value in (explicit.get(name), carried.get(name)):
            if value is not None:
                resolved[name] = value
                break
        else:
            default = defaults.get(name)
            resolved[name] = default() if callable(default) else default
    return resolved


def contract_from_settings(settings: Mapping[str, Any]) -> InputContract:
    """The :class:`InputContract` of resolved input settings (:func:`resolve_input_settings`)."""
    raw = [settings.get(name) for name in ("scale", "offset", "valid_range")]
    raw_values = None if all(value is None for value in raw) else RawValues(
        1.0 if raw[0] is None else raw[0], 0.0 if raw[1] is None else raw[1], raw[2]
    )  # fmt: skip
    return InputContract(
        settings["band_names"], settings["mean"], settings["std"], settings["time_axis"], settings["class_names"],
        raw_values, settings["date_grid"],
    )  # fmt: skip
