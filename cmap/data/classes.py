"""Class mapping: from a dataset's classes to the user's nomenclature."""

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT = "*"


class ClassMapping:
    """Maps source class names to target names (several sources may share a target).

    ``mapping`` is ``{source_name: target_name}``; the key ``"*"`` gives the target of every source
    class not listed (e.g. ``{"mais": "mais", "mais_ensilage": "mais", "ble": "ble_tendre", "*":
    "other"}``). Target classes are numbered in order of first appearance in ``mapping``.
    """

    def __init__(self, mapping: Mapping[str, str], source_names: Sequence[str]) -> None:
        unknown = [name for name in mapping if name != DEFAULT and name not in source_names]
        if unknown:
            raise ValueError(
                f"class_map: unknown source classes {unknown}; the dataset's classes are {list(source_names)}"
            )
        unmapped = [name for name in source_names if name not in mapping]
        if unmapped and DEFAULT not in mapping:
            raise ValueError(f"class_map: no target for classes {unmapped}; map them or add a '*' entry")
        self.target_names = list(dict.fromkeys(mapping.values()))
        index = {name: i for i, name in enumerate(self.target_names)}
        self.lookup = np.array([index[mapping.get(name, mapping.get(DEFAULT))] for name in source_names])

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """Source label indices -> target label indices (-1, unlabelled, stays -1)."""
        return np.where(labels >= 0, self.lookup[np.maximum(labels, 0)], -1)
