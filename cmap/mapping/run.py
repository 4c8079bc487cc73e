"""Making a map: a :class:`~cmap.mapping.options.MapJob` run through Lightning's ``Trainer.predict``.

Each window's pixels are classified ``batch_size`` at a time (:class:`~cmap.mapping.classifier.WindowClassifier`);
several processes share the windows (:class:`~cmap.mapping.windows.WindowsToDo`); each finished window is
saved as a part, and process 0 assembles the rasters when every process is done
(:class:`~cmap.mapping.writer.MapWriter`).
"""

import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from cmap.data.samples import vector_footprint
from cmap.data.stac import open_stack
from cmap.data.stac_search import items_path as stac_items_path
from cmap.data.time_axis import time_axis_from_arguments
from cmap.mapping.classifier import WindowClassifier
from cmap.mapping.options import ComputeOptions, MapJob, SmoothingOptions
from cmap.mapping.parts import MapParts, parts_key
from cmap.mapping.products import (
    check_map_output_names,
    check_map_outputs,
    check_parcels_output,
    parcels_layer_path,
    probabilities_path,
)
from cmap.mapping.windows import StackWindows, WindowsToDo
from cmap.mapping.writer import MapWriter
from cmap.ml.compile import CompileModel
from cmap.parcels import read_parcels, summarise_parcels
from cmap.postprocessing import BayesianSmoothing
from cmap.predictions import load_classifier

MAX_CLASSES = 255


def make_map(job: MapJob) -> Path:
    """Classify every pixel of the job's raster stack and write the crop map (see :mod:`cmap.mapping`)."""
    compute, products, output = job.compute, job.products, job.output
    if compute.threads:
        torch.set_num_threads(compute.threads)
    smoother = smoother_of(job.smoothing)
    model = load_classifier(job.checkpoints)
    if len(model.class_names) > MAX_CLASSES:
        raise ValueError(
            f"{job.checkpoints[0]}: {len(model.class_names)} classes do not fit a uint8 map (max {MAX_CLASSES})"
        )
    contract = model.input_contract
    if job.source.search is not None:  # the search saves its items beside the output: refuse a foreign one first
        check_map_output_names(output, products, list(map(Path, job.checkpoints)))
    area = vector_footprint(products.parcels) if job.source.search is not None and products.parcels else None
    stack = open_stack(job.source, list(contract.band_names), contract.raw_values, stac_items_path(output), area)
    check_map_outputs(output, products, stack, job.checkpoints, job.source.pattern)
    if products.parcels is not None:
        check_parcels_output(output, products, job.checkpoints)
        parcels = read_parcels(products.parcels, model.class_names)  # read and checked once, summarised at the end
    first_dates = np.array(stack.dates, dtype="datetime64[D]")
    time_axis = time_axis_from_arguments(job.time_axis, first_dates, default=contract.time_axis)
    windows = StackWindows(
        stack, compute.window_size, stack.days(time_axis), contract, smoother.halo if smoother else 0
    )
    options = {
        "time_axis": repr(time_axis), "window_size": compute.window_size, "batch_size": compute.batch_size,
        "precision": compute.precision, "probabilities": products.probabilities, "uncertainty": products.uncertainty,
        "smoothing": repr(smoother),
    }  # fmt: skip
    parts = MapParts(output, parts_key(stack, job.checkpoints, options))
    writer = MapWriter(output, stack, windows.windows, model.class_names, parts, products)
    trainer = map_trainer(compute, [writer, *([CompileModel()] if compute.compile else [])])
    sampler = WindowsToDo(len(windows), parts)
    loader = DataLoader(windows, batch_size=None, sampler=sampler, num_workers=compute.num_workers)
    with warnings.catch_warnings():  # each item is a window, not a batch of dataset indices: nothing to infer
        warnings.filterwarnings("ignore", "Couldn't infer the batch indices")
        classifier = WindowClassifier(model, compute.batch_size, smoother, fast=compute.inference == "fast")
        trainer.predict(classifier, loader, return_predictions=False)
    trainer.strategy.barrier("cmap map: every window written")  # then process 0 assembles the map
    if trainer.global_rank == 0:
        writer.assemble()
        if products.parcels is not None:
            probabilities = probabilities_path(output) if products.probabilities else None
            summarise_parcels(output, parcels, parcels_layer_path(output, products), probabilities)
    return output


def smoother_of(options: SmoothingOptions) -> BayesianSmoothing | None:
    """The Bayesian smoothing the options ask for (checked before any work), or None."""
    if not options.smoothing:
        return None
    return BayesianSmoothing(options.smoothing_window, options.smoothing_fraction, options.smoothness)


def map_trainer(compute: ComputeOptions, callbacks: list[Any]) -> L.Trainer:
    """The Trainer that predicts the windows: no logger, no summary, and the windows shared by
    :class:`~cmap.mapping.windows.WindowsToDo` (not Lightning's distributed sampler)."""
    return L.Trainer(
        accelerator=compute.accelerator,
        devices=compute.devices,
        num_nodes=compute.num_nodes,
        strategy=compute.strategy,
        precision=compute.precision,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=sys.stdout.isatty() if compute.progress is None else compute.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,  # WindowsToDo shares the windows (and skips the written ones)
    )
