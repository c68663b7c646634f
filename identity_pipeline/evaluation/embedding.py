"""Faces of real and generated pictures, embedded with the pipeline's own face backend.

* Real photos from the training-set manifest: the identity's face is the detected face lying
  inside that identity's mask (the other people of a training image are blurred and outside it).
* Folders (the CLI): one sub-folder per identity. A reference photo gives its largest face; a
  generated image gives every face it has (none is a valid answer and is counted).

Results go through the faces stage's content cache when one is given, so re-scoring the same
pictures costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from identity_pipeline.faces import FaceBackend, FaceCache, FaceConfig, TileFace, faces_for_tile
from identity_pipeline.faces.pipeline import analyse_tile
from identity_pipeline.storage import sha256_bytes

SPLIT_TRAIN = "train"
SPLIT_HOLDOUT = "holdout"

PHOTO_COLUMNS = (
    "identity",
    "split",
    "sample_id",
    "image_path",
    "faces_found",
    "face_found",
    "mask_coverage",
)


@dataclass
class RealFaces:
    """Embeddings of real photos per identity: reference (held out) and training."""

    reference: dict[str, np.ndarray] = field(default_factory=dict)
    training: dict[str, np.ndarray] = field(default_factory=dict)
    photos: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PHOTO_COLUMNS))

    def counts(self) -> pd.DataFrame:
        """Per identity and split: photos, and photos in which the identity's face was found."""
        if self.photos.empty:
            return pd.DataFrame(columns=["identity", "split", "photos", "with_face"])
        grouped = self.photos.groupby(["identity", "split"])["face_found"]
        return grouped.agg(photos="size", with_face="sum").reset_index()


def image_faces(
    image: Image.Image | np.ndarray,
    backend: FaceBackend,
    config: FaceConfig,
    cache: FaceCache | None = None,
    content_hash: str | None = None,
) -> list[TileFace]:
    """Every face of one picture (reading order), from the cache when it has this content."""
    pixels = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else image
    if cache is None:
        return analyse_tile(pixels, backend, config)
    records = faces_for_tile(
        pixels,
        "evaluation",
        "evaluation",
        (0, 0),
        backend,
        cache,
        config,
        content_hash=content_hash,
    )
    return [record.face for record in records]


def embeddings_of(faces: Sequence[TileFace], dim: int) -> np.ndarray:
    if not faces:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([np.asarray(face.embedding, dtype=np.float32) for face in faces])


def largest_face(faces: Sequence[TileFace]) -> TileFace | None:
    return max(faces, key=lambda face: face.size) if faces else None


def mask_coverage(face: TileFace, mask: np.ndarray) -> float:
    """Mean mask value (0..1) over the face box: how much of the face is the masked person."""
    height, width = mask.shape[:2]
    x0, y0, x1, y1 = face.box
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    if right <= left or bottom <= top:
        return 0.0
    return float(mask[top:bottom, left:right].mean())


def face_in_mask(
    faces: Sequence[TileFace], mask: np.ndarray | None, min_coverage: float
) -> tuple[TileFace | None, float]:
    """The face most inside ``mask`` (at least ``min_coverage``); no mask: the largest face."""
    if not faces:
        return None, float("nan")
    if mask is None:
        return largest_face(faces), float("nan")
    coverages = [mask_coverage(face, mask) for face in faces]
    best = int(np.argmax(coverages))
    if coverages[best] < min_coverage:
        return None, coverages[best]
    return faces[best], coverages[best]


def load_rgb(path: Path) -> Image.Image:
    from identity_pipeline.photos.inspect import load_photo

    return load_photo(path)


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """A mask as float 0..1 at ``size`` (width, height); None when the file is missing."""
    if not path.is_file():
        return None
    with Image.open(path) as mask:
        grey = mask.convert("L")
        if grey.size != size:
            grey = grey.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(grey, dtype=np.float32) / 255.0


