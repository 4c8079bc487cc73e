"""The batch contract every data module produces and every model consumes."""

from typing import TypedDict

from torch import Tensor


class Batch(TypedDict, total=False):
    """A batch of B pixel (or parcel) series padded to T dates, with C bands per date.

    Keys:
        values: float (B, T, C), normalised band values; 0 where ``mask`` is False.
        days: long (B, T), day offset of each date from the dataset's reference date; positions
            are days, not indices, so irregular dates are first class.
        mask: bool (B, T), True where a date is valid (not padding, not cloud / NaN).
        label: long (B,), class index into the data module's ``class_names``; absent when unlabelled.
    """

    values: Tensor
    days: Tensor
    mask: Tensor
    label: Tensor
