"""A mask per person from MediaPipe's BlazePose landmark model, run once per face.

``pose_landmark_full.tflite`` (Apache-2.0, in the mediapipe wheel `make install` brings) takes a
256 x 256 view of one person and returns 33 body landmarks with their visibility, two landmarks
that say where the person's view should have been (centre and scale), and a 256 x 256
segmentation of that person (``Identity_2``, logits). Unlike the selfie model it segments *the*
person of the view, clothes included, so crowded photos get one silhouette per person.

Per face, front rows first (lowest faces first):
1. A view placed from the face: a square ``pose_view_side`` face sizes wide whose centre lies
   ``pose_view_below`` face sizes under the face's centre (where the body is), with the people
   already found in rows in front of this one blacked out.
2. The model's own view landmarks refine it (MediaPipe's tracking step): the model runs again
   on the view they ask for when it differs by more than ``pose_refine_*`` (by default always:
   the second view measured better on the tuning scenes). MediaPipe's pose *detector* (which
   LiteRT loads, cv2.dnn cannot) was tried for placing the first view from the body: it found
   about half of the people in the tuning scenes and was no better where it did, so it is not
   used.
3. The answer is kept only when the model's face landmarks fall on the face it was placed from.
   Otherwise the view settled on a neighbour: it is tried again with every person found so far
   blacked out (but for this person's head and torso where another silhouette swallowed them,
   ``pose_spare_swallowed``), then as a head-and-shoulders view; failing all, that person gets
   no mask (the selector then sees an implausible person and says so).

Pixels go to one person or nobody (``assign_owners``): a linear score per person and pixel
(``PoseOwnership``) over their mask strength (the logit), the distance to their visible
skeleton (segments between landmarks the model sees, in shoulder widths), whether their
landmarks say they stand in front of the other claimant there, their face's size and row, and
where the pixel lies from their face; nobody scores 0. The weights are a choice model fitted
on the tuning scenes (``benchmarks/fit_pose_ownership.py``); the hand-set rule it replaced
(every claimed pixel is someone's: logit - 4 x distance + 4 in front) is ``HANDSET_OWNERSHIP``.
Occluded landmarks draw no skeleton, so where someone stands in front, their skeleton
is there and the hidden person's is not: the hidden part stays out of the hidden person's mask.
Hard evidence stays hard: a detected face is its own person's, and a face that shows inside
someone else's silhouette stands in front of it and keeps its head and torso. Hands the hand
models found (``hands.py``) go to the person whose wrist they continue.

The models run in LiteRT (XNNPACK; ``pose_runtime: litert``, the default) or cv2.dnn, 2.4 times
as slow (``mediapipe_models.TFLiteModel``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import cv2
import numpy as np

from identity_pipeline.masks.config import BACKEND_POSE, MaskConfig
from identity_pipeline.masks.geometry import clip_box, ellipse_mask, person_cost
from identity_pipeline.masks.hands import Hand, HandFinder, HandModelMissing, find_hands
from identity_pipeline.masks.mediapipe_models import (
    CV2_DNN,
    TFLiteModel,
    find_mediapipe_model,
    verified_model,
)
from identity_pipeline.masks.records import FaceInTile, Segmentation

POSE_LANDMARK_FOLDER = "pose_landmark"
POSE_LANDMARK_FILE = "pose_landmark_full.tflite"
KNOWN_POSE_LANDMARK_SHA256 = {
    "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f": "pypi mediapipe==0.10.14",
}
VIEW_SIDE = 256
OUTPUTS = ("Identity", "Identity_1", "Identity_2")  # landmarks, pose presence, segmentation
LANDMARK_COUNT = 39  # 33 body landmarks, 2 for the next view, 4 unused
# BlazePose landmark numbers.
NOSE, LEFT_EYE, RIGHT_EYE, MOUTH_LEFT, MOUTH_RIGHT = 0, 2, 5, 9, 10
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_WRIST, RIGHT_WRIST = 11, 12, 15, 16
LEFT_HIP, RIGHT_HIP = 23, 24
VIEW_CENTRE, VIEW_SCALE = 33, 34
FACE_LANDMARKS = (NOSE, LEFT_EYE, RIGHT_EYE, MOUTH_LEFT, MOUTH_RIGHT)
# The body as segments between landmarks: neck, shoulders, arms, hands, torso, legs.
SKELETON = (
    (11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (15, 17), (15, 19), (16, 18), (16, 20),
    (11, 23), (12, 24), (23, 24), (11, 24), (12, 23), (23, 25), (25, 27), (24, 26), (26, 28),
)  # fmt: skip
FACE_BOX_GROWTH = 0.25
LOGIT_CAP = 8.0
HAND_PROBABILITY = 0.9  # what a found hand's pixels get in its owner's map  # mask strength saturates: deep inside two silhouettes geometry decides
NOBODY = -1


@dataclass(frozen=True)
class View:
    """A square view of the tile: centre, side (tile pixels) and rotation (radians)."""

    centre: tuple[float, float]
    side: float
    rotation: float = 0.0

    def to_view(self) -> np.ndarray:
        """The 2x3 affine map from tile pixels to the model's 256 x 256 input."""
        scale = VIEW_SIDE / self.side
        cos, sin = np.cos(self.rotation) * scale, np.sin(self.rotation) * scale
        cx, cy = self.centre
        # Rotate about the centre by -rotation (the person's up becomes the view's up).
        return np.array(
            [
                [cos, sin, VIEW_SIDE / 2 - cos * cx - sin * cy],
                [-sin, cos, VIEW_SIDE / 2 + sin * cx - cos * cy],
            ],
            dtype=np.float64,
        )

    def bounds(self) -> tuple[float, float, float, float]:
        """The axis-aligned box around the (possibly rotated) square."""
        half = self.side / 2 * (abs(np.cos(self.rotation)) + abs(np.sin(self.rotation)))
        cx, cy = self.centre
        return cx - half, cy - half, cx + half, cy + half


