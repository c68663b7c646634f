"""Hands to their owner: MediaPipe's hand landmark and palm detection models (Apache-2.0).

A hand that reaches into someone else's outline (an arm around a shoulder, a hand on the
shoulder from behind) is claimed by that person's silhouette as much as by its owner's. Here a
hand is found and measured, and the pixels it covers go to the person whose wrist it continues:

* From the pose: every wrist the pose model placed (visible or not: an arm hidden behind
  someone still gets a wrist) whose hand would lie inside another person's silhouette. The
  hand landmark model (``hand_landmark_lite.tflite``, 224 x 224) looks at the view MediaPipe's
  holistic graph derives from wrist, index and pinky; a hand is kept when the model sees one
  and its wrist lies within ``hands_wrist_match`` hand sizes of the pose's wrist.
* From the palm detector (``palm_detection_lite.tflite``, 192 x 192), when
  ``hands_search_palms`` is on: palms over each person's upper body that no pose wrist
  explains; each goes to the person whose wrist (any visibility) is nearest and within reach,
  or to nobody (then it is only cut out of the person it lies on). This also completes hands
  a silhouette missed (raised hands, fingers against a busy background).

A hand's region is the convex hull of its 21 landmarks grown by a finger's width.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from identity_pipeline.masks.config import MaskConfig
from identity_pipeline.masks.geometry import clip_box
from identity_pipeline.masks.mediapipe_models import (
    CV2_DNN,
    TFLiteModel,
    find_mediapipe_model,
    verified_model,
)

HAND_LANDMARK_FOLDER = "hand_landmark"
HAND_LANDMARK_FILE = "hand_landmark_lite.tflite"
PALM_FOLDER = "palm_detection"
PALM_FILE = "palm_detection_lite.tflite"
KNOWN_HAND_SHA256 = {
    "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6": "pypi mediapipe==0.10.14",
}
KNOWN_PALM_SHA256 = {
    "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18": "pypi mediapipe==0.10.14",
}
HAND_SIDE = 224
PALM_SIDE = 192
# BlazePose landmarks of each hand: wrist, pinky, index (left, right).
POSE_HANDS = ((15, 17, 19), (16, 18, 20))
HAND_WRIST, HAND_MIDDLE_BASE = 0, 9
FINGER_WIDTH = 0.12  # of the hand's size, grown around the landmarks' hull


@dataclass(frozen=True)
class Hand:
    """A hand in tile pixels and who it belongs to (a face index, or None: nobody known)."""

    owner: int | None
    landmarks: np.ndarray  # (21, 2) float32
    presence: float
    source: str  # "pose wrist" or "palm"
    # The owner's pose wrist the hand continues: the region reaches it, so the hand stays
    # joined to the arm (a mask keeps only what is connected to its person).
    arm_wrist: np.ndarray | None = None

    @property
    def size(self) -> float:
        return float(np.ptp(self.landmarks, axis=0).max())

    def region(self, shape: tuple[int, int]) -> np.ndarray:
        """Bool (H, W): the hull of the landmarks grown by a finger's width."""
        mask = np.zeros(shape, np.uint8)
        hull = cv2.convexHull(np.round(self.landmarks).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1)
        grow = max(1, round(FINGER_WIDTH * self.size))
        if self.arm_wrist is not None:
            start = tuple(int(round(float(v))) for v in self.landmarks[HAND_WRIST])
            end = tuple(int(round(float(v))) for v in self.arm_wrist)
            cv2.line(mask, start, end, 1, 2 * grow + 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        return cv2.dilate(mask, kernel).astype(bool)


class HandModelMissing(FileNotFoundError):
    """The hand models could not be found (hands are then left to the silhouettes)."""


class HandFinder:
    """The hand landmark model, and the palm detector for hands no wrist explains."""

    def __init__(
        self,
        hand_model: str | os.PathLike[str] | None = None,
        palm_model: str | os.PathLike[str] | None = None,
        runtime: str | None = CV2_DNN,
    ) -> None:
        try:
            hand_path = find_mediapipe_model(HAND_LANDMARK_FOLDER, HAND_LANDMARK_FILE, hand_model)
            palm_path = find_mediapipe_model(PALM_FOLDER, PALM_FILE, palm_model)
        except FileNotFoundError as error:
            raise HandModelMissing(str(error)) from error
        verified_model(hand_path, KNOWN_HAND_SHA256)
        verified_model(palm_path, KNOWN_PALM_SHA256)
        self._hand = TFLiteModel(hand_path, ("Identity_1", "Identity_2", "Identity"), runtime)
        self._palm = TFLiteModel(palm_path, ("Identity_1", "Identity"), runtime)
        self._anchors = palm_anchors()
        self.runs = 0

    def hand_at(
        self, image_rgb: np.ndarray, centre: np.ndarray, side: float, rotation: float
    ) -> tuple[np.ndarray, float]:
        """The 21 landmarks (tile pixels) and presence of the hand in a square view."""
        self.runs += 1
        to_view = _view_matrix(centre, side, rotation, HAND_SIDE)
        crop = cv2.warpAffine(image_rgb, to_view, (HAND_SIDE, HAND_SIDE), flags=cv2.INTER_LINEAR)
        blob = crop.astype(np.float32)[np.newaxis] / np.float32(255.0)
        presence, _, raw = self._hand.run(blob)
        points = np.asarray(raw, np.float32).reshape(21, 3)[:, :2]
        back = cv2.invertAffineTransform(to_view)
        return points @ back[:, :2].T + back[:, 2], float(np.asarray(presence).ravel()[0])

    def palms_in(
        self, image_rgb: np.ndarray, box: Sequence[float], config: MaskConfig
    ) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
        """Palms in a box of the tile, each as (wrist, hand view centre, hand view side,
        rotation) in tile pixels: MediaPipe's hand view is the palm box turned upright, moved
        half its size towards the fingers and grown 2.6 times."""
        self.runs += 1
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0)
        centre = np.float32([(x0 + x1) / 2, (y0 + y1) / 2])
        to_view = _view_matrix(centre, side, 0.0, PALM_SIDE)
        crop = cv2.warpAffine(image_rgb, to_view, (PALM_SIDE, PALM_SIDE), flags=cv2.INTER_LINEAR)
        blob = crop.astype(np.float32)[np.newaxis] / np.float32(255.0)
        scores, raw = self._palm.run(blob)
        scores = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(scores).reshape(-1), -80, 80)))
        raw = np.asarray(raw, np.float32).reshape(-1, 18)
        keep = np.nonzero(scores >= config.hands_palm_score)[0]
        back = cv2.invertAffineTransform(to_view)
        palms = []
        for index in _suppress(raw[keep], self._anchors[keep], scores[keep]):
            anchor = self._anchors[keep[index]]
            values = raw[keep[index]]
            size = max(values[2], values[3]) * side / PALM_SIDE
            centre_tile, wrist_tile, middle_tile = (
                (point + anchor * PALM_SIDE) @ back[:, :2].T + back[:, 2]
                for point in (values[0:2], values[4:6], values[8:10])
            )
            rotation = _upright_rotation(wrist_tile, middle_tile)
            towards_fingers = np.float32([np.sin(rotation), -np.cos(rotation)])
            view_centre = centre_tile + towards_fingers * 0.5 * size
            palms.append((wrist_tile, view_centre, 2.6 * size, rotation))
        return palms


