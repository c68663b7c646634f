"""The experimental line-model splitter (collage/line_split.py) through its public function: a
gutter grid and a borderless stack are cut, so are borderless collages of small photos blown up
into their tiles, single photos stay whole, a face box is never cut, the weights are small,
named safetensors from their training script."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from identity_pipeline.collage import Box, line_split
from identity_pipeline.collage.lines import LINE_FEATURES, WEIGHTS_FILE
from identity_pipeline.collage.synthetic import (
    compose_collage,
    degrade,
    grid_layout,
    horizon_scene,
    plain_single,
    sample_photos,
    stack_layout,
)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return dict(sample_photos())


def same_tiles(found, truth, threshold: float = 0.95) -> bool:
    return len(found) == len(truth) and all(
        max(box.iou(other) for other in found) >= threshold for box in truth
    )


@pytest.mark.parametrize(
    ("names", "layout", "size", "gutter", "colour"),
    [
        (("coffee", "china", "rocket"), grid_layout(1, 3), (1200, 500), 14, (250, 250, 250)),
        (("chelsea", "coffee"), grid_layout(1, 2), (1000, 500), 12, (30, 30, 30)),
        (("astronaut", "coffee"), stack_layout((1.0, 1.0)), (700, 1100), 0, (0, 0, 0)),
    ],
    ids=["white gutters 1x3", "dark gutter 1x2", "borderless stack"],
)
def test_collages_are_cut_into_their_photos(photos, names, layout, size, gutter, colour) -> None:
    collage = compose_collage([photos[n] for n in names], layout, size, gutter, 0, colour, seed=3)
    collage = degrade(collage, 1.0, 90, seed=3)
    result = line_split.split_image(np.asarray(collage.image))
    assert same_tiles(result.boxes, collage.boxes), [b.as_list() for b in result.boxes]
    assert 0.0 <= result.confidence <= 1.0
    assert result.review == (result.confidence < line_split.DEFAULT_SETTINGS.review_below)


def blown_up(photo: Image.Image, side: int = 200) -> Image.Image:
    """A small album photo (an app blows it up into its tile: soft, little fine texture)."""
    small = photo.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return small


@pytest.mark.parametrize(
    ("names", "layout", "size"),
    [
        (("astronaut", "coffee", "chelsea", "china"), grid_layout(2, 2), (1400, 1000)),
        (("camera", "rocket", "flower"), stack_layout((1.0, 0.8, 1.2)), (700, 1500)),
    ],
    ids=["borderless grid 2x2", "borderless stack 3"],
)
def test_small_photos_blown_up_into_their_tiles_are_cut_at_their_seams(
    photos, names, layout, size
) -> None:
    small = [blown_up(photos[n]) for n in names]
    collage = degrade(compose_collage(small, layout, size, seed=5), 0.8, 80, seed=5)
    result = line_split.split_image(np.asarray(collage.image))
    assert same_tiles(result.boxes, collage.boxes), [b.as_list() for b in result.boxes]


@pytest.mark.parametrize(
    "make",
    [
        lambda p: plain_single(p["coffee"], (1200, 900), seed=1),
        lambda p: horizon_scene(p["grass"], (1200, 800), seed=5),
    ],
    ids=["plain photo", "horizon with poles"],
)
def test_single_photos_stay_whole(photos, make) -> None:
    single = degrade(make(photos), 0.8, 80, seed=1)
    assert line_split.split_image(np.asarray(single.image)).boxes == single.boxes


def test_a_cut_through_a_given_face_is_refused(photos) -> None:
    collage = compose_collage(
        [photos["chelsea"], photos["coffee"]], stack_layout((1.0, 1.0)), (800, 1200), seed=21
    )
    image = np.asarray(degrade(collage, 1.0, 85, seed=21).image)
    seam_y = collage.boxes[1].y0
    assert len(line_split.split_image(image).boxes) == 2
    face = Box(300, seam_y - 80, 460, seam_y + 90)
    assert len(line_split.split_image(image, face_boxes=[face]).boxes) == 1


def test_tiny_and_non_rgb_input() -> None:
    assert line_split.split_image(np.zeros((8, 8, 3), np.uint8)).boxes == (Box(0, 0, 8, 8),)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        line_split.split_image(np.zeros((10, 10), np.uint8))


def test_weights_are_small_safetensors_from_the_training_script() -> None:
    from safetensors import safe_open

    assert WEIGHTS_FILE.stat().st_size < 5_000_000
    with safe_open(str(WEIGHTS_FILE), "np") as handle:
        assert handle.metadata()["trained_by"] == "benchmarks/train_line_model.py"
        assert handle.metadata()["features"] == ",".join(LINE_FEATURES)
        assert handle.get_tensor("line.mean").shape == (len(LINE_FEATURES),)
        assert (
            len(handle.get_tensor("confidence.weights")) == len(line_split.CONFIDENCE_FEATURES) + 1
        )
