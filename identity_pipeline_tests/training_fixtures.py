"""A tiny synthetic training set in the ``training_set`` manifest format, and tiny models.

Images are flat-coloured backgrounds with a coloured "face" disc per identity; masks cover the
disc (255) with a soft edge. Everything is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from identity_pipeline.faces.backend import DetectedFace, FaceBackend

IDENTITY_COLOURS = {
    "Alice": (220, 170, 140),
    "Bob": (120, 80, 60),
    "Carol": (250, 210, 180),
    "Dave": (170, 110, 200),
    "Eve": (90, 160, 120),
}


def write_training_set(
    root: Path,
    count: int = 6,
    size: int = 64,
    identities: tuple[str, ...] = ("Alice", "Bob"),
    holdout: int = 1,
    relative: bool = True,
    extra_bucket: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Images and masks under ``root/files``; returns the manifest rows (not yet written)."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count + holdout):
        identity = identities[index % len(identities)]
        width, height = (size, size)
        if extra_bucket and index % 3 == 2:
            width, height = extra_bucket
        image, mask = _synthetic_pair(identity, width, height, rng)
        image_name, mask_name = f"img_{index:03d}.png", f"mask_{index:03d}.png"
        image.save(files / image_name)
        mask.save(files / mask_name)
        prefix = "files" if relative else str(files)
        rows.append(
            {
                "sample_id": f"s{index:03d}",
                "image_path": f"{prefix}/{image_name}",
                "mask_path": f"{prefix}/{mask_name}",
                "caption": f"A group photo of {identity} and other people",
                "identity": identity,
                "repeats": 1 + index % 2,
                "bucket_width": width,
                "bucket_height": height,
                "split": "holdout" if index >= count else "train",
                "album": "demo",
                "photo_id": f"p{index}",
                "tile_id": f"t{index}",
                "face_id": f"f{index}",
            }
        )
    return pd.DataFrame(rows)


def _synthetic_pair(identity: str, width: int, height: int, rng: np.random.Generator):
    background = tuple(int(v) for v in rng.integers(30, 200, size=3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    radius = int(min(width, height) * rng.uniform(0.15, 0.3))
    cx = int(rng.integers(radius, width - radius))
    cy = int(rng.integers(radius, height - radius))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    draw.ellipse(box, fill=IDENTITY_COLOURS.get(identity, (200, 200, 200)))
    eye = max(1, radius // 5)
    for dx in (-radius // 3, radius // 3):
        draw.ellipse((cx + dx - eye, cy - eye * 2, cx + dx + eye, cy), fill=(20, 20, 20))
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return image, mask.filter(ImageFilter.GaussianBlur(1.5))


def write_manifest(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


class CentreBackend(FaceBackend):
    """A stand-in detector: one "face" per picture, embedded from its colours.

    The face is what differs from the top-left pixel's colour (the training fixture's disc on its
    flat background), or the middle of the picture when nothing does. Lets the asset's whole
    scoring path run on the tiny model, whose images have no real faces.
    """

    name = "test-centre"
    model_sha256 = "0" * 64
    embedding_dim = 12
    min_face_px = 8.0
    max_face_px = 8192.0

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        height, width = image_rgb.shape[:2]
        box = (0.2 * width, 0.2 * height, 0.8 * width, 0.8 * height)
        differs = np.abs(image_rgb.astype(int) - image_rgb[0, 0].astype(int)).sum(axis=2) > 30
        ys, xs = np.nonzero(differs)
        if len(xs) and xs.max() - xs.min() >= 8 and ys.max() - ys.min() >= 8:
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        width, height = box[2] - box[0], box[3] - box[1]
        landmarks = np.array(
            [
                [cx - 0.15 * width, cy - 0.1 * height],
                [cx + 0.15 * width, cy - 0.1 * height],
                [cx, cy],
                [cx - 0.1 * width, cy + 0.15 * height],
                [cx + 0.1 * width, cy + 0.15 * height],
            ],
            dtype=np.float32,
        )
        return [DetectedFace(box, landmarks, 0.99)]

    def embed(self, image_rgb: np.ndarray, faces) -> np.ndarray:
        vectors = []
        for face in faces:
            x0, y0, x1, y1 = (int(v) for v in face.box)
            crop = Image.fromarray(image_rgb[y0:y1, x0:x1]).resize((2, 2))
            vector = np.asarray(crop, dtype=np.float32).reshape(-1) - 128.0
            vectors.append(vector / (np.linalg.norm(vector) + 1e-6))
        return np.asarray(vectors, dtype=np.float32).reshape(len(faces), self.embedding_dim)
