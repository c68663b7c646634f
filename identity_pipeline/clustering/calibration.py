"""How far apart two people are for one embedding model: thresholds from score statistics.

A cosine threshold means nothing without the model that made the vectors: two photos of one
person score ~0.65 with SFace and ~0.7 with ArcFace, two strangers up to ~0.45 with SFace and
rarely above ~0.3 with ArcFace. So every threshold of clustering, assignment and suggestions is
derived here, by fixed rules, from two score distributions of the backend:

* **pair** scores: cosine of two faces of one person (same) or of two people (different);
* **centroid** scores: cosine of a face to the centroid of its person's *other* faces (same) or
  to the centroid of another person's faces (different); what naming a face compares.

Tails are read from a normal fit (mean + z * std) rather than from the few highest scores: the
different-person scores of SFace follow it closely out to 1e-3 (fit 0.368, empirical 0.372 on
50,000 pairs), and mean and spread are stable on the few hundred faces of one album's names.

The rules (the false-match rates are the only choices, and they are not tuned on any data):

* ``merge_cosine``: the different-person *pair* score exceeded by a share ``MERGE_FMR`` of
  different-person pairs. Average linkage merges two groups when the mean of their cross-pair
  scores reaches it. One bar for all group sizes, on purpose: the mean over many faces is less
  noisy, but what is left is how alike two *people* look, and look-alikes are what a lower bar
  for big groups would merge (measured: ``benchmarks/clustering.py``).
* ``assign_cosine``: the same on *centroid* scores, at ``ASSIGN_FMR`` per face: a face goes to
  a named person only above it ... A face is compared with every named person, so a stranger
  gets up to ``NAMED_PEOPLE`` chances to pass: the bar is the score exceeded by
  ``ASSIGN_FMR / NAMED_PEOPLE`` of stranger centroids (a union bound);
* ``assign_margin``: ... and only when it beats the runner-up person by this much: the spread
  (``MARGIN_SIGMAS`` standard deviations) of different-person centroid scores, so the best
  person is not just the luckiest of several strangers.
* ``suggest_cosine``: the centroid score of ``SUGGEST_FMR`` of strangers: suggestions are asked,
  not applied, so their bar is lower; a person rejects what is wrong.

A calibration comes from labelled faces (``fit_calibration``: a person's own named faces, or a
benchmark's calibration half), or, for a backend nobody measured, from its published
verification threshold alone (``published_calibration``, read from ``calibration.yaml``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import yaml

from identity_pipeline.clustering.constraints import unit_rows

SHIPPED_CALIBRATION = Path(__file__).with_name("calibration.yaml")

MERGE_FMR = 1e-3  # one different-person pair in a thousand scores above merge_cosine
ASSIGN_FMR = 1e-3  # one stranger's face in a thousand passes assign_cosine for someone ...
NAMED_PEOPLE = 100  # ... among this many named people (a real album names 100+)
SUGGEST_FMR = 2e-2  # suggestions may be wrong one time in fifty: a person answers them
MARGIN_SIGMAS = 1.0
# An album's calibration compares every pair of the named faces it is fitted on: at most this
# many faces per person and in all keep that near 0.1 s and a few MB however many faces have
# names (mean and spread, all a calibration reads, settle long before 500,000 pairs).
SAMPLE_FACES_PER_PERSON = 20
SAMPLE_FACES = 1000
QUANTILES = (0.001, 0.01, 0.05, 0.5, 0.95, 0.99, 0.999)


class CalibrationError(ValueError):
    """Too little labelled data to calibrate, or an unusable calibration file."""


@dataclass(frozen=True)
class ScoreStats:
    """Cosine scores of one kind of comparison: how many, mean, spread and quantiles."""

    count: int
    mean: float
    std: float
    quantiles: dict[str, float]  # "q0.001" -> score

    @classmethod
    def of(cls, scores: np.ndarray) -> ScoreStats:
        scores = np.asarray(scores, dtype=np.float64)
        return cls(
            count=len(scores),
            mean=float(scores.mean()),
            std=float(scores.std()),
            quantiles={f"q{q:g}": float(np.quantile(scores, q)) for q in QUANTILES},
        )

    def exceeded_by(self, share: float) -> float:
        """The score that a ``share`` of comparisons exceed, from the normal fit."""
        return self.mean + float(NormalDist().inv_cdf(1.0 - share)) * self.std


@dataclass(frozen=True)
class Calibration:
    """Thresholds of one embedding backend, and where they came from (shown in metadata)."""

    backend: str
    source: str  # "published: ..." or "fitted: N faces of M people"
    merge_cosine: float  # average linkage merges at or above this mean pair score
    assign_cosine: float  # a face joins a named person's centroid at or above this ...
    assign_margin: float  # ... and this far above the runner-up person
    suggest_cosine: float  # suggestions (asked, not applied) from this centroid score up
    pair_same: ScoreStats | None = None
    pair_different: ScoreStats | None = None
    centroid_same: ScoreStats | None = None
    centroid_different: ScoreStats | None = None

    def __post_init__(self) -> None:
        for name in ("merge_cosine", "assign_cosine", "suggest_cosine"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise CalibrationError(f"{name} is a cosine and must lie in [-1, 1], got {value}")
        if not 0.0 <= self.assign_margin <= 2.0:
            raise CalibrationError(f"assign_margin must lie in [0, 2], got {self.assign_margin}")

    def thresholds(self) -> dict[str, float]:
        return {
            "merge_cosine": round(self.merge_cosine, 4),
            "assign_cosine": round(self.assign_cosine, 4),
            "assign_margin": round(self.assign_margin, 4),
            "suggest_cosine": round(self.suggest_cosine, 4),
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def comparison_scores(vectors: np.ndarray, people: Sequence[str]) -> dict[str, np.ndarray]:
    """All four kinds of scores of labelled faces: ``pair_same``, ``pair_different``,
    ``centroid_same`` (leave-one-out: a face against its person's other faces) and
    ``centroid_different`` (a face against every other person's centroid)."""
    vectors = unit_rows(vectors, np.float64)
    labels = np.asarray(people, dtype=object)
    names, index = np.unique(labels, return_inverse=True)
    same_person = index[:, None] == index[None, :]
    upper = np.triu(np.ones((len(labels), len(labels)), dtype=bool), k=1)
    pair = vectors @ vectors.T
    sums = np.stack([vectors[index == k].sum(axis=0) for k in range(len(names))])
    counts = np.bincount(index, minlength=len(names))
    centroids = unit_rows(sums, np.float64)
    to_centroids = vectors @ centroids.T
    own = sums[index] - vectors  # the other faces of the same person
    has_others = counts[index] >= 2
    own_scores = np.einsum("ij,ij->i", vectors, unit_rows(own, np.float64))[has_others]
    foreign = to_centroids[index[:, None] != np.arange(len(names))[None, :]]
    return {
        "pair_same": pair[upper & same_person],
        "pair_different": pair[upper & ~same_person],
        "centroid_same": own_scores,
        "centroid_different": foreign,
    }


def fit_calibration(
    vectors: np.ndarray, people: Sequence[str], backend: str, *, min_people: int = 10
) -> Calibration:
    """Thresholds from labelled faces (``people[i]`` is who face ``i`` is), by the module's
    rules. Needs ``min_people`` people and some with two or more faces."""
    if len(vectors) != len(people):
        raise CalibrationError(f"{len(vectors)} vectors for {len(people)} labels")
    distinct = len(set(people))
    scores = comparison_scores(vectors, people) if distinct else {}
    if distinct < min_people or len(scores["pair_same"]) < 10:
        raise CalibrationError(
            f"calibrating needs {min_people}+ people and 10+ same-person pairs; got {distinct} "
            f"people and {len(scores.get('pair_same', []))} pairs"
        )
    stats = {kind: ScoreStats.of(values) for kind, values in scores.items()}
    return Calibration(
        backend=backend,
        source=f"fitted: {len(vectors)} faces of {distinct} people",
        merge_cosine=stats["pair_different"].exceeded_by(MERGE_FMR),
        assign_cosine=stats["centroid_different"].exceeded_by(ASSIGN_FMR / NAMED_PEOPLE),
        assign_margin=MARGIN_SIGMAS * stats["centroid_different"].std,
        suggest_cosine=stats["centroid_different"].exceeded_by(SUGGEST_FMR),
        **stats,
    )


def published_calibration(backend: str, path: Path = SHIPPED_CALIBRATION) -> Calibration:
    """The shipped calibration of ``backend`` (exact name, then its family before the first
    ``-``); a backend with none is refused rather than guessed."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise CalibrationError(f"cannot read calibration {path}: {error}") from error
    backends = document.get("backends") or {}
    for key in (backend, backend.split("-", 1)[0]):
        section = backends.get(key)
        if isinstance(section, dict):
            try:
                return Calibration(backend=key, **section)
            except TypeError as error:
                raise CalibrationError(f"{path} backends.{key}: {error}") from error
    raise CalibrationError(
        f"no calibration for face backend {backend!r} in {path}: calibrate it with "
        "benchmarks/clustering.py --calibrate"
    )


def album_calibration(
    vectors: np.ndarray,
    names: Sequence[str | None],
    backend: str,
    *,
    min_people: int = 10,
    shipped: Path = SHIPPED_CALIBRATION,
    faces_per_person: int = SAMPLE_FACES_PER_PERSON,
    max_faces: int = SAMPLE_FACES,
) -> Calibration:
    """The album's own calibration, fitted on the faces a person named (``names[i]``: the name
    of face ``i``, None for unnamed or ignored faces), once ``min_people`` people are named;
    before that, the backend's shipped calibration.

    It is fitted on a sample: every named person's first faces, as many each as
    ``faces_per_person`` and ``max_faces`` allow (at least two, for same-person pairs)."""
    people = {name for name in names if name is not None}
    if len(people) >= min_people:
        each = min(faces_per_person, max(2, max_faces // len(people)))
        taken: dict[str, int] = {}
        sample: list[int] = []
        for position, name in enumerate(names):
            if name is not None and taken.get(name, 0) < each:
                taken[name] = taken.get(name, 0) + 1
                sample.append(position)
        try:
            return fit_calibration(
                np.asarray(vectors)[np.asarray(sample, dtype=np.int64)],
                [names[i] for i in sample],
                backend,
                min_people=min_people,
            )
        except CalibrationError:
            pass  # too few faces of one person yet: the shipped calibration holds
    return published_calibration(backend, shipped)
