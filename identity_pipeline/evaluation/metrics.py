"""Identity fidelity scores on plain embedding arrays (L2-normalised face vectors, cosine = dot).

Inputs, per identity: the *reference* embeddings (real photos never trained on: the held-out
split), optionally the *training* embeddings (the photos the LoRA saw), and the generated images,
each with every face found in it (possibly none).

In an image generated for identity A the *subject* is the face most similar to A's reference
photos (the only face of a solo picture; in a two-person picture, the one meant to be A); every
other face is an *other*. Images without a face are counted, never dropped.

Scores per identity A (all cosines; medians over pairs unless said otherwise):

* ``likeness``: subject faces of A vs A's reference photos. ``real_baseline`` beside it: real
  photos of A vs each other (training vs reference photos when both are given, else reference
  pairs), the level a perfect generator of *new* photos of A would reach.
* copy-paste: per subject face its nearest training photo (``train_nn``) and nearest reference
  photo (``holdout_nn``); ``copy_gap`` = median train_nn - median holdout_nn (positive: closer to
  what was trained on than to new photos of the same person), ``copy_rate`` = share of subject
  faces at least ``copy_threshold`` from a training photo, ``real_train_nn`` = how close the
  reference photos themselves come to the training photos (the non-memorised level).
* bleed: ``confusion`` matrix generated-for-A (rows) vs real-of-B (columns) on subject faces, and
  ``others_confusion`` on the other faces of A's images. ``others_like_identity`` (others of A's
  images vs A: A leaking onto everyone) and ``confusion_sim`` (A's subject vs the most similar
  other identity B); ``bleed`` is the larger of the two. ``real_cross`` is what two different
  real people reach, for reference.
* ``identified``: share of A's images (with a face) whose subject is closer, on average, to A's
  reference photos than to any other identity's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ROLE_SUBJECT = "subject"
ROLE_OTHER = "other"
ROLE_NONE = "none"  # a row standing for an image in which no face was found

TABLE_COLUMNS = (
    "identity",
    "images",
    "images_without_face",
    "no_face_rate",
    "faces",
    "faces_per_image",
    "reference_photos",
    "training_photos",
    "likeness",
    "real_baseline",
    "likeness_ratio",
    "identified",
    "train_nn",
    "holdout_nn",
    "copy_gap",
    "real_train_nn",
    "copy_rate",
    "confused_with",
    "confusion_sim",
    "others_like_identity",
    "bleed",
    "real_cross",
)


@dataclass(frozen=True)
class GeneratedImage:
    """One generated picture: who the prompt named and every face found in it."""

    identity: str
    embeddings: np.ndarray  # (F, D), F may be 0
    prompt_kind: str = ""
    seed: int | None = None
    image_id: str = ""

    @property
    def faces(self) -> int:
        return len(as_matrix(self.embeddings))


@dataclass
class FidelityScores:
    table: pd.DataFrame  # TABLE_COLUMNS, one row per identity
    confusion: pd.DataFrame  # generated-for (index) x real-of (columns), subject faces
    others_confusion: pd.DataFrame  # other faces of images for (index) x real-of (columns)
    real_confusion: pd.DataFrame  # real-of x real-of (diagonal: distinct photo pairs)
    faces: pd.DataFrame  # one row per generated face, plus one per image without a face
    summary: dict[str, Any] = field(default_factory=dict)


def as_matrix(vectors: Any, dim: int | None = None) -> np.ndarray:
    """``(N, D)`` float32 with unit rows (zero rows stay zero); ``None``/empty -> ``(0, D)``."""
    if vectors is None:
        return np.zeros((0, dim or 0), dtype=np.float32)
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.size == 0:
        return np.zeros((0, dim or (matrix.shape[-1] if matrix.ndim == 2 else 0)), np.float32)
    matrix = matrix.reshape(-1, matrix.shape[-1])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _median(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def _nanmean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _nanmax(*values: float) -> float:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return max(finite) if finite else float("nan")


def pair_median(a: np.ndarray, b: np.ndarray) -> float:
    """Median cosine over all (row of a, row of b) pairs; NaN when either is empty."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return _median(a @ b.T)


def within_median(a: np.ndarray) -> float:
    """Median cosine over distinct pairs of rows of ``a``; NaN with fewer than two rows."""
    if len(a) < 2:
        return float("nan")
    upper = np.triu_indices(len(a), k=1)
    return _median((a @ a.T)[upper])


def real_baseline(reference: np.ndarray, training: np.ndarray | None = None) -> float:
    """Real-vs-real likeness of one person: training x reference pairs, else reference pairs."""
    reference = as_matrix(reference)
    training = as_matrix(training, reference.shape[1] if reference.size else None)
    if len(training) and len(reference):
        return pair_median(training, reference)
    return within_median(reference)