def real_faces_from_manifest(
    manifest: pd.DataFrame,
    data_root: Path,
    backend: FaceBackend,
    config: FaceConfig,
    identities: Sequence[str] | None = None,
    min_mask_coverage: float = 0.3,
    cache: FaceCache | None = None,
    progress: Callable[[str], None] | None = None,
) -> RealFaces:
    """Embed the identity's face in every manifest image (train and holdout splits).

    One embedding per distinct (identity, face_id) when the manifest has face ids (several
    samples of one face, e.g. crops of a collage, count once), else per sample.
    """
    frame = manifest
    if identities is not None:
        frame = frame[frame["identity"].astype(str).isin(set(identities))]
    frame = frame[frame["split"].isin([SPLIT_TRAIN, SPLIT_HOLDOUT])]
    key = "face_id" if "face_id" in frame.columns else "sample_id"
    frame = frame.sort_values("sample_id").drop_duplicates(subset=["identity", key])
    dim = backend.embedding_dim
    reference: dict[str, list[np.ndarray]] = {}
    training: dict[str, list[np.ndarray]] = {}
    rows = []
    for row in frame.itertuples(index=False):
        identity = str(row.identity)
        image_path = _resolve(data_root, row.image_path)
        data = image_path.read_bytes()
        image = load_rgb(image_path)
        mask = load_mask(_resolve(data_root, row.mask_path), image.size)
        faces = image_faces(image, backend, config, cache, content_hash=sha256_bytes(data))
        face, coverage = face_in_mask(faces, mask, min_mask_coverage)
        target = reference if row.split == SPLIT_HOLDOUT else training
        target.setdefault(identity, [])
        if face is not None:
            target[identity].append(np.asarray(face.embedding, dtype=np.float32))
        rows.append(
            {
                "identity": identity,
                "split": str(row.split),
                "sample_id": str(row.sample_id),
                "image_path": str(row.image_path),
                "faces_found": len(faces),
                "face_found": face is not None,
                "mask_coverage": coverage,
            }
        )
        if progress is not None:
            progress(f"{identity}: {row.image_path} ({len(faces)} faces)")
    return RealFaces(
        reference={name: _matrix(vectors, dim) for name, vectors in reference.items()},
        training={name: _matrix(vectors, dim) for name, vectors in training.items()},
        photos=pd.DataFrame(rows, columns=list(PHOTO_COLUMNS)),
    )


@dataclass
class FolderImage:
    identity: str
    path: Path
    faces: list[TileFace]


def identity_folders(root: Path) -> dict[str, list[Path]]:
    """``root/<identity>/**/<image>``: image files per identity sub-folder (hidden ones skipped)."""
    from identity_pipeline.faces.cli import find_images
    from identity_pipeline.photos.albums import is_hidden_or_system

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    folders: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not is_hidden_or_system(entry.name):
            folders[entry.name] = find_images([entry])
    return folders


def folder_faces(
    root: Path,
    backend: FaceBackend,
    config: FaceConfig,
    cache: FaceCache | None = None,
) -> list[FolderImage]:
    """Every face of every image under ``root/<identity>/``; unreadable files raise."""
    images: list[FolderImage] = []
    for identity, paths in identity_folders(root).items():
        for path in paths:
            data = path.read_bytes()
            faces = image_faces(load_rgb(path), backend, config, cache, sha256_bytes(data))
            images.append(FolderImage(identity, path, faces))
    return images


def reference_from_folder(images: Sequence[FolderImage], dim: int) -> dict[str, np.ndarray]:
    """The largest face of each reference photo, per identity (photos without one add nothing)."""
    reference: dict[str, list[np.ndarray]] = {}
    for image in images:
        face = largest_face(image.faces)
        reference.setdefault(image.identity, [])
        if face is not None:
            reference[image.identity].append(np.asarray(face.embedding, dtype=np.float32))
    return {name: _matrix(vectors, dim) for name, vectors in reference.items()}


def _matrix(vectors: list[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)


def _resolve(root: Path, path: object) -> Path:
    candidate = Path(str(path))
    return candidate if candidate.is_absolute() else Path(root) / candidate


def photos_without_face(photos: pd.DataFrame) -> Mapping[str, int]:
    if photos.empty:
        return {}
    missing = photos[~photos["face_found"].astype(bool)]
    return {str(k): int(v) for k, v in missing.groupby("identity").size().items()}
