"""The production backend: insightface's ``FaceAnalysis`` with a model pack (``buffalo_l``).

Only detection and recognition are loaded (landmark-3d, gender/age models cost time and add
nothing here). The pack must already be on disk: insightface would try to download a missing
one, which cannot work on these machines, so its absence is reported first, with the folder to
put it in.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from identity_pipeline.faces.backend import (
    DetectedFace,
    FaceBackend,
    ModelFileError,
    combined_sha256,
    file_sha256,
    l2_normalise,
    rgb_uint8,
)

DEFAULT_PACK = "buffalo_l"
DEFAULT_ROOT = "~/.insightface"
INSIGHTFACE_ROOT_ENV = "INSIGHTFACE_ROOT"
DETECTOR_FLOOR_SCORE = 0.3
DEFAULT_DET_SIZE = 640


class ModelPackMissingError(ModelFileError):
    """The insightface model pack is not where insightface will look for it."""


def resolve_insightface_root(root: str | os.PathLike[str] | None = None) -> Path:
    """An explicit root, else ``$INSIGHTFACE_ROOT``, else ``~/.insightface`` (insightface's own)."""
    chosen = root or os.environ.get(INSIGHTFACE_ROOT_ENV) or DEFAULT_ROOT
    return Path(chosen).expanduser().resolve()


def pack_folder(pack: str, root: str | os.PathLike[str] | None = None) -> Path:
    return resolve_insightface_root(root) / "models" / pack


def require_pack(pack: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The pack folder, or a ModelPackMissingError telling the user exactly where it must go."""
    folder = pack_folder(pack, root)
    if folder.is_dir() and any(folder.glob("*.onnx")):
        return folder
    state = "is empty (no .onnx files)" if folder.is_dir() else "does not exist"
    raise ModelPackMissingError(
        f"insightface model pack {pack!r} not found: {folder} {state}. This machine cannot "
        f"download it. Copy the unzipped pack there (for buffalo_l: det_10g.onnx and "
        f"w600k_r50.onnx at least, straight inside {folder}/), or point the backend at another "
        f"root with root=... / --insightface-root / ${INSIGHTFACE_ROOT_ENV} (the pack must be "
        f"at <root>/models/{pack}/). Or use the offline backend, which needs no download."
    )


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu provides it, CPU otherwise (never CoreML/TensorRT surprises)."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class InsightFaceBackend(FaceBackend):
    """SCRFD-style detector + ArcFace-style recognizer from an insightface pack."""

    min_face_px = 16.0
    max_face_px = 320.0

    def __init__(
        self,
        pack: str = DEFAULT_PACK,
        root: str | os.PathLike[str] | None = None,
        *,
        det_size: int = DEFAULT_DET_SIZE,
        floor_score: float = DETECTOR_FLOOR_SCORE,
        providers: Sequence[str] | None = None,
    ) -> None:
        from insightface.app import FaceAnalysis  # heavy import, only when this backend is used

        self.pack = pack
        self.root = resolve_insightface_root(root)
        self.folder = require_pack(pack, self.root)
        self.providers = list(providers) if providers is not None else default_providers()
        try:
            self.app = FaceAnalysis(
                name=pack,
                root=str(self.root),
                allowed_modules=["detection", "recognition"],
                providers=self.providers,
            )
        except AssertionError as error:  # insightface asserts that a detector was found
            raise ModelFileError(
                f"insightface pack {pack!r} at {self.folder} has no detection model "
                "(a SCRFD/RetinaFace-style ONNX)"
            ) from error
        if "recognition" not in self.app.models:
            raise ModelFileError(
                f"insightface pack {pack!r} at {self.folder} has no recognition model "
                "(an ArcFace-style ONNX with a 112x112 input)"
            )
        ctx_id = 0 if self.providers[0] == "CUDAExecutionProvider" else -1
        self.app.prepare(ctx_id=ctx_id, det_thresh=floor_score, det_size=(det_size, det_size))
        self.detector = self.app.det_model
        # The detector's input (a fixed-shape model keeps its own). multiscale hands over crops no
        # larger than this and they are padded to it, so SCRFD never rescales them: it
        # letterboxes, which would also *enlarge* small crops and push big faces out of range.
        self.input_width, self.input_height = (int(v) for v in self.detector.input_size)
        self.detect_max_side = min(self.input_width, self.input_height)
        self.recognizer = self.app.models["recognition"]
        self.name = f"insightface-{pack}"
        self.embedding_dim = int(self.recognizer.output_shape[-1])
        self.model_sha256 = combined_sha256(
            [
                ("detector", file_sha256(Path(self.detector.model_file))),
                ("recognizer", file_sha256(Path(self.recognizer.model_file))),
            ]
        )

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        image = rgb_uint8(image_rgb)
        height, width = image.shape[:2]
        # insightface works in BGR; pad small images instead of letting SCRFD enlarge them.
        canvas_h, canvas_w = max(height, self.input_height), max(width, self.input_width)
        canvas = np.zeros((canvas_h, canvas_w, 3), dtype=np.uint8)
        canvas[:height, :width] = image[:, :, ::-1]
        boxes, keypoints = self.detector.detect(canvas, max_num=0)
        faces = []
        for index in range(boxes.shape[0]):
            x0, y0, x1, y1, score = (float(v) for v in boxes[index, :5])
            if x0 >= width or y0 >= height:
                continue  # a detection in the padding
            landmarks = np.asarray(keypoints[index], dtype=np.float32).reshape(5, 2)
            faces.append(DetectedFace((x0, y0, x1, y1), landmarks, score))
        return faces

    def embed(self, image_rgb: np.ndarray, faces: Sequence[DetectedFace]) -> np.ndarray:
        from insightface.utils import face_align

        image = rgb_uint8(image_rgb)
        if not faces:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        size = int(self.recognizer.input_size[0])
        with warnings.catch_warnings():
            # insightface 2.1 calls a scikit-image API deprecated in 0.26; harmless, noisy.
            warnings.simplefilter("ignore", FutureWarning)
            crops = [
                face_align.norm_crop(bgr, landmark=f.landmarks, image_size=size) for f in faces
            ]
        batch_dim = self.recognizer.input_shape[0]
        if isinstance(batch_dim, int) and batch_dim == 1:
            vectors = [self.recognizer.get_feat(crop).reshape(-1) for crop in crops]
            return l2_normalise(np.stack(vectors))
        return l2_normalise(self.recognizer.get_feat(crops).reshape(len(crops), -1))
