"""Collage splitter through its public function: each layout family table-driven, singles that
must stay whole, faces, confidence and review, hints, the CLI, the demo album."""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from contextlib import redirect_stdout
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from identity_pipeline.collage import (
    Box,
    SplitSettings,
    apply_hint,
    classify_layout,
    draw_cuts,
    find_hints_file,
    hint_for,
    parse_hints,
    split_image,
)
from identity_pipeline.collage.cli import add_split_command
from identity_pipeline.collage.synthetic import (
    big_beside_column,
    compose_collage,
    degrade,
    door_scene,
    framed_single,
    grid_layout,
    horizon_scene,
    plain_single,
    rows_layout,
    sample_photos,
    stack_layout,
    window_scene,
)

MATCH_IOU = 0.95


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


# --- every layout family, through split_image ----------------------------------------------------

# (name, source photos, layout, size, gutter, margin, gutter colour, JPEG scale and quality,
#  expected kind, expected cut sources)
COLLAGES = [
    (
        "grid 3x3, thin white gutters and a margin",
        ("astronaut", "coffee", "chelsea", "rocket", "china", "flower", "camera", "coins", "moon"),
        grid_layout(3, 3),
        (1500, 1200),
        6,
        24,
        (255, 255, 255),
        (0.8, 70),
        "grid 3x3",
        {"gutter"},
    ),
    (
        "grid 2x3, coloured gutters",
        ("astronaut", "coffee", "chelsea", "rocket", "china", "flower"),
        grid_layout(2, 3),
        (1500, 1000),
        12,
        0,
        (40, 140, 90),
        (1.0, 80),
        "grid 2x3",
        {"gutter"},
    ),
    (
        "grid 2x2 borderless",
        ("astronaut", "hubble_deep_field", "coffee", "china"),
        grid_layout(2, 2),
        (1400, 1000),
        0,
        0,
        (0, 0, 0),
        (0.9, 80),
        "grid 2x2",
        {"seam"},
    ),
    (
        "phone stack borderless, different heights",
        ("chelsea", "rocket", "flower", "coins", "astronaut"),
        stack_layout((0.8, 1.3, 0.6, 1.0, 0.7)),
        (700, 2400),
        0,
        0,
        (0, 0, 0),
        (0.66, 75),
        "stack 5",
        {"seam"},
    ),
    (
        "phone stack, black gutters",
        ("coffee", "rocket", "china", "astronaut"),
        stack_layout((1.0, 0.8, 1.2, 0.9)),
        (600, 2000),
        8,
        0,
        (0, 0, 0),
        (0.8, 85),
        "stack 4",
        {"gutter"},
    ),
    (
        "irregular: a big photo beside a column, dark gutters",
        ("coffee", "china", "camera", "astronaut"),
        big_beside_column(3),
        (1500, 1000),
        10,
        0,
        (20, 20, 20),
        (1.0, 85),
        "irregular",
        {"gutter"},
    ),
    (
        "irregular borderless: rows of 2 over 3",
        ("rocket", "coffee", "chelsea", "china", "astronaut"),
        rows_layout((2, 3)),
        (1500, 1000),
        0,
        0,
        (0, 0, 0),
        (0.8, 80),
        "irregular",
        {"seam"},
    ),
]


@pytest.mark.parametrize(
    ("names", "layout", "size", "gutter", "margin", "colour", "jpeg", "kind", "sources"),
    [case[1:] for case in COLLAGES],
    ids=[case[0] for case in COLLAGES],
)
def test_collages_split_into_their_photos(
    photos, names, layout, size, gutter, margin, colour, jpeg, kind, sources
) -> None:
    collage = compose_collage(pick(photos, *names), layout, size, gutter, margin, colour, seed=3)
    collage = degrade(collage, *jpeg, seed=3)
    result = split_image(np.asarray(collage.image))
    assert_same_tiles(result.boxes, collage.boxes)
    assert result.kind == kind
    assert result.decided_by == "auto"
    assert {cut.source for cut in result.cuts} == sources
    assert 0.0 <= result.confidence <= 1.0


SINGLES = [
    ("plain photo", lambda p: plain_single(p["coffee"], (1200, 900), seed=1)),
    ("plain portrait", lambda p: plain_single(p["astronaut"], (900, 1200), seed=2)),
    ("horizon with poles", lambda p: horizon_scene(p["grass"], (1200, 800), seed=5)),
    ("door in a wall", lambda p: door_scene(p["chelsea"], (1000, 1300), seed=6)),
    ("window with a cross", lambda p: window_scene(p["coffee"], (1200, 900), seed=7)),
]


