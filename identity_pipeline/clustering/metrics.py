"""How close a clustering is to the truth: BCubed and pairwise precision / recall / F1.

BCubed (Bagga & Baldwin 1998; Amigó et al. 2009) scores each item: precision is the share of its
cluster that has its true label, recall the share of its true label's items that are in its
cluster; both are averaged over items. Pairwise scores count item pairs put together: precision
is true pairs among predicted pairs, recall true pairs found among all true pairs.

Items of a predicted singleton are their own cluster (pass distinct ids, never a shared -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


@dataclass(frozen=True)
class ClusteringScores:
    bcubed: Scores
    pairwise: Scores
    items: int
    true_labels: int
    predicted_clusters: int


def _contingency(predicted: Sequence[object], truth: Sequence[object]) -> pd.DataFrame:
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} true labels")
    frame = pd.DataFrame(
        {"p": pd.Series(predicted, dtype=object), "t": pd.Series(truth, dtype=object)}
    )
    if frame.isna().any().any():
        raise ValueError("labels must not be missing; score only the items that have a truth")
    joint = frame.groupby(["p", "t"]).size().rename("n").reset_index()
    joint["cluster_size"] = joint.groupby("p")["n"].transform("sum")
    joint["label_size"] = joint.groupby("t")["n"].transform("sum")
    return joint


def bcubed(predicted: Sequence[object], truth: Sequence[object]) -> Scores:
    """Item-averaged BCubed precision and recall; 1.0 / 1.0 for no items."""
    joint = _contingency(predicted, truth)
    items = joint["n"].sum()
    if items == 0:
        return Scores(1.0, 1.0)
    # Each of the n items in cell (p, t) has precision n / |p| and recall n / |t|.
    precision = float((joint["n"] ** 2 / joint["cluster_size"]).sum() / items)
    recall = float((joint["n"] ** 2 / joint["label_size"]).sum() / items)
    return Scores(precision, recall)


def _pairs(counts: np.ndarray) -> float:
    return float((counts * (counts - 1) / 2).sum())


def pairwise(predicted: Sequence[object], truth: Sequence[object]) -> Scores:
    """Pair precision and recall; a score with no pairs to judge counts as 1.0."""
    joint = _contingency(predicted, truth)
    together = _pairs(joint["n"].to_numpy(dtype=np.float64))
    predicted_pairs = _pairs(joint.groupby("p")["n"].sum().to_numpy(dtype=np.float64))
    true_pairs = _pairs(joint.groupby("t")["n"].sum().to_numpy(dtype=np.float64))
    precision = together / predicted_pairs if predicted_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    return Scores(precision, recall)


def score_clustering(predicted: Sequence[object], truth: Sequence[object]) -> ClusteringScores:
    return ClusteringScores(
        bcubed=bcubed(predicted, truth),
        pairwise=pairwise(predicted, truth),
        items=len(truth),
        true_labels=len(set(truth)),
        predicted_clusters=len(set(predicted)),
    )


def singletons_for_noise(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """sklearn-style labels with -1 for noise -> every noise item its own cluster id."""
    result = np.asarray(labels, dtype=np.int64).copy()
    noise = np.flatnonzero(result < 0)
    start = int(result.max()) + 1 if len(result) else 0
    result[noise] = start + np.arange(len(noise))
    return result
