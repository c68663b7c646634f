"""What a training set is, as a short hash, and the exact copy a training run keeps of it.

``manifest_version``: a digest of the manifest's rows (every contract column, in sample order).
Sample files are named by a hash of their sources and settings, so equal rows mean equal files:
a re-materialization that changes nothing gets the same version, and Dagster does not mark the
LoRA stale for it.

``snapshot_manifest``: the manifest plus the SHA-256 of every image and mask file, as read now.
``lora_checkpoint`` writes it into its run folder and the trainer reads only that copy, so the
run records exactly what it trained on and ``identity_fidelity`` evaluates against exactly that
(a file changed or pruned since is found by its hash, not silently used).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from identity_pipeline.dataset.build import MANIFEST_DTYPES, resolve_data_path
from identity_pipeline.storage import sha256_bytes

IMAGE_SHA256 = "image_sha256"
MASK_SHA256 = "mask_sha256"
SNAPSHOT_COLUMNS = (IMAGE_SHA256, MASK_SHA256)
MISSING = "missing"


def manifest_version(manifest: pd.DataFrame, columns=None) -> str:
    """A 16-hex digest of the rows (sorted by sample_id) over ``columns`` (default: the
    manifest contract's, plus the content hashes when present)."""
    if columns is None:
        columns = [c for c in (*MANIFEST_DTYPES, *SNAPSHOT_COLUMNS) if c in manifest.columns]
    rows = manifest[list(columns)].sort_values("sample_id", kind="stable")
    digest = hashlib.sha256("\x1f".join(columns).encode())
    for values in rows.astype(str).itertuples(index=False):
        digest.update(("\x1e" + "\x1f".join(values)).encode())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return sha256_bytes(path.read_bytes()) if path.is_file() else MISSING


def snapshot_manifest(manifest: pd.DataFrame, data_root: Path) -> pd.DataFrame:
    """The manifest with each image's and mask's SHA-256 as read now (``missing`` if absent)."""
    snapshot = manifest.copy()
    for column, path_column in ((IMAGE_SHA256, "image_path"), (MASK_SHA256, "mask_path")):
        snapshot[column] = pd.Series(
            [file_sha256(resolve_data_path(data_root, path)) for path in manifest[path_column]],
            index=manifest.index,
            dtype="string",
        )
    return snapshot


def changed_files(snapshot: pd.DataFrame, data_root: Path) -> dict[str, str]:
    """{sample_id: why} for samples whose image or mask no longer has its recorded hash."""
    problems: dict[str, str] = {}
    if not set(SNAPSHOT_COLUMNS) <= set(snapshot.columns):
        return problems
    for row in snapshot.itertuples(index=False):
        for kind, path, expected in (
            ("image", row.image_path, getattr(row, IMAGE_SHA256)),
            ("mask", row.mask_path, getattr(row, MASK_SHA256)),
        ):
            actual = file_sha256(resolve_data_path(data_root, path))
            if actual != expected:
                what = "is missing" if actual == MISSING else "changed since training"
                problems[str(row.sample_id)] = f"{kind} {path} {what}"
                break
    return problems
