"""Collage splitter: each layout kind, singles that must stay whole, hints, faces, the CLI."""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from identity_pipeline.collage import (
    Box,
    SplitConfig,
    apply_hint,
    classify_layout,
    draw_cuts,
    find_hints_file,
    hint_for,
    parse_hints,
    split_image,
)
from identity_pipeline.collage import split as split_module
from identity_pipeline.collage.cli import add_split_command
from identity_pipeline.collage.synthetic import (
    Collage,
    big_beside_column,
    compose_collage,
    degrade,
    door_scene,
    framed_single,
    grid_layout,
    horizon_scene,
    random_case,
    rows_layout,
    sample_photos,
    stack_layout,
    window_scene,
)

MATCH_IOU = 0.95
# The test for bars lit steadily along their length (painted) switched off, for tests of the
# other mechanisms that tell a painted bar from a gutter.
UNLIT = SplitConfig(shading_min_ramp=np.inf)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return dict(sample_photos())


def pick(photos: dict[str, Image.Image], *names: str) -> list[Image.Image]:
    return [photos[name] for name in names]


def assert_same_tiles(found: Sequence[Box], truth: Sequence[Box]) -> None:
    """Same count, and each true tile matched one-to-one at IoU >= 0.95."""
    assert len(found) == len(truth), (
        [b.as_list() for b in found],
        [b.as_list() for b in truth],
    )
    unused = list(found)
    for box in truth:
        best = max(unused, key=box.iou)
        assert box.iou(best) >= MATCH_IOU, (box.as_list(), best.as_list())
        unused.remove(best)


def split(collage: Collage, **kwargs) -> tuple:
    result = split_image(np.asarray(collage.image), **kwargs)
    return result, collage.boxes


# --- layout kinds ---------------------------------------------------------------------------------


def test_grid_with_thin_gutters_and_outer_margin(photos) -> None:
    names = (
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "china",
        "flower",
        "camera",
        "coins",
        "moon",
    )
    collage = compose_collage(
        pick(photos, *names), grid_layout(3, 3), (1500, 1200), 6, 24, (255, 255, 255), seed=1
    )
    result, truth = split(degrade(collage, 0.8, 70, seed=1))
    assert_same_tiles(result.boxes, truth)
    assert result.kind == "grid 3x3"
    assert result.decided_by == "auto"
    assert {cut.source for cut in result.cuts} == {"gutter"}


def test_borderless_grid(photos) -> None:
    names = ("astronaut", "hubble_deep_field", "coffee", "china")
    collage = compose_collage(pick(photos, *names), grid_layout(2, 2), (1400, 1000), seed=2)
    result, truth = split(degrade(collage, 0.9, 80, seed=2))
    assert_same_tiles(result.boxes, truth)
    assert result.kind == "grid 2x2"
    assert {cut.source for cut in result.cuts} == {"seam"}


def test_borderless_phone_stack_with_different_heights(photos) -> None:
    names = ("chelsea", "rocket", "flower", "coins", "astronaut")
    layout = stack_layout((0.8, 1.3, 0.6, 1.0, 0.7))
    collage = compose_collage(pick(photos, *names), layout, (700, 2400), seed=3)
    result, truth = split(degrade(collage, 0.66, 75, seed=3))
    assert_same_tiles(result.boxes, truth)
    assert result.kind == "stack 5"


def test_irregular_big_photo_beside_a_column(photos) -> None:
    names = ("coffee", "china", "camera", "astronaut")
    collage = compose_collage(
        pick(photos, *names), big_beside_column(3), (1500, 1000), 10, 0, (20, 20, 20), seed=4
    )
    result, truth = split(degrade(collage, 1.0, 85, seed=4))
    assert_same_tiles(result.boxes, truth)
    assert result.kind == "irregular"


def test_borderless_rows_with_different_column_counts(photos) -> None:
    names = ("rocket", "coffee", "chelsea", "china", "hubble_deep_field")
    collage = compose_collage(pick(photos, *names), rows_layout((2, 3)), (1500, 1000), seed=5)
    result, truth = split(degrade(collage, 0.8, 80, seed=5))
    assert_same_tiles(result.boxes, truth)
    assert result.kind == "irregular"


def _row_of_three_over_two_rows(photos: dict[str, Image.Image]) -> Collage:
    """Three photos side by side (a row far too long for one photo) over a row of one and a
    row of two, with thin magenta gutters."""
    names = ("coffee", "rocket", "grass", "coins", "chelsea", "brick")
    layout = rows_layout((3, 1, 2), row_heights=(0.23, 0.34, 0.43))
    collage = compose_collage(pick(photos, *names), layout, (1782, 1188), 8, 0, (216, 54, 248))
    return degrade(collage, 1.0, 85, seed=6)


def test_a_row_of_photos_longer_than_any_one_photo_is_cut_across(photos, monkeypatch) -> None:
    """Three photos side by side over two rows of others: their row, cut off by a gutter, is
    far too long for one photo, and the whole collage was taken for one photo. A row too long
    for a photo is a piece when it is cut across in turn."""
    collage = _row_of_three_over_two_rows(photos)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)
    monkeypatch.setattr(split_module._Splitter, "_cut_across", lambda *args: False)
    result, truth = split(collage)
    assert len(result.boxes) < len(truth)


def test_smooth_photos_between_gutters_are_photos_not_blank_strips(photos) -> None:
    """Small photos blown up to fill their tiles (thumbnails of portraits, mostly) have no fine
    detail; the blank-piece rule took them for painted walls and the collage for one photo.
    Their detail at a coarser scale (a face's features, a cat's stripes) tells them apart."""
    thumbnails = []
    for name in ("astronaut", "chelsea", "coffee"):
        thumbnail = photos[name].convert("RGB")
        thumbnail.thumbnail((64, 64), Image.Resampling.BOX)
        thumbnails.append(thumbnail)
    collage = compose_collage(thumbnails, grid_layout(1, 3), (1500, 600), 8, 0, (40, 40, 40), 3)
    result, truth = split(degrade(collage, 0.9, 85, seed=3))
    assert_same_tiles(result.boxes, truth)
    fine_detail_only = SplitConfig(blank_coarse_fraction=1.01)
    result, truth = split(degrade(collage, 0.9, 85, seed=3), config=fine_detail_only)
    assert len(result.boxes) == 1


def test_a_cloudy_sky_over_a_doubtful_horizon_is_still_blank(photos) -> None:
    """Clouds give a sky coarse detail too: beside a seam the scorer doubts (a horizon, 0.88),
    only fine detail makes a piece a photo. Were the seam a sure one, coarse detail would do."""
    image = np.asarray(random_case("single edges", list(photos.values()), 15000039).image)
    assert len(split_image(image).boxes) == 1
    horizon_sure = SplitConfig(confident_seam_score=0.85, blank_fraction_confident=0.04)
    assert len(split_image(image, horizon_sure).boxes) == 2
    coarse_off = replace(horizon_sure, blank_coarse_fraction=1.01)
    assert len(split_image(image, coarse_off).boxes) == 1


def test_the_row_look_ahead_leaves_no_judgement_behind(photos, monkeypatch) -> None:
    """Asking whether a too-long piece would be cut across takes no decision: the piece may
    never exist. Every band is made to pass for a painted bar, so the look-ahead judges some;
    none of its judgements, nor a refusal margin, may outlive it."""
    collage = _row_of_three_over_two_rows(photos)
    image = np.ascontiguousarray(np.asarray(collage.image))
    judged: list[tuple[str, int, int]] = []

    def painted(self, name, start, end, colour):
        judged.append((name, start, end))
        return split_module._SceneBar(start, end, colour, True)

    monkeypatch.setattr(split_module._Splitter, "_scene_bar", painted)
    splitter = split_module._Splitter(image, split_module.DEFAULT_CONFIG, ())
    whole = Box(0, 0, *collage.image.size)
    top_row_end = round(collage.boxes[0].y1 * splitter.axes["h"].scale)
    assert splitter._cut_across("h", whole, 0, top_row_end, 3)
    assert judged, "the look-ahead judged no band: the test shows nothing"
    assert splitter.scene_bars == {"h": [], "v": []}
    assert splitter.decisions.margins == [] and splitter.decisions.cuts == []


