"""Benchmark face clustering on faces-dev against the truth, and against an Immich-like baseline.

    .venv/bin/python benchmarks/clustering.py [--data DIR] [--backend offline] [--thresholds YAML]

faces-dev (``../shared/data/faces-dev`` beside the repository, or under
``$IDENTITY_PIPELINE_SHARED``): ``labels.csv`` (path, person,
n_faces, ...), ``images/<Person>/*.jpg`` single-person photos (LFW and others) and ``groups/``
photos of several people. Third-party photos: read in place, never copied into the repository.

Faces are detected and embedded with ``identity_pipeline.faces`` (cached per photo under
``<temp>/identity_pipeline_bench/faces``, so re-runs take seconds). Truth: in a photo of
``images/<Person>/`` the face nearest the photo's centre is that person (LFW crops centre the
subject; bystanders at the edge stay unlabelled). Group faces have no truth: they are clustered
(they are what cannot-link is about) but not scored. Scores are over the labelled faces:
BCubed and pairwise precision / recall / F1, clusters of 2+ faces against people with 2+
photos. "tile conflicts" counts clusters holding two faces of one photo, over all faces.

A second table adds a degraded copy of every labelled photo (shrunk until the face is about
``--degraded-px`` wide, default 40, blurred, JPEG quality 20-40), labelled like the original: the
blurry small faces of real albums, which must not pollute clusters. At 24 px SFace vectors are
noise (cosine to the own person's centroid is lower than to the nearest other person's), so
leaving such faces alone is the best any method can do there.

Methods, all on the same faces in the same run:
- ours: ``identity_pipeline.clustering.cluster_faces`` with the backend's shipped thresholds.
- immich-like: one DBSCAN round like Immich's defaults (cosine distance <= 0.5, min 3 faces),
  noise faces as singletons.
- dbscan best-eps: the same DBSCAN with the eps that scores best on this very data (an oracle
  no album tool has; shows what tuning a one-round method could reach at most).
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402
from sklearn.cluster import DBSCAN  # noqa: E402

from benchmarks.shared_data import FACES_DEV, SCRATCH  # noqa: E402
from identity_pipeline.clustering import cluster_faces, load_cluster_config  # noqa: E402
from identity_pipeline.clustering.cluster import embeddings_of  # noqa: E402
from identity_pipeline.clustering.metrics import (  # noqa: E402
    ClusteringScores,
    score_clustering,
    singletons_for_noise,
)
from identity_pipeline.faces import (  # noqa: E402
    FaceCache,
    FaceConfig,
    faces_for_tile,
    faces_frame,
    get_backend,
)
from identity_pipeline.faces.cli import faces_for_paths, find_images  # noqa: E402
from identity_pipeline.photos.inspect import load_photo  # noqa: E402
from identity_pipeline.storage import content_id  # noqa: E402

DEFAULT_DATA = FACES_DEV
CACHE_DIR = SCRATCH / "identity_pipeline_bench" / "faces"
# A detector run on one photo has been seen to allocate ~20 GB on this 24 GB machine; a cap turns
# that into a skipped photo (reported) instead of the kernel killing whatever runs beside us.
MEMORY_CAP_BYTES = 8 << 30
IMMICH_MAX_DISTANCE = 0.5  # Immich's default "maximum recognition distance" (cosine distance)
IMMICH_MIN_FACES = 3  # Immich's default "minimum recognized faces"


@dataclass(frozen=True)
class Row:
    method: str
    scores: ClusteringScores
    clusters: int  # predicted clusters of 2+ faces, over all faces
    singletons: int
    tile_conflicts: int
    seconds: float


def load_faces(data: Path, backend_name: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Every face of faces-dev with ``rel_path`` (relative to ``data``) and ``truth``."""
    backend = get_backend(backend_name)
    paths = find_images([data / "images", data / "groups"])
    result = faces_for_paths(paths, backend, FaceCache(CACHE_DIR), FaceConfig())
    faces = faces_frame(result.records)
    faces["rel_path"] = [str(Path(p).relative_to(data)) for p in result.source_paths]
    labels = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    person = dict(zip(labels["path"], labels["person"], strict=True))
    faces["truth"] = pd.Series([None] * len(faces), dtype=object)
    for rel_path, rows in faces.groupby("rel_path"):
        if not rel_path.startswith("images/") or not person.get(rel_path):
            continue
        width, height = Image.open(data / rel_path).size
        centre_x = (rows["photo_x0"] + rows["photo_x1"]) / 2 - width / 2
        centre_y = (rows["photo_y0"] + rows["photo_y1"]) / 2 - height / 2
        faces.loc[np.hypot(centre_x, centre_y).idxmin(), "truth"] = person[rel_path]
    return faces, result.skipped


