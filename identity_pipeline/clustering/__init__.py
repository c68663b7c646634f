"""Faces of one person together (no dagster here): two-round HDBSCAN with cannot-link per tile.

``cluster_faces`` takes a faces table and returns per-face assignments and per-cluster stats;
``load_cluster_config`` reads the per-backend thresholds; ``metrics`` scores a clustering.
"""

from identity_pipeline.clustering.cluster import (
    ALONE,
    ASSIGNMENT_DTYPES,
    ATTACHED,
    CLUSTER_DTYPES,
    FACE_CLUSTERS_DTYPES,
    ROUND_ONE,
    ClusteringResult,
    cluster_faces,
    config_for_faces,
    face_clusters_table,
)
from identity_pipeline.clustering.config import (
    SHIPPED_THRESHOLDS,
    ClusterConfig,
    ClusterConfigError,
    load_cluster_config,
)
from identity_pipeline.clustering.metrics import (
    ClusteringScores,
    Scores,
    bcubed,
    pairwise,
    score_clustering,
)

__all__ = [
    "ALONE",
    "ASSIGNMENT_DTYPES",
    "ATTACHED",
    "CLUSTER_DTYPES",
    "FACE_CLUSTERS_DTYPES",
    "ROUND_ONE",
    "SHIPPED_THRESHOLDS",
    "ClusterConfig",
    "ClusterConfigError",
    "ClusteringResult",
    "ClusteringScores",
    "Scores",
    "bcubed",
    "cluster_faces",
    "config_for_faces",
    "face_clusters_table",
    "load_cluster_config",
    "pairwise",
    "score_clustering",
]