def palm_anchors() -> np.ndarray:
    """(2016, 2) anchor centres of the palm detector, in [0, 1] (MediaPipe's SSD options:
    strides 8, 16, 16, 16 on 192 px, two anchors per cell and layer, fixed size)."""
    centres = []
    for stride, layers in ((8, 1), (16, 3)):
        cells = PALM_SIDE // stride
        ys, xs = np.mgrid[:cells, :cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, 2 * layers, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def _suppress(raw: np.ndarray, anchors: np.ndarray, scores: np.ndarray) -> list[int]:
    """Greedy non-maximum suppression of palm boxes (IoU above 0.3 is the same palm)."""
    if len(raw) == 0:
        return []
    centres = raw[:, :2] + anchors * PALM_SIDE
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centres - half, centres + half], axis=1)
    order = list(np.argsort(-scores))
    kept: list[int] = []
    while order:
        best = order.pop(0)
        kept.append(best)
        order = [i for i in order if _iou(boxes[best], boxes[i]) <= 0.3]
    return kept


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _view_matrix(centre: np.ndarray, side: float, rotation: float, out: int) -> np.ndarray:
    scale = out / max(side, 1e-3)
    cos, sin = np.cos(rotation) * scale, np.sin(rotation) * scale
    cx, cy = float(centre[0]), float(centre[1])
    return np.array(
        [[cos, sin, out / 2 - cos * cx - sin * cy], [-sin, cos, out / 2 + sin * cx - cos * cy]],
        dtype=np.float64,
    )


