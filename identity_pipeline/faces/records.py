"""One row per face: ids, where it is, how good it is, and its embedding.

``TileFace`` is what a tile's pixels alone determine (cached by content); ``FaceRecord`` adds
where the tile came from (ids, photo coordinates), which the cache must not freeze.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from identity_pipeline.faces.backend import FaceBackend
from identity_pipeline.faces.quality import FaceQuality
from identity_pipeline.storage import content_id

FLOAT_LIST = pa.list_(pa.float32())
LIST_COLUMNS = ("landmarks", "embedding")

# The faces table, in column order. Boxes are (x0, y0, x1, y1) in pixels, x0/y0 inclusive edges,
# as floats: "photo_*" in the photo (after EXIF rotation), "tile_*" in the tile. Landmarks are
# 10 floats x, y per point in photo pixels, order: eye on the image's left, other eye, nose tip,
# mouth corner left, mouth corner right. Embeddings are L2-normalised (cosine = dot product).
# The two vector columns are float32 numpy arrays in pandas (object dtype) and list<float32> in
# Arrow/Parquet: pandas' ArrowDtype lists do not survive a Parquet round trip through pandas
# metadata, object columns of arrays do.
FACE_DTYPES: dict[str, object] = {
    "face_id": "string",
    "photo_id": "string",
    "tile_id": "string",
    "photo_x0": "float32",
    "photo_y0": "float32",
    "photo_x1": "float32",
    "photo_y1": "float32",
    "tile_x0": "float32",
    "tile_y0": "float32",
    "tile_x1": "float32",
    "tile_y1": "float32",
    "landmarks": "object",
    "det_score": "float32",
    "face_size": "float32",  # longer box side, pixels
    "quality": "float32",
    "quality_blur": "float32",
    "quality_pose": "float32",
    "quality_size": "float32",
    "backend": "string",
    "model_sha256": "string",
    "embedding_dim": "Int64",
    "embedding": "object",
}


@dataclass(frozen=True)
class TileFace:
    """A face as found in one tile's pixels: everything here is a function of those pixels."""

    box: tuple[float, float, float, float]  # tile pixels
    landmarks: np.ndarray = field(compare=False)  # (5, 2) float32, tile pixels
    det_score: float
    quality: FaceQuality
    embedding: np.ndarray = field(compare=False)  # (D,) float32, L2-normalised

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


@dataclass(frozen=True)
class FaceRecord:
    face_id: str
    photo_id: str
    tile_id: str
    tile_offset: tuple[int, int]  # (x, y) of the tile's top-left corner in the photo
    face: TileFace
    backend: str
    model_sha256: str
    embedding_dim: int

    @property
    def photo_box(self) -> tuple[float, float, float, float]:
        dx, dy = self.tile_offset
        x0, y0, x1, y1 = self.face.box
        return (x0 + dx, y0 + dy, x1 + dx, y1 + dy)

    @property
    def photo_landmarks(self) -> np.ndarray:
        return self.face.landmarks + np.asarray(self.tile_offset, dtype=np.float32)


def face_id_for(tile_id: str, box: tuple[float, float, float, float]) -> str:
    """Stable across runs: the tile plus the box rounded to whole pixels (float noise aside)."""
    return content_id(tile_id, *(int(round(v)) for v in box))


def make_records(
    faces: Sequence[TileFace],
    tile_id: str,
    photo_id: str,
    tile_offset: tuple[int, int],
    backend: FaceBackend,
) -> list[FaceRecord]:
    offset = (int(tile_offset[0]), int(tile_offset[1]))
    return [
        FaceRecord(
            face_id=face_id_for(tile_id, face.box),
            photo_id=photo_id,
            tile_id=tile_id,
            tile_offset=offset,
            face=face,
            backend=backend.name,
            model_sha256=backend.model_sha256,
            embedding_dim=backend.embedding_dim,
        )
        for face in faces
    ]


def require_one_embedding_space(records: Sequence[FaceRecord]) -> None:
    """Vectors of different backends or weights are not comparable: refuse to mix them."""
    spaces = {(r.backend, r.model_sha256, r.embedding_dim) for r in records}
    if len(spaces) > 1:
        listed = ", ".join(f"{b} (model {m[:12]}, dim {d})" for b, m, d in sorted(spaces))
        raise ValueError(f"faces from different embedding spaces cannot share a table: {listed}")


def float_rows(rows: Sequence[np.ndarray], width: int) -> pd.Series:
    """An object column of float32 vectors (becomes list<float32> in Arrow)."""
    matrix = np.asarray(np.stack(rows) if rows else np.zeros((0, width)), dtype=np.float32)
    return pd.Series(list(matrix.reshape(len(rows), width)), dtype=object)


def faces_frame(records: Sequence[FaceRecord]) -> pd.DataFrame:
    """The faces table: one row per face, ``FACE_DTYPES`` columns in that order, one backend."""
    require_one_embedding_space(records)
    dim = records[0].embedding_dim if records else 0
    photo_boxes = np.array([r.photo_box for r in records], dtype=np.float32).reshape(-1, 4)
    tile_boxes = np.array([r.face.box for r in records], dtype=np.float32).reshape(-1, 4)
    columns: dict[str, object] = {
        "face_id": [r.face_id for r in records],
        "photo_id": [r.photo_id for r in records],
        "tile_id": [r.tile_id for r in records],
    }
    for index, axis in enumerate(("x0", "y0", "x1", "y1")):
        columns[f"photo_{axis}"] = photo_boxes[:, index]
    for index, axis in enumerate(("x0", "y0", "x1", "y1")):
        columns[f"tile_{axis}"] = tile_boxes[:, index]
    columns["landmarks"] = float_rows([r.photo_landmarks for r in records], 10)
    columns["det_score"] = [r.face.det_score for r in records]
    columns["face_size"] = [r.face.size for r in records]
    columns["quality"] = [r.face.quality.overall for r in records]
    columns["quality_blur"] = [r.face.quality.blur for r in records]
    columns["quality_pose"] = [r.face.quality.pose for r in records]
    columns["quality_size"] = [r.face.quality.size for r in records]
    columns["backend"] = [r.backend for r in records]
    columns["model_sha256"] = [r.model_sha256 for r in records]
    columns["embedding_dim"] = [r.embedding_dim for r in records]
    columns["embedding"] = float_rows([r.face.embedding for r in records], dim)
    frame = pd.DataFrame(columns, columns=list(FACE_DTYPES))
    return frame.astype(FACE_DTYPES)


def faces_table(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table whose vector columns are list<float32> even with no rows."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in LIST_COLUMNS:
        index = table.schema.get_field_index(name)
        if index >= 0 and table.schema.field(index).type != FLOAT_LIST:
            column = pa.array([list(v) for v in frame[name]], type=FLOAT_LIST)
            table = table.set_column(index, pa.field(name, FLOAT_LIST), column)
    return table


def embeddings_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The ``embedding`` column as an ``(N, D)`` float32 array (for clustering)."""
    if frame.empty:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame["embedding"]])