def test_photo_in_a_uniform_frame_is_one_tile_without_the_frame(photos) -> None:
    collage = framed_single(photos["china"], (1200, 900), (40, 30, 40, 90), (250, 250, 245), seed=6)
    result, truth = split(degrade(collage, 0.9, 80, seed=6))
    assert_same_tiles(result.boxes, truth)
    assert result.kind == "single"
    assert result.boxes[0] != Box(0, 0, *collage.image.size)


@pytest.mark.parametrize(
    ("scene", "photo", "seed"),
    [
        (horizon_scene, "coins", 11),
        (horizon_scene, "gravel", 12),
        (door_scene, "motorcycle_left", 13),
        (door_scene, "china", 14),
        (window_scene, "china", 15),
        (window_scene, "coffee", 16),
    ],
)
def test_single_scenes_with_strong_straight_edges_are_not_cut(photos, scene, photo, seed) -> None:
    collage = scene(photos[photo], (1400, 1000), seed=seed)
    result, _ = split(degrade(collage, 0.9, 80, seed=seed))
    assert len(result.boxes) == 1, [b.as_list() for b in result.boxes]
    assert result.boxes[0].iou(Box(0, 0, 1260, 900)) >= MATCH_IOU


@pytest.mark.parametrize("name", ["camera", "rocket", "brick", "page", "coffee", "astronaut"])
def test_real_photos_with_straight_lines_stay_whole(photos, name) -> None:
    image = np.asarray(photos[name].convert("RGB").resize((1024, 1024)))
    result = split_image(image)
    assert [b.as_list() for b in result.boxes] == [[0, 0, 1024, 1024]]
    assert result.kind == "single"