@dataclass(frozen=True)
class PersonPose:
    """The model's answer for one face, in tile pixels."""

    view: View
    landmarks: np.ndarray  # (33, 2) float32 tile pixels
    visibility: np.ndarray  # (33,) probability the landmark is visible (not occluded)
    presence: float  # the model's "a person is in this view" probability
    logits: np.ndarray  # (y1 - y0, x1 - x0) float32 segmentation logits over ``box``
    box: tuple[int, int, int, int]  # where ``logits`` lies in the tile
    face_agreement: float  # share of the model's face landmarks inside the face box
    view_points: np.ndarray  # (2, 2): the centre and scale point of the view it asks for next
    passes: int

    @cached_property
    def skeleton_distance(self) -> np.ndarray:
        """Distance (pixels) from each pixel of ``box`` to the visible skeleton and face (kept:
        blacking people out and ownership both need it)."""
        x0, y0, x1, y1 = self.box
        return skeleton_distance(self, (x1 - x0, y1 - y0))

    @property
    def scale(self) -> float:
        """Shoulder width, the unit of body distances (at least a third of the view)."""
        shoulders = float(
            np.linalg.norm(self.landmarks[LEFT_SHOULDER] - self.landmarks[RIGHT_SHOULDER])
        )
        return max(shoulders, self.view.side / 8)


class PoseModelMissing(FileNotFoundError):
    """No pose landmark model could be found (the backend is then unavailable)."""