def _upright_rotation(base: np.ndarray, tip: np.ndarray) -> float:
    """The rotation that puts ``tip`` straight above ``base`` (radians, as pose views use)."""
    return float(np.arctan2(tip[0] - base[0], base[1] - tip[1]))


def find_hands(
    finder: HandFinder,
    image_rgb: np.ndarray,
    poses: Sequence[object | None],
    claims: Sequence[np.ndarray | None],
    config: MaskConfig,
) -> list[Hand]:
    """Hands that reach into another person's silhouette, each with its owner.

    ``poses``: ``pose.PersonPose`` per face (None where the pose model found nobody);
    ``claims``: per face, bool (H, W) of the pixels their silhouette claims (or None).
    """
    height, width = image_rgb.shape[:2]
    hands: list[Hand] = []
    for owner, pose in enumerate(poses):
        if pose is None:
            continue
        for wrist_index, pinky, index in POSE_HANDS:
            wrist = pose.landmarks[wrist_index]  # type: ignore[attr-defined]
            middle = (2 * pose.landmarks[index] + pose.landmarks[pinky]) / 3  # type: ignore[attr-defined]
            reach = float(np.linalg.norm(middle - wrist))
            if reach < 2.0 or not _inside_someone_else(middle, owner, claims):
                continue
            side = config.hands_view_scale * 2 * reach
            centre = wrist + (middle - wrist) * 1.2
            points, presence = finder.hand_at(
                image_rgb, centre, side, _upright_rotation(wrist, middle)
            )
            hand_size = float(np.ptp(points, axis=0).max())
            continues = np.linalg.norm(points[HAND_WRIST] - wrist) <= (
                config.hands_wrist_match * max(hand_size, 1.0)
            )
            if presence >= config.hands_min_presence and continues:
                hands.append(
                    Hand(owner, points.astype(np.float32), presence, "pose wrist", wrist.copy())
                )
    if config.hands_search_palms:
        hands.extend(_palm_hands(finder, image_rgb, poses, hands, config, (height, width)))
    return hands


def _inside_someone_else(
    point: np.ndarray, owner: int, claims: Sequence[np.ndarray | None]
) -> bool:
    x, y = int(round(float(point[0]))), int(round(float(point[1])))
    for other, claim in enumerate(claims):
        if other == owner or claim is None:
            continue
        if 0 <= y < claim.shape[0] and 0 <= x < claim.shape[1] and claim[y, x]:
            return True
    return False


def _palm_hands(
    finder: HandFinder,
    image_rgb: np.ndarray,
    poses: Sequence[object | None],
    known: Sequence[Hand],
    config: MaskConfig,
    shape: tuple[int, int],
) -> list[Hand]:
    """Palms over each person's upper body that no known hand explains."""
    height, width = shape
    found: list[Hand] = []
    for pose in poses:
        if pose is None:
            continue
        x0, y0, x1, y1 = pose.box  # type: ignore[attr-defined]
        box = clip_box((x0, y0, x1, (y0 + y1) / 2 + (y1 - y0) / 4), width, height)
        if box[2] - box[0] < 16 or box[3] - box[1] < 16:
            continue
        for wrist, centre, side, rotation in finder.palms_in(image_rgb, box, config):
            if any(
                np.linalg.norm(hand.landmarks[HAND_WRIST] - wrist) < hand.size
                for hand in (*known, *found)
            ):
                continue
            points, presence = finder.hand_at(image_rgb, centre, side, rotation)
            if presence < config.hands_min_presence:
                continue
            owner, arm_wrist = nearest_wrist(points[HAND_WRIST], poses, config)
            found.append(Hand(owner, points.astype(np.float32), presence, "palm", arm_wrist))
    return found


def nearest_wrist(
    point: np.ndarray, poses: Sequence[object | None], config: MaskConfig
) -> tuple[int | None, np.ndarray | None]:
    """The person whose wrist (any visibility) is nearest ``point``, within
    ``hands_owner_reach`` of their shoulder widths, and that wrist; (None, None) when nobody's
    is."""
    best, best_distance, best_wrist = None, np.inf, None
    for owner, pose in enumerate(poses):
        if pose is None:
            continue
        for wrist_index, _, _ in POSE_HANDS:
            distance = float(np.linalg.norm(pose.landmarks[wrist_index] - point))  # type: ignore[attr-defined]
            limit = config.hands_owner_reach * pose.scale  # type: ignore[attr-defined]
            if distance <= limit and distance < best_distance:
                best, best_distance = owner, distance
                best_wrist = pose.landmarks[wrist_index].copy()  # type: ignore[attr-defined]
    return best, best_wrist
