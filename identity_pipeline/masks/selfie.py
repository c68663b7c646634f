"""MediaPipe's selfie segmentation model (Apache-2.0, 250 KB TFLite) run through cv2.dnn.

The model answers "is this pixel a person" for a 256x256 selfie-like view; it does not know who.
So each face gets its own view (a square crop around the head reaching down the body), the answers are merged into one "any person" map, and
geometry later divides that map between the people (``Segmentation.per_person`` is False).

The weights ship inside registry packages: the ``mediapipe`` wheels up to 0.10.x
(``mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite``) and the npm package
``@mediapipe/selfie_segmentation``. They are looked up at an explicit path (the ``masks``
settings' ``selfie_model``), ``masks/models/``, or inside an installed ``mediapipe``
package (found without importing it), and refused unless their sha256 is one of the versions
checked here. Without any of them the backend is unavailable and the selector says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from identity_pipeline.masks.config import BACKEND_SELFIE, MaskConfig
from identity_pipeline.masks.geometry import clip_box
from identity_pipeline.masks.records import FaceInTile, Segmentation

SELFIE_MODEL_FILE = "selfie_segmentation.tflite"
SELFIE_INPUT_SIDE = 256
# Where a copy kept with the code would live (Apache-2.0: its NOTICE must travel with it).
VENDORED_MODEL = Path(__file__).resolve().parent / "models" / SELFIE_MODEL_FILE
# sha256 of the general (256x256) model as shipped by each package that carries it.
KNOWN_SELFIE_SHA256 = {
    "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c": "pypi mediapipe==0.10.14",
    "8d13b7fae74af625c641226813616a2117bd6bca19eb3b75574621fc08557f27": (
        "npm @mediapipe/selfie_segmentation@0.1.1675465747"
    ),
}


class SelfieModelMissing(FileNotFoundError):
    """No selfie segmentation model could be found (the backend is then unavailable)."""


def find_selfie_model(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The model file: ``explicit``, else a copy in this package's ``models/`` folder, else the
    one inside an installed mediapipe 0.10.x."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    else:
        candidates.append(VENDORED_MODEL)
        spec = importlib.util.find_spec("mediapipe")
        if spec is not None and spec.origin is not None:
            folder = Path(spec.origin).parent / "modules" / "selfie_segmentation"
            candidates.append(folder / SELFIE_MODEL_FILE)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates) or "no mediapipe package installed"
    raise SelfieModelMissing(
        f"no selfie segmentation model ({looked}); set masks.selfie_model in pipeline.yaml to a "
        f"{SELFIE_MODEL_FILE} from one of: {', '.join(KNOWN_SELFIE_SHA256.values())}"
    )


class SelfieSegmenter:
    name = BACKEND_SELFIE

    def __init__(self, model_path: str | os.PathLike[str] | None = None) -> None:
        self.model_path = find_selfie_model(model_path)
        data = self.model_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest not in KNOWN_SELFIE_SHA256:
            raise ValueError(
                f"{self.model_path} has sha256 {digest}, not a selfie segmentation model version "
                f"this code was checked with ({', '.join(KNOWN_SELFIE_SHA256.values())})"
            )
        self.model_sha256 = digest
        self._net = cv2.dnn.readNetFromTFLite(np.frombuffer(data, dtype=np.uint8))

    def person_probability(self, image_rgb: np.ndarray) -> np.ndarray:
        """The model's person probability for a whole image, resized back to it (float32 H, W)."""
        height, width = image_rgb.shape[:2]
        square = cv2.resize(
            image_rgb, (SELFIE_INPUT_SIDE, SELFIE_INPUT_SIDE), interpolation=cv2.INTER_AREA
        )
        # The model takes RGB in [0, 1]; cv2.dnn's TFLite importer wants the blob as NCHW.
        blob = square.astype(np.float32).transpose(2, 0, 1)[np.newaxis] / np.float32(255.0)
        self._net.setInput(np.ascontiguousarray(blob))
        output = np.asarray(self._net.forward(), dtype=np.float32).reshape(
            SELFIE_INPUT_SIDE, SELFIE_INPUT_SIDE
        )
        return cv2.resize(
            np.clip(output, 0.0, 1.0), (width, height), interpolation=cv2.INTER_LINEAR
        )

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation:
        height, width = image_rgb.shape[:2]
        anyone = np.zeros((height, width), dtype=np.float32)
        for view in selfie_views(faces, config, height):
            self._add_view(image_rgb, view, anyone)
        probabilities = np.broadcast_to(anyone, (len(faces), height, width)).copy()
        return Segmentation(
            probabilities, self.name, "selfie model on face-centred crops", per_person=False
        )

    def _add_view(
        self, image_rgb: np.ndarray, view: tuple[float, float, float, float], anyone: np.ndarray
    ) -> None:
        height, width = image_rgb.shape[:2]
        x0, y0, x1, y1 = (round(v) for v in view)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        # Parts of the view outside the tile are filled black, so the person keeps the size and
        # position the crop gave them instead of being stretched.
        padded = cv2.copyMakeBorder(
            image_rgb[max(0, y0) : max(0, min(height, y1)), max(0, x0) : max(0, min(width, x1))],
            max(0, -y0),
            max(0, y1 - height),
            max(0, -x0),
            max(0, x1 - width),
            cv2.BORDER_CONSTANT,
            value=(0, 0, 0),
        )
        if padded.shape[0] != y1 - y0 or padded.shape[1] != x1 - x0:
            return  # the view lies wholly outside the tile
        probability = self.person_probability(padded)
        cx0, cy0, cx1, cy1 = clip_box((x0, y0, x1, y1), width, height)
        inside = probability[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        np.maximum(anyone[cy0:cy1, cx0:cx1], inside, out=anyone[cy0:cy1, cx0:cx1])


def selfie_views(
    faces: Sequence[FaceInTile], config: MaskConfig, height: int
) -> list[tuple[float, float, float, float]]:
    """One square crop per face: from above the hair down the body, centred on the face.

    The side covers the body down to the tile's bottom (or the reach box), but stays between
    ``selfie_crop_width`` and ``selfie_crop_max_width`` face widths: the model was trained on
    selfies, where a face is a fifth to a third of the frame, and small faces in a big view
    come out as blobs.
    """
    views = []
    for face in faces:
        cx, cy = face.centre
        top = cy - config.selfie_crop_above * face.height
        # Black padding above the tile would only shrink the person: start at the tile's top
        # unless the hair itself is cut off there.
        top = max(top, min(0.0, face.box[1] - config.hair_up * face.height))
        bottom = min(float(height), face.box[3] + config.reach_below * face.height)
        side = float(
            np.clip(
                bottom - top,
                config.selfie_crop_width * face.width,
                config.selfie_crop_max_width * face.width,
            )
        )
        views.append((cx - side / 2, top, cx + side / 2, top + side))
    return views
