"""identity_masks: per tile and named person, a soft mask of that person and a training copy of
the tile with every other face blurred (no dagster here; the asset shell lives in ``assets``).

Backends behind one ``Segmenter`` interface: MediaPipe's BlazePose run once per face (``pose``,
for tiles of two or more people: a silhouette per person, hands to their owner), SAM / SAM 2
through transformers (given a model), MediaPipe's selfie segmentation model, face-seeded
GrabCut (always there). The MediaPipe files come from the mediapipe wheel and run in cv2.dnn.
``select_segmenter`` tries them in order per tile and records why it kept the one it kept.
"""

from identity_pipeline.masks.blur import blur_faces, blur_region
from identity_pipeline.masks.build import build_identity_masks, default_segmenter
from identity_pipeline.masks.checks import (
    detail_correlation,
    empty_kept_masks,
    recognised_other_faces,
    unblurred_other_faces,
)
from identity_pipeline.masks.config import (
    ALL_FLAGS,
    BACKEND_GRABCUT,
    BACKEND_POSE,
    BACKEND_SAM,
    BACKEND_SELFIE,
    DEFAULT_MASK_CONFIG,
    FLAG_AREA_HIGH,
    FLAG_AREA_LOW,
    FLAG_DUPLICATE_IDENTITY,
    FLAG_EMPTY,
    FLAG_FACE_NOT_COVERED,
    FLAG_OTHER_FACE_OVER_TARGET,
    FLAG_TOUCHES_OTHER_FACE,
    MaskConfig,
)
from identity_pipeline.masks.grabcut import GrabCutSegmenter
from identity_pipeline.masks.pose import PoseModelMissing, PoseSegmenter
from identity_pipeline.masks.preview import (
    MASK_FLAG_DTYPES,
    encode_mask_png,
    mask_flags_frame,
    masks_contact_sheet,
    overlay_preview,
    people_overlay,
)
from identity_pipeline.masks.records import FaceInTile, IdentityMask, Segmentation, Segmenter
from identity_pipeline.masks.sam import SamSegmenter
from identity_pipeline.masks.selector import SelectingSegmenter, segmenter_for, select_segmenter
from identity_pipeline.masks.selfie import (
    SelfieModelMissing,
    SelfieSegmenter,
    find_selfie_model,
)

__all__ = [
    "ALL_FLAGS",
    "BACKEND_GRABCUT",
    "BACKEND_POSE",
    "BACKEND_SAM",
    "BACKEND_SELFIE",
    "DEFAULT_MASK_CONFIG",
    "FLAG_AREA_HIGH",
    "FLAG_AREA_LOW",
    "FLAG_DUPLICATE_IDENTITY",
    "FLAG_EMPTY",
    "FLAG_FACE_NOT_COVERED",
    "FLAG_OTHER_FACE_OVER_TARGET",
    "FLAG_TOUCHES_OTHER_FACE",
    "MASK_FLAG_DTYPES",
    "FaceInTile",
    "GrabCutSegmenter",
    "IdentityMask",
    "MaskConfig",
    "PoseModelMissing",
    "PoseSegmenter",
    "SamSegmenter",
    "Segmentation",
    "Segmenter",
    "SelectingSegmenter",
    "SelfieModelMissing",
    "SelfieSegmenter",
    "blur_faces",
    "blur_region",
    "build_identity_masks",
    "default_segmenter",
    "detail_correlation",
    "empty_kept_masks",
    "encode_mask_png",
    "find_selfie_model",
    "mask_flags_frame",
    "masks_contact_sheet",
    "overlay_preview",
    "people_overlay",
    "recognised_other_faces",
    "segmenter_for",
    "select_segmenter",
    "unblurred_other_faces",
]