def real_confusion_matrix(reference: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Real photos of A vs real photos of B; the diagonal compares distinct photos of one person."""
    names = sorted(reference)
    matrices = {name: as_matrix(reference[name]) for name in names}
    values = [
        [
            within_median(matrices[a]) if a == b else pair_median(matrices[a], matrices[b])
            for b in names
        ]
        for a in names
    ]
    return pd.DataFrame(values, index=pd.Index(names, name="real"), columns=names, dtype=float)


def diagonal_dominance(matrix: pd.DataFrame) -> float:
    """Share of rows whose diagonal entry beats every other entry of the row.

    Rows without a finite diagonal or without any finite off-diagonal entry are not counted;
    NaN when no row counts.
    """
    counted = dominant = 0
    for name in matrix.index:
        if name not in matrix.columns:
            continue
        row = matrix.loc[name].astype(float)
        diagonal = row[name]
        rest = row.drop(labels=[name])
        rest = rest[np.isfinite(rest.to_numpy())]
        if not np.isfinite(diagonal) or rest.empty:
            continue
        counted += 1
        dominant += int(diagonal > rest.max())
    return dominant / counted if counted else float("nan")


def score_identities(
    reference: Mapping[str, Any],
    generated: Sequence[GeneratedImage],
    training: Mapping[str, Any] | None = None,
    copy_threshold: float = 0.85,
) -> FidelityScores:
    """All fidelity scores of one set of generated images (one checkpoint)."""
    training = training or {}
    dim = _dimension(reference, generated, training)
    refs = {name: as_matrix(value, dim) for name, value in reference.items()}
    trains = {name: as_matrix(value, dim) for name, value in training.items()}
    names = sorted(set(refs) | {image.identity for image in generated})
    known = [name for name in names if len(refs.get(name, ())) > 0]
    centroids_of = {name: refs[name] for name in known}  # mean cosine = dot with each, averaged

    subjects: dict[str, list[np.ndarray]] = {name: [] for name in names}
    others: dict[str, list[np.ndarray]] = {name: [] for name in names}
    face_rows: list[dict[str, Any]] = []
    for image in generated:
        faces = as_matrix(image.embeddings, dim)
        base = {
            "image_id": image.image_id,
            "identity": image.identity,
            "prompt_kind": image.prompt_kind,
            "seed": image.seed,
            "faces_in_image": len(faces),
        }
        if len(faces) == 0:
            face_rows.append({**base, "face_index": -1, "role": ROLE_NONE})
            continue
        target = refs.get(image.identity)
        to_target = (
            (faces @ target.T).mean(axis=1)
            if target is not None and len(target)
            else np.full(len(faces), np.nan)
        )
        subject = int(np.nanargmax(to_target)) if np.isfinite(to_target).any() else 0
        means = {name: (faces @ matrix.T).mean(axis=1) for name, matrix in centroids_of.items()}
        for index in range(len(faces)):
            role = ROLE_SUBJECT if index == subject else ROLE_OTHER
            (subjects if role == ROLE_SUBJECT else others)[image.identity].append(faces[index])
            best = max(means, key=lambda name: means[name][index]) if means else None
            row = {
                **base,
                "face_index": index,
                "role": role,
                "sim_to_identity": float(to_target[index]),
                "best_match": best,
                "best_match_sim": float(means[best][index]) if best else float("nan"),
            }
            train = trains.get(image.identity)
            row["train_nn"] = (
                float((train @ faces[index]).max()) if train is not None and len(train) else None
            )
            row["holdout_nn"] = (
                float((target @ faces[index]).max()) if target is not None and len(target) else None
            )
            face_rows.append(row)

    subject_mats = {name: _stack(subjects[name], dim) for name in names}
    other_mats = {name: _stack(others[name], dim) for name in names}
    columns = known
    confusion = pd.DataFrame(
        [[pair_median(subject_mats[a], refs[b]) for b in columns] for a in names],
        index=pd.Index(names, name="generated_for"),
        columns=columns,
        dtype=float,
    )
    others_confusion = pd.DataFrame(
        [[pair_median(other_mats[a], refs[b]) for b in columns] for a in names],
        index=pd.Index(names, name="others_in_images_for"),
        columns=columns,
        dtype=float,
    )
    real = real_confusion_matrix({name: refs[name] for name in known})
    faces_frame = pd.DataFrame(face_rows, columns=_FACE_COLUMNS)

    rows = []
    for name in names:
        mine = [image for image in generated if image.identity == name]
        counts = [len(as_matrix(image.embeddings, dim)) for image in mine]
        ref = refs.get(name, np.zeros((0, dim), np.float32))
        train = trains.get(name, np.zeros((0, dim), np.float32))
        subject = subject_mats[name]
        likeness = confusion.loc[name, name] if name in columns else float("nan")
        baseline = real_baseline(ref, train) if len(ref) else float("nan")
        train_nn = (subject @ train.T).max(axis=1) if len(train) and len(subject) else None
        holdout_nn = (subject @ ref.T).max(axis=1) if len(ref) and len(subject) else None
        rival = confusion.loc[name].drop(labels=[name], errors="ignore")
        rival = rival[np.isfinite(rival.to_numpy())]
        others_like = others_confusion.loc[name, name] if name in columns else float("nan")
        cross = (
            real.loc[name].drop(labels=[name]) if name in real.index else pd.Series([], dtype=float)
        )
        cross = cross[np.isfinite(cross.to_numpy())]
        subject_rows = faces_frame[
            (faces_frame["identity"] == name) & (faces_frame["role"] == ROLE_SUBJECT)
        ]
        identified = (
            float((subject_rows["best_match"] == name).mean())
            if len(subject_rows) and name in columns and len(columns) > 1
            else float("nan")
        )
        rows.append(
            {
                "identity": name,
                "images": len(mine),
                "images_without_face": sum(1 for count in counts if count == 0),
                "no_face_rate": (
                    sum(1 for c in counts if c == 0) / len(counts) if counts else float("nan")
                ),
                "faces": int(sum(counts)),
                "faces_per_image": float(np.mean(counts)) if counts else float("nan"),
                "reference_photos": len(ref),
                "training_photos": len(train),
                "likeness": float(likeness),
                "real_baseline": baseline,
                "likeness_ratio": (
                    float(likeness / baseline)
                    if np.isfinite(likeness) and np.isfinite(baseline) and baseline > 0
                    else float("nan")
                ),
                "identified": identified,
                "train_nn": _median(train_nn) if train_nn is not None else float("nan"),
                "holdout_nn": _median(holdout_nn) if holdout_nn is not None else float("nan"),
                "copy_gap": (
                    _median(train_nn) - _median(holdout_nn)
                    if train_nn is not None and holdout_nn is not None
                    else float("nan")
                ),
                "real_train_nn": (
                    _median((ref @ train.T).max(axis=1))
                    if len(ref) and len(train)
                    else float("nan")
                ),
                "copy_rate": (
                    float(np.mean(train_nn >= copy_threshold))
                    if train_nn is not None
                    else float("nan")
                ),
                "confused_with": str(rival.idxmax()) if not rival.empty else None,
                "confusion_sim": float(rival.max()) if not rival.empty else float("nan"),
                "others_like_identity": float(others_like),
                "bleed": _nanmax(float(rival.max()) if not rival.empty else None, others_like),
                "real_cross": float(cross.max()) if not cross.empty else float("nan"),
            }
        )
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    summary = summarise(table, faces_frame, confusion, copy_threshold)
    return FidelityScores(
        table=table,
        confusion=confusion,
        others_confusion=others_confusion,
        real_confusion=real,
        faces=faces_frame,
        summary=summary,
    )


_FACE_COLUMNS = [
    "image_id",
    "identity",
    "prompt_kind",
    "seed",
    "faces_in_image",
    "face_index",
    "role",
    "sim_to_identity",
    "best_match",
    "best_match_sim",
    "train_nn",
    "holdout_nn",
]


def summarise(
    table: pd.DataFrame, faces: pd.DataFrame, confusion: pd.DataFrame, copy_threshold: float
) -> dict[str, Any]:
    """One number per score over all identities (means of the per-identity values)."""
    images = int(table["images"].sum()) if len(table) else 0
    without = int(table["images_without_face"].sum()) if len(table) else 0
    subjects = faces[faces["role"] == ROLE_SUBJECT]
    scored = subjects[subjects["identity"].isin(confusion.columns)]
    train_nn = pd.to_numeric(subjects["train_nn"], errors="coerce").dropna()
    return {
        "identities": len(table),
        "images": images,
        "images_without_face": without,
        "no_face_rate": without / images if images else float("nan"),
        "faces": int(table["faces"].sum()) if len(table) else 0,
        "faces_per_image": float(table["faces"].sum() / images) if images else float("nan"),
        "likeness": _nanmean(table["likeness"]),
        "real_baseline": _nanmean(table["real_baseline"]),
        "likeness_ratio": _nanmean(table["likeness_ratio"]),
        "identification": (
            float((scored["best_match"] == scored["identity"]).mean())
            if len(scored) and len(confusion.columns) > 1
            else float("nan")
        ),
        "diagonal_dominance": diagonal_dominance(confusion),
        "bleed": _nanmean(table["bleed"]),
        "others_like_identity": _nanmean(table["others_like_identity"]),
        "confusion_sim": _nanmean(table["confusion_sim"]),
        "real_cross": _nanmean(table["real_cross"]),
        "copy_gap": _nanmean(table["copy_gap"]),
        "copy_rate": (
            float((train_nn >= copy_threshold).mean()) if len(train_nn) else float("nan")
        ),
    }


def _stack(rows: list[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)


def _dimension(
    reference: Mapping[str, Any], generated: Sequence[GeneratedImage], training: Mapping[str, Any]
) -> int:
    candidates = [*reference.values(), *training.values(), *(g.embeddings for g in generated)]
    for value in candidates:
        array = np.asarray(value)
        if array.size:
            return int(array.shape[-1])
    return 0
