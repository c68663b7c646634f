"""identity_masks logic without Dagster: who is in each mask, soft edges, blur, flags, selector.

Images are composed from ``skimage.data.astronaut()`` (NASA, public domain) only; faces come
from the offline YuNet detector and recognition checks use its SFace embeddings.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from identity_pipeline.faces.backend import DetectedFace
from identity_pipeline.masks import (
    FLAG_AREA_HIGH,
    FLAG_AREA_LOW,
    FLAG_DUPLICATE_IDENTITY,
    FLAG_EMPTY,
    FLAG_FACE_NOT_COVERED,
    FLAG_TOUCHES_OTHER_FACE,
    MASK_FLAG_DTYPES,
    FaceInTile,
    GrabCutSegmenter,
    IdentityMask,
    MaskConfig,
    SamSegmenter,
    Segmentation,
    SelectingSegmenter,
    SelfieModelMissing,
    SelfieSegmenter,
    blur_faces,
    build_identity_masks,
    empty_kept_masks,
    encode_mask_png,
    find_selfie_model,
    mask_flags_frame,
    overlay_preview,
    recognised_other_faces,
    select_segmenter,
    unblurred_other_faces,
)
from identity_pipeline.masks.geometry import ellipse_mask, head_box
from identity_pipeline.masks.sam import PAD_LABEL, sam_prompts, save_tiny_random_sam
from identity_pipeline.masks.scenes import (
    astronaut,
    detect_faces,
    offline_face_backend,
    row_of_three,
    touching_pair,
)

# SFace's same-person threshold is ~0.36 (OpenCV Zoo); a blurred face must be far below it.
SFACE_NO_MATCH = 0.2
# The main fixture runs at a reduced working size, so the masks are upscaled: that path is
# where exclusivity between people could break.
SMALL_WORK = MaskConfig(work_max_side=384)


class PriorSegmenter:
    """A cheap deterministic backend: each person = head box + torso column under the chin."""

    name = "prior"

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation:
        height, width = image_rgb.shape[:2]
        maps = np.zeros((len(faces), height, width), np.float32)
        for index, face in enumerate(faces):
            maps[index][ellipse_mask((height, width), head_box(face, config), 1.1, 1.1)] = 1
            cx = face.centre[0]
            x0, x1 = int(max(0, cx - 1.4 * face.width)), int(cx + 1.4 * face.width)
            maps[index, int(face.box[3]) :, x0:x1] = 1
        return Segmentation(maps, self.name, "test prior")


class EmptySegmenter:
    name = "broken"

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation:
        return Segmentation(np.zeros((len(faces), *image_rgb.shape[:2]), np.float32), self.name)


class FailingSegmenter:
    name = "crashing"

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation:
        raise RuntimeError("CUDA out of memory")


@pytest.fixture(scope="module")
def face_backend():
    return offline_face_backend()


@pytest.fixture(scope="module")
def pair(face_backend) -> tuple[np.ndarray, list[FaceInTile]]:
    image = touching_pair()
    faces = detect_faces(image, ["anna", "bea"], face_backend)
    assert len(faces) == 2, "the composed pair must show two detectable faces"
    return image, faces


@pytest.fixture(scope="module")
def pair_masks(pair) -> dict[str, IdentityMask]:
    image, faces = pair
    masks = build_identity_masks(image, faces, GrabCutSegmenter(), SMALL_WORK)
    return {mask.identity: mask for mask in masks}


@pytest.fixture(scope="module")
def portrait(face_backend) -> tuple[np.ndarray, list[FaceInTile]]:
    image = astronaut()
    faces = detect_faces(image, ["anna"], face_backend)
    assert len(faces) == 1
    return image, faces


def box_mean(mask: np.ndarray, box: Sequence[float]) -> float:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return float(mask[y0:y1, x0:x1].mean()) / 255.0


def embed(face_backend, image: np.ndarray, face: FaceInTile) -> np.ndarray:
    detected = DetectedFace(face.box, np.asarray(face.landmarks, np.float32), 1.0)
    return face_backend.embed(image, [detected])[0]


# --- who is in each mask ---------------------------------------------------------------------


def test_one_mask_per_named_person_at_tile_resolution(pair, pair_masks) -> None:
    image, faces = pair
    assert set(pair_masks) == {"anna", "bea"}
    for face in faces:
        mask = pair_masks[face.identity]
        assert mask.face_id == face.face_id
        assert mask.mask.shape == image.shape[:2] and mask.mask.dtype == np.uint8
        assert mask.training_image.shape == image.shape
        assert mask.backend == "grabcut"
        assert mask.flags == () and mask.kept


def test_mask_covers_its_face_and_not_the_other_face(pair, pair_masks) -> None:
    _, faces = pair
    anna, bea = faces
    assert box_mean(pair_masks["anna"].mask, anna.box) > 0.9
    assert box_mean(pair_masks["anna"].mask, bea.box) < 0.02
    assert box_mean(pair_masks["bea"].mask, bea.box) > 0.9
    assert box_mean(pair_masks["bea"].mask, anna.box) < 0.02


def test_touching_torsos_are_divided(pair, pair_masks) -> None:
    image, _ = pair
    left, right = pair_masks["anna"].mask, pair_masks["bea"].mask
    seam = image.shape[1] // 2
    # The sleeves touch along the seam: that is where both backends' claims overlap.
    assert not ((left > 127) & (right > 127)).any(), "a pixel belongs to both people"
    assert (left[:, :seam] > 127).sum() > 0.95 * (left > 127).sum()
    assert (right[:, seam:] > 127).sum() > 0.95 * (right > 127).sum()
    # ...and each still reaches the seam: the torso was divided, not dropped.
    assert (left[-40:, seam - 12 : seam] > 127).any()
    assert (right[-40:, seam : seam + 12] > 127).any()


def test_masks_have_soft_edges_only_at_the_boundary(pair_masks) -> None:
    mask = pair_masks["anna"].mask
    assert ((mask > 0) & (mask < 255)).sum() > 100, "no feathering"
    # Every clearly soft pixel (the far tails of the blur aside) is near the 50% outline.
    soft = (mask >= 32) & (mask <= 223)
    outline = cv2.Canny((mask > 127).astype(np.uint8) * 255, 50, 150) > 0
    near = cv2.dilate(outline.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    assert (soft & ~near).sum() < 0.01 * soft.sum()
    # The inside is solid.
    assert (mask == 255).sum() > 0.8 * (mask > 127).sum()


def test_unnamed_face_is_blurred_and_never_a_target(pair) -> None:
    image, (anna, bea) = pair
    stranger = replace(bea, identity=None)
    masks = build_identity_masks(image, [anna, stranger], PriorSegmenter())
    assert [m.identity for m in masks] == ["anna"]
    assert masks[0].other_faces_blurred == 1
    assert box_mean(masks[0].mask, stranger.box) < 0.02
    nobody_named = [replace(anna, identity=None), stranger]
    assert build_identity_masks(image, nobody_named, PriorSegmenter()) == []


# --- blurring other faces ----------------------------------------------------------------------


def test_blur_defeats_the_recognizer_and_target_face_is_untouched(
    face_backend, pair, pair_masks
) -> None:
    image, (anna, bea) = pair
    training = pair_masks["anna"].training_image
    original_bea = embed(face_backend, image, bea)
    # Embedded where the detector had found her (the blurred copy has no face to detect).
    assert float(original_bea @ embed(face_backend, training, bea)) < SFACE_NO_MATCH
    x0, y0, x1, y1 = (int(v) for v in anna.box)
    assert np.array_equal(training[y0:y1, x0:x1], image[y0:y1, x0:x1])
    assert float(embed(face_backend, image, anna) @ embed(face_backend, training, anna)) > 0.99
    assert pair_masks["anna"].other_faces_blurred == 1


def test_blurred_face_is_no_longer_detected(face_backend, portrait) -> None:
    image, (face,) = portrait
    blurred = blur_faces(image, [face.box])
    assert [f for f in face_backend.detect(blurred) if f.score >= 0.6] == []


def test_a_mild_blur_would_not_pass_the_recognizer_check(face_backend, portrait) -> None:
    """The cosine check has teeth: a plain Gaussian blur of the face still matches."""
    image, (face,) = portrait
    mild = image.copy()
    x0, y0, x1, y1 = (int(v) for v in face.box)
    mild[y0:y1, x0:x1] = cv2.GaussianBlur(mild[y0:y1, x0:x1], (0, 0), 2.0)
    cosine = float(embed(face_backend, image, face) @ embed(face_backend, mild, face))
    assert cosine > SFACE_NO_MATCH
    strong = blur_faces(image, [face.box])
    assert float(embed(face_backend, image, face) @ embed(face_backend, strong, face)) < 0.2


def test_asset_check_helpers_catch_unblurred_faces_and_empty_kept_masks(
    face_backend, pair, pair_masks, portrait
) -> None:
    image, faces = pair
    good = pair_masks["anna"]
    assert unblurred_other_faces(image, good, faces) == []
    assert recognised_other_faces(face_backend, image, good, faces) == []
    leaked = replace(good, training_image=image.copy())
    assert unblurred_other_faces(image, leaked, faces) == [faces[1].face_id]
    assert recognised_other_faces(face_backend, image, leaked, faces) == [faces[1].face_id]
    assert empty_kept_masks(list(pair_masks.values())) == []
    portrait_image, portrait_faces = portrait
    keep_all = MaskConfig(exclude_flags=())
    (empty,) = build_identity_masks(portrait_image, portrait_faces, EmptySegmenter(), keep_all)
    assert empty_kept_masks([empty]) == [empty]


# --- quality flags ------------------------------------------------------------------------------


def test_empty_mask_is_flagged_and_excluded(portrait) -> None:
    image, faces = portrait
    (mask,) = build_identity_masks(image, faces, EmptySegmenter())
    assert FLAG_EMPTY in mask.flags and FLAG_FACE_NOT_COVERED in mask.flags
    assert not mask.kept
    assert mask.mask.max() == 0
    keep_all = MaskConfig(exclude_flags=())
    assert build_identity_masks(image, faces, EmptySegmenter(), keep_all)[0].kept


def test_area_ratio_bounds_are_flagged(portrait) -> None:
    image, faces = portrait
    (normal,) = build_identity_masks(image, faces, PriorSegmenter())
    assert normal.flags == ()
    assert 3 < normal.area_ratio < 20
    tight = MaskConfig(max_area_ratio=normal.area_ratio / 2)
    assert FLAG_AREA_HIGH in build_identity_masks(image, faces, PriorSegmenter(), tight)[0].flags
    loose = MaskConfig(min_area_ratio=normal.area_ratio * 2)
    assert FLAG_AREA_LOW in build_identity_masks(image, faces, PriorSegmenter(), loose)[0].flags


def test_mask_hugging_another_face_is_flagged(portrait) -> None:
    image, (face,) = portrait
    # A stranger's face right beside the target's hair (a head leaning in).
    x0, y0, x1, y1 = face.box
    width = x1 - x0
    beside = (x1 + 0.1 * width, y0 - 0.2 * width, x1 + 0.8 * width, y0 + 0.6 * width)
    stranger = FaceInTile("stranger", beside, np.asarray(face.landmarks), None)
    (mask,) = build_identity_masks(image, [face, stranger], PriorSegmenter())
    assert FLAG_TOUCHES_OTHER_FACE in mask.flags
    assert mask.kept, "touching another face is listed, not excluded, by default"
    assert box_mean(mask.mask, stranger.box) < 0.05, "the other face itself is cut out"


def test_duplicate_identity_keeps_the_larger_face(face_backend) -> None:
    big = cv2.resize(astronaut(), (320, 320))
    small = cv2.resize(astronaut(), (240, 240))
    canvas = np.zeros((320, 560, 3), np.uint8)
    canvas[:, :320] = big
    canvas[80:, 320:] = small[:, ::-1]
    faces = detect_faces(canvas, ["anna", "anna"], face_backend)
    assert len(faces) == 2
    masks = build_identity_masks(canvas, faces, PriorSegmenter())
    assert len(masks) == 1
    assert masks[0].face_id == max(faces, key=lambda f: f.area).face_id
    assert FLAG_DUPLICATE_IDENTITY in masks[0].flags
    assert masks[0].other_faces_blurred == 1


# --- selector ----------------------------------------------------------------------------------


def test_selector_falls_back_and_records_why(pair) -> None:
    image, faces = pair
    selector = SelectingSegmenter([FailingSegmenter(), EmptySegmenter(), PriorSegmenter()])
    # The box-shaped test prior does not follow image edges: that check is off here.
    masks = build_identity_masks(image, faces, selector, MaskConfig(min_edge_contrast=0.0))
    assert {m.backend for m in masks} == {"prior"}
    reason = masks[0].selector_reason
    assert "crashing failed (RuntimeError: CUDA out of memory)" in reason
    assert "broken rejected (anna: empty" in reason
    assert reason.endswith("prior accepted (2 people plausible)")


class PriorExcept(PriorSegmenter):
    """The test prior with nothing for some faces (implausible for them: empty)."""

    def __init__(self, name: str, empty_for: Sequence[int] = ()) -> None:
        self.name, self.empty_for = name, tuple(empty_for)

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation:
        maps = super().segment(image_rgb, faces, config).probabilities
        maps[list(self.empty_for)] = 0.0
        return Segmentation(maps, self.name, "test prior, some people left out")


@pytest.fixture(scope="module")
def three(face_backend) -> tuple[np.ndarray, list[FaceInTile]]:
    image = row_of_three()
    faces = detect_faces(image, ["ann", "bo", "cy"], face_backend)
    assert len(faces) == 3
    return image, faces


@pytest.mark.parametrize(
    ("empty_in_first", "broken_share", "expected_backends", "reason_has"),
    [
        (
            (),
            0.5,
            {"ann": "first", "bo": "first", "cy": "first"},
            "first accepted (3 people plausible)",
        ),
        # One odd person does not send the others to the next backend.
        (
            (1,),
            0.5,
            {"ann": "first", "bo": "second", "cy": "first"},
            "first accepted for 2 of 3 (rejected bo: empty",
        ),
        # Implausible for most: the first backend's answer looks broken, for everyone.
        (
            (0, 1),
            0.5,
            {"ann": "second", "bo": "second", "cy": "second"},
            "first rejected (ann: empty",
        ),
        # Share 0, the per-tile rule: one odd person sends everyone to the next backend.
        ((1,), 0.0, {"ann": "second", "bo": "second", "cy": "second"}, "first rejected (bo: empty"),
    ],
)
def test_selector_chooses_per_person(
    three, empty_in_first, broken_share, expected_backends, reason_has
) -> None:
    image, faces = three
    selector = SelectingSegmenter([PriorExcept("first", empty_in_first), PriorExcept("second")])
    # Box-shaped priors follow no image edges: that check is off here.
    config = MaskConfig(min_edge_contrast=0.0, selector_broken_share=broken_share)
    masks = build_identity_masks(image, faces, selector, config)
    assert {m.identity: m.backend for m in masks} == expected_backends
    assert reason_has in masks[0].selector_reason
    for mask in masks:  # everyone's mask holds their own face, whichever backend drew it
        face = next(f for f in faces if f.identity == mask.identity)
        assert box_mean(mask.mask, face.box) > 0.8


def test_selector_keeps_the_least_bad_when_nothing_is_plausible(portrait) -> None:
    image, faces = portrait
    masks = build_identity_masks(image, faces, SelectingSegmenter([EmptySegmenter()]))
    assert masks[0].backend == "broken"
    assert "none plausible: kept broken" in masks[0].selector_reason


def test_default_selector_without_selfie_model_uses_grabcut(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.tflite")
    with pytest.raises(SelfieModelMissing):
        find_selfie_model(missing)
    selector = select_segmenter(MaskConfig(selfie_model=missing, pose_model=missing))
    assert [c.name for c in selector.candidates] == ["grabcut"]
    assert selector.notes == [
        "pose unavailable: PoseModelMissing",
        "selfie unavailable: SelfieModelMissing",
    ]


# --- SAM plumbing on a tiny random model -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> SamSegmenter:
    return SamSegmenter(save_tiny_random_sam(tmp_path_factory.mktemp("tiny-sam")))


def test_sam_prompts_box_and_points_per_person(pair) -> None:
    image, faces = pair
    boxes, points, labels = sam_prompts(faces, MaskConfig(), image.shape[:2])
    assert len(boxes) == len(points) == len(labels) == 2
    for box, face in zip(boxes, faces, strict=True):
        assert box[0] <= face.box[0] and box[2] >= face.box[2] and box[1] <= face.box[1]
    # Face (+), chest (+), the other face (-), all people padded to one point count.
    assert labels[0] == [1, 1, 0]
    assert points[0][2] == list(faces[1].centre)
    assert all(len(p) == 3 for p in points)
    assert PAD_LABEL not in labels[0]


def test_tiny_sam_plumbing_and_fallback(tiny_sam, pair) -> None:
    image, faces = pair
    segmentation = tiny_sam.segment(image, faces, MaskConfig())
    probabilities = segmentation.probabilities
    assert probabilities.shape == (2, *image.shape[:2]) and probabilities.dtype == np.float32
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    # Random weights draw blobs that ignore the picture: the selector must not keep them.
    selector = SelectingSegmenter([tiny_sam, GrabCutSegmenter()])
    masks = build_identity_masks(image, faces, selector, SMALL_WORK)
    assert {m.backend for m in masks} == {"grabcut"}
    assert masks[0].selector_reason.startswith("sam rejected (")
    assert "outline ignores image edges" in masks[0].selector_reason


# --- the selfie model (only where its file is installed) -----------------------------------------


def test_selfie_backend_divides_the_pair(pair) -> None:
    try:
        segmenter = SelfieSegmenter()
    except SelfieModelMissing:
        pytest.skip("no selfie segmentation model here (`make install` puts mediapipe's there)")
    image, faces = pair
    masks = {m.identity: m for m in build_identity_masks(image, faces, segmenter)}
    left, right = masks["anna"].mask, masks["bea"].mask
    assert not ((left > 127) & (right > 127)).any()
    assert box_mean(left, faces[0].box) > 0.9 and box_mean(left, faces[1].box) < 0.02
    assert all(m.flags == () for m in masks.values())


# --- previews and tables -----------------------------------------------------------------------


def test_overlay_png_and_flags_table(pair, pair_masks) -> None:
    image, _ = pair
    preview = overlay_preview(image, pair_masks["anna"], max_side=320)
    assert preview.size == (320, 160) and preview.mode == "RGB"
    png = encode_mask_png(pair_masks["anna"].mask)
    decoded = np.asarray(Image.open(io.BytesIO(png)))
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, pair_masks["anna"].mask)
    frame = mask_flags_frame({"tile-1": list(pair_masks.values())})
    assert list(frame.columns) == list(MASK_FLAG_DTYPES)
    assert frame["kept"].all() and (frame["flags"] == "").all()
    assert (frame["area_ratio"] > 3).all()
