"""labeled_identities: who every face is, from the names a person gave on the labeling page."""

import dagster as dg
import pandas as pd

from identity_pipeline.asset_names import LABELED_IDENTITIES
from identity_pipeline.assets.metadata import table_metadata
from identity_pipeline.labeling import LabelsFileError, apply_labels, read_labels
from identity_pipeline.labeling.server import label_page_url
from identity_pipeline.resources import StorageResource


@dg.asset(
    name=LABELED_IDENTITIES,
    group_name="identities",
    kinds={"python", "parquet"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Who every face is: names from data/labels.csv (attached to faces, so they "
    "survive re-clustering) spread to their clusters; conflicting names inside a cluster split "
    "it by name; unnamed clusters stay unnamed and are listed.",
    check_specs=[
        dg.AssetCheckSpec(
            "no_empty_identity",
            asset=LABELED_IDENTITIES,
            description="Every named identity has at least one face.",
        )
    ],
)
def labeled_identities(
    context: dg.AssetExecutionContext, storage: StorageResource, face_clusters: pd.DataFrame
):
    layout = storage.layout
    try:
        labels = read_labels(layout.labels_path)
    except LabelsFileError as error:
        raise dg.Failure(
            description=f"{error}. The file was not changed; fix the line and re-run."
        ) from error
    resolved = apply_labels(face_clusters, face_clusters, labels)
    faces = resolved.faces
    if resolved.stale_labels:
        context.log.info(f"{len(resolved.stale_labels)} labelled faces are not in any album now")
    for row in resolved.conflicts.itertuples():
        context.log.warning(
            f"cluster {row.cluster_id} has conflicting names {row.names}: split by name"
        )
    identities = resolved.identities
    metadata: dict[str, object] = {
        "named_identities": len(identities),
        "named_faces": int(faces["identity"].notna().sum()),
        "unnamed_clusters": len(resolved.unnamed_clusters),
        "ignored_faces": int((faces["status"] == "ignored").sum()),
        "conflicts": len(resolved.conflicts),
        "stale_labels": len(resolved.stale_labels),
        "identities_table": table_metadata(
            identities[["name", "n_faces", "n_photos", "n_albums", "n_labelled", "n_inherited"]]
        ),
        "unnamed_clusters_table": table_metadata(
            resolved.unnamed_clusters[["cluster_id", "n_faces", "n_photos"]]
        ),
        "conflicts_table": table_metadata(resolved.conflicts.astype(str)),
        "labels_file": dg.MetadataValue.path(str(layout.labels_path)),
        "label_faces": dg.MetadataValue.url(label_page_url()),
    }
    yield dg.Output(faces, metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="no_empty_identity",
        passed=bool((identities["n_faces"] > 0).all()) if len(identities) else True,
        metadata={"identities": len(identities)},
    )
