"""The ``masks`` settings: the segmentation models, and every threshold of person masks, face
blurring and backend selection, with its defaults.

Lengths that depend on how big a person is are fractions of the face size (the longer side of the
face box), so one config works for a 30 px face in a group photo and a 400 px portrait face.
The config's hash belongs in any cache key of masks: changing a value re-computes them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from identity_pipeline.settings import stable_hash

# Bump when code changes alter masks for the same config: it is part of the hash.
MASKS_VERSION = 4

# Flag names (also the values of ``MaskConfig.exclude_flags``).
FLAG_EMPTY = "empty_mask"
FLAG_FACE_NOT_COVERED = "face_not_covered"
FLAG_AREA_LOW = "mask_area_low"
FLAG_AREA_HIGH = "mask_area_high"
FLAG_TOUCHES_OTHER_FACE = "touches_other_face"
FLAG_OTHER_FACE_OVER_TARGET = "other_face_overlaps_target"
FLAG_DUPLICATE_IDENTITY = "duplicate_identity"
ALL_FLAGS = (
    FLAG_EMPTY,
    FLAG_FACE_NOT_COVERED,
    FLAG_AREA_LOW,
    FLAG_AREA_HIGH,
    FLAG_TOUCHES_OTHER_FACE,
    FLAG_OTHER_FACE_OVER_TARGET,
    FLAG_DUPLICATE_IDENTITY,
)

BACKEND_POSE = "pose"
BACKEND_SAM = "sam"
BACKEND_SELFIE = "selfie"
BACKEND_GRABCUT = "grabcut"


# Fields that choose model files rather than how masks are made: the masks' cache keys on the
# segmenter that was used instead, so they stay out of ``MaskConfig.hash``.
MODEL_CHOICE_FIELDS = ("sam_model", "sam_device", "selfie_model", "pose_model")


@dataclass(frozen=True)
class PoseOwnership:
    """Weights of the per-pixel ownership score (one per ``pose.OWNERSHIP_FEATURES``, after the
    bias). The defaults are the hand-set rule of main c2f1bf9: any positive logit is someone's
    (a bias no feature outweighs), mask strength minus 4 x skeleton distance, plus 4 where they
    stand in front (``HANDSET_OWNERSHIP``, the baseline). The default ``MaskConfig`` uses
    ``fitted_pose_ownership()``: the conditional logit ``benchmarks/fit_pose_ownership.py``
    fitted on the tuning scenes (``pose_ownership.json``), chosen on the tune split."""

    bias: float = 100.0
    logit: float = 1.0
    skeleton_distance: float = -4.0
    in_front: float = 4.0
    face_size: float = 0.0
    row: float = 0.0
    beside_face: float = 0.0
    above_face: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.asarray(astuple(self), np.float32)


@dataclass(frozen=True)
class MaskConfig:
    # Segment Anything (transformers): a local folder or hub id; unset: no SAM. It needs a model
    # download and ideally a GPU, so it is never used unless named here.
    sam_model: str | None = None
    sam_device: str = "cpu"
    # MediaPipe's selfie model file; unset: a copy in masks/models/, else the one inside an
    # installed mediapipe 0.10.x wheel (`make install` puts it there).
    selfie_model: str | None = None
    # MediaPipe's BlazePose landmark model (pose_landmark_full.tflite); unset: as selfie_model.
    pose_model: str | None = None
    # What runs the pose and hand models: "litert" (Google's TFLite runtime with XNNPACK,
    # ai-edge-litert: 2.4x faster on one core than cv2.dnn, no worse on the tune split) or
    # "cv2.dnn" (OpenCV's importer; its float arithmetic differs slightly, masks by < 1 %).
    pose_runtime: Literal["cv2.dnn", "litert"] = "litert"

    # Segmentation runs on the tile shrunk to this longest side; masks are resized back up.
    work_max_side: int = 768

    # Body prior (fractions of face width/height): where a person's head and torso are expected.
    hair_up: float = 0.6  # the head region reaches this many face heights above the face box
    hair_side: float = 0.3  # ...and this many face widths beside it
    shoulder_half_width: float = 1.6  # torso half-width below the chin, in face widths
    torso_length: float = 4.0  # vertical scale of the torso in the split cost, face heights
    reach_half_width: float = 2.5  # beyond this many face widths from the face centre: not them
    reach_above: float = 0.9  # ...and above this many face heights over the face box
    reach_below: float = 8.0  # ...and below this many face heights under the chin
    # A person's pixels may lie this far out (face widths) and up (face heights above the face
    # box) when connected to their body: arms spread wide, hands raised.
    arms_half_width: float = 4.0
    raised_hands_above: float = 2.5

    # GrabCut.
    grabcut_iterations: int = 5
    grabcut_max_side: int = 480  # per-person crop shrunk to this before GrabCut (speed)
    neck_strip_width: float = 0.3  # sure-foreground strip under the chin, face widths
    neck_strip_length: float = 0.5  # ...and its length, face heights
    grabcut_beside_head: float = 1.5  # sure background beyond this many face widths from the
    # face centre, from the top down to the face centre's height (0 turns it off)

    # Selfie model: one square crop per person, between these many face widths wide.
    selfie_crop_width: float = 5.0
    selfie_crop_max_width: float = 8.0
    selfie_crop_above: float = 2.5  # the crop's top, face heights above the face centre

    # BlazePose (masks/pose.py): one square view per face, this many face sizes wide, centred
    # this many face sizes below the face centre (where the body is).
    pose_view_side: float = 10.0
    pose_view_below: float = 1.5
    # When that view settles on someone else: a head-and-shoulders view.
    pose_head_view_side: float = 4.5
    pose_head_view_below: float = 0.8
    # The model's own next view is used (a second run) when it moves the centre by more than
    # this share of the side, changes the side by more than this share, or tilts this much.
    pose_refine_shift: float = 0.0
    pose_refine_scale: float = 0.0
    pose_refine_degrees: float = 0.0
    # A view whose nose, eyes and mouth landmarks mostly miss its face settled on a neighbour.
    pose_min_face_agreement: float = 0.6
    # Ownership of the pixels silhouettes claim (pose.assign_owners): a linear score per person
    # over pose.OWNERSHIP_FEATURES, nobody scoring 0 (fitted on the tuning scenes).
    pose_ownership: PoseOwnership = field(default_factory=lambda: fitted_pose_ownership())
    # Another face this much inside a silhouette stands in front of it: the silhouette loses
    # that person's head and torso (geometry.person_cost below this).
    pose_face_inside: float = 0.5
    pose_body_prior: float = 1.0
    # A person the body view missed is looked for again with the others' silhouettes blacked
    # out, up to this many shoulder widths from their skeletons.
    pose_blank_reach: float = 0.6
    # ...except where their face shows inside a silhouette: that one's head and torso stay.
    pose_spare_swallowed: bool = True
    # A face lower than another's by this many face sizes belongs to a row in front of it.
    pose_row_gap: float = 0.4
    pose_min_depth_evidence: float = 0.5  # summed (visibility - 0.5) of landmarks in the overlap
    pose_min_people: int = 2  # the selector tries the pose model first from this many faces
    # The selector keeps a backend per person, but not one implausible for this share of the
    # people it was tried on (or more): that answer looks broken, for everyone in the tile.
    # 0: any implausible person rejects a backend for the whole tile (the per-tile rule).
    selector_broken_share: float = 0.5
    # Hands (masks/hands.py): a hand reaching into someone else's silhouette goes to the person
    # whose wrist it continues. Its view: this many times twice the wrist-to-knuckles length.
    hands: bool = True
    hands_view_scale: float = 2.0
    hands_min_presence: float = 0.5  # the hand model's "a hand is here"
    hands_wrist_match: float = 0.5  # hand wrist within this many hand sizes of the pose wrist
    # Palm detection over each upper body for hands no wrist explains (one more model run per
    # person, ~30 ms); such a hand goes to the nearest wrist within this many shoulder widths.
    hands_search_palms: bool = True
    hands_palm_score: float = 0.5
    hands_owner_reach: float = 1.5

    # SAM prompts: a body box around head and torso, a point on the face, one on the chest.
    sam_box_half_width: float = 1.8  # face widths
    sam_box_below: float = 5.0  # face heights under the chin

    # Clean-up of each person's region before feathering.
    core_cost: float = 0.5  # pieces of a region not reaching the core (cost below this) go
    fill_holes_max_face_areas: float = 0.5  # holes smaller than this x face area are filled
    fill_face_min_coverage: float = 0.25  # fill the face ellipse when this much of it is covered

    # Soft edges: grow into the background, then blur; both as fractions of the face size.
    dilation: float = 0.04
    feather: float = 0.05
    other_face_margin: float = 0.15  # other faces, grown by this, are cut out of a mask

    # Quality flags (ratios are mask area / face box area).
    empty_max_face_areas: float = 0.05  # a mask smaller than this x face area is empty
    min_face_coverage: float = 0.6  # part of the face ellipse the mask must cover
    min_area_ratio: float = 1.5
    max_area_ratio: float = 40.0
    touch_margin: float = 0.25  # mask within this x face size of another face box touches it
    touch_min_fraction: float = 0.02  # ...on at least this fraction of that face box's area
    exclude_flags: tuple[str, ...] = (FLAG_EMPTY, FLAG_FACE_NOT_COVERED)

    # Selector: backends are tried in this order; the first plausible one is used.
    backend_order: tuple[str, ...] = (BACKEND_POSE, BACKEND_SAM, BACKEND_SELFIE, BACKEND_GRABCUT)
    # A backend whose region covers more than this of another person's face merged two people.
    max_other_face_claim: float = 0.5
    # A region whose perimeter^2 / (4 pi area) exceeds this is speckle, not a person.
    max_raggedness: float = 25.0
    # Gradient on a region's outline / on lines edge_band_px (work pixels) inside and outside
    # it: ~1 is an outline that ignores the picture. Measured on the tuning group scenes: a
    # random SAM 1.00 median, 1.07 at its 90th percentile; drawn ground truth 1.16, BlazePose
    # 1.38, GrabCut 1.46 at their 2nd percentile.
    min_edge_contrast: float = 1.15
    edge_band_px: float = 5.0

    # Blur of other faces: an ellipse grown around the box, pixelated, blurred, noised.
    blur_grow_width: float = 1.35
    blur_grow_height: float = 1.5
    blur_blocks_across: float = 5.0  # pixelation blocks across the ellipse
    blur_sigma: float = 0.1  # Gaussian sigma after pixelation, in face sizes
    blur_noise_std: float = 12.0  # grey levels
    blur_seed: int = 0

    def hash(self) -> str:
        """A short, stable digest of every threshold and the masks version."""
        thresholds = {k: v for k, v in asdict(self).items() if k not in MODEL_CHOICE_FIELDS}
        return stable_hash({"masks_version": MASKS_VERSION, **thresholds})


HANDSET_OWNERSHIP = PoseOwnership()  # the baseline of the fit
FITTED_OWNERSHIP_PATH = Path(__file__).resolve().parent / "pose_ownership.json"


def fitted_pose_ownership(path: Path = FITTED_OWNERSHIP_PATH) -> PoseOwnership:
    """The ownership weights ``benchmarks/fit_pose_ownership.py --write`` fitted (tune split)."""
    return PoseOwnership(**json.loads(path.read_text())["weights"])


# The defaults, shared as argument defaults (a frozen dataclass, so sharing one is safe).
DEFAULT_MASK_CONFIG = MaskConfig()
