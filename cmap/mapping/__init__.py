r"""Crop maps: a trained classifier over a raster stack -> a GeoTIFF class map and class probabilities.

    cmap map --checkpoint runs/.../checkpoints/last.ckpt --rasters cube/ --output sinop_map.tif \
        --pattern '_(?P<band>[A-Za-z0-9]+)_(?P<date>\d{4}-\d{2}-\d{2})' --scale 1e-4 --valid_range '[-2000, 10000]'

(``python -m cmap.mapping`` is the same command.) The stack (:class:`~cmap.data.raster.RasterStack`)
is read window by window, so memory depends on ``window_size``, not on the raster's size. Each
window's pixels are classified ``batch_size`` at a time through Lightning's ``Trainer.predict``
(``accelerator``, ``precision`` such as ``bf16-mixed``); pixels without any valid date are nodata.
Band names, class names, normalisation and the time axis come from the checkpoint's input contract
(:class:`~cmap.data.contract.InputContract`): days are counted as the training series' were, so a
stack that starts later than the training data (a missing first image) is still classified on the
training days.

Outputs, on the input's grid (CRS, transform, size), tiled and DEFLATE-compressed, Cloud Optimized
GeoTIFF by default, each readable by GDAL without cmap's sidecars:

- ``OUTPUT``: uint8 class index (0 .. K-1 in the checkpoint's class order, nodata 255), with a
  colour table, the class names in the band's metadata (``0=...``) and the tags (``class_names``,
  JSON); GDAL's sidecar ``OUTPUT.aux.xml`` with the category names and a thematic raster attribute
  table (:func:`~cmap.mapping.styles.gdal_attributes`), and a QGIS style (``OUTPUT`` with suffix ``.qml``);
- ``OUTPUT`` with ``_probs`` before the suffix (unless ``probabilities=False``): one uint8 band per
  class, the class probability in percent (0..100, nodata 255, GDAL scale 0.01), bands described by
  class name;
- ``OUTPUT`` with ``_uncertainty`` (``uncertainty=True``): normalised entropy and margin uncertainty
  in percent (:mod:`cmap.postprocessing`);
- with ``parcels``, a GeoPackage of the polygons' class summaries (:mod:`cmap.parcels`).

``smoothing`` smooths the probabilities (sits' Bayesian smoother) on windows read with a halo, so
the result does not depend on the window size.

Several processes (Lightning's DDP strategy: ``devices``, ``num_nodes``, ``strategy``; torchrun and
SLURM) share the windows (:class:`~cmap.mapping.windows.WindowsToDo`); each finished window is saved as a part
(:class:`~cmap.mapping.parts.MapParts`), and process 0 assembles the rasters from the parts when every process is done
(:meth:`~cmap.mapping.writer.MapWriter.assemble`). Parts outlive a failed or killed run, so the same command resumes.

Rasters are written under temporary names, with GDAL's write errors raised; each finished file is
reopened and every block read back, then flushed and renamed, class map last (:mod:`cmap.outputs`):
a run that fails (a full disk) or is killed leaves no file under the output names. Output paths are
checked first: never an input (a raster, the checkpoint), never an existing file that is not a cmap
map, never a name among the input rasters that the pattern would read as a date.

The package, one job per module: :mod:`~cmap.mapping.command` (the command line, light),
:mod:`~cmap.mapping.options` (the option groups), :mod:`~cmap.mapping.run` (making a map),
:mod:`~cmap.mapping.windows` (the windows read and shared), :mod:`~cmap.mapping.classifier` (the
prediction module), :mod:`~cmap.mapping.parts` (finished windows), :mod:`~cmap.mapping.writer`
(assembling and publishing), :mod:`~cmap.mapping.products` (output names and checks),
:mod:`~cmap.mapping.styles` (colours, QGIS style, GDAL attributes).
"""

from cmap.mapping.command import map_rasters

__all__ = ["map_rasters"]
