"""Samples you can trust: cross-validation of a config on a store (``cmap cv``), doubtful labels
(``cmap audit``) and the series to label next (``cmap suggest``).

Files: ``cv.py`` (the ``cmap cv`` command, one LightningCLI fit per fold and seed), ``scores.py``
(metrics of out-of-fold predictions: Markdown, CSV, picture), ``peer.py`` (cheap out-of-fold
probabilities: a random forest), ``audit.py`` (``cmap audit``: confident learning with cleanlab),
``selection.py`` (uncertainty with diversity), ``suggest.py`` (``cmap suggest``), ``map_candidates.py``
(``cmap suggest --map``: a crop map's pixels, from its probability raster), ``tables.py`` (sample ids,
coordinates, CSV and GeoPackage outputs)."""