@pytest.mark.parametrize("make", [case[1] for case in SINGLES], ids=[case[0] for case in SINGLES])
def test_single_photos_with_strong_straight_edges_stay_whole(photos, make) -> None:
    single = degrade(make(photos), 0.8, 80, seed=1)
    result = split_image(np.asarray(single.image))
    assert result.boxes == single.boxes
    assert result.kind == "single"


@pytest.mark.parametrize(
    ("frame", "colour"),
    [
        ((30, 30, 30, 30), (255, 255, 255)),
        ((0, 90, 0, 90), (0, 0, 0)),
        ((12, 40, 20, 8), (200, 30, 30)),
    ],
    ids=["white frame", "letterbox", "uneven coloured frame"],
)
def test_a_photo_in_a_flat_frame_is_one_tile_without_the_frame(photos, frame, colour) -> None:
    single = framed_single(photos["rocket"], (900, 1200), frame, colour, seed=4)
    result = split_image(np.asarray(degrade(single, 1.0, 90, seed=4).image))
    assert_same_tiles(result.boxes, single.boxes)


def test_gutters_are_cut_out_to_the_exact_pixel(photos) -> None:
    collage = compose_collage(
        pick(photos, "coffee", "china", "rocket"),
        grid_layout(1, 3),
        (1200, 500),
        14,
        20,
        (250, 250, 250),
        seed=8,
    )
    result = split_image(np.asarray(degrade(collage, 1.0, 95, seed=8).image))
    for found, true in zip(result.boxes, collage.boxes, strict=True):
        assert all(abs(a - b) <= 1 for a, b in zip(found.as_list(), true.as_list(), strict=True))


# --- faces, confidence, settings -----------------------------------------------------------------


def test_a_cut_through_a_given_face_is_refused(photos) -> None:
    collage = compose_collage(
        pick(photos, "chelsea", "coffee"), stack_layout((1.0, 1.0)), (800, 1200), seed=21
    )
    image = np.asarray(degrade(collage, 1.0, 85, seed=21).image)
    seam_y = collage.boxes[1].y0
    assert len(split_image(image).boxes) == 2  # the seam is found without faces ...
    face = Box(300, seam_y - 80, 460, seam_y + 90)
    assert len(split_image(image, face_boxes=[face]).boxes) == 1  # ... and refused through one
    beside = Box(300, 100, 460, 260)  # a face away from the seam changes nothing
    assert len(split_image(image, face_boxes=[beside]).boxes) == 2


def test_confidence_is_a_probability_and_review_follows_the_bar(photos) -> None:
    collage = compose_collage(
        pick(photos, "astronaut", "coffee"), grid_layout(1, 2), (1000, 500), 10, 0, seed=9
    )
    image = np.asarray(collage.image)
    result = split_image(image)
    assert 0.0 <= result.confidence <= 1.0
    assert result.review == (result.confidence < SplitSettings().review_below)
    assert split_image(image, SplitSettings(review_below=1.01)).review
    assert not split_image(image, SplitSettings(review_below=0.0)).review


def test_the_line_model_overrides_the_rules_only_when_on_and_likelier_right(
    photos, monkeypatch
) -> None:
    from identity_pipeline.collage import line_split, rules
    from identity_pipeline.collage import split as split_module

    collage = compose_collage(
        pick(photos, "astronaut", "coffee"), stack_layout((1.0, 1.0)), (700, 1100), seed=12
    )
    image = np.asarray(degrade(collage, 1.0, 85, seed=12).image)
    bias_only = len(split_module.CONFIDENCE_FEATURES) * [0.0]
    unsure_rules = {  # the rules' tiles 0.7 % likely right, the line model's 99.3 %
        "confidence_model": np.array([*bias_only, -5.0]),
        "lines_right": np.array([*bias_only, 5.0]),
    }
    monkeypatch.setattr(split_module, "_logistic_models", lambda: unsure_rules)
    kept = split_image(image, SplitSettings(line_model_overrides=False))
    assert kept.boxes == rules.split_image(image).boxes
    assert kept.confidence == pytest.approx(0.007, abs=1e-3) and kept.review
    overridden = split_image(image, SplitSettings(line_model_overrides=True))
    assert overridden.boxes == line_split.split_image(image).boxes
    assert overridden.confidence == pytest.approx(0.993, abs=1e-3) and not overridden.review
    unsure_rules["lines_right"] = np.array([*bias_only, -6.0])  # less likely than the rules'
    assert split_image(image, SplitSettings(line_model_overrides=True)).boxes == kept.boxes