def _window_cross(photo: np.ndarray, bar: int, colour: tuple[int, int, int]) -> np.ndarray:
    """A flat cross of bars over the middle of one picture, like a window close-up."""
    image = photo.copy()
    height, width = image.shape[:2]
    image[height // 2 - bar // 2 : height // 2 + bar - bar // 2] = colour
    image[:, width // 2 - bar // 2 : width // 2 + bar - bar // 2] = colour
    return image


def test_a_flat_cross_over_one_scene_is_a_window_but_over_four_photos_gutters(photos) -> None:
    size = (1200, 900)
    scene = np.asarray(photos["motorcycle_left"].convert("RGB").resize(size))
    window = _window_cross(scene, 14, (30, 30, 32))
    assert len(split_image(window).boxes) == 1
    # The bridged-step test is what keeps it whole: without it the bars are taken as gutters.
    no_bridge = SplitConfig(gutter_bridged_step=-100.0, gutter_continuity=2.0)
    assert len(split_image(window, no_bridge).boxes) == 4
    quarters = [
        np.asarray(photos[name].convert("RGB").resize((600, 450)))
        for name in ("coffee", "chelsea", "rocket", "coins")
    ]
    four = np.vstack([np.hstack(quarters[:2]), np.hstack(quarters[2:])])
    assert len(split_image(_window_cross(four, 14, (30, 30, 32))).boxes) == 4


def test_a_smooth_photo_between_flat_gutters_is_still_a_photo(photos) -> None:
    """The moon, a clear sky: almost no detail, but flat gutters frame it as a photo."""
    width, height = 600, 800
    sky = np.linspace([90, 140, 220], [180, 210, 250], height).astype(np.uint8)
    smooth = Image.fromarray(np.repeat(sky[:, None, :], width, axis=1))
    tiles = [smooth, *pick(photos, "coffee", "camera")]
    collage = compose_collage(tiles, grid_layout(1, 3), (1800, 800), 12, 0, (255, 255, 255), seed=3)
    result, truth = split(degrade(collage, 0.8, 85, seed=3))
    assert_same_tiles(result.boxes, truth)


def test_a_painted_wall_at_the_edge_is_not_trimmed_like_a_frame(photos) -> None:
    """A flat-ish band at the border that is not digitally flat (shading) is content."""
    width, height = 1200, 900
    rng = np.random.default_rng(5)
    image = np.asarray(photos["china"].convert("RGB").resize((width, height))).copy()
    # Light falling off along the wall: a frame is flat along its length, a wall is not.
    light = 1.0 + 0.015 * np.sin(np.linspace(0, 2 * np.pi, height))[:, None, None]
    wall = np.array([200.0, 180.0, 150.0]) * light + rng.normal(0, 2.5, (height, 150, 3))
    image[:, :150] = np.clip(wall, 0, 255).astype(np.uint8)
    shade = np.linspace(0.8, 1.15, height)[:, None, None]
    post = np.array([120.0, 80.0, 50.0]) * shade + rng.normal(0, 3.0, (height, 20, 3))
    image[:, 150:170] = np.clip(post, 0, 255).astype(np.uint8)  # a painted door post
    assert split_image(image).boxes == (Box(0, 0, width, height),)
    assert split_image(image, SplitConfig(margin_max_std=100.0)).boxes != (
        Box(0, 0, width, height),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_borderless_stack_of_two_textures_in_one_palette(photos, seed) -> None:
    """Gravel over grass: no step stands out of the texture, the texture itself changes."""
    tiles = pick(photos, "gravel", "grass")
    collage = compose_collage(tiles, stack_layout((1.0, 1.0)), (500, 1000), 0, 0, (0, 0, 0), seed)
    result, truth = split(degrade(collage, 0.9, 85, seed=seed))
    assert_same_tiles(result.boxes, truth)


@pytest.mark.parametrize("seed", [17, 200005, 200007])
def test_long_borderless_phone_stacks_of_textures(photos, seed) -> None:
    """Eight photos stacked in a strip ten times taller than wide (gravel over bricks, cells
    over a page of text): analysed on a copy whose shorter side keeps its texture."""
    collage = random_case("stack borderless", list(photos.values()), seed)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)


def test_narrow_images_are_analysed_finer_than_their_longer_side_alone_allows(photos) -> None:
    config = SplitConfig()
    assert split_module._analysis_factor(1200, 1600, config) == (0.5, 1.0)  # longer side to 800
    factor, fineness = split_module._analysis_factor(2000, 250, config)
    assert factor == 1.0 and fineness == 2.5  # shorter side kept (and under 300 px)
    factor, fineness = split_module._analysis_factor(8000, 1000, config)
    assert factor == pytest.approx(np.sqrt(640_000 / 8_000_000))  # pixel budget
    assert fineness > 1.0
    # The long strip's seams are what the finer copy is for (test above): at the longer
    # side's scale alone the texture of each photo is averaged away and a seam is missed.
    collage = random_case("stack borderless", list(photos.values()), 200005)
    coarse = split_image(np.asarray(collage.image), SplitConfig(analysis_min_side=0))
    assert len(coarse.boxes) < len(collage.boxes)


def test_a_dark_window_cross_over_a_page_of_text_is_one_photo(photos) -> None:
    """The horizontal bar is plainly over one scene; the vertical one, of the same colour and
    thickness, is its crossing bar and no gutter, although the text beside it differs."""
    case = random_case("single edges", list(photos.values()), 15)
    assert len(split_image(np.asarray(case.image)).boxes) == 1


@pytest.mark.parametrize("seed", [0, 2])
def test_a_four_by_four_gutter_grid_whose_rows_line_up_across_the_gutters(photos, seed) -> None:
    """Rows either side of a gutter cross the same perpendicular gutters, so their detail
    correlates as if the scene went on; the sides plainly differ, so it is a gutter."""
    names = [name for name, _ in sample_photos()][:16]
    collage = compose_collage(
        pick(photos, *names), grid_layout(4, 4), (1650, 1580), 18, 7, (250, 250, 250), seed=seed
    )
    degraded = degrade(collage, 0.9, 80, seed=seed)
    result, truth = split(degraded)
    assert_same_tiles(result.boxes, truth)
    continuity_alone = SplitConfig(gutter_distinct_step=100.0)
    assert len(split_image(np.asarray(degraded.image), continuity_alone).boxes) < 16


def test_a_gradient_sky_over_gravel_is_one_photo(photos) -> None:
    """The sky's last flat band above the horizon is no gutter: its upper edge is the sky."""
    case = random_case("single edges", list(photos.values()), 400018)
    assert len(split_image(np.asarray(case.image)).boxes) == 1


def test_a_window_cross_whose_bar_is_shaded_along_its_length_is_one_photo(
    photos, monkeypatch
) -> None:
    """Shading keeps the horizontal bar from being a flat band across the whole photo; seen
    as a bar once its shading is set aside, it vetoes its flat crossing bar as a gutter."""
    image = np.asarray(random_case("single edges", list(photos.values()), 400041).image)
    assert len(split_image(image, UNLIT).boxes) == 1
    monkeypatch.setattr(split_module._Splitter, "_shaded_bars", lambda self, name, region: ([], []))
    assert len(split_image(image, UNLIT).boxes) == 2


@pytest.mark.parametrize("seed", [400025, 3800004])
def test_a_door_with_two_posts_between_blank_walls_is_one_photo(photos, monkeypatch, seed) -> None:
    """Two dark posts of one colour and thickness: the one beside a blank or too thin strip of
    wall can be no gutter, so neither is its twin, however a gutter the other looks."""
    image = np.asarray(random_case("single edges", list(photos.values()), seed).image)
    assert len(split_image(image, UNLIT).boxes) == 1
    monkeypatch.setattr(split_module, "_same_band", lambda line, other, config: False)
    assert len(split_image(image, UNLIT).boxes) == 2


@pytest.mark.parametrize(
    ("scene", "photo", "seed", "pieces_unless_lit"),
    [
        (window_scene, "coins", 12, 4),
        (window_scene, "page", 8, 4),
        (window_scene, "chelsea", 11, 4),
        (door_scene, "motorcycle_left", 19, 2),
    ],
)
def test_bars_lit_steadily_along_their_length_are_painted_not_gutters(
    photos, scene, photo, seed, pieces_unless_lit
) -> None:
    """A window's bars or a door's posts, flat enough to pass for an app's gutters, but
    brightening from one end to the other; without that test (nor the one for bars shaded
    across, which the door's posts are too) they are cut as gutters."""
    collage = degrade(scene(photos[photo], (1000, 750), seed=seed), 0.9, 80, seed=seed)
    image = np.asarray(collage.image)
    assert len(split_image(image).boxes) == 1
    unlit = replace(UNLIT, rounded_bar_drift=np.inf)
    assert len(split_image(image, unlit).boxes) == pieces_unless_lit


def test_the_edges_of_a_painted_bar_are_no_seams(photos, monkeypatch) -> None:
    """Coins behind a dark window cross: once the bars are known to be painted, the seam
    scorer would still cut along their edges, where the coins stop. (A bar's two edges also
    find each other as one object's: a second route, closed here by a narrower object.)"""
    image = np.asarray(random_case("single edges", list(photos.values()), 4100014).image)
    assert len(split_image(image).boxes) == 1
    narrow_objects = SplitConfig(object_max_fraction=0.045)
    assert len(split_image(image, narrow_objects).boxes) == 1
    monkeypatch.setattr(split_module._Splitter, "_at_painted_bar", lambda self, name, line: False)
    assert len(split_image(image, narrow_objects).boxes) > 1


@pytest.mark.parametrize(("family", "seed"), [("stack", 4300016), ("grid", 4200036)])
def test_a_gutter_between_two_alike_photos_is_cut_among_its_like(
    photos, monkeypatch, family, seed
) -> None:
    """Two photos alike across a gutter (gravel over coins) look like one scene behind a bar;
    with two gutters of its colour and thickness found beside it, or cut before it, it is one
    of them. (The 4x4 grid's rows, too long for a photo, are now cut first, across which the
    bar is no longer judged alone: that route is closed here.)"""
    collage = random_case(family, list(photos.values()), seed)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)
    monkeypatch.setattr(split_module, "_same_band", lambda line, other, config: False)
    monkeypatch.setattr(split_module._Splitter, "_cut_across", lambda *args: False)
    result, _ = split(collage)
    assert len(result.boxes) < len(truth)


def test_a_light_bar_lit_across_too_is_painted_up_to_its_far_edge(photos, monkeypatch) -> None:
    """A light window bar, rounded: light across it shifts its colour from edge to edge, so
    the flat band found is only its brighter half. Its far edge is no seam either."""
    image = np.asarray(random_case("single edges", list(photos.values()), 4400018).image)
    assert len(split_image(image).boxes) == 1
    monkeypatch.setattr(
        split_module._Splitter,
        "_smooth_extent",
        lambda self, name, start, end, region: (start, end),
    )
    assert len(split_image(image).boxes) > 1


@pytest.mark.parametrize("seed", [4100001, 5400012])
def test_a_light_window_cross_lit_steeply_along_is_one_photo(photos, seed) -> None:
    """Light bars in the sun vary along a row by more than a shaded bar may (std 12-30): no
    band at all, so only their edges showed, and were cut as seams."""
    image = np.asarray(random_case("single edges", list(photos.values()), seed).image)
    assert len(split_image(image).boxes) == 1
    assert len(split_image(image, SplitConfig(lit_bar_max_std=12.0)).boxes) > 1


def test_a_lit_bar_crossing_a_painted_one_is_painted_too(photos, monkeypatch) -> None:
    """A light window's upright bar between a dark suit and the sky: the scene does not
    visibly go on behind it, but the bar it crosses tells what it is (painted, and lit like
    it: either says so)."""
    image = np.asarray(random_case("single edges", list(photos.values()), 5800029).image)
    assert len(split_image(image).boxes) == 1
    monkeypatch.setattr(split_module._Splitter, "_crosses_painted_bar", lambda self, *a: False)
    monkeypatch.setattr(
        split_module._Splitter, "_crosses_lit_band", lambda self, bar, crossing: False
    )
    assert len(split_image(image).boxes) > 1


def test_crosses_painted_bar_matches_the_other_directions_painted_bars_loosely() -> None:
    splitter = split_module._Splitter(np.zeros((200, 200, 3), np.uint8), SplitConfig(), ())
    colour = np.array([200.0, 200.0, 190.0])
    splitter.scene_bars["v"].append(split_module._SceneBar(90, 100, colour, True))
    assert splitter._crosses_painted_bar("h", 50, 59, colour + 15.0)  # light differs along
    assert not splitter._crosses_painted_bar("h", 50, 59, colour - 120.0)
    assert not splitter._crosses_painted_bar("h", 50, 80, colour)  # three times as thick
    assert not splitter._crosses_painted_bar("v", 50, 59, colour)  # no bar across v


def test_a_page_of_text_lit_steeply_has_no_painted_bars(photos) -> None:
    """Between lines of text on an unevenly lit page, the blank strips are lit along like
    bars; more of them than a window has bars are a page, and the stack's gutters stay."""
    collage = random_case("stack", list(photos.values()), 3900002)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)


