"""Names for faces (no dagster here): labels.csv, clusters + labels -> identities, the page.

``read_labels`` / ``update_labels`` handle the file; ``apply_labels`` resolves identities;
``create_app`` (``server``) is the labeling page, started by ``identity-pipeline label``.
"""

from identity_pipeline.labeling.identities import (
    FACE_IDENTITY_DTYPES,
    IGNORED,
    INHERITED,
    LABELLED,
    UNNAMED,
    LabeledIdentities,
    apply_labels,
)
from identity_pipeline.labeling.labels import (
    IGNORE,
    LabelError,
    Labels,
    LabelsFileError,
    backup_path,
    format_labels,
    parse_labels,
    read_labels,
    update_labels,
    write_labels,
)

__all__ = [
    "FACE_IDENTITY_DTYPES",
    "IGNORE",
    "IGNORED",
    "INHERITED",
    "LABELLED",
    "UNNAMED",
    "LabelError",
    "LabeledIdentities",
    "Labels",
    "LabelsFileError",
    "apply_labels",
    "backup_path",
    "format_labels",
    "parse_labels",
    "read_labels",
    "update_labels",
    "write_labels",
]