def degraded_copy(path: Path, face_px: float, seed: int) -> np.ndarray:
    """The photo shrunk until its face is about ``face_px`` wide, blurred and JPEG-crushed: the
    blurry tiny faces of real albums (a face in the back row, a phone screenshot of a photo)."""
    rng = np.random.default_rng(seed)
    image = load_photo(path)
    # faces-dev portraits: the face spans about 45% of the photo's width.
    scale = face_px / (0.45 * image.width)
    small = image.resize(
        (max(8, round(image.width * scale)), max(8, round(image.height * scale))),
        Image.Resampling.BILINEAR,
    ).filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.6, 1.2))))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=int(rng.integers(20, 40)))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def add_degraded_faces(
    faces: pd.DataFrame, data: Path, backend_name: str, face_px: float
) -> pd.DataFrame:
    """One degraded copy of every labelled photo, its centre face labelled like the original."""
    backend = get_backend(backend_name)
    config = FaceConfig()
    records, truths, paths = [], [], []
    labelled = faces[faces["truth"].notna()].drop_duplicates("rel_path")
    for seed, row in enumerate(labelled.itertuples(index=False)):
        pixels = degraded_copy(data / row.rel_path, face_px, seed)
        tile_id = content_id("degraded", row.photo_id, face_px)
        # Uncached: these images are tiny, and the face cache cannot store "no face" yet.
        found = faces_for_tile(pixels, tile_id, tile_id, (0, 0), backend, None, config)
        if not found:
            continue
        height, width = pixels.shape[:2]
        centre = min(
            found,
            key=lambda r: np.hypot(
                (r.face.box[0] + r.face.box[2] - width) / 2,
                (r.face.box[1] + r.face.box[3] - height) / 2,
            ),
        )
        for record in found:
            records.append(record)
            truths.append(row.truth if record is centre else None)
            paths.append(f"degraded:{row.rel_path}")
    extra = faces_frame(records)
    extra["rel_path"] = paths
    extra["truth"] = pd.Series(truths, dtype=object)
    return pd.concat([faces, extra], ignore_index=True)


def _row(method: str, faces: pd.DataFrame, cluster_of: pd.Series, seconds: float) -> Row:
    scored = faces["truth"].notna().to_numpy()
    predicted = cluster_of.to_numpy()
    sizes = pd.Series(predicted).value_counts()
    per_tile = pd.DataFrame({"c": predicted, "t": faces["tile_id"].to_numpy()})
    conflicts = per_tile.groupby("c")["t"].agg(lambda t: t.duplicated().any()).sum()
    return Row(
        method=method,
        scores=score_clustering(predicted[scored].tolist(), faces["truth"][scored].tolist()),
        clusters=int((sizes >= 2).sum()),
        singletons=int((sizes == 1).sum()),
        tile_conflicts=int(conflicts),
        seconds=seconds,
    )


def run_ours(faces: pd.DataFrame, thresholds: Path | None) -> Row:
    config = load_cluster_config(str(faces["backend"].iloc[0]), thresholds)
    started = time.perf_counter()
    result = cluster_faces(faces, config)
    seconds = time.perf_counter() - started
    cluster_of = faces["face_id"].map(result.assignments.set_index("face_id")["cluster_id"])
    return _row("ours (2-round HDBSCAN)", faces, cluster_of, seconds)