def test_more_lit_bars_than_a_window_has_are_no_bars() -> None:
    """Three blank strips lit steeply along, between rows of texture: a page's blank lines,
    not a window's bars; none is recorded as painted (it would hide a gutter of its kind)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (300, 400, 3)).astype(np.float32)
    for top in (60, 140, 220):
        image[top : top + 7] = np.linspace(150, 245, 400)[None, :, None]
    image = np.clip(image + rng.normal(0.0, 1.0, image.shape), 0, 255).astype(np.uint8)
    painted = []
    for config in (SplitConfig(), SplitConfig(lit_bars_max=100)):
        splitter = split_module._Splitter(image, config, ())
        splitter._shaded_bars("h", Box(0, 0, 400, 300))
        painted.append(len(splitter.scene_bars["h"]))
    assert painted == [0, 3]


@pytest.mark.parametrize("seed", [6300005, 6400016])
def test_a_frame_is_trimmed_evenly_where_the_photo_runs_into_its_colour(
    photos, monkeypatch, seed
) -> None:
    """A black frame below a black helmet, a grey one beside a grey page: no step shows
    between photo and frame there, but the frame is as thick as on the opposite side."""
    collage = random_case("framed single", list(photos.values()), seed)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)
    monkeypatch.setattr(
        split_module._Splitter, "_even_frame", lambda self, name, outer, f0, f1, *rest: (f0, f1)
    )
    result, _ = split(collage)
    assert result.boxes[0].iou(truth[0]) < 0.95


def test_a_frame_trimmed_in_one_direction_is_trimmed_in_the_other_too(photos, monkeypatch) -> None:
    """A frame seen above and below a photo whose left and right edges run into its colour:
    as many columns of it on both sides are frame too."""
    collage = random_case("framed single", list(photos.values()), 6600017)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)
    monkeypatch.setattr(
        split_module._Splitter, "_frame_all_round", lambda self, outer, region: region
    )
    result, _ = split(collage)
    assert result.boxes[0].iou(truth[0]) < 0.95


def test_a_pole_shaded_across_is_no_gutter(photos) -> None:
    """A tripod's leg standing straight through a framed photo of grass: flat along its
    length, but darkening steadily from one edge to the other, as no app's gutter does."""
    image = np.asarray(random_case("framed single", list(photos.values()), 500002).image)
    assert len(split_image(image).boxes) == 1
    # The leg's flat band, columns 116-121 of the analysis image (rows 79-371 inside the
    # frame); the rest of the leg is painted too, lit along (see the tests above).
    splitter = split_module._Splitter(image, SplitConfig(), ())
    assert splitter._rounded("v", 116, 121, 79, 371)


@pytest.mark.parametrize("seed", [10600043, 10800034])
def test_a_close_up_door_post_beside_its_flat_twin_is_painted(photos, monkeypatch, seed) -> None:
    """Close-up door posts, 5 % of the height thick: more than a window's bar may be, so the
    lit one was taken for a smooth strip of a photo, and its flat twin was cut as a gutter.
    Beside a flat band of its colour and thickness it is a post. In 10800034 the lit post
    has one flat row, which once made it a plain band."""
    image = np.asarray(random_case("single edges", list(photos.values()), seed).image)
    assert len(split_image(image).boxes) == 1
    monkeypatch.setattr(split_module._Splitter, "_painted_bar", lambda self, *args: False)
    assert len(split_image(image).boxes) == 2


def test_a_door_post_lit_along_makes_its_twin_no_gutter(photos, monkeypatch) -> None:
    """Two brown posts between a smooth wall and a photo of grass: the lit one is too uneven
    for a band, the other passes for a flat gutter. The lit one, painted, vetoes its twin."""
    image = np.asarray(random_case("single edges", list(photos.values()), 6600041).image)
    assert len(split_image(image).boxes) == 1
    # As before: a shaded bar not over one scene was left unjudged.
    monkeypatch.setattr(split_module._Splitter, "_over_one_scene", lambda self, *args: True)
    assert len(split_image(image).boxes) == 2


def test_a_thin_band_at_a_post_edge_is_no_gutter(photos) -> None:
    """The blended last column of a door post is a band one column wide; the seam evidence
    of its far edge (post against view) once counted for its near edge too (see the next
    test; the post, lit along, is now found painted as well)."""
    image = np.asarray(random_case("single edges", list(photos.values()), 7500031).image)
    assert len(split_image(image).boxes) == 1


@pytest.mark.parametrize("seed", [12400020, 12200007])
def test_the_blended_edge_of_a_door_post_is_no_gutter(photos, seed) -> None:
    """Resizing smears the edge between a smooth wall and a flat door post into one column
    of their mixed colour, flat along its length and unlike both sides: it passed for a thin
    gutter, and the wall beside it, framed by it, for a photo."""
    image = np.asarray(random_case("single edges", list(photos.values()), seed).image)
    assert len(split_image(image).boxes) == 1
    unchecked = SplitConfig(blend_share_range=(2.0, 2.0))
    assert len(split_image(image, unchecked).boxes) == 2


def test_a_blend_of_the_rows_beside_it_is_no_gutter_but_a_colour_of_its_own_is() -> None:
    wall, post = np.array([200.0, 120.0, 150.0]), np.array([110.0, 70.0, 30.0])
    rng = np.random.default_rng(0)
    image = np.zeros((9, 50, 3))
    image[:4], image[5:] = wall, post
    image += rng.normal(0.0, 1.0, image.shape)
    image[4] = 0.4 * wall + 0.6 * post
    assert split_module._blend_of_sides(image, 4, 5, 0, 50, SplitConfig())
    image[4] = 250.0  # a white gutter a row thick
    assert not split_module._blend_of_sides(image, 4, 5, 0, 50, SplitConfig())
    image[4] = 0.95 * wall + 0.05 * post  # the wall's own last row: no blend to speak of
    assert not split_module._blend_of_sides(image, 4, 5, 0, 50, SplitConfig())


def test_edge_evidence_of_a_thin_band_comes_from_its_own_side() -> None:
    """Evidence at row r compares rows r-1 and r+1: for a one-row band at row 10 the row
    whose step spans both edges (10) belongs to neither."""
    (lo, hi), (lo2, hi2) = split_module._edge_evidence_rows(10, 11, 100)
    assert (lo, hi) == (8, 10)
    assert (lo2, hi2) == (11, 13)
    thick = split_module._edge_evidence_rows(10, 20, 100)
    assert thick == ((8, 13), (17, 22))


def test_a_dark_window_cross_with_blended_edges_is_one_photo(photos, monkeypatch) -> None:
    """A flat dark cross over a motorcycle: the upright bar's blended edge column varies along
    it like a bar lit in the sun; only its inner columns tell how it is lit. (Taken for lit,
    it is also found crossing its lit-looking twin: that second route is closed here.)"""
    image = np.asarray(random_case("single edges", list(photos.values()), 5100031).image)
    assert len(split_image(image).boxes) == 1
    monkeypatch.setattr(
        split_module._Splitter, "_crosses_lit_band", lambda self, bar, crossing: False
    )
    assert len(split_image(image).boxes) == 1
    monkeypatch.setattr(split_module, "_inner_rows", lambda start, end: (start, end))
    assert len(split_image(image).boxes) > 1


def test_poles_across_a_horizon_are_one_scene(photos, monkeypatch) -> None:
    """Trees standing in front of a horizon: their trunks go on across it. A trunk's blur
    halo along the line is no neighbour to compare it with; counted as one, two trunks of
    three were missed."""
    image = np.asarray(random_case("single edges", list(photos.values()), 7800028).image)
    assert len(split_image(image).boxes) == 1
    splitter = split_module._Splitter(image, SplitConfig(), ())
    axis = splitter.axes["h"]
    horizon = 254  # analysis rows: where the seam scorer judges the horizon

    def trunks() -> int:
        return len(splitter._crossing_objects(axis, horizon, 0, axis.img.shape[1]))

    assert trunks() == 3
    monkeypatch.setattr(split_module, "_thin_crossings", lambda *args: [])
    assert trunks() == 2  # the third is a pixel wide once downscaled
    stands_out = split_module._stands_out
    monkeypatch.setattr(
        split_module,
        "_stands_out",
        lambda strip, g0, g1, context, step, gap=0: stands_out(strip, g0, g1, context, step),
    )
    assert trunks() == 1


def test_thin_trunks_across_a_horizon_are_one_scene(photos, monkeypatch) -> None:
    """Three trunks a few pixels wide cross a dead-straight horizon: once downscaled and
    blurred along the line none keeps its own colour, and the horizon was cut."""
    image = np.asarray(random_case("single edges", list(photos.values()), 10900036).image)
    assert len(split_image(image).boxes) == 1
    monkeypatch.setattr(split_module, "_thin_crossings", lambda *args: [])
    assert len(split_image(image).boxes) == 2


def test_two_lit_bars_crossing_are_a_window(photos, monkeypatch) -> None:
    """A light window cross over a pagoda, lit in the sun: the upright bar's light jumps a
    little too much along it to be judged alone, and the cross bar's edge was cut as a seam.
    Two lit bars alike in colour and thickness, crossing, are a window's."""
    image = np.asarray(random_case("single edges", list(photos.values()), 13100024).image)
    assert len(split_image(image).boxes) == 1
    monkeypatch.setattr(
        split_module._Splitter, "_crosses_lit_band", lambda self, bar, crossing: False
    )
    assert len(split_image(image).boxes) == 2