class PoseSegmenter:
    """Per-person masks from the BlazePose landmark model (``Segmentation.per_person``)."""

    name = BACKEND_POSE

    def __init__(
        self, model_path: str | os.PathLike[str] | None = None, runtime: str | None = CV2_DNN
    ) -> None:
        try:
            self.model_path = find_mediapipe_model(
                POSE_LANDMARK_FOLDER, POSE_LANDMARK_FILE, model_path
            )
        except FileNotFoundError as error:
            raise PoseModelMissing(str(error)) from error
        self.model_sha256 = verified_model(self.model_path, KNOWN_POSE_LANDMARK_SHA256)
        self._net = TFLiteModel(self.model_path, OUTPUTS, runtime)
        self.runtime = self._net.runtime  # masks.pose_runtime (mediapipe_models.TFLiteModel)
        self.runs = 0  # model runs so far (each ~35 ms of one CPU core)
        try:
            self.hands: HandFinder | None = HandFinder(runtime=runtime)
        except (HandModelMissing, ValueError):
            self.hands = None  # hands are then left to the silhouettes

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation:
        height, width = image_rgb.shape[:2]
        poses, hands = self.people(image_rgb, faces, config)
        owners = assign_owners(poses, faces, (height, width), config, hands)
        probabilities = np.zeros((len(faces), height, width), np.float32)
        kept = 0
        for index, pose in enumerate(poses):
            if pose is None:
                continue
            kept += 1
            x0, y0, x1, y1 = pose.box
            own = owners[y0:y1, x0:x1] == index
            probabilities[index, y0:y1, x0:x1][own] = _sigmoid(pose.logits[own])
        # A hand the hand model found is its owner's even where the silhouette missed it.
        for hand in hands:
            if hand.owner is not None and poses[hand.owner] is not None:
                region = hand.region((height, width)) & (owners == hand.owner)
                probabilities[hand.owner][region] = np.maximum(
                    probabilities[hand.owner][region], HAND_PROBABILITY
                )
        lost = len(faces) - kept
        reason = f"BlazePose per person in {self.runtime}" + (
            f" ({lost} views off their face)" if lost else ""
        )
        if hands:
            owned = sum(hand.owner is not None for hand in hands)
            palms = sum(hand.source == "palm" for hand in hands)
            reason += (
                f"; hands: {owned} of {len(hands)} given to their owner "
                f"({len(hands) - palms} from wrists in others' outlines, {palms} from palms)"
            )
        return Segmentation(probabilities, self.name, reason, per_person=True)

    def people(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> tuple[list[PersonPose | None], list[Hand]]:
        """Per face its ``PersonPose`` (None: the model settled on someone else every time),
        and the hands found reaching into other people's outlines."""
        height, width = image_rgb.shape[:2]
        # Front rows first: a person behind is looked for with the people in front of them
        # blacked out, so their view cannot take a front person's body for their own.
        poses: list[PersonPose | None] = [None] * len(faces)
        for index in front_to_back(faces):
            face = faces[index]
            fronts = [
                poses[other]
                for other in range(len(faces))
                if poses[other] is not None and stands_in_front(faces[other], face, config)
            ]
            blanked = blank_people(image_rgb, fronts, face, config) if fronts else None
            poses[index] = self.estimate(image_rgb if blanked is None else blanked, face, config)
        found = list(poses)
        for index, pose in enumerate(found):
            if pose is None:
                poses[index] = self.estimate_hidden(image_rgb, faces[index], found, config)
        hands = []
        if config.hands and self.hands is not None:
            hands = find_hands(
                self.hands, image_rgb, poses, _claims(poses, (height, width)), config
            )
        return poses, hands

    def estimate(
        self, image_rgb: np.ndarray, face: FaceInTile, config: MaskConfig
    ) -> PersonPose | None:
        """The pose and segmentation of the person whose face this is, or None when the model's
        view settles on someone else (its face landmarks miss ``face``)."""
        pose = self._run(image_rgb, face_view(face, config), face, passes=1)
        if pose.face_agreement >= config.pose_min_face_agreement:
            refined = refined_view(pose)
            if refined is not None and _differs(pose.view, refined, config):
                second = self._run(image_rgb, refined, face, passes=2)
                if second.face_agreement >= pose.face_agreement:
                    pose = second
            return pose
        return None

    def estimate_hidden(
        self,
        image_rgb: np.ndarray,
        face: FaceInTile,
        others: Sequence[PersonPose | None],
        config: MaskConfig,
    ) -> PersonPose | None:
        """A person whose body view settled on someone else (whose body fills it): again with
        the people already found blacked out (what the model sees beyond a view's border), so
        this one is the only person left in it; failing that, a head-and-shoulders view."""
        blanked = blank_people(
            image_rgb, others, face, config, spare_swallowed=config.pose_spare_swallowed
        )
        if blanked is not None:
            pose = self.estimate(blanked, face, config)
            if pose is not None:
                return pose
        close = self._run(image_rgb, head_view(face, config), face, passes=2)
        return close if close.face_agreement >= config.pose_min_face_agreement else None

    def _run(self, image_rgb: np.ndarray, view: View, face: FaceInTile, passes: int) -> PersonPose:
        self.runs += 1
        height, width = image_rgb.shape[:2]
        to_view = view.to_view()
        crop = cv2.warpAffine(
            image_rgb,
            to_view,
            (VIEW_SIDE, VIEW_SIDE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        blob = crop.astype(np.float32)[np.newaxis] / np.float32(255.0)
        raw_landmarks, presence, segmentation = self._net.run(blob)
        landmarks = np.asarray(raw_landmarks, np.float32).reshape(LANDMARK_COUNT, 5)
        from_view = cv2.invertAffineTransform(to_view)
        points = landmarks[:, :2] @ from_view[:, :2].T + from_view[:, 2]
        # The segmentation goes back into the tile over the view's box only.
        x0, y0, x1, y1 = clip_box(view.bounds(), width, height)
        shifted = to_view.copy()
        shifted[:, 2] += to_view[:, 0] * x0 + to_view[:, 1] * y0
        logits = cv2.warpAffine(
            np.asarray(segmentation, np.float32).reshape(VIEW_SIDE, VIEW_SIDE),
            shifted,
            (max(0, x1 - x0), max(0, y1 - y0)),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=-LOGIT_CAP,
        )
        return PersonPose(
            view=view,
            landmarks=points[:33].astype(np.float32),
            visibility=_sigmoid(landmarks[:33, 3]),
            presence=float(np.asarray(presence).ravel()[0]),
            logits=logits,
            box=(x0, y0, x1, y1),
            face_agreement=face_agreement(points, face),
            view_points=points[VIEW_CENTRE : VIEW_SCALE + 1].astype(np.float32),
            passes=passes,
        )


def face_view(face: FaceInTile, config: MaskConfig) -> View:
    """The first view of a person, placed from their face alone (upright)."""
    cx, cy = face.centre
    return View((cx, cy + config.pose_view_below * face.size), config.pose_view_side * face.size)


def covering(pose: PersonPose, box: tuple[int, int, int, int]) -> PersonPose:
    """``pose`` with its logits' box grown to cover ``box`` (new pixels: no claim)."""
    x0, y0, x1, y1 = pose.box
    nx0, ny0 = min(x0, box[0]), min(y0, box[1])
    nx1, ny1 = max(x1, box[2]), max(y1, box[3])
    if (nx0, ny0, nx1, ny1) == (x0, y0, x1, y1):
        return pose
    logits = np.full((ny1 - ny0, nx1 - nx0), -LOGIT_CAP, np.float32)
    logits[y0 - ny0 : y1 - ny0, x0 - nx0 : x1 - nx0] = pose.logits
    return replace(pose, logits=logits, box=(nx0, ny0, nx1, ny1))


def _claims(poses: Sequence[PersonPose | None], shape: tuple[int, int]) -> list[np.ndarray | None]:
    """Per pose, bool (H, W): the pixels its silhouette claims (logit above zero)."""
    claims: list[np.ndarray | None] = []
    for pose in poses:
        if pose is None:
            claims.append(None)
            continue
        claim = np.zeros(shape, bool)
        x0, y0, x1, y1 = pose.box
        claim[y0:y1, x0:x1] = pose.logits > 0
        claims.append(claim)
    return claims


def front_to_back(faces: Sequence[FaceInTile]) -> list[int]:
    """Face indices, lowest face first (in a group photo the front row stands lowest)."""
    return sorted(range(len(faces)), key=lambda i: -faces[i].centre[1])


def stands_in_front(front: FaceInTile, back: FaceInTile, config: MaskConfig) -> bool:
    """``front`` is a row ahead of ``back``: its face lower by ``pose_row_gap`` face sizes."""
    return front.centre[1] - back.centre[1] > config.pose_row_gap * back.size


def blank_people(
    image_rgb: np.ndarray,
    poses: Sequence[PersonPose | None],
    face: FaceInTile,
    config: MaskConfig,
    spare_swallowed: bool = False,
) -> np.ndarray | None:
    """A copy of the image with the people in ``poses`` black, except around ``face`` (None when
    there is nothing to black out). Only the core of each silhouette goes, within
    ``pose_blank_reach`` shoulder widths of its skeleton: a silhouette may spill onto the very
    person looked for. With ``spare_swallowed``, a silhouette that ``face`` shows inside keeps
    that person's head and torso visible: it stands behind them and took their body for its
    own (the ownership rule of ``ownership_evidence``, applied before looking again)."""
    height, width = image_rgb.shape[:2]
    covered = np.zeros((height, width), bool)
    spared = None
    for pose in poses:
        if pose is not None:
            x0, y0, x1, y1 = pose.box
            near = pose.skeleton_distance < config.pose_blank_reach * pose.scale
            core = (pose.logits > 0) & near
            if spare_swallowed and _overlaps(face.box, pose.box):
                local = _shifted_face(face, x0, y0)
                own_face = ellipse_mask((y1 - y0, x1 - x0), local.box)
                if own_face.any() and (pose.logits[own_face] > 0).mean() >= config.pose_face_inside:
                    if spared is None:
                        spared = person_cost((height, width), face, config) < config.pose_body_prior
                    core &= ~spared[y0:y1, x0:x1]
            covered[y0:y1, x0:x1] |= core
    grow_x, grow_y = config.hair_side * face.width, config.hair_up * face.height
    x0, y0, x1, y1 = clip_box(
        (face.box[0] - grow_x, face.box[1] - grow_y, face.box[2] + grow_x, face.box[3]),
        width,
        height,
    )
    covered[y0:y1, x0:x1] = False
    if not covered.any():
        return None
    blanked = image_rgb.copy()
    blanked[covered] = 0
    return blanked


def head_view(face: FaceInTile, config: MaskConfig) -> View:
    """A tighter view around head and shoulders, for a person whose body view went astray."""
    cx, cy = face.centre
    return View(
        (cx, cy + config.pose_head_view_below * face.size), config.pose_head_view_side * face.size
    )


def refined_view(pose: PersonPose) -> View | None:
    """The view the model's two view landmarks ask for (MediaPipe: a square 2.5 times the
    centre-to-scale distance, rotated so the scale point is straight above the centre)."""
    centre, top = pose.view_points
    distance = float(np.linalg.norm(top - centre))
    if distance < 1.0:
        return None
    rotation = float(np.arctan2(top[0] - centre[0], centre[1] - top[1]))
    return View((float(centre[0]), float(centre[1])), 2.5 * distance, rotation)


def _differs(first: View, second: View, config: MaskConfig) -> bool:
    shift = float(np.hypot(first.centre[0] - second.centre[0], first.centre[1] - second.centre[1]))
    ratio = second.side / first.side
    return (
        shift > config.pose_refine_shift * first.side
        or abs(np.log(ratio)) > np.log(1 + config.pose_refine_scale)
        or abs(second.rotation) > np.radians(config.pose_refine_degrees)
    )


def face_agreement(points: np.ndarray, face: FaceInTile) -> float:
    """Share of the model's nose, eyes and mouth corners inside the face box grown by
    ``FACE_BOX_GROWTH`` (a view that settled on a neighbour puts them on that face). The box,
    not the detector's five points: on faces in profile the two detectors place the points
    up to half a face apart."""
    x0, y0, x1, y1 = face.box
    grow_x, grow_y = FACE_BOX_GROWTH * face.width, FACE_BOX_GROWTH * face.height
    inside = [
        x0 - grow_x <= points[i, 0] <= x1 + grow_x and y0 - grow_y <= points[i, 1] <= y1 + grow_y
        for i in FACE_LANDMARKS
    ]
    return float(np.mean(inside))


OWNERSHIP_FEATURES = (
    "logit",  # the person's segmentation logit, capped at +-LOGIT_CAP
    "skeleton_distance",  # to their visible skeleton, shoulder widths (capped at 4)
    "in_front",  # 1 where their landmarks say they stand in front of another claimant
    "face_size",  # log of their face size over the tile's median face size (nearer: bigger)
    "row",  # how much lower their face is than the median face, in median face sizes
    "beside_face",  # horizontal distance from their face centre, face sizes (capped at 6)
    "above_face",  # height above the top of their face box, face sizes (capped at 3)
)


@dataclass(frozen=True)
class OwnerEvidence:
    """What is known about one person over their view's box: the features of
    ``OWNERSHIP_FEATURES`` (F, h, w), where they may claim a pixel at all, and where the
    pixel is theirs whatever the rest says (their own face, their own hand)."""

    box: tuple[int, int, int, int]
    features: np.ndarray
    allowed: np.ndarray
    forced: np.ndarray


def assign_owners(
    poses: Sequence[PersonPose | None],
    faces: Sequence[FaceInTile],
    shape: tuple[int, int],
    config: MaskConfig,
    hands: Sequence[Hand] = (),
) -> np.ndarray:
    """(H, W) int16: the person each pixel belongs to (index into ``poses``) or ``NOBODY``.

    A choice model per pixel: each person who may claim it scores the linear function
    ``config.pose_ownership`` of ``OWNERSHIP_FEATURES`` (by default the weights
    ``benchmarks/fit_pose_ownership.py`` fitted on the tuning scenes), nobody scores 0,
    the highest wins. Hard evidence
    stays hard: a detected face is its own person's and nobody else's, and so is a hand the
    hand model gave to its owner (see ``ownership_evidence``).
    """
    weights = config.pose_ownership.as_array()
    best = np.zeros(shape, np.float32)  # nobody's score
    owners = np.full(shape, NOBODY, np.int16)
    for index, evidence in ownership_evidence(poses, faces, shape, config, hands).items():
        x0, y0, x1, y1 = evidence.box
        total = weights[0] + np.tensordot(weights[1:], evidence.features, axes=1)
        total[~evidence.allowed] = -np.inf
        total[evidence.forced] = FORCED_SCORE
        window = best[y0:y1, x0:x1]
        wins = total > window
        window[wins] = total[wins]
        owners[y0:y1, x0:x1][wins] = index
    return owners


FORCED_SCORE = 1e6


def ownership_evidence(
    poses: Sequence[PersonPose | None],
    faces: Sequence[FaceInTile],
    shape: tuple[int, int],
    config: MaskConfig,
    hands: Sequence[Hand] = (),
) -> dict[int, OwnerEvidence]:
    """Per person the pose model found, their ``OwnerEvidence``.

    A person may claim the pixels their segmentation logit is positive on. Another person's
    detected face is never theirs; when that face shows inside their silhouette, that person
    stands in front, and their head and torso are not theirs either (a view hallucinates a body
    out of whoever stands below a face). A hand the hand model found is its owner's (their box
    grows to hold it) and nobody else's; a hand nobody owns is nobody's.
    """
    hand_regions = [hand.region(shape) for hand in hands]
    poses = list(poses)
    for hand, region in zip(hands, hand_regions, strict=True):
        if hand.owner is not None and poses[hand.owner] is not None:
            ys, xs = np.nonzero(region)
            if len(xs):
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                poses[hand.owner] = covering(poses[hand.owner], box)  # type: ignore[arg-type]
    present = [pose for pose in poses if pose is not None]
    if not present:
        return {}
    sizes = [faces[i].size for i, pose in enumerate(poses) if pose is not None]
    rows = [faces[i].centre[1] for i, pose in enumerate(poses) if pose is not None]
    median_size, median_row = float(np.median(sizes)), float(np.median(rows))
    allowed_maps: dict[int, np.ndarray] = {}
    forced_maps: dict[int, np.ndarray] = {}
    for index, pose in enumerate(poses):
        if pose is None:
            continue
        x0, y0, x1, y1 = pose.box
        allowed = pose.logits > 0
        forced = np.zeros(allowed.shape, bool)
        other_faces = np.zeros(allowed.shape, bool)
        for other_index, face in enumerate(faces):
            if not _overlaps(face.box, (x0, y0, x1, y1)):
                continue
            local = _shifted_face(face, x0, y0)
            core = ellipse_mask((y1 - y0, x1 - x0), local.box)
            if other_index == index:
                forced |= core
                continue
            other_faces |= core
            if core.any() and (pose.logits[core] > 0).mean() >= config.pose_face_inside:
                body = person_cost((y1 - y0, x1 - x0), local, config) < config.pose_body_prior
                allowed &= ~body
        forced &= ~other_faces
        allowed &= ~other_faces
        for hand, full_region in zip(hands, hand_regions, strict=True):
            region = full_region[y0:y1, x0:x1] & ~other_faces
            if hand.owner == index:
                forced |= region
            else:
                allowed &= ~region
                forced &= ~region
        allowed_maps[index] = allowed | forced
        forced_maps[index] = forced
    fronts = depth_order(poses, allowed_maps, shape, config)
    evidence = {}
    for index, allowed in allowed_maps.items():
        pose, face = poses[index], faces[index]
        assert pose is not None
        x0, y0, x1, y1 = pose.box
        ys, xs = np.ogrid[y0:y1, x0:x1]
        cx = face.centre[0]
        beside = np.minimum(np.abs(xs + 0.5 - cx) / face.size, 6.0)
        above = np.minimum(np.maximum(face.box[1] - (ys + 0.5), 0.0) / face.size, 3.0)
        distance = pose.skeleton_distance / pose.scale
        shape_local = (y1 - y0, x1 - x0)
        features = np.stack(
            [
                np.clip(pose.logits, -LOGIT_CAP, LOGIT_CAP),
                np.minimum(distance, 4.0),
                fronts.get(index, np.zeros(shape_local, np.float32)),
                np.full(shape_local, np.log(face.size / median_size), np.float32),
                np.full(shape_local, (face.centre[1] - median_row) / median_size, np.float32),
                np.broadcast_to(beside, shape_local),
                np.broadcast_to(above, shape_local),
            ]
        ).astype(np.float32)
        evidence[index] = OwnerEvidence(pose.box, features, allowed, forced_maps[index])
    return evidence


def depth_order(
    poses: Sequence[PersonPose | None],
    allowed: dict[int, np.ndarray],
    shape: tuple[int, int],
    config: MaskConfig,
) -> dict[int, np.ndarray]:
    """Per person, 1.0 over the pixels where they stand in front of another claimant (float32
    over their box).

    For two people whose claims overlap, the one with more visible landmarks (and the other's
    hidden ones) inside the overlap is in front there.
    """
    claims = {}
    for index, local in allowed.items():
        full = np.zeros(shape, bool)
        x0, y0, x1, y1 = poses[index].box  # type: ignore[union-attr]
        full[y0:y1, x0:x1] = local
        claims[index] = full
    fronts: dict[int, np.ndarray] = {}
    people = sorted(allowed)
    for a_pos, a in enumerate(people):
        for b in people[a_pos + 1 :]:
            overlap = claims[a] & claims[b]
            if overlap.sum() < 16:
                continue
            evidence = _visible_inside(poses[a], overlap) - _visible_inside(poses[b], overlap)
            if abs(evidence) < config.pose_min_depth_evidence:
                continue
            front = a if evidence > 0 else b
            x0, y0, x1, y1 = poses[front].box  # type: ignore[union-attr]
            add = fronts.setdefault(front, np.zeros((y1 - y0, x1 - x0), np.float32))
            add[overlap[y0:y1, x0:x1]] = 1.0
    return fronts


def _visible_inside(pose: PersonPose | None, region: np.ndarray) -> float:
    """Summed visibility of the body landmarks (shoulders down) that lie inside ``region``."""
    if pose is None:
        return 0.0
    height, width = region.shape
    total = 0.0
    for index in range(LEFT_SHOULDER, 33):
        x, y = (int(round(v)) for v in pose.landmarks[index])
        if 0 <= x < width and 0 <= y < height and region[y, x]:
            total += float(pose.visibility[index]) - 0.5
    return total


def skeleton_distance(pose: PersonPose, size: tuple[int, int]) -> np.ndarray:
    """Distance (pixels) from each pixel of the pose's box to its visible skeleton and face."""
    width, height = size
    x0, y0 = pose.box[0], pose.box[1]
    canvas = np.full((height, width), 255, np.uint8)
    points = pose.landmarks - np.float32([x0, y0])
    visible = pose.visibility >= 0.5
    thickness = max(1, round(pose.scale * 0.05))
    for a, b in SKELETON:
        if visible[a] and visible[b]:
            cv2.line(canvas, _pt(points[a]), _pt(points[b]), 0, thickness)
    # The head: nose to the shoulders' midpoint (the neck), always drawn: its face was found.
    neck = (points[LEFT_SHOULDER] + points[RIGHT_SHOULDER]) / 2
    cv2.line(canvas, _pt(points[NOSE]), _pt(neck), 0, thickness)
    cv2.circle(canvas, _pt(points[NOSE]), max(1, round(pose.scale * 0.2)), 0, -1)
    if (canvas == 255).all():
        return np.zeros((height, width), np.float32)
    return cv2.distanceTransform(canvas, cv2.DIST_L2, 3)


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _shifted_face(face: FaceInTile, dx: float, dy: float) -> FaceInTile:
    box = (face.box[0] - dx, face.box[1] - dy, face.box[2] - dx, face.box[3] - dy)
    landmarks = np.asarray(face.landmarks, np.float32) - np.float32([dx, dy])
    return FaceInTile(face.face_id, box, landmarks, face.identity)


def _pt(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]))), int(round(float(point[1])))


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(values, -30, 30)))).astype(np.float32)
