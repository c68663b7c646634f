"""Faces of one person together (no dagster here): calibrated average linkage with cannot-link
per tile, named faces kept, new faces assigned to named people when confidently close.

``cluster_faces`` takes a faces table and returns per-face assignments and per-cluster stats;
``calibration`` derives every threshold from the backend's same/different-person score
statistics; ``suggest`` ranks naming suggestions; ``metrics`` scores a clustering.
"""

from identity_pipeline.clustering.calibration import (
    Calibration,
    CalibrationError,
    album_calibration,
    fit_calibration,
    published_calibration,
)
from identity_pipeline.clustering.cluster import (
    ALONE,
    ASSIGNED,
    ASSIGNMENT_DTYPES,
    ATTACHED,
    CLUSTER_DTYPES,
    FACE_CLUSTERS_DTYPES,
    MERGED,
    NAMED,
    ClusteringResult,
    cluster_faces,
    face_clusters_table,
)
from identity_pipeline.clustering.config import ClusterConfig, ClusterConfigError
from identity_pipeline.clustering.metrics import (
    ClusteringScores,
    Scores,
    bcubed,
    pairwise,
    score_clustering,
)

__all__ = [
    "ALONE",
    "ASSIGNED",
    "ASSIGNMENT_DTYPES",
    "ATTACHED",
    "CLUSTER_DTYPES",
    "FACE_CLUSTERS_DTYPES",
    "MERGED",
    "NAMED",
    "Calibration",
    "CalibrationError",
    "ClusterConfig",
    "ClusterConfigError",
    "ClusteringResult",
    "ClusteringScores",
    "Scores",
    "album_calibration",
    "bcubed",
    "cluster_faces",
    "face_clusters_table",
    "fit_calibration",
    "pairwise",
    "published_calibration",
    "score_clustering",
]