def test_three_objects_across_a_line_veto_it(photos) -> None:
    """Three poles stand across a horizon over a tissue photo; everything else about the
    horizon looks like a seam, and the scorer alone took it. (They also go on far on both
    sides, a second veto, switched off here too.)"""
    image = np.asarray(random_case("single edges", list(photos.values()), 12300032).image)
    assert len(split_image(image).boxes) == 1
    assert len(split_image(image, SplitConfig(long_crossing_reach=10**6)).boxes) == 1
    vetoes_off = SplitConfig(crossing_objects=99, long_crossing_reach=10**6)
    assert len(split_image(image, vetoes_off).boxes) == 2


def test_two_long_trunks_across_a_horizon_veto_it(photos) -> None:
    """Two trunks cross a horizon over a lake; the scorer gave the horizon 0.96 and two
    crossing objects alone are too few to veto a line (photos' details line up by chance at
    seams). These two go on far above and below it."""
    image = np.asarray(random_case("single edges", list(photos.values()), 12300030).image)
    assert len(split_image(image).boxes) == 1
    assert len(split_image(image, SplitConfig(long_crossing_reach=10**6)).boxes) == 2


def test_details_lining_up_at_a_seam_by_chance_do_not_veto_it(photos) -> None:
    """Two photos of a borderless stack whose details meet at the seam in two places: those
    stop within a few rows, and the seam is cut."""
    collage = random_case("stack borderless", list(photos.values()), 12700013)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)
    result, truth = split(collage, config=SplitConfig(long_crossing_reach=4))
    assert len(result.boxes) < len(truth)


def test_both_edges_of_a_wide_door_post_find_each_other(photos) -> None:
    """A door post 33 analysis rows wide beside a photo of a flower: its inner edge peaks a row
    off the candidate line, which put its outer edge just past the closest lines that count as
    near, so the inner edge had no partner and was cut as a seam."""
    image = np.asarray(random_case("single edges", list(photos.values()), 11700030).image)
    assert len(split_image(image).boxes) == 1
    splitter = split_module._Splitter(image, SplitConfig(), ())
    region = Box(0, 0, image.shape[1], image.shape[0])
    a0, a1, b0, b1 = splitter._analysis_region("v", region)
    candidates = splitter._seam_candidates("v", region, a0, a1, b0, b1, [])
    verdicts = {candidate.row: candidate.verdict for candidate in candidates}
    post_edges = [row for row in verdicts if 80 <= row <= 125]
    assert len(post_edges) == 2
    assert all(str(verdicts[row]).startswith("object strip") for row in post_edges)


def _pole_across_a_horizon(pole_rows: tuple[int, int], gap_rows: int = 0) -> bool:
    """Does a dark pole, standing over rows pole_rows of a 300-row sky-over-ground scene, go
    on from the horizon (row 150) far enough on both sides? ``gap_rows``: rows of it hidden
    below the horizon (behind a leaf)."""
    image = np.zeros((300, 300, 3), np.uint8)
    image[:150], image[150:] = (180, 200, 240), (90, 110, 60)
    image[pole_rows[0] : pole_rows[1], 140:146] = (40, 30, 20)
    image[170 : 170 + gap_rows, 140:146] = (90, 110, 60)
    splitter = split_module._Splitter(image, SplitConfig(), ())
    axis = splitter.axes["h"]
    row = round(150 * axis.scale)
    length = axis.img.shape[1]
    (span,) = splitter._crossing_objects(axis, row, 0, length)
    return splitter._goes_on(axis, row, 0, axis.img.shape[0], 0, length, span)


def test_a_crossing_object_goes_on_only_if_it_stands_out_far_on_both_sides() -> None:
    assert _pole_across_a_horizon((20, 280))
    assert _pole_across_a_horizon((20, 280), gap_rows=4)  # a leaf is no end
    assert not _pole_across_a_horizon((20, 280), gap_rows=12)
    assert not _pole_across_a_horizon((20, 180))  # ends 30 rows below the horizon
    assert not _pole_across_a_horizon((120, 280))


def test_a_thin_pole_blurred_into_sky_and_ground_crosses_the_horizon() -> None:
    """Two pixels of dark pole, blurred along the line by a 5-pixel box, are mostly sky above
    the horizon and mostly ground below it: their colours differ across it, but only as much
    as the background does, times its share of the blend."""
    sky, ground, pole = np.array([200.0, 210.0, 250.0]), np.array([120.0, 120.0, 120.0]), 30.0
    above, below = np.tile(sky, (60, 1)), np.tile(ground, (60, 1))
    above[30:32] = below[30:32] = pole
    kernel = np.ones(5) / 5
    blur = lambda strip: np.stack(  # noqa: E731
        [np.convolve(strip[:, c], kernel, mode="same") for c in range(3)], axis=1
    )
    above, below = blur(above), blur(below)
    steady = np.ones(60, bool)
    assert np.abs(above[30] - below[30]).sum() > SplitConfig().seam_step  # no colour goes on
    found = split_module._thin_crossings(above, below, steady, 2, SplitConfig())
    assert len(found) == 1 and found[0][0] <= 31 <= found[0][1]
    # Two photos side by side: a dark spot above, a light one below, at the same place.
    below[28:34] = np.array([250.0, 250.0, 250.0])
    assert split_module._thin_crossings(above, below, steady, 2, SplitConfig()) == []


@pytest.mark.parametrize(
    ("above", "below", "width", "crosses"),
    [(110.0, 65.0, 3, True), (230.0, 185.0, 3, False), (110.0, 65.0, 1, False)],
)
def test_a_thin_crossing_is_a_blend_of_a_real_colour(above, below, width, crosses) -> None:
    """Backgrounds 100 above and 40 below; the spot changes across the line by 3/4 of that
    change: a blend of 1/4 object, whose own colour is 140 in the first case and 620 (no
    colour at all) in the second. A lone pixel is no blurred object but a chance alignment."""
    above_strip, below_strip = np.full((40, 3), 100.0), np.full((40, 3), 40.0)
    above_strip[19 : 19 + width], below_strip[19 : 19 + width] = above, below
    steady = np.ones(40, bool)
    found = split_module._thin_crossings(above_strip, below_strip, steady, 2, SplitConfig())
    assert bool(found) == crosses


def test_stands_out_looks_past_a_blur_halo() -> None:
    line = np.full((40, 3), 200.0)
    line[18:22] = 20.0  # a dark trunk, blurred along the line by a 5-pixel box
    blurred = np.convolve(line[:, 0], np.ones(5) / 5, mode="same")[:, None].repeat(3, axis=1)
    g0, g1, context = np.array([19]), np.array([21]), np.array([3])
    assert not split_module._stands_out(blurred, g0, g1, context, 250.0)[0]
    assert split_module._stands_out(blurred, g0, g1, context, 250.0, gap=2)[0]


def test_a_chunk_of_a_gradient_sky_is_no_gutter(photos) -> None:
    """A sky brightening towards the horizon over a coffee cup: one chunk of it is flat along
    its rows and ends at the horizon, and the rows above it differ from its mean colour by a
    clear step. Its brightness ramps across, with noise: no app's gutter does that."""
    image = np.asarray(random_case("single edges", list(photos.values()), 8800038).image)
    assert len(split_image(image).boxes) == 1
    assert len(split_image(image, SplitConfig(rounded_bar_drift=np.inf)).boxes) == 2


def test_rounded_finds_a_noisy_ramp_across_a_band_but_not_a_flat_fill() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (120, 200, 3)).astype(np.float32)
    ramp = np.linspace(140.0, 170.0, 40) + rng.normal(0.0, 1.5, 40)  # not monotonic
    image[40:80] = ramp[:, None, None] + rng.normal(0.0, 0.5, (40, 200, 3))
    image[80:84] = 120.0  # a flat gutter below it
    splitter = split_module._Splitter(image.astype(np.uint8), SplitConfig(), ())
    axis = splitter.axes["h"]
    assert axis.scale == 1.0
    assert np.any(np.diff(ramp[2:-2]) < 0)
    assert splitter._rounded("h", 40, 80, 0, 200)
    assert not splitter._rounded("h", 80, 84, 0, 200)
    flat = image.copy()
    flat[40:80] = 155.0 + rng.normal(0.0, 1.5, (40, 200, 3))
    assert not split_module._Splitter(flat.astype(np.uint8), SplitConfig(), ())._rounded(
        "h", 40, 80, 0, 200
    )