def test_every_setting_is_a_named_number() -> None:
    settings = SplitSettings()
    values = [getattr(settings, f.name) for f in fields(settings) if f.name != "rules"]
    values += [getattr(settings.rules, f.name) for f in fields(settings.rules)]
    assert all(isinstance(value, (int, float, bool, tuple)) for value in values)
    with pytest.raises(AttributeError):
        settings.review_below = 0.1  # frozen


def test_the_confidence_models_are_small_safetensors_over_the_named_features() -> None:
    import json

    from safetensors import safe_open

    from identity_pipeline.collage.split import CONFIDENCE_FEATURES, WEIGHTS_FILE

    assert WEIGHTS_FILE.stat().st_size < 5_000_000
    with safe_open(str(WEIGHTS_FILE), "np") as handle:
        assert set(handle.keys()) == {"confidence_model", "lines_right"}
        for name in ("confidence_model", "lines_right"):
            weights = handle.get_tensor(name)
            assert weights.shape == (len(CONFIDENCE_FEATURES) + 1,)
            assert np.isfinite(weights).all()
        metadata = handle.metadata()
    assert metadata["trained_by"] == "benchmarks/train_collage_splitter.py"
    assert json.loads(metadata["confidence_features"]) == list(CONFIDENCE_FEATURES)


def test_tiny_and_non_rgb_input() -> None:
    assert split_image(np.zeros((8, 8, 3), np.uint8)).boxes == (Box(0, 0, 8, 8),)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        split_image(np.zeros((10, 10), np.uint8))


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


# --- the demo album (real photos, public domain) --------------------------------------------------

DEMO_ALBUM = Path(__file__).resolve().parents[1] / "data" / "albums" / "demo"
DEMO_COLLAGES = {
    "collages/grid 2x2 white gutters.jpg": "grid 2x2",
    "collages/borderless 1x3.jpg": "grid 1x3",
    "collages/big beside column.jpg": "irregular",
    "collages/phone stack.jpg": "stack 4",
}
DEMO_PHOTOS = sorted(
    path.relative_to(DEMO_ALBUM).as_posix()
    for path in DEMO_ALBUM.rglob("*")
    if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".heic")
)


@pytest.mark.parametrize("relative", DEMO_PHOTOS)
def test_demo_album_photos_split_as_expected(relative) -> None:
    from identity_pipeline.photos import load_photo

    image = load_photo(DEMO_ALBUM / relative).convert("RGB")
    result = split_image(np.asarray(image))
    expected = DEMO_COLLAGES.get(relative, "single")
    assert result.kind == expected, [b.as_list() for b in result.boxes]
    if expected == "single":  # plain photos: the whole image, nothing trimmed
        assert [b.as_list() for b in result.boxes] == [[0, 0, *image.size]]
    if relative == "collages/big beside column.jpg":
        assert len(result.boxes) == 4


# --- the benchmark -------------------------------------------------------------------------------


def _benchmark():
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "collage_split.py"
    spec = importlib.util.spec_from_file_location("collage_split_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["collage_split_benchmark"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_builds_cases_from_a_folder_and_reports_reliability(
    photos, tmp_path, capsys
) -> None:
    benchmark = _benchmark()
    folder = tmp_path / "people"
    folder.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        photos[name].convert("RGB").save(folder / f"{name}.jpg", quality=90)
    args = ["--pool", "faces-dev", "--photos", str(folder), "--family", "grid", "--family"]
    args += ["single", "--cases", "2", "--timing-cases", "0", "--before", "HEAD"]
    assert benchmark.main(args) == 0
    out = capsys.readouterr().out
    assert "source photos from" in out and "pool faces-dev" in out
    assert "ALL collages" in out and "single photos cut: shipped" in out
    assert "reliability of the shipped splitter's confidence" in out
    assert "reliability of line model's confidence" in out and "rules" in out
    assert "its flag or the splitters disagree" in out
    assert "review flag (confidence < 0.9)" in out
    assert "split as they are (3 single photos)" in out
    assert "reliability of before HEAD's confidence" in out
