"""face_clusters: the faces of one person together, over all albums."""

import time

import dagster as dg
import pandas as pd

from identity_pipeline.asset_names import FACE_CLUSTERS, FACE_EMBEDDINGS, PHOTO_TILES
from identity_pipeline.assets.metadata import plain_value, table_metadata
from identity_pipeline.assets.settings import run_config_class, settings_metadata, stage_settings
from identity_pipeline.clustering import CalibrationError, ClusterConfig, cluster_faces
from identity_pipeline.clustering.cluster import arrow_table, face_clusters_table
from identity_pipeline.faces.offline import OFFLINE_BACKEND_NAME
from identity_pipeline.labeling import LabelsFileError, apply_labels, read_labels
from identity_pipeline.labeling.crops import TableCropper
from identity_pipeline.labeling.server import label_page_url
from identity_pipeline.labeling.sheets import cluster_sheets
from identity_pipeline.previews import encode_image, inline_markdown_image
from identity_pipeline.resources import SettingsResource, StorageResource
from identity_pipeline.storage import atomic_write_bytes

MAX_CLUSTER_SHEETS = 8
TILE_CONTEXT_COLUMNS = ["tile_id", "tile_path", "source_path"]
SECTION = "clustering"
ClusteringRunConfig = run_config_class(ClusterConfig)


@dg.asset(
    name=FACE_CLUSTERS,
    group_name="identities",
    kinds={"python", "parquet", "scikitlearn"},
    automation_condition=dg.AutomationCondition.eager(),
    ins={
        FACE_EMBEDDINGS: dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
        PHOTO_TILES: dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
    },
    description="Faces of one person together, over all albums: named faces stay with their "
    "name, new faces join a named person when confidently close (bar and margin), the rest is "
    "clustered by average linkage. Two faces of one tile never share a cluster. Thresholds "
    "from the face backend's calibration (score statistics), shown in the metadata.",
    check_specs=[
        dg.AssetCheckSpec(
            "no_two_faces_of_one_tile",
            asset=FACE_CLUSTERS,
            description="Cannot-link: no cluster holds two faces of the same tile.",
        )
    ],
)
def face_clusters(
    context: dg.AssetExecutionContext,
    config: ClusteringRunConfig,  # type: ignore[valid-type]
    storage: StorageResource,
    settings: SettingsResource,
    face_embeddings: dict[str, pd.DataFrame],
    photo_tiles: dict[str, pd.DataFrame],
):
    layout = storage.layout
    faces = _faces_with_tiles(face_embeddings, photo_tiles)
    cluster_config = stage_settings(settings, layout, SECTION, config, ClusterConfig)
    # Names a person gave: their faces stay put, new faces may join them (incremental).
    labels = _labels_or_empty(layout.labels_path, context)
    # A graph without faces yet has no backend to calibrate for; nothing is clustered either.
    backend = None if len(faces) else OFFLINE_BACKEND_NAME
    started = time.perf_counter()
    try:
        result = cluster_faces(faces, cluster_config, names=labels, backend=backend)
    except (CalibrationError, ValueError) as error:  # ValueError: faces of two embedding spaces
        raise dg.Failure(description=str(error)) from error
    table = face_clusters_table(faces, result)
    seconds = time.perf_counter() - started

    names = _cluster_names(table, labels)
    metadata: dict[str, object] = {
        "faces": len(table),
        "clusters": int((result.clusters["size"] >= 2).sum()),
        "singletons": int((result.clusters["size"] == 1).sum()),
        "named_clusters": len(names),
        "backend": result.calibration.backend,
        "calibration": dg.MetadataValue.json(
            {"source": result.calibration.source, **result.calibration.thresholds()}
        ),
        "assigned_to_named": int(result.summary["assigned_to_named"]),
        "summary": dg.MetadataValue.json({k: plain_value(v) for k, v in result.summary.items()}),
        "clusters_table": table_metadata(
            result.clusters[
                [
                    "cluster_id",
                    "size",
                    "n_photos",
                    "mean_intra_cosine",
                    "quality_mean",
                    "quality_std",
                    "n_outliers",
                ]
            ]
        ),
        "label_faces": dg.MetadataValue.url(label_page_url()),
        "how_to_label": dg.MetadataValue.md(
            "Run `identity-pipeline label` (or `make label`), open the link above, name the "
            "clusters. Names are saved to `data/labels.csv`; `labeled_identities` re-runs."
        ),
        "seconds": round(seconds, 3),
        **settings_metadata(cluster_config),
    }
    metadata.update(_sheets_metadata(table, layout, names))
    yield dg.Output(arrow_table(table), metadata=metadata)

    conflicts = table.groupby(["cluster_id", "tile_id"]).size()
    yield dg.AssetCheckResult(
        check_name="no_two_faces_of_one_tile",
        passed=bool((conflicts <= 1).all()),
        metadata={"violations": int((conflicts > 1).sum())},
    )


def _faces_with_tiles(
    faces: dict[str, pd.DataFrame], tiles: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """All albums' faces, with the album and the tile image each face was found in."""
    frames = []
    for album, frame in sorted(faces.items()):
        context = tiles.get(album)
        if context is not None and len(frame):
            frame = frame.merge(context[TILE_CONTEXT_COLUMNS], on="tile_id", how="left")
        frames.append(frame.assign(album=album))
    if not frames:
        return pd.DataFrame(columns=["face_id", "tile_id", "embedding", "album"])
    return pd.concat(frames, ignore_index=True)


def _labels_or_empty(path, context) -> dict[str, str]:
    try:
        return dict(read_labels(path).names)
    except LabelsFileError as error:
        context.log.warning(f"labels file ignored for previews: {error}")
        return {}


def _cluster_names(table: pd.DataFrame, labels: dict[str, str]) -> dict[int, str]:
    if not labels or table.empty:
        return {}
    resolved = apply_labels(table, table, labels).faces
    named = resolved.dropna(subset=["identity"])
    return {
        int(c): str(n)
        for c, n in named.groupby("cluster_id")["identity"].agg(lambda s: s.mode().iat[0]).items()
    }


def _sheets_metadata(
    table: pd.DataFrame, layout, names: dict[int, str]
) -> dict[str, dg.MetadataValue]:
    cropper = TableCropper(table, layout.root)
    folder = layout.asset_dir(FACE_CLUSTERS) / "sheets"
    metadata: dict[str, dg.MetadataValue] = {}
    for cluster_id, title, sheet in cluster_sheets(
        table, cropper, clusters=MAX_CLUSTER_SHEETS, names=names
    ):
        path = atomic_write_bytes(
            folder / f"cluster_{cluster_id}.jpg", encode_image(sheet, "JPEG", 85)
        )
        metadata[f"cluster_{cluster_id}"] = dg.MetadataValue.md(
            f"**{title}** (`{path}`)\n\n" + inline_markdown_image(sheet, title, max_bytes=24 * 1024)
        )
    return metadata