@pytest.mark.parametrize("seed", [9300016, 9200026])
def test_a_band_is_no_gutter_once_a_painted_bar_it_belongs_to_is_found(
    photos, monkeypatch, seed
) -> None:
    """The darker half of a rounded window bar (9300016), a door's flat post (9200026): each
    band was judged before its painted other half, or its lit twin, was recognised."""
    image = np.asarray(random_case("single edges", list(photos.values()), seed).image)
    assert len(split_image(image).boxes) == 1
    monkeypatch.setattr(split_module._Splitter, "_part_of_painted_bar", lambda self, *a: False)
    assert len(split_image(image).boxes) == 2


def test_a_steeply_rounded_bar_is_painted_across_its_whole_thickness(photos) -> None:
    """Light across a light window bar brightens it by ~14 grey levels a row: more than a band
    allows, so the flat band found is half the bar; its rows step no more than the bar's own
    rows do, and the rest of the bar joins it."""
    image = np.asarray(random_case("single edges", list(photos.values()), 8900008).image)
    splitter = split_module._Splitter(image, SplitConfig(), ())
    axis = splitter.axes["h"]
    region = (0, axis.img.shape[0], 0, axis.img.shape[1])
    assert splitter._smooth_extent("h", 212, 216, region) == (209, 216)


def test_a_blank_margin_past_a_thin_line_is_no_painted_bar(photos, monkeypatch) -> None:
    """The white top of a scanned page in a phone stack, lit unevenly, above a thin grey line
    and then white again: no bar, so the seam above it stays."""
    collage = random_case("stack borderless", list(photos.values()), 4400006)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)
    monkeypatch.setattr(split_module._Splitter, "_stands_apart", lambda self, *args: True)
    result, _ = split(collage)
    assert len(result.boxes) < len(truth)


@pytest.mark.parametrize(
    ("family", "seed"), [("stack borderless", 4300002), ("irregular borderless", 500015)]
)
def test_a_smooth_lit_stretch_of_a_photo_is_no_painted_bar(photos, family, seed) -> None:
    """A wide band brightening along the line (a lit wall, a sky) is part of a photo: taken
    for a painted bar, it would hide the seam at its edge."""
    collage = random_case(family, list(photos.values()), seed)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)
    result, _ = split(collage, config=SplitConfig(painted_bar_max_share=1.0))
    assert len(result.boxes) < len(truth)


