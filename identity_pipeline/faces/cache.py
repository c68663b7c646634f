"""Per-tile face results on disk, so re-runs only compute tiles they have not seen.

Key: sha256 over (tile content hash, backend name, model sha256, embedding dim, config hash).
The content hash is the caller's choice of "same input": the CLI and asset pass the sha256 of
the tile's encoded file bytes (no decode needed to hit the cache); without one, the sha256 of
the decoded pixels (shape, dtype, bytes) is used. One small Parquet file per tile:
``<folder>/<backend name>/<key[:2]>/<key>.parquet`` (tile-local results only, no ids), written
atomically. A tile without faces is cached too (zero rows). No pickles.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from identity_pipeline.faces.backend import FaceBackend
from identity_pipeline.faces.config import FaceConfig
from identity_pipeline.faces.quality import FaceQuality
from identity_pipeline.faces.records import FLOAT_LIST, TileFace
from identity_pipeline.storage import atomic_write_table

log = logging.getLogger(__name__)

CACHE_SCHEMA = pa.schema(
    [
        ("tile_x0", pa.float32()),
        ("tile_y0", pa.float32()),
        ("tile_x1", pa.float32()),
        ("tile_y1", pa.float32()),
        ("landmarks", FLOAT_LIST),  # 10 floats, tile pixels
        ("det_score", pa.float32()),
        ("quality", pa.float32()),
        ("quality_blur", pa.float32()),
        ("quality_pose", pa.float32()),
        ("quality_size", pa.float32()),
        ("embedding", FLOAT_LIST),
    ]
)
_KEY_METADATA = b"identity_pipeline.faces.cache_key"


def pixels_sha256(image: np.ndarray) -> str:
    """Content hash of decoded pixels (shape and dtype included: a transposed tile differs)."""
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    unreadable: list[str] = field(default_factory=list)


class FaceCache:
    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.stats = CacheStats()

    @staticmethod
    def key(content_hash: str, backend: FaceBackend, config: FaceConfig) -> str:
        parts = (content_hash, backend.name, backend.model_sha256, backend.embedding_dim)
        text = "\x1f".join(str(p) for p in (*parts, config.digest))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def path(self, key: str, backend: FaceBackend) -> Path:
        return self.folder / backend.name / key[:2] / f"{key}.parquet"

    def lookup(self, key: str, backend: FaceBackend) -> list[TileFace] | None:
        """The cached faces, or None on a miss (absent, unreadable or foreign entry)."""
        path = self.path(key, backend)
        if not path.is_file():
            self.stats.misses += 1
            return None
        try:
            table = pq.ParquetFile(path).read()  # 4x faster than read_table for tiny files
            metadata = table.schema.metadata or {}
            if metadata.get(_KEY_METADATA) != key.encode("ascii"):
                raise ValueError("entry was written for another key")
            faces = faces_from_table(table, backend.embedding_dim)
        except Exception as error:  # noqa: BLE001 - any broken entry is recomputed, not fatal
            log.warning("face cache entry %s unreadable, recomputing: %s", path, error)
            self.stats.unreadable.append(str(path))
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return faces

    def store(self, key: str, backend: FaceBackend, faces: Sequence[TileFace]) -> Path:
        table = faces_to_table(faces).replace_schema_metadata({_KEY_METADATA: key.encode("ascii")})
        return atomic_write_table(self.path(key, backend), table)


def _float_list_array(rows: Sequence[np.ndarray], width: int) -> pa.ListArray:
    if not rows:
        return pa.array([], type=FLOAT_LIST)
    flat = np.concatenate([np.asarray(r, dtype=np.float32).reshape(-1) for r in rows])
    offsets = pa.array(np.arange(0, len(rows) * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat, type=pa.float32()))


def faces_to_table(faces: Sequence[TileFace]) -> pa.Table:
    boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4)
    dim = len(faces[0].embedding) if faces else 0

    def floats(values: Sequence[float]) -> pa.Array:
        return pa.array(np.asarray(values, dtype=np.float32), type=pa.float32())

    columns = [
        floats(boxes[:, 0]),
        floats(boxes[:, 1]),
        floats(boxes[:, 2]),
        floats(boxes[:, 3]),
        _float_list_array([f.landmarks for f in faces], 10),
        floats([f.det_score for f in faces]),
        floats([f.quality.overall for f in faces]),
        floats([f.quality.blur for f in faces]),
        floats([f.quality.pose for f in faces]),
        floats([f.quality.size for f in faces]),
        _float_list_array([f.embedding for f in faces], dim),
    ]
    return pa.Table.from_arrays(columns, schema=CACHE_SCHEMA)


def _list_matrix(table: pa.Table, name: str, width: int) -> np.ndarray:
    column = table.column(name).combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size != table.num_rows * width:
        raise ValueError(f"{name} holds {flat.size} values for {table.num_rows} rows x {width}")
    return flat.reshape(table.num_rows, width)


def faces_from_table(table: pa.Table, embedding_dim: int) -> list[TileFace]:
    if not table.schema.equals(CACHE_SCHEMA, check_metadata=False):
        raise ValueError("cache entry has another schema")
    landmarks = _list_matrix(table, "landmarks", 10).reshape(-1, 5, 2)
    embeddings = _list_matrix(table, "embedding", embedding_dim)
    values = {name: table.column(name).to_numpy() for name in CACHE_SCHEMA.names[:4]}
    scalars = {
        name: table.column(name).to_numpy()
        for name in ("det_score", "quality", "quality_blur", "quality_pose", "quality_size")
    }
    faces = []
    for row in range(table.num_rows):
        box = tuple(float(values[name][row]) for name in CACHE_SCHEMA.names[:4])
        quality = FaceQuality(
            blur=float(scalars["quality_blur"][row]),
            pose=float(scalars["quality_pose"][row]),
            size=float(scalars["quality_size"][row]),
            overall=float(scalars["quality"][row]),
        )
        faces.append(
            TileFace(
                box=box,  # type: ignore[arg-type]
                landmarks=landmarks[row].copy(),
                det_score=float(scalars["det_score"][row]),
                quality=quality,
                embedding=embeddings[row].copy(),
            )
        )
    return faces
