"""Precision, recall and F1 from counts: the one implementation that training's calibration,
the evaluation and the benchmarks share.

A ratio with a zero denominator is undefined (None), except that F1 is 0 as soon as either side
is 0: nothing right on one side is a failure even when the other side is undefined.
"""

from __future__ import annotations


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def f1(precision: float | None, recall: float | None) -> float | None:
    if precision == 0 or recall == 0:
        return 0.0
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall)


def precision_recall_f1(tp: float, fp: float, fn: float
                        ) -> tuple[float | None, float | None, float | None]:
    """(tp / (tp + fp), tp / (tp + fn), their F1) from true and false positive and false
    negative counts."""
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return precision, recall, f1(precision, recall)