def _text_lines(height: int, period: int, phase: int = 0) -> np.ndarray:
    """Grey "lines of text": rows of noisy dark glyphs every ``period`` rows on white."""
    rng = np.random.default_rng(period + phase)
    page = np.full((height, 300, 3), 235, np.uint8)
    for top in range(phase, height, period):
        glyphs = rng.integers(20, 235, (min(period // 2, height - top), 300, 1), dtype=np.uint8)
        page[top : top + period // 2] = glyphs
    return page


def test_rhythm_tells_lines_of_one_page_from_two_pages_meeting() -> None:
    """Both sides lined alike; between two lines of one page the rhythm goes on across the
    line, where two pages meet out of step it restarts."""
    one_page = _text_lines(400, 20)
    two_pages = np.concatenate([_text_lines(200, 20), _text_lines(200, 20, phase=9)])
    rhythms = []
    for image in (one_page, two_pages):
        splitter = split_module._Splitter(image, SplitConfig(), ())
        axis = splitter.axes["h"]
        row = round(200 * axis.scale)
        detail = axis.row_stats(0, axis.img.shape[0], 0, axis.img.shape[1])[1]
        rhythms.append(split_module._rhythm(detail, row, SplitConfig()))
    (one_sides, one_across), (two_sides, two_across) = rhythms
    assert one_sides > 0.8 and two_sides > 0.8
    assert one_across > 0.8
    assert two_across < 0.3


def test_autocorrelations_are_the_correlations_at_each_lag() -> None:
    rng = np.random.default_rng(0)
    values = np.sin(np.arange(120) / 3.0) + rng.normal(0.0, 0.3, 120)
    lags = np.arange(5, 60)
    expected = [split_module._correlation(values[:-lag], values[lag:]) for lag in lags]
    np.testing.assert_allclose(split_module._autocorrelations(values, lags), expected, atol=1e-9)
    assert not split_module._autocorrelations(np.ones(30), np.arange(2, 9)).any()


def test_linear_ramp_measures_the_rise_and_the_scatter_about_it() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 0.5, 16)
    rise, scatter = split_module._linear_ramp(np.linspace(30.0, 36.0, 16) + noise)
    assert rise == pytest.approx(6.0, abs=0.6)
    assert scatter == pytest.approx(noise.std(), abs=0.15)
    falling, _ = split_module._linear_ramp(np.linspace(36.0, 30.0, 16))
    assert falling == pytest.approx(6.0)
    assert split_module._linear_ramp(noise)[0] < 1.0


def test_two_textures_in_one_palette_in_a_phone_stack(photos) -> None:
    """Between a cat and the grass below it the step is no larger than the steps within the
    grass; the change of texture is what one split of the column explains best."""
    collage = random_case("stack borderless", list(photos.values()), 100018)
    result, truth = split(collage)
    assert_same_tiles(result.boxes, truth)


def test_split_share_finds_where_one_descriptor_changes_among_louder_ones() -> None:
    rng = np.random.default_rng(0)
    loud = rng.normal(0.0, 1.0, (120, 3))  # varies a lot, tells nothing
    quiet = np.r_[np.zeros(70), np.full(50, 0.3)][:, None] + rng.normal(0.0, 0.05, (120, 1))
    rows = np.concatenate([loud, quiet], axis=1)
    share = split_module._split_share(rows)
    assert abs(int(share.argmax()) - 70) <= 1
    assert share.max() > 0.8
    # Pooled over the descriptors, the loud ones drown the change.
    assert split_module._split_share(rows.sum(axis=1, keepdims=True)).max() < 0.5
    near = split_module._split_share(rows, reach=20)
    assert abs(int(near.argmax()) - 70) <= 1
    assert near[20] < 0.5  # 50 rows from the change: nothing to explain within reach
    assert not split_module._split_share(rows[:3]).any()


def test_a_stack_with_a_coloured_margin_and_jpeg_gutters_at_full_resolution(photos) -> None:
    """A narrow stack analysed at full size still finds its JPEG-noisy margin and gutters."""
    case = random_case("stack", list(photos.values()), 100002)
    result, truth = split(case)
    assert_same_tiles(result.boxes, truth)
    assert {cut.source for cut in result.cuts} == {"gutter"}


# --- faces ----------------------------------------------------------------------------------------


def test_a_cut_through_a_given_face_is_refused(photos) -> None:
    collage = compose_collage(
        pick(photos, "chelsea", "coffee"), stack_layout((1.0, 1.0)), (800, 1200), seed=21
    )
    image = np.asarray(degrade(collage, 1.0, 85, seed=21).image)
    seam_y = collage.boxes[1].y0
    assert len(split_image(image).boxes) == 2  # the seam is found without faces ...
    face = Box(300, seam_y - 80, 460, seam_y + 90)
    result = split_image(image, face_boxes=[face])
    assert len(result.boxes) == 1  # ... and refused through a face
    beside = Box(300, 100, 460, 260)  # a face away from the seam changes nothing
    assert len(split_image(image, face_boxes=[beside]).boxes) == 2


# --- hints ----------------------------------------------------------------------------------------


def test_csv_hints_parse_every_form(tmp_path: Path) -> None:
    path = tmp_path / "split_hints.csv"
    path.write_text(
        "file,split\n"
        "# comment\n"
        "\n"
        "a.jpg,single\n"
        "b.jpg,rows=2 cols=3\n"
        "c.jpg,rows=2,cols=2,gutter=10,margin=20\n"
        "d.jpg,0 0 60 40; 60 0 120 40\n"
        'e.jpg,"0 0 0.5 1; 0.5 0 1 1"\n'
        "sub/f.jpg,cols=2\n",
        encoding="utf-8",
    )
    hints = parse_hints(path)
    assert set(hints) == {"a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "sub/f.jpg"}
    assert apply_hint(hints["a.jpg"], 120, 40).boxes == (Box(0, 0, 120, 40),)
    grid = apply_hint(hints["b.jpg"], 300, 200)
    assert [b.as_list() for b in grid.boxes] == [
        [0, 0, 100, 100],
        [100, 0, 200, 100],
        [200, 0, 300, 100],
        [0, 100, 100, 200],
        [100, 100, 200, 200],
        [200, 100, 300, 200],
    ]
    assert grid.kind == "manual" and grid.decided_by == "manual"
    spaced = apply_hint(hints["c.jpg"], 230, 230)
    assert [b.as_list() for b in spaced.boxes] == [
        [20, 20, 110, 110],
        [120, 20, 210, 110],
        [20, 120, 110, 210],
        [120, 120, 210, 210],
    ]
    assert [b.as_list() for b in apply_hint(hints["d.jpg"], 120, 40).boxes] == [
        [0, 0, 60, 40],
        [60, 0, 120, 40],
    ]
    assert [b.as_list() for b in apply_hint(hints["e.jpg"], 200, 100).boxes] == [
        [0, 0, 100, 100],
        [100, 0, 200, 100],
    ]
    assert hint_for(hints, "f.jpg") is None  # only sub/f.jpg was named
    assert hint_for(hints, "sub/f.jpg") is hints["sub/f.jpg"]
    assert hint_for(hints, "other/a.jpg") is hints["a.jpg"]  # a bare name matches anywhere


def test_yaml_hints(tmp_path: Path) -> None:
    path = tmp_path / "split_hints.yaml"
    path.write_text(
        "a.jpg: single\n"
        "b.jpg: {rows: 1, cols: 2}\n"
        "c.jpg: [[0, 0, 50, 50], [50, 0, 100, 50]]\n"
        "d.jpg: rows=2\n",
        encoding="utf-8",
    )
    hints = parse_hints(path)
    assert len(apply_hint(hints["b.jpg"], 100, 50).boxes) == 2
    assert apply_hint(hints["c.jpg"], 100, 50).boxes == (Box(0, 0, 50, 50), Box(50, 0, 100, 50))
    assert len(apply_hint(hints["d.jpg"], 100, 100).boxes) == 2
    assert find_hints_file(tmp_path) == path


@pytest.mark.parametrize(
    ("suffix", "text", "where"),
    [
        (".csv", "a.jpg,single\nb.jpg,rows=two\n", "split_hints.csv:2"),
        (".csv", "a.jpg,single\n\nb.jpg,0 0 10\n", "split_hints.csv:3"),
        (".csv", "a.jpg,\n", "split_hints.csv:1"),
        (".csv", "a.jpg,single\na.jpg,cols=2\n", "split_hints.csv:2"),
        (".csv", "a.jpg,wide=3\n", "split_hints.csv:1"),
        (".csv", "a.jpg,10 10 5 20\n", "split_hints.csv:1"),
        (".yaml", "a.jpg: single\nb.jpg: {rows: 2, colz: 3}\n", "split_hints.yaml:2"),
        (".yaml", "a.jpg: single\nb.jpg: [[0, 0, 1]]\n", "split_hints.yaml:2"),
        (".yaml", "a.jpg: single\nb.jpg: [unclosed\n", "split_hints.yaml:"),
    ],
)
def test_malformed_hints_name_the_line(tmp_path: Path, suffix, text, where) -> None:
    path = tmp_path / f"split_hints{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=where.replace(".", r"\.")):
        parse_hints(path)


def test_two_hints_files_in_one_album_are_refused(tmp_path: Path) -> None:
    (tmp_path / "split_hints.csv").write_text("a.jpg,single\n")
    (tmp_path / "split_hints.yaml").write_text("a.jpg: single\n")
    with pytest.raises(ValueError, match="keep one"):
        find_hints_file(tmp_path)


def test_hint_box_outside_the_image_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "split_hints.csv"
    path.write_text("a.jpg,500 500 600 600\n")
    with pytest.raises(ValueError, match="outside the 100x100 image"):
        apply_hint(parse_hints(path)["a.jpg"], 100, 100)


# --- CLI ------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, list[dict]]:
    parser = argparse.ArgumentParser()
    add_split_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["split", *argv])
    out = io.StringIO()
    with redirect_stdout(out):
        status = args.handler(args)
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


def test_cli_prints_one_json_line_per_image_with_hints_overriding(photos, tmp_path: Path) -> None:
    collage = compose_collage(
        pick(photos, "coffee", "rocket", "china"),
        stack_layout((1.0, 0.8, 1.2)),
        (600, 1500),
        seed=31,
    )
    stack = tmp_path / "stack.jpg"
    collage.image.save(stack, quality=90)
    single = tmp_path / "hinted.jpg"
    collage.image.save(single, quality=90)
    hints = tmp_path / "split_hints.csv"
    hints.write_text("hinted.jpg,single\n")

    status, lines = run_cli(
        str(stack), str(single), str(tmp_path / "missing.jpg"), "--hints", str(hints)
    )

    assert status == 1  # the missing file
    assert [line["image"] for line in lines] == [
        str(stack),
        str(single),
        str(tmp_path / "missing.jpg"),
    ]
    assert set(lines[0]) == {"image", "tiles", "kind"}
    assert lines[0]["kind"] == "stack 3"
    tiles = [Box(*tile) for tile in lines[0]["tiles"]]
    assert_same_tiles(tiles, collage.boxes)
    assert lines[0]["tiles"] == sorted(lines[0]["tiles"], key=lambda t: (t[1], t[0]))
    assert lines[1] == {"image": str(single), "tiles": [[0, 0, 600, 1500]], "kind": "manual"}
    assert "error" in lines[2]


def test_cli_boxes_are_in_exif_upright_coordinates(photos, tmp_path: Path) -> None:
    collage = compose_collage(
        pick(photos, "astronaut", "china"), stack_layout((1.0, 1.0)), (600, 1000), seed=41
    )
    # Store the upright stack rotated on disk with EXIF orientation 6 ("rotate 90 CW to view").
    stored = collage.image.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=92, exif=exif.tobytes())
    _, lines = run_cli(str(path))
    assert_same_tiles([Box(*tile) for tile in lines[0]["tiles"]], collage.boxes)
    assert lines[0]["kind"] == "stack 2"


# --- small pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("boxes", "kind"),
    [
        ([Box(0, 0, 10, 10)], "single"),
        ([Box(0, 0, 10, 10), Box(0, 10, 10, 30), Box(0, 30, 10, 35)], "stack 3"),
        (
            [Box(0, 0, 10, 10), Box(10, 0, 20, 10), Box(0, 10, 10, 20), Box(10, 10, 20, 20)],
            "grid 2x2",
        ),
        ([Box(0, 0, 10, 10), Box(10, 0, 20, 10), Box(20, 0, 30, 10)], "grid 1x3"),
        ([Box(0, 0, 20, 20), Box(20, 0, 30, 10), Box(20, 10, 30, 20)], "irregular"),
    ],
)
def test_layout_kind_names(boxes, kind) -> None:
    assert classify_layout(boxes) == kind


def test_draw_cuts_marks_the_cut_lines(photos) -> None:
    collage = compose_collage(
        pick(photos, "coffee", "china"), grid_layout(1, 2), (800, 400), seed=51
    )
    result = split_image(np.asarray(collage.image))
    drawn = np.asarray(draw_cuts(collage.image, result)).astype(int)
    original = np.asarray(collage.image).astype(int)
    seam_x = collage.boxes[1].x0
    assert drawn.shape == original.shape
    assert (
        np.abs(drawn[:, seam_x - 1 : seam_x + 1] - original[:, seam_x - 1 : seam_x + 1]).sum() > 0
    )
    assert np.array_equal(drawn[50:350, 100:300], original[50:350, 100:300])  # inside untouched


def test_every_threshold_is_configurable() -> None:
    strict = SplitConfig(seam_score=1.01)  # no seam can reach it
    image = np.zeros((400, 400, 3), np.uint8)
    image[:, 200:] = 255
    assert len(split_image(image).boxes) == 1  # a blank side is not a photo ...
    rng = np.random.default_rng(0)
    image[:, :200] = rng.integers(0, 120, (400, 200, 3))
    image[:, 200:] = rng.integers(130, 255, (400, 200, 3))
    assert len(split_image(image).boxes) == 2  # ... two textured halves are
    assert len(split_image(image, strict).boxes) == 1


def test_rejects_non_rgb_input() -> None:
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        split_image(np.zeros((10, 10), np.uint8))


# --- the demo album (real photos, public domain) --------------------------------------------------

DEMO_ALBUM = Path(__file__).resolve().parents[1] / "data" / "albums" / "demo"
DEMO_COLLAGES = {
    "collages/grid 2x2 white gutters.jpg": "grid 2x2",
    "collages/borderless 1x3.jpg": "grid 1x3",
    "collages/big beside column.jpg": "irregular",
    "collages/phone stack.jpg": "stack 4",  # borderless, 540x1800, JPEG q75: once cut into 5
}
DEMO_PHOTOS = sorted(
    path.relative_to(DEMO_ALBUM).as_posix()
    for path in DEMO_ALBUM.rglob("*")
    if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".heic")
)


