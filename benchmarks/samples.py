"""What ``cmap audit`` and ``cmap suggest``'s selection are worth, measured on the shared data with
a cheap, calibrated classifier (a logistic regression on MiniRocket features, one thread:
:mod:`samples_data`): label noise audited and retrained (:mod:`samples_noise`: confident learning
against a self-organising map, as R sits) and active learning against random selection
(:mod:`samples_active`). Writes ``benchmarks/results/samples.md`` and its picture.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/samples.py [--draws 3] [--parts noise learning]
[--methods ...] [--strategies ...] [--output benchmarks/results/samples.md]``
"""

import argparse
import time
from pathlib import Path

from samples_active import STRATEGIES, active_learning, learning_report
from samples_data import REPO, prepare
from samples_noise import noise_experiment, noise_report

METHODS = ("confident learning, prune_by_noise_rate", "confident learning, confident_learning", "SOM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--parts", nargs="+", default=["noise", "learning"], choices=["noise", "learning"])
    parser.add_argument("--rates", nargs="+", type=float, default=[0.1, 0.2], help="shares of labels flipped")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="audit methods (noise part)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/samples.md")
    options = parser.parse_args()
    started = time.perf_counter()
    lines = [
        "# Samples you can trust: audit and active learning, measured",
        "",
        "Classifier: a logistic regression (scikit-learn, C = 0.1) on standardised MiniRocket features (aeon, "
        "10,000 kernels fitted on the training series or pool), one thread: `cmap.labelling.peer`'s "
        f"`rocket_features` and `logistic`; {options.draws} draws. Command: "
        "`OMP_NUM_THREADS=1 python benchmarks/samples.py`.",
        "",
    ]
    data = {}
    if "noise" in options.parts:
        rows = []
        for name in ("Mato Grosso", "Victoria"):
            data[name] = data.get(name) or prepare(name)
            rows += noise_experiment(data[name], options.rates, options.draws, options.methods)
        lines += noise_report(rows)
    if "learning" in options.parts:
        results = []
        for name in ("UCR Crop", "Mato Grosso"):
            data[name] = data.get(name) or prepare(name)
            results.append(active_learning(data[name], options.draws, options.strategies))
        lines += learning_report(results, options.output.with_name("samples_active_learning.png"))
    lines.append(f"Total {time.perf_counter() - started:.0f} s on a 2-core CPU shared with other jobs.")
    options.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
