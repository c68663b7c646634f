"""Balance: rare identities repeat their samples so every identity weighs about the same.

Repeats are per identity (all of its train samples repeat the same number of times), which is
also what a kohya-style ``<repeats>_<name>/`` folder can express. An identity's repeats bring its
sample count closest to the target (the largest, median or mean identity), never below one and
never above ``max_repeats``: one photo shown fifty times teaches that photo, not the person.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from identity_pipeline.dataset.config import BalanceTarget

BALANCE_COLUMNS: dict[str, str] = {
    "identity": "string",
    "train_samples": "int64",
    "repeats": "int64",
    "effective_samples": "int64",
    "share_before": "float64",  # of train samples, without repeats
    "share_after": "float64",  # of samples an epoch shows, with repeats
    "capped": "bool",  # the repeat cap kept this identity below the target
}


@dataclass(frozen=True)
class Balance:
    target: float
    repeats: dict[str, int]
    table: pd.DataFrame  # one row per identity, BALANCE_COLUMNS, sorted by identity


def balance_target_size(counts: Mapping[str, int], target: BalanceTarget) -> float:
    values = [count for count in counts.values() if count > 0]
    if not values:
        return 0.0
    if target == "max":
        return float(max(values))
    if target == "median":
        return float(statistics.median(values))
    return float(statistics.fmean(values))


def repeats_for(count: int, target: float, max_repeats: int) -> int:
    """The whole number of repeats that brings ``count`` closest to ``target``, within [1, cap]."""
    if count <= 0:
        return 1
    nearest = math.floor(target / count + 0.5)
    return max(1, min(max_repeats, nearest))


def balance_repeats(
    train_counts: Mapping[str, int], target: BalanceTarget, max_repeats: int
) -> Balance:
    """Repeats per identity from its number of train samples."""
    size = balance_target_size(train_counts, target)
    repeats = {
        identity: repeats_for(count, size, max_repeats) for identity, count in train_counts.items()
    }
    total_before = sum(train_counts.values())
    total_after = sum(count * repeats[identity] for identity, count in train_counts.items())
    rows = [
        {
            "identity": identity,
            "train_samples": count,
            "repeats": repeats[identity],
            "effective_samples": count * repeats[identity],
            "share_before": count / total_before if total_before else 0.0,
            "share_after": count * repeats[identity] / total_after if total_after else 0.0,
            "capped": count > 0 and size / count > max_repeats + 0.5,
        }
        for identity, count in sorted(train_counts.items())
    ]
    if not rows:
        table = pd.DataFrame(
            {name: pd.Series(dtype=dtype) for name, dtype in BALANCE_COLUMNS.items()}
        )
    else:
        table = pd.DataFrame(rows).astype(BALANCE_COLUMNS)
    return Balance(target=size, repeats=repeats, table=table)