def demo_split(relative: str):
    from identity_pipeline.photos import load_photo

    image = load_photo(DEMO_ALBUM / relative).convert("RGB")
    return split_image(np.asarray(image)), image.size


@pytest.mark.parametrize("relative", DEMO_PHOTOS)
def test_demo_album_photos_split_as_expected(relative) -> None:
    result, (width, height) = demo_split(relative)
    expected = DEMO_COLLAGES.get(relative, "single")
    assert result.kind == expected, [b.as_list() for b in result.boxes]
    if expected == "single":  # plain photos: the whole image, nothing trimmed
        assert [b.as_list() for b in result.boxes] == [[0, 0, width, height]]
    if relative == "collages/big beside column.jpg":
        assert len(result.boxes) == 4


def test_demo_podium_edge_is_not_a_seam() -> None:
    """Regression: the straight, full-width top edge of the podium was cut as a seam."""
    result, size = demo_split("2009-09 obama speech.jpg")
    assert result.boxes == (Box(0, 0, *size),)


def test_demo_borderless_phone_stack_has_four_full_width_tiles() -> None:
    """Regression: the flag's edge in the last photo was cut too (5 tiles)."""
    result, (width, height) = demo_split("collages/phone stack.jpg")
    assert result.kind == "stack 4"
    assert all(box.x0 == 0 and box.x1 == width for box in result.boxes)
    assert result.boxes[0].y0 == 0 and result.boxes[-1].y1 == height
    assert {cut.source for cut in result.cuts} == {"seam"}


def test_seam_scorer_file_is_readable_json_of_well_formed_trees() -> None:
    text = split_module.SCORER_FILE.read_text(encoding="utf-8")
    assert len(text.encode()) < 1_000_000
    data = json.loads(text)
    features = len(split_module.SCORER_FEATURES)
    assert tuple(data["features"]) == split_module.SCORER_FEATURES
    assert "seeds" in data["trained_on"]  # which synthetic seeds it was fitted on
    assert 10 <= len(data["trees"]) <= 1000
    for tree in data["trees"]:
        nodes = len(tree["feature"])
        assert all(len(tree[key]) == nodes for key in ("threshold", "left", "right", "value"))
        for node, feature in enumerate(tree["feature"]):
            if feature >= 0:  # a split: children further down the list, a real feature
                assert feature < features
                assert node < tree["left"][node] < nodes and node < tree["right"][node] < nodes
    scorer = split_module._scorer()
    rng = np.random.default_rng(0)
    scores = [scorer.score(rng.normal(0, 2, features)) for _ in range(50)]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert len(set(scores)) > 1


def _benchmark_script(name: str):
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _trainer():
    return _benchmark_script("train_collage_scorer")


def test_the_benchmark_splits_real_photos_as_they_are(photos, tmp_path, monkeypatch) -> None:
    """The benchmark's real-photo section: every photo of a folder split as it is, single
    photos cut counted and named, and the folder's known collages checked for their count."""
    benchmark = _benchmark_script("collage_split")
    (tmp_path / "people").mkdir()
    photos["chelsea"].convert("RGB").save(tmp_path / "people" / "cat.jpg", quality=90)
    pair = compose_collage(pick(photos, "coffee", "rocket"), grid_layout(1, 2), (900, 500), seed=1)
    pair.image.save(tmp_path / "pair.png")
    (tmp_path / "notes.txt").write_text("not a photo")
    monkeypatch.setattr(benchmark, "DEFAULT_REAL_PHOTOS", tmp_path)
    monkeypatch.setattr(benchmark, "REAL_COLLAGE_TILES", {"pair.png": 2})
    outcomes = benchmark.split_real_photos(tmp_path, SplitConfig())
    assert [(o.name, o.true_count, o.found_count) for o in outcomes] == [
        ("pair.png", 2, 2),
        ("people/cat.jpg", 1, 1),
    ]
    printed = io.StringIO()
    with redirect_stdout(printed):
        benchmark.print_real_photos(tmp_path, outcomes)
        benchmark.print_real_photos(tmp_path, [replace(outcomes[1], found_count=3)])
    text = printed.getvalue()
    assert "single photos cut: 0 of 1" in text and "collages with their tile count: 1 of 1" in text
    assert "single photos cut: 1 of 1\n    people/cat.jpg: 3 tiles" in text
    # As sources for synthetic cases: no known collage, no photo with a border of its own.
    letterboxed = np.zeros((400, 600, 3), np.uint8)
    letterboxed[50:350] = np.asarray(photos["coffee"].convert("RGB").resize((600, 300)))
    Image.fromarray(letterboxed).save(tmp_path / "people" / "letterboxed.png")
    with redirect_stdout(io.StringIO()):
        sources = benchmark.folder_photos(tmp_path)
    assert [source.size for source in sources] == [photos["chelsea"].size]


def test_objects_crossing_a_line_never_raise_its_score() -> None:
    """The trainer fits the crossing-objects feature as non-increasing, even where training
    data happen to say otherwise, and the shipped scorer was trained so."""
    crossing = split_module.SCORER_FEATURES.index("crossing objects")
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (600, len(split_module.SCORER_FEATURES)))
    x[:, crossing] = rng.integers(0, 4, 600)
    y = (x[:, 0] + 0.8 * x[:, crossing] + rng.normal(0, 0.3, 600) > 1).astype(float)
    weights = _trainer().fit(np.column_stack([x, y]), trees=20, leaves=7, rate=0.3)
    fitted = split_module.scorer_from_trees(weights["trees"], weights["baseline"])
    for scorer in (fitted, split_module._scorer()):
        for row in rng.normal(0, 2, (40, len(split_module.SCORER_FEATURES))):
            scores = []
            for count in range(4):
                row[crossing] = count
                scores.append(scorer.score(row))
            assert all(b <= a + 1e-9 for a, b in zip(scores, scores[1:], strict=False))


def test_exported_trees_score_like_scikit_learn() -> None:
    """The numpy tree walk gives scikit-learn's probabilities for a model it exports."""
    trainer = _trainer()
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (400, len(split_module.SCORER_FEATURES)))
    y = (x[:, 0] + 0.5 * x[:, 3] * x[:, 5] + rng.normal(0, 0.3, 400) > 0).astype(float)
    weights = trainer.fit(np.column_stack([x, y]), trees=20, leaves=7, rate=0.3)  # checks itself
    scorer = split_module.scorer_from_trees(weights["trees"], weights["baseline"])
    accuracy = np.mean(
        [(scorer.score(row) >= 0.5) == label for row, label in zip(x, y, strict=True)]
    )
    assert accuracy > 0.9