def run_dbscan(faces: pd.DataFrame, method: str, eps: float, min_samples: int) -> Row:
    vectors = embeddings_of(faces)
    started = time.perf_counter()
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(vectors)
    seconds = time.perf_counter() - started
    return _row(method, faces, pd.Series(singletons_for_noise(labels)), seconds)


def best_eps_dbscan(faces: pd.DataFrame) -> Row:
    rows = [
        run_dbscan(faces, f"dbscan best-eps ({eps:.2f}, min 3)", eps, IMMICH_MIN_FACES)
        for eps in np.arange(0.30, 0.76, 0.025)
    ]
    return max(rows, key=lambda row: row.scores.bcubed.f1)


def print_table(rows: list[Row], out: Callable[[str], None] = print) -> None:
    header = (
        f"{'method':<32} {'B3 P':>6} {'B3 R':>6} {'B3 F1':>6} {'pair P':>6} {'pair R':>6} "
        f"{'pair F1':>7} {'clusters':>8} {'single':>6} {'conflicts':>9} {'ms':>7}"
    )
    out(header)
    out("-" * len(header))
    for row in rows:
        s = row.scores
        out(
            f"{row.method:<32} {s.bcubed.precision:6.4f} {s.bcubed.recall:6.4f} "
            f"{s.bcubed.f1:6.4f} {s.pairwise.precision:6.4f} {s.pairwise.recall:6.4f} "
            f"{s.pairwise.f1:7.4f} {row.clusters:8d} {row.singletons:6d} "
            f"{row.tile_conflicts:9d} {row.seconds * 1000:7.1f}"
        )


def run_variant(title: str, faces: pd.DataFrame, thresholds: Path | None) -> None:
    people = faces["truth"].dropna().value_counts()
    rows = [
        run_ours(faces, thresholds),
        run_dbscan(faces, "immich-like DBSCAN (0.5, min 3)", IMMICH_MAX_DISTANCE, IMMICH_MIN_FACES),
        best_eps_dbscan(faces),
    ]
    print(
        f"\n{title}: {len(faces)} faces, {int(people.sum())} labelled, {len(people)} people "
        f"({int((people >= 2).sum())} with 2+ labelled faces)"
    )
    print_table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backend", default="offline")
    parser.add_argument("--thresholds", type=Path, default=None, help="override YAML")
    parser.add_argument(
        "--degraded-px",
        type=float,
        default=40.0,
        help="also score with a degraded copy of every photo, face this wide (0: skip)",
    )
    args = parser.parse_args(argv)
    if not (args.data / "labels.csv").is_file():
        print(
            f"faces-dev not found at {args.data} (set --data or $IDENTITY_PIPELINE_SHARED)",
            file=sys.stderr,
        )
        return 2
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))

    started = time.perf_counter()
    faces, skipped = load_faces(args.data, args.backend)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    labelled = faces["truth"].dropna()
    people = labelled.value_counts()
    print(
        f"faces-dev: {faces['rel_path'].nunique()} photos, {len(faces)} faces "
        f"({len(labelled)} labelled, {len(faces) - len(labelled)} unlabelled: group photos and "
        f"bystanders), {len(people)} people ({int((people >= 2).sum())} with 2+ photos), "
        f"backend {faces['backend'].iloc[0]}, embedded in {time.perf_counter() - started:.1f}s"
    )
    run_variant("faces-dev", faces, args.thresholds)
    if args.degraded_px > 0:
        started = time.perf_counter()
        hard = add_degraded_faces(faces, args.data, args.backend, args.degraded_px)
        extra = hard.iloc[len(faces) :]
        print(
            f"\n+ degraded copies: every labelled photo shrunk to a ~{args.degraded_px:.0f} px face,"
            f" blurred, JPEG q20-40: {len(extra)} more faces ({int(extra['truth'].notna().sum())} "
            f"labelled; median quality {extra['quality'].median():.2f} vs "
            f"{faces['quality'].median():.2f}) in {time.perf_counter() - started:.1f}s"
        )
        run_variant("faces-dev + degraded copies", hard, args.thresholds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
