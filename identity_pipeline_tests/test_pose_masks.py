"""The per-person BlazePose segmenter, its ownership rules, hands, the group scenes with ground
truth, and the people overlay (no Dagster).

Scenes are composed from scikit-image's free photos only (astronaut: NASA, public domain;
camera: CC0); the models are the MediaPipe files `make install` brings, and the tests that run
them are skipped where the wheel is missing.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from identity_pipeline.masks import (
    FaceInTile,
    IdentityMask,
    MaskConfig,
    SelectingSegmenter,
    build_identity_masks,
    masks_contact_sheet,
    select_segmenter,
)
from identity_pipeline.masks.config import (
    FITTED_OWNERSHIP_PATH,
    HANDSET_OWNERSHIP,
    PoseOwnership,
    fitted_pose_ownership,
)
from identity_pipeline.masks.hands import Hand, palm_anchors
from identity_pipeline.masks.mediapipe_models import CV2_DNN, LITERT, verified_model
from identity_pipeline.masks.pose import (
    KNOWN_POSE_LANDMARK_SHA256,
    NOBODY,
    OWNERSHIP_FEATURES,
    PersonPose,
    PoseModelMissing,
    PoseSegmenter,
    View,
    assign_owners,
    blank_people,
    face_view,
)
from identity_pipeline.masks.preview import PERSON_COLOURS, people_overlay
from identity_pipeline.masks.scenes import (
    HELD_OBJECT,
    PERSON,
    group_scene,
    offline_face_backend,
    person_photos,
    visible_face_owner,
)
from identity_pipeline.masks.scenes import detect_faces as detect_scene_faces


@pytest.fixture(scope="module")
def photos():
    return person_photos()  # astronaut and camera: installed with scikit-image


@pytest.fixture(scope="module")
def pose_segmenter() -> PoseSegmenter:
    try:
        return PoseSegmenter()
    except PoseModelMissing:
        pytest.skip("no BlazePose model here (`make install` puts mediapipe's wheel there)")


@pytest.fixture(scope="module")
def overlapping(photos):
    """Three people in front of and behind each other, faces detected and matched."""
    scene = group_scene(
        "front_and_behind", 8, ["camera", "astronaut", "astronaut"], "gravel", photos
    )
    faces = []
    owners = {}
    for face in detect_scene_faces(scene.image, backend=offline_face_backend()):
        owner = visible_face_owner(scene, face)
        name = None if owner is None else f"p{owner}"
        faces.append(FaceInTile(face.face_id, face.box, face.landmarks, name))
        if name:
            owners[name] = owner
    assert len(owners) == 3, "every placed face must be detected"
    return scene, faces, owners


# --- group scenes with ground truth ----------------------------------------------------------


def test_group_scene_ownership_is_exclusive_and_faces_stay_visible(photos, overlapping) -> None:
    scene, _, _ = overlapping
    assert scene.people.shape == (3, *scene.image.shape[:2])
    assert scene.people.sum(axis=0).max() == 1  # one owner per pixel
    assert all(person.sum() > 0 for person in scene.people)
    again = group_scene(
        "front_and_behind", 8, ["camera", "astronaut", "astronaut"], "gravel", photos
    )
    assert np.array_equal(again.image, scene.image)  # a seed is a scene
    for mask in (photo.mask for photo in photos.values()):
        assert set(np.unique(mask)) <= {0, HELD_OBJECT, PERSON}


@pytest.mark.parametrize("layout", ["shoulder_to_shoulder", "front_and_behind", "two_rows"])
def test_every_layout_composes(photos, layout) -> None:
    scene = group_scene(layout, 11, ["astronaut", "camera"] * 3, "brick", photos)
    assert scene.layout == layout and len(scene.placements) == 6
    visible = scene.people.reshape(6, -1).sum(axis=1)
    assert (visible > 0).all()


# --- the pose segmenter on a scene with ground truth -------------------------------------------


def test_pose_segmenter_gives_each_person_their_own_pixels(pose_segmenter, overlapping) -> None:
    scene, faces, owners = overlapping
    masks = build_identity_masks(scene.image, faces, pose_segmenter, MaskConfig())
    valid = ~scene.ignore
    anyone = scene.people.any(axis=0)
    assert {m.backend for m in masks} == {"pose"}
    for mask in masks:
        truth = scene.people[owners[mask.identity]] & valid
        predicted = (mask.mask >= 128) & valid
        iou = (predicted & truth).sum() / (predicted | truth).sum()
        leak = (predicted & anyone & ~truth).sum() / predicted.sum()
        assert iou > 0.7, (mask.identity, iou)
        assert leak < 0.1, (mask.identity, leak)
    inside = np.stack([m.mask >= 128 for m in masks])
    assert inside.sum(axis=0).max() == 1


def test_selector_tries_pose_first_for_groups_and_skips_it_for_one(
    pose_segmenter, overlapping, photos
) -> None:
    scene, faces, _ = overlapping
    selector = select_segmenter(MaskConfig())
    assert [c.name for c in selector.candidates][:1] == ["pose"]
    masks = build_identity_masks(scene.image, faces, selector)
    assert masks[0].backend == "pose"
    assert masks[0].selector_reason.startswith("pose accepted (3 people plausible)")
    single = photos["astronaut"].image
    face = detect_scene_faces(single, ["anna"], offline_face_backend())
    alone = build_identity_masks(single, face, selector)
    assert alone[0].selector_reason.startswith("pose skipped (1 face < 2)")
    assert alone[0].backend != "pose"


def test_pose_model_is_refused_unless_its_hash_is_known(tmp_path: Path) -> None:
    fake = tmp_path / "pose_landmark_full.tflite"
    fake.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a version this code was checked with"):
        verified_model(fake, KNOWN_POSE_LANDMARK_SHA256)
    with pytest.raises(ValueError):
        PoseSegmenter(fake)
    with pytest.raises(PoseModelMissing):
        PoseSegmenter(tmp_path / "missing.tflite")
    selector = select_segmenter(
        MaskConfig(pose_model=str(tmp_path / "missing.tflite"), selfie_model=str(fake))
    )
    assert [c.name for c in selector.candidates] == ["grabcut"]
    assert selector.notes == [
        "pose unavailable: PoseModelMissing",
        "selfie unavailable: ValueError",
    ]


# --- ownership rules on hand-made poses --------------------------------------------------------


def synthetic_pose(box: tuple[int, int, int, int], body: tuple[int, int, int, int]) -> PersonPose:
    """A pose whose silhouette (logit 6) fills ``body`` (tile pixels) inside ``box``."""
    x0, y0, x1, y1 = box
    logits = np.full((y1 - y0, x1 - x0), -6.0, np.float32)
    bx0, by0, bx1, by1 = body
    logits[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0] = 6.0
    cx = (bx0 + bx1) / 2
    landmarks = np.zeros((33, 2), np.float32)
    landmarks[:, 0] = cx
    landmarks[:, 1] = by0 + 0.6 * (by1 - by0)  # the body's landmarks, all low down
    landmarks[0] = (cx, by0 + 10)  # the nose
    landmarks[11], landmarks[12] = (bx0 + 5, by0 + 30), (bx1 - 5, by0 + 30)  # the shoulders
    return PersonPose(
        view=View((cx, (by0 + by1) / 2), by1 - by0),
        landmarks=landmarks,
        visibility=np.full(33, 0.9, np.float32),
        presence=1.0,
        logits=logits,
        box=box,
        face_agreement=1.0,
        view_points=np.zeros((2, 2), np.float32),
        passes=1,
    )


def face_at(name: str, box: tuple[float, float, float, float]) -> FaceInTile:
    x0, y0, x1, y1 = box
    landmarks = np.float32([[x0 + 6, y0 + 8], [x1 - 6, y0 + 8], [(x0 + x1) / 2, y0 + 12]] * 2)[:5]
    return FaceInTile(name, box, landmarks, name)


def test_a_face_inside_a_silhouette_stands_in_front_and_keeps_its_body() -> None:
    # The back person's silhouette runs down over the front person's face and body.
    back = synthetic_pose((0, 0, 120, 200), (20, 0, 100, 200))
    front = synthetic_pose((20, 60, 120, 200), (40, 80, 100, 200))
    faces = [face_at("back", (40, 5, 80, 45)), face_at("front", (55, 85, 85, 115))]
    owners = assign_owners([back, front], faces, (200, 120), MaskConfig())
    assert (owners[90:110, 60:80] == 1).all()  # the front face
    assert (owners[150:190, 60:90] == 1).mean() > 0.9  # the front body under it
    assert (owners[10:40, 45:75] == 0).all()  # the back face stays the back person's


def test_a_hand_goes_to_its_owner_and_is_cut_from_the_person_it_lies_on() -> None:
    left = synthetic_pose((0, 0, 100, 160), (10, 0, 90, 160))
    right = synthetic_pose((80, 0, 200, 160), (110, 0, 190, 160))
    faces = [face_at("left", (30, 10, 70, 50)), face_at("right", (130, 10, 170, 50))]
    fingers = np.float32([[40 + 3 * (i % 5), 100 + 2 * (i // 5)] for i in range(21)])
    hand = Hand(owner=1, landmarks=fingers, presence=0.9, source="pose wrist")
    without = assign_owners([left, right], faces, (160, 200), MaskConfig())
    assert (without[100:108, 40:52] == 0).all()
    owners = assign_owners([left, right], faces, (160, 200), MaskConfig(), [hand])
    assert (owners[100:108, 40:52] == 1).all()  # the right person's hand on the left one
    stranger = Hand(owner=None, landmarks=fingers, presence=0.9, source="palm")
    owners = assign_owners([left, right], faces, (160, 200), MaskConfig(), [stranger])
    assert (owners[100:108, 40:52] == NOBODY).all()


def weak_wide_pose(size: int = 200) -> PersonPose:
    """A silhouette claiming the whole square (logit 2), its skeleton a short upright body in the
    middle: shoulders 40 px apart, everything else on the spine."""
    pose = synthetic_pose((0, 0, size, size), (0, 0, size, size))
    landmarks = np.tile(np.float32([size / 2, size / 2]), (33, 1))
    landmarks[0] = (size / 2, size / 2 - 40)  # the nose
    landmarks[11], landmarks[12] = (size / 2 - 20, size / 2 - 20), (size / 2 + 20, size / 2 - 20)
    return replace(pose, landmarks=landmarks, logits=np.full((size, size), 2.0, np.float32))


def test_a_weak_claim_far_from_the_skeleton_is_nobodys_with_the_fitted_weights() -> None:
    # What a view spills onto the background beside a person at the edge of a group: the
    # hand-set rule gave every claimed pixel to someone, the fitted choice model does not.
    pose = weak_wide_pose()
    faces = [face_at("only", (85, 45, 115, 75))]
    owners = assign_owners([pose], faces, (200, 200), MaskConfig())
    assert (owners[90:110, 90:110] == 0).all()  # on the body
    assert (owners[180:, :20] == NOBODY).all()  # far below and beside it
    assert MaskConfig().pose_ownership == fitted_pose_ownership()  # the default
    handset = replace(MaskConfig(), pose_ownership=HANDSET_OWNERSHIP)
    assert (assign_owners([pose], faces, (200, 200), handset)[180:, :20] == 0).all()


def test_the_fitted_ownership_weights_come_from_the_tune_split_and_fit_the_features() -> None:
    fitted = json.loads(FITTED_OWNERSHIP_PATH.read_text())
    assert fitted["fitted_on"]["split"] == "tune"
    assert fitted["features"] == ["bias", *OWNERSHIP_FEATURES] == list(asdict(PoseOwnership()))
    assert asdict(fitted_pose_ownership()) == fitted["weights"]


def test_a_person_looked_for_again_keeps_the_body_another_silhouette_swallowed() -> None:
    # The silhouette of someone behind runs down over this person's face and body; looking for
    # this person again, that silhouette is blacked out except over their head and torso.
    image = np.full((200, 120, 3), 200, np.uint8)
    behind = synthetic_pose((0, 0, 120, 200), (10, 0, 110, 200))
    face = face_at("front", (45, 80, 75, 110))
    config = replace(MaskConfig(), pose_blank_reach=10.0)
    kept = blank_people(image, [behind], face, config, spare_swallowed=True)
    lost = blank_people(image, [behind], face, config, spare_swallowed=False)
    assert kept is not None and lost is not None
    assert (lost[130:150, 50:70] == 0).all()  # the torso under the face, blacked out
    assert (kept[130:150, 50:70] == 200).all()  # ...or kept
    assert (kept[5:30, 20:100] == 0).all()  # the rest of the silhouette goes either way


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None, reason="no LiteRT")
def test_litert_and_cv2_dnn_agree_on_the_pose_model(pose_segmenter, overlapping) -> None:
    scene, faces, _ = overlapping
    view = face_view(faces[0], MaskConfig())
    answers = []
    for runtime in (LITERT, CV2_DNN):
        segmenter = PoseSegmenter(runtime=runtime)
        assert segmenter.runtime == runtime
        answers.append(segmenter._run(scene.image, view, faces[0], passes=1))
    litert, dnn = answers
    assert np.abs(litert.landmarks - dnn.landmarks).max() < 1.0  # tile pixels
    assert ((litert.logits > 0) == (dnn.logits > 0)).mean() > 0.99
    # The settings choose it (LiteRT by default); a runtime nobody knows is refused.
    for config, runtime in ((MaskConfig(), LITERT), (MaskConfig(pose_runtime=CV2_DNN), CV2_DNN)):
        pose = next(c for c in select_segmenter(config).candidates if c.name == "pose")
        assert pose.runtime == runtime
    with pytest.raises(ValueError, match="unknown TFLite runtime"):
        PoseSegmenter(runtime="tensorflow")


def test_palm_detector_anchors() -> None:
    anchors = palm_anchors()
    assert anchors.shape == (2016, 2)
    assert anchors.min() > 0 and anchors.max() < 1


# --- the people overlay ------------------------------------------------------------------------


def test_people_overlay_colours_each_person_and_shows_only_training_copies() -> None:
    tile = np.full((60, 120, 3), 150, np.uint8)  # neutral grey: the tints show
    tile[::2] += 10  # and some detail
    masks = []
    for index, (x0, x1) in enumerate(((0, 50), (60, 120))):
        mask = np.zeros((60, 120), np.uint8)
        mask[:, x0:x1] = 255
        copy = np.full_like(tile, 90)  # stands for "everything else blurred"
        copy[:, x0:x1] = tile[:, x0:x1]
        masks.append(
            IdentityMask(f"p{index}", f"f{index}", mask, copy, (), "pose", "", 0.4, 0.05, 1)
        )
    image = np.asarray(people_overlay(tile, masks, max_side=120)).astype(int)
    left, right, gap = image[30, 20], image[30, 100], image[30, 55]
    assert np.argmax(left) == np.argmax(PERSON_COLOURS[0])  # tinted with each one's colour
    assert tuple(left) != tuple(right)
    assert (gap < 90).all()  # no mask: from the (grey) training copy, dimmed
    sheet = masks_contact_sheet([(tile, mask) for mask in masks], cell=96)
    assert sheet.size[0] == 96  # two samples of one tile: one cell
    with pytest.raises(ValueError):
        people_overlay(tile[:30], masks)


def test_unreliable_views_are_dropped(pose_segmenter, overlapping) -> None:
    scene, faces, _ = overlapping
    strict = replace(MaskConfig(), pose_min_face_agreement=1.01)  # no view can agree
    segmentation = pose_segmenter.segment(scene.image, faces, strict)
    assert segmentation.probabilities.max() == 0.0
    assert "views off their face" in segmentation.reason


def test_pose_alone_still_runs_for_one_person(pose_segmenter, photos) -> None:
    single = photos["astronaut"].image
    face = detect_scene_faces(single, ["anna"], offline_face_backend())
    masks = build_identity_masks(single, face, SelectingSegmenter([pose_segmenter]))
    assert masks[0].backend == "pose" and "skipped" not in masks[0].selector_reason
