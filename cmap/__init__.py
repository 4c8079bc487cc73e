"""cmap: crop-type maps from satellite image time series."""

__version__ = "0.1.0"
