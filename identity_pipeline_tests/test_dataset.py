"""training_set logic without Dagster: selection counts, holdout by photo, repeats, buckets, crops,
the manifest contract, exports, previews, determinism.

The synthetic album is built here: small tiles (100-300 px) with a coloured "face" per identity,
one sample per (tile, identity) as the identity_masks stage writes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import tomllib
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageFilter

from identity_pipeline.dataset import (
    INPUT_COLUMNS,
    RULES,
    SPLIT_HOLDOUT,
    SPLIT_TRAIN,
    DatasetConfig,
    assign_holdout,
    balance_repeats,
    bar_chart,
    build_training_set,
    caption_for,
    changed_files,
    export_training_set,
    folder_safe_name,
    kohya_folder_names,
    make_buckets,
    manifest_version,
    mask_centroid,
    photo_draw,
    place_crop,
    plan_crop,
    repeats_for,
    select_samples,
    snapshot_manifest,
    trained_photos,
    write_manifest,
    write_previews,
)
from identity_pipeline.masks.album_masks import MASK_SAMPLE_DTYPES
from identity_pipeline.storage import content_id

ALBUM = "family"
MASKS_FILES = Path("assets") / "identity_masks" / ALBUM / "files"
IDENTITY_COLOURS = {
    "Alice": (230, 180, 150),
    "Bob": (110, 70, 50),
    "Carol": (250, 220, 190),
    "Dave": (180, 120, 90),
    "Eve": (200, 160, 120),
}

# The trainer's contract, written out independently of MANIFEST_DTYPES on purpose.
EXPECTED_MANIFEST_DTYPES = {
    "sample_id": "string",
    "image_path": "string",
    "mask_path": "string",
    "caption": "string",
    "identity": "string",
    "repeats": "int64",
    "bucket_width": "int64",
    "bucket_height": "int64",
    "split": "string",
    "album": "string",
    "photo_id": "string",
    "tile_id": "string",
    "face_id": "string",
    "sample_key": "string",
    "crop_x0": "int64",
    "crop_y0": "int64",
    "crop_x1": "int64",
    "crop_y1": "int64",
}


@dataclass(frozen=True)
class Spec:
    photo: str
    tile: int
    identity: str
    size: tuple[int, int]
    box: tuple[float, float, float, float]
    faces_in_tile: int = 1
    quality: float = 0.9
    flags: str = ""
    missing_image: bool = False


def _album_specs() -> list[Spec]:
    specs: list[Spec] = []
    sizes = [(160, 120), (120, 160), (200, 100), (150, 150)]
    for index in range(8):  # Alice alone, assorted tile shapes
        width, height = sizes[index % len(sizes)]
        x0, y0 = 20 + 5 * index, 15 + 2 * index
        specs.append(Spec(f"a{index}", 0, "Alice", (width, height), (x0, y0, x0 + 34, y0 + 40)))
    for index in range(3):  # Alice and Bob together (g0 also has a blurred stranger)
        faces = 3 if index == 0 else 2
        for identity, box in (("Alice", (30, 20, 70, 64)), ("Bob", (130, 25, 166, 65))):
            specs.append(Spec(f"g{index}", 0, identity, (200, 120), box, faces_in_tile=faces))
    for index in range(3):
        specs.append(Spec(f"b{index}", 0, "Bob", (140, 140), (50, 30, 90, 76)))
    # A collage: one photo, two tiles, one person each.
    specs.append(Spec("c0", 0, "Alice", (100, 150), (30, 20, 66, 62)))
    specs.append(Spec("c0", 1, "Bob", (100, 150), (34, 24, 70, 66)))
    for index in range(4):  # the rare identity; r3 is a blurry face
        quality = 0.1 if index == 3 else 0.85
        specs.append(Spec(f"r{index}", 0, "Carol", (130, 160), (40, 30, 80, 78), quality=quality))
    specs += [Spec(f"d{index}", 0, "Dave", (140, 120), (50, 20, 86, 62)) for index in range(2)]
    specs += [Spec(f"e{index}", 0, "Eve", (140, 120), (50, 20, 86, 62)) for index in range(2)]
    specs += [
        Spec("a8", 0, "Alice", (160, 120), (60, 20, 96, 62), flags="empty_mask"),
        # A flag the default config tolerates: stays.
        Spec("a9", 0, "Alice", (160, 120), (60, 20, 96, 62), flags="touches_other_face"),
        Spec("b3", 0, "Bob", (160, 120), (70, 30, 78, 38)),  # an 8 px face
        # A face wider than any crop of aspect <= 2 in a 3:1 tile.
        Spec("a10", 0, "Alice", (300, 100), (10, 5, 290, 95)),
        Spec("b4", 0, "Bob", (160, 120), (60, 20, 96, 62), missing_image=True),
    ]
    return specs


def _write_sample(data_root: Path, spec: Spec) -> dict[str, object]:
    tile_id = content_id("tile", spec.photo, spec.tile)
    sample_key = content_id(tile_id, spec.identity)
    width, height = spec.size
    seed = int(content_id(spec.photo, spec.tile, length=8), 16)
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = rng.integers(40, 200, size=3)
    pixels = np.stack(
        [(base[c] + 40 * np.sin(xs / 9 + c) + 30 * np.cos(ys / 7)) for c in range(3)], axis=-1
    )
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = spec.box
    draw.ellipse((x0, y0, x1, y1), fill=IDENTITY_COLOURS[spec.identity])
    face_w, face_h = x1 - x0, y1 - y0
    body = (x0 - 0.4 * face_w, y1, x1 + 0.4 * face_w, min(height, y1 + 2.5 * face_h))
    draw.rectangle(body, fill=(60, 90, 160))
    mask = Image.new("L", (width, height), 0)
    mask_draw = ImageDraw.Draw(mask)
    mask_draw.ellipse((x0, y0, x1, y1), fill=255)
    mask_draw.rectangle(body, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(1.5))

    folder = data_root / MASKS_FILES
    folder.mkdir(parents=True, exist_ok=True)
    image_rel = (MASKS_FILES / f"{sample_key}.jpg").as_posix()
    mask_rel = (MASKS_FILES / f"{sample_key}.png").as_posix()
    if not spec.missing_image:
        image.save(data_root / image_rel, "JPEG", quality=92)
    mask.save(data_root / mask_rel, "PNG")
    return {
        "sample_key": sample_key,
        "album": ALBUM,
        "tile_id": tile_id,
        "photo_id": content_id("photo", spec.photo, length=64),
        "face_id": content_id(tile_id, spec.identity, "face"),
        "identity": spec.identity,
        "image_path": image_rel,
        "mask_path": mask_rel,
        "tile_width": width,
        "tile_height": height,
        "face_x0": float(x0),
        "face_y0": float(y0),
        "face_x1": float(x1),
        "face_y1": float(y1),
        "face_size": float(max(face_w, face_h)),
        "face_quality": spec.quality,
        "det_score": 0.95,
        "faces_in_tile": spec.faces_in_tile,
        "mask_area_fraction": float(np.asarray(mask).mean() / 255.0),
        "face_area_fraction": face_w * face_h / (width * height),
        "flags": spec.flags,
        "backend": "grabcut",
        "selector_reason": "test",
    }


def _photo(name: str) -> str:
    return content_id("photo", name, length=64)


def _config(**overrides: object) -> DatasetConfig:
    values: dict[str, object] = {
        "target_pixels": 96 * 96,
        "bucket_divisor": 16,
        "min_face_size": 16.0,
        "min_face_quality": 0.3,
        "min_samples_per_identity": 3,
        "exclude_identities": ("Eve",),
        "holdout_photos_per_identity": 1,
        "holdout_fraction": 0.0,
        "holdout_min_photos": 4,
        "max_repeats": 3,
    }
    values.update(overrides)
    return DatasetConfig(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Album:
    data_root: Path
    samples: pd.DataFrame
    keys: dict[tuple[str, int, str], str]  # (photo, tile, identity) -> sample_key


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> Album:
    data_root = tmp_path_factory.mktemp("data")
    specs = _album_specs()
    rows = [_write_sample(data_root, spec) for spec in specs]
    keys = {
        (spec.photo, spec.tile, spec.identity): str(row["sample_key"])
        for spec, row in zip(specs, rows, strict=True)
    }
    return Album(data_root, pd.DataFrame(rows), keys)


@pytest.fixture(scope="module")
def built(album: Album, tmp_path_factory: pytest.TempPathFactory):
    out_dir = album.data_root / "assets" / "training_set" / "files"
    return build_training_set(album.samples, album.data_root, out_dir, _config(), workers=2)


# ----------------------------------------------------------------------------------------------
# Captions


def test_the_dataset_reads_only_columns_the_masks_stage_writes_with_those_dtypes() -> None:
    """The dataset states its own input contract; this keeps it a subset of the masks table
    (nullable Int64 there, plain int64 here: the dataset fills no gaps)."""
    for column, dtype in INPUT_COLUMNS.items():
        assert column in MASK_SAMPLE_DTYPES, column
        assert MASK_SAMPLE_DTYPES[column].lower() == dtype, column


def test_captions_use_solo_template_for_one_face_and_group_template_otherwise() -> None:
    config = DatasetConfig()
    assert caption_for("Alice", 1, config) == "A photo of Alice"
    assert caption_for("Alice", 3, config) == "A group photo of Alice and other people"
    group_only = DatasetConfig(solo_caption_template=None)
    assert caption_for("Bob", 1, group_only) == "A group photo of Bob and other people"
    custom = DatasetConfig(group_caption_template="{name} {with braces} in a crowd")
    assert caption_for("Zoë", 2, custom) == "Zoë {with braces} in a crowd"


def test_config_rejects_template_without_name_and_unknown_keys() -> None:
    with pytest.raises(ValueError, match="must contain"):
        DatasetConfig(group_caption_template="A group photo")
    with pytest.raises(ValueError, match="unknown"):
        DatasetConfig.from_dict({"max_repeat": 3})
    config = DatasetConfig.from_dict({"exclude_identities": ["Eve"], "max_repeats": 5})
    assert config.exclude_identities == ("Eve",) and config.max_repeats == 5
    assert config.hash() != DatasetConfig().hash()
    assert DatasetConfig.from_dict(config.to_dict()) == config


def test_manifest_captions_follow_faces_in_tile(built, album: Album) -> None:
    faces = album.samples.set_index("sample_key")["faces_in_tile"]
    for row in built.manifest.itertuples(index=False):
        if faces[row.sample_key] == 1:
            assert row.caption == f"A photo of {row.identity}"
        else:
            assert row.caption == f"A group photo of {row.identity} and other people"
    assert (faces[built.manifest["sample_key"]] > 1).any(), "fixture must include group tiles"


# ----------------------------------------------------------------------------------------------
# Selection


def test_each_rule_removes_what_it_should_and_counts_it(built, album: Album) -> None:
    expected_counts = {
        "unnamed_identity": 0,
        "not_in_include_list": 0,
        "in_exclude_list": 2,
        "face_too_small": 1,
        "face_quality_too_low": 1,
        "flagged_mask": 1,
        "unreadable_input": 1,
        "face_does_not_fit_any_bucket": 1,
        "upscale_too_large": 0,
        "too_few_samples_for_identity": 2,
    }
    assert list(built.removed_by_rule) == list(RULES)
    assert built.removed_by_rule == expected_counts
    by_rule = built.removed.groupby("rule")["sample_key"].apply(set).to_dict()
    keys = album.keys
    assert by_rule["in_exclude_list"] == {keys[("e0", 0, "Eve")], keys[("e1", 0, "Eve")]}
    assert by_rule["face_too_small"] == {keys[("b3", 0, "Bob")]}
    assert by_rule["face_quality_too_low"] == {keys[("r3", 0, "Carol")]}
    assert by_rule["flagged_mask"] == {keys[("a8", 0, "Alice")]}
    assert by_rule["unreadable_input"] == {keys[("b4", 0, "Bob")]}
    assert by_rule["face_does_not_fit_any_bucket"] == {keys[("a10", 0, "Alice")]}
    assert by_rule["too_few_samples_for_identity"] == {
        keys[("d0", 0, "Dave")],
        keys[("d1", 0, "Dave")],
    }
    removed = set(built.removed["sample_key"])
    assert removed.isdisjoint(built.manifest["sample_key"])
    assert len(built.manifest) + len(removed) == len(album.samples)
    assert keys[("a9", 0, "Alice")] in set(built.manifest["sample_key"]), "tolerated flag kept"


def test_include_list_and_size_rule_run_after_the_other_rules(album: Album) -> None:
    config = _config(include_identities=("Alice", "Carol"), exclude_identities=())
    buckets = make_buckets(config.target_pixels, config.bucket_divisor, 0.5, 2.0)
    selection = select_samples(album.samples, config, buckets, album.data_root)
    not_included = album.samples["identity"].isin(["Bob", "Dave", "Eve"]).sum()
    assert selection.removed_by_rule["not_in_include_list"] == not_included
    assert set(selection.kept["identity"]) == {"Alice", "Carol"}
    # Carol has 4 samples, one blurry: 3 remain, exactly the minimum of 3 -> kept; 4 -> removed.
    strict = select_samples(
        album.samples, _config(min_samples_per_identity=4), buckets, album.data_root
    )
    assert "Carol" not in set(strict.kept["identity"])
    assert strict.removed_by_rule["too_few_samples_for_identity"] == 2 + 3  # Dave + Carol


def test_upscale_rule_counts_crops_enlarged_too_much(album: Album) -> None:
    config = _config(target_pixels=512 * 512, bucket_divisor=64, max_upscale=2.0)
    buckets = make_buckets(config.target_pixels, config.bucket_divisor, 0.5, 2.0)
    selection = select_samples(album.samples, config, buckets)
    assert selection.removed_by_rule["upscale_too_large"] > 0
    for plan in selection.plans.values():
        assert plan.upscale <= 2.0


# ----------------------------------------------------------------------------------------------
# Holdout


def test_holdout_is_by_photo_and_never_in_train(built) -> None:
    manifest = built.manifest
    splits_per_photo = manifest.groupby("photo_id")["split"].nunique()
    assert (splits_per_photo == 1).all(), "a photo must be wholly train or wholly holdout"
    train_photos = set(manifest.loc[manifest["split"] == SPLIT_TRAIN, "photo_id"])
    holdout_photos = set(manifest.loc[manifest["split"] == SPLIT_HOLDOUT, "photo_id"])
    assert holdout_photos and train_photos.isdisjoint(holdout_photos)
    assert holdout_photos == set(built.holdout.holdout_photo_ids)
    report = built.holdout.report.set_index("identity")
    assert report.at["Alice", "holdout_photos"] >= 1 and report.at["Bob", "holdout_photos"] >= 1
    assert report.at["Carol", "holdout_photos"] == 0, "3 photos < holdout_min_photos"
    assert "no holdout" in report.at["Carol", "note"]
    assert (report["train_samples"] > 0).all()


def test_collage_tiles_of_a_held_out_photo_are_all_held_out(album: Album) -> None:
    config = _config()
    buckets = make_buckets(config.target_pixels, config.bucket_divisor, 0.5, 2.0)
    kept = select_samples(album.samples, config, buckets).kept
    collage = _photo("c0")
    for seed in range(200):
        result = assign_holdout(kept, _config(holdout_seed=seed))
        if collage in result.holdout_photo_ids:
            break
    else:
        pytest.fail("no seed held out the collage photo")
    in_collage = kept["photo_id"] == collage
    assert in_collage.sum() == 2
    assert (result.split[in_collage] == SPLIT_HOLDOUT).all()


def _random_album(rng: random.Random, photos: int, people: list[str]) -> pd.DataFrame:
    rows = []
    for photo in range(photos):
        for person in rng.sample(people, rng.randint(1, min(3, len(people)))):
            for tile in range(rng.choice([1, 1, 2])):
                rows.append({"identity": person, "photo_id": f"ph{photo}", "tile": tile})
    return pd.DataFrame(rows)


def test_holdout_never_empties_an_identity_and_spares_small_ones() -> None:
    rng = random.Random(7)
    config = DatasetConfig(
        holdout_photos_per_identity=2, holdout_fraction=0.3, holdout_min_photos=3
    )
    for _ in range(60):
        people = [f"p{index}" for index in range(rng.randint(1, 5))]
        frame = _random_album(rng, rng.randint(1, 14), people)
        result = assign_holdout(frame, config)
        split = result.split
        assert (frame.assign(split=split).groupby("photo_id")["split"].nunique() == 1).all()
        for person, group in frame.assign(split=split).groupby("identity"):
            photos = group["photo_id"].nunique()
            assert (group["split"] == SPLIT_TRAIN).any(), person
            if photos < config.holdout_min_photos:
                assert (group["split"] == SPLIT_TRAIN).all(), person
        again = assign_holdout(frame.sample(frac=1.0, random_state=1), config)
        assert again.holdout_photo_ids == result.holdout_photo_ids, "order must not matter"


def test_holdout_is_the_photos_whose_draw_is_below_the_fraction() -> None:
    """Large identities, no guard in play: exactly the photos drawn below the fraction."""
    config = DatasetConfig(
        holdout_photos_per_identity=1, holdout_fraction=0.1, holdout_min_photos=5
    )
    frame = pd.DataFrame(
        [
            {"identity": name, "photo_id": content_id(name, index)}
            for name in ("Ann", "Ben", "Cat")
            for index in range(400)
        ]
    )
    result = assign_holdout(frame, config)
    drawn = {p for p in frame["photo_id"] if photo_draw(config.holdout_seed, p) < 0.1}
    assert result.holdout_photo_ids == drawn
    assert 0.07 < len(drawn) / 1200 < 0.13  # the fraction, as a rate
    other_seed = assign_holdout(frame, dataclasses.replace(config, holdout_seed=1))
    assert other_seed.holdout_photo_ids != result.holdout_photo_ids


def test_small_identities_are_topped_up_to_their_minimum() -> None:
    config = DatasetConfig(
        holdout_photos_per_identity=1, holdout_fraction=0.0, holdout_min_photos=4
    )
    photos = {"Ann": 3, "Ben": 4, "Cat": 12}
    frame = pd.DataFrame(
        [
            {"identity": name, "photo_id": f"{name}-{index}"}
            for name, count in photos.items()
            for index in range(count)
        ]
    )
    result = assign_holdout(frame, config)
    held = frame[result.split == SPLIT_HOLDOUT].groupby("identity")["photo_id"].nunique()
    assert held.to_dict() == {"Ben": 1, "Cat": 1}
    # The lowest draw of each identity is the one held out.
    for name in ("Ben", "Cat"):
        mine = frame.loc[frame["identity"] == name, "photo_id"]
        lowest = min(mine, key=lambda photo: photo_draw(config.holdout_seed, photo))
        assert lowest in result.holdout_photo_ids


def test_adding_photos_never_moves_a_trained_photo_into_the_holdout() -> None:
    """Albums grow, photo by photo and in batches; with the earlier build's train photos as
    memory, not one of them ever lands in the holdout, guards included."""
    rng = random.Random(11)
    config = DatasetConfig(
        holdout_photos_per_identity=1, holdout_fraction=0.2, holdout_min_photos=3
    )
    moved_without_memory = 0
    for _ in range(20):
        people = [f"p{index}" for index in range(rng.randint(1, 4))]
        album = _random_album(rng, 30, people)
        photo_order = list(dict.fromkeys(album["photo_id"]))
        shown = rng.randint(1, 4)
        trained: frozenset[str] = frozenset()
        while shown <= len(photo_order):
            frame = album[album["photo_id"].isin(photo_order[:shown])]
            split = assign_holdout(frame, config, trained_before=trained)
            held = split.holdout_photo_ids
            assert not (trained & held), "a photo trained on before is now held out"
            stateless = assign_holdout(frame, config).holdout_photo_ids
            moved_without_memory += len(trained & stateless)
            trained = trained | trained_photos(frame.assign(split=split.split.to_numpy()))
            shown += rng.randint(1, 5)
    # Memory matters only for the guards; the per-photo draw alone moves few photos.
    assert moved_without_memory > 0


# ----------------------------------------------------------------------------------------------
# Balance


def test_repeat_cap_is_never_exceeded_and_rare_identities_upsampled() -> None:
    rng = random.Random(3)
    for _ in range(200):
        counts = {f"id{index}": rng.randint(1, 300) for index in range(rng.randint(1, 8))}
        cap = rng.randint(1, 10)
        balance = balance_repeats(counts, rng.choice(["max", "median", "mean"]), cap)
        for identity, count in counts.items():
            assert 1 <= balance.repeats[identity] <= cap
            if count == max(counts.values()):
                assert balance.repeats[identity] == 1 or balance.target != max(counts.values())
    assert repeats_for(3, 12, max_repeats=8) == 4
    assert repeats_for(3, 12, max_repeats=2) == 2
    assert repeats_for(12, 12, max_repeats=8) == 1
    assert repeats_for(40, 12, max_repeats=8) == 1


def test_build_balances_identities_and_reports_shares(built) -> None:
    identities = built.identities.set_index("identity")
    train = built.manifest[built.manifest["split"] == SPLIT_TRAIN]
    repeats = train.groupby("identity")["repeats"].agg(["min", "max"])
    assert (repeats["min"] == repeats["max"]).all(), "repeats are per identity"
    assert repeats["max"].max() <= 3, "max_repeats=3"
    assert identities.at["Carol", "repeats"] == 3 and identities.at["Carol", "repeat_capped"]
    assert identities.at["Alice", "repeats"] == 1
    assert identities.at["Bob", "repeats"] == 2
    assert (built.manifest.loc[built.manifest["split"] == SPLIT_HOLDOUT, "repeats"] == 1).all()
    shown = identities[identities["train_samples"] > 0]
    assert shown["share_after"].sum() == pytest.approx(1.0)
    spread_before = shown["share_before"].max() - shown["share_before"].min()
    spread_after = shown["share_after"].max() - shown["share_after"].min()
    assert spread_after < spread_before
    assert identities.at["Eve", "input_samples"] == 2 and identities.at["Eve", "train_samples"] == 0
    assert identities.at["Dave", "selected_samples"] == 0


# ----------------------------------------------------------------------------------------------
# Buckets and crops


@pytest.mark.parametrize(
    ("target", "divisor", "low", "high"),
    [
        (1024 * 1024, 64, 0.5, 2.0),
        (1024 * 1024, 16, 0.33, 3.0),
        (768 * 768, 32, 0.75, 1.5),
        (96 * 96, 16, 0.5, 2.0),
    ],
)
def test_bucket_sizes_are_valid(target: int, divisor: int, low: float, high: float) -> None:
    buckets = make_buckets(target, divisor, low, high, area_tolerance=0.1)
    assert len(buckets) >= 3
    side = round(math.sqrt(target) / divisor) * divisor
    assert any(bucket.width == bucket.height == side for bucket in buckets), "a square bucket"
    for bucket in buckets:
        assert bucket.width % divisor == 0 and bucket.height % divisor == 0
        assert abs(bucket.pixels / target - 1) <= 0.1
        assert low <= bucket.aspect <= high
    shapes = {(bucket.width, bucket.height) for bucket in buckets}
    if low * high == pytest.approx(1.0):
        assert shapes == {(h, w) for w, h in shapes}, "portrait = landscape transposed"


def test_crop_keeps_face_has_bucket_aspect_and_is_largest() -> None:
    buckets = make_buckets(1024 * 1024, 64, 0.5, 2.0)
    rng = random.Random(11)
    for _ in range(500):
        width, height = rng.randint(64, 3000), rng.randint(64, 3000)
        face = rng.uniform(8, min(width, height) * 0.6)
        x0, y0 = rng.uniform(0, width - face), rng.uniform(0, height - face)
        box = (x0, y0, x0 + face, y0 + face * rng.uniform(0.9, 1.2))
        box = (box[0], box[1], box[2], min(box[3], height))
        plan = plan_crop(width, height, box, buckets, margin=0.25)
        if plan is None:
            continue
        centre = (rng.uniform(-100, width + 100), rng.uniform(-100, height + 100))
        crop = place_crop(plan, width, height, centre)
        assert crop.contains(box), (width, height, box, crop)
        assert crop.x0 >= 0 and crop.y0 >= 0 and crop.x1 <= width and crop.y1 <= height
        assert crop.width == width or crop.height == height, "as large as the tile allows"
        aspect_error = abs(crop.width / crop.height - plan.bucket.aspect) * crop.height
        assert aspect_error <= 1.0, "within a pixel of the bucket's aspect"


def test_crop_centres_on_the_person_when_there_is_room() -> None:
    buckets = make_buckets(1024 * 1024, 64, 0.5, 2.0)
    box = (380.0, 40.0, 420.0, 90.0)
    plan = plan_crop(800, 200, box, buckets, margin=0.25)
    assert plan is not None and plan.bucket == max(buckets, key=lambda bucket: bucket.aspect)
    crop = place_crop(plan, 800, 200, (400.0, 150.0))
    assert (crop.x0 + crop.x1) / 2 == pytest.approx(400, abs=1)
    # Pulled right as far as the face (with its 10 px margin) allows, never past it.
    pulled = place_crop(plan, 800, 200, (790.0, 100.0))
    assert pulled.x0 == 367 and pulled.contains(box)
    near_edge = plan_crop(800, 200, (20.0, 40.0, 60.0, 90.0), buckets, margin=0.25)
    assert near_edge is not None
    assert place_crop(near_edge, 800, 200, (-50.0, 100.0)).x0 == 0, "stays inside the tile"
    mask = np.zeros((200, 800), np.uint8)
    mask[100:200, 600:700] = 255
    assert mask_centroid(mask) == pytest.approx((650.0, 150.0), abs=2)
    assert mask_centroid(np.zeros((10, 10), np.uint8)) is None


def test_face_wider_than_any_bucket_crop_has_no_plan() -> None:
    buckets = make_buckets(1024 * 1024, 64, 0.5, 2.0)  # widest 1408x768: a 183x100 crop
    assert plan_crop(300, 100, (10, 5, 290, 95), buckets, margin=0.25) is None
    fallback = plan_crop(300, 100, (50, 5, 220, 95), buckets, margin=0.25)
    assert fallback is not None and not fallback.with_margin
    assert fallback.keep_box == (50, 5, 220, 95)


def test_built_crops_contain_the_face_and_files_match_the_bucket(built, album: Album) -> None:
    inputs = album.samples.set_index("sample_key")
    for row in built.manifest.itertuples(index=False):
        source = inputs.loc[row.sample_key]
        face = (source.face_x0, source.face_y0, source.face_x1, source.face_y1)
        assert row.crop_x0 <= face[0] and row.crop_y0 <= face[1]
        assert face[2] <= row.crop_x1 and face[3] <= row.crop_y1
        assert row.crop_x0 >= 0 and row.crop_x1 <= source.tile_width
        assert row.crop_y0 >= 0 and row.crop_y1 <= source.tile_height
        assert row.bucket_width % 16 == 0 and row.bucket_height % 16 == 0
        with Image.open(album.data_root / row.image_path) as image:
            assert image.mode == "RGB" and image.size == (row.bucket_width, row.bucket_height)
        with Image.open(album.data_root / row.mask_path) as mask:
            assert mask.mode == "L" and mask.size == (row.bucket_width, row.bucket_height)
            values = np.asarray(mask)
        # The person is in the crop: the mask is on at the face, off somewhere else.
        assert values.max() == 255 and values.min() == 0
    histogram = built.buckets
    assert histogram["train_samples"].sum() == (built.manifest["split"] == SPLIT_TRAIN).sum()
    assert len(histogram) == len(built.bucket_set)


# ----------------------------------------------------------------------------------------------
# Manifest contract and determinism


def test_manifest_columns_and_dtypes_are_the_contract(built, tmp_path: Path) -> None:
    manifest = built.manifest
    assert list(manifest.columns) == list(EXPECTED_MANIFEST_DTYPES)
    assert {name: str(dtype) for name, dtype in manifest.dtypes.items()} == EXPECTED_MANIFEST_DTYPES
    assert manifest["sample_id"].is_unique and manifest["sample_id"].is_monotonic_increasing
    assert set(manifest["split"]) == {SPLIT_TRAIN, SPLIT_HOLDOUT}
    assert (manifest["repeats"] >= 1).all()
    for path in pd.concat([manifest["image_path"], manifest["mask_path"]]):
        assert not Path(path).is_absolute() and path.startswith("assets/training_set/files/")
    written = write_manifest(manifest, tmp_path / "table.parquet")
    schema = pq.read_schema(written)
    assert schema.names == list(EXPECTED_MANIFEST_DTYPES)
    for name, dtype in EXPECTED_MANIFEST_DTYPES.items():
        expected = pa.int64() if dtype == "int64" else pa.string()
        assert schema.field(name).type == expected, name
    assert pd.read_parquet(written).equals(pd.read_parquet(written))


def test_trainer_reads_the_manifest(built, album: Album, tmp_path: Path) -> None:
    data = pytest.importorskip("identity_pipeline.training.data")
    from identity_pipeline.training.config import DataConfig

    manifest_path = write_manifest(built.manifest, tmp_path / "manifest.parquet")
    config = DataConfig(manifest=str(manifest_path), data_root=str(album.data_root))
    samples = data.load_samples(config, pixel_multiple=16)
    assert len(samples) == (built.manifest["split"] == SPLIT_TRAIN).sum()
    pixels, mask = data.load_pixels(samples[0])
    assert pixels.shape[1:] == mask.shape[1:] == (samples[0].height, samples[0].width)


def test_two_builds_give_identical_manifests_and_files(built, album: Album, tmp_path: Path) -> None:
    out_dir = album.data_root / "assets" / "training_set" / "files"
    again = build_training_set(album.samples.iloc[::-1], album.data_root, out_dir, _config())
    pd.testing.assert_frame_equal(again.manifest, built.manifest)
    assert again.files_written == 0, "content-addressed files are reused"
    elsewhere = build_training_set(album.samples, album.data_root, tmp_path / "other", _config())
    assert list(elsewhere.manifest["sample_id"]) == list(built.manifest["sample_id"])
    for first, second in zip(
        built.manifest["image_path"], elsewhere.manifest["image_path"], strict=True
    ):
        assert _digest(album.data_root / first) == _digest(Path(second))
        assert Path(second).is_absolute(), "outside the data root: absolute paths"


def test_changed_source_gets_a_new_file_not_an_overwrite(album: Album, tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    spec = Spec("x0", 0, "Alice", (160, 120), (40, 20, 80, 66))
    rows = [_write_sample(data_root, spec)]
    rows += [
        _write_sample(data_root, Spec(f"x{i}", 0, "Alice", (160, 120), (40, 20, 80, 66)))
        for i in (1, 2)
    ]
    config = _config(holdout_min_photos=10)
    first = build_training_set(pd.DataFrame(rows), data_root, data_root / "out", config)
    source = data_root / str(rows[0]["image_path"])
    with Image.open(source) as image:
        Image.eval(image, lambda value: 255 - value).save(source, "JPEG")
    second = build_training_set(pd.DataFrame(rows), data_root, data_root / "out", config)
    key = rows[0]["sample_key"]
    old = first.manifest.set_index("sample_key").at[key, "image_path"]
    new = second.manifest.set_index("sample_key").at[key, "image_path"]
    assert old != new and (data_root / old).exists() and (data_root / new).exists()


# ----------------------------------------------------------------------------------------------
# Export


def test_kohya_export_layout(built, album: Album, tmp_path: Path) -> None:
    result = export_training_set(built.manifest, album.data_root, tmp_path / "export")
    train = built.manifest[built.manifest["split"] == SPLIT_TRAIN]
    image_dir = tmp_path / "export" / "kohya" / "img"
    mask_dir = tmp_path / "export" / "kohya" / "mask"
    folders = sorted(path.name for path in image_dir.iterdir())
    expected = sorted(
        f"{int(group['repeats'].iloc[0])}_{name}" for name, group in train.groupby("identity")
    )
    assert folders == expected
    images = sorted(image_dir.glob("*/*.jpg"))
    assert len(images) == len(train)
    mapping = json.loads(result.mapping_file.read_text(encoding="utf-8"))
    sample_of = {entry["file"]: entry["sample_id"] for entry in mapping["files"]}
    for image in images:
        row = train[train["sample_id"] == sample_of[f"{image.parent.name}/{image.name}"]].iloc[0]
        assert image.with_suffix(".txt").read_text(encoding="utf-8") == row["caption"]
        mask = mask_dir / image.parent.name / f"{image.stem}.png"
        with Image.open(mask) as opened, Image.open(image) as picture:
            assert opened.mode == "L" and opened.size == picture.size
        repeats, _, name = image.parent.name.partition("_")
        assert int(repeats) == row["repeats"] and name == row["identity"]
    holdout_ids = set(built.manifest.loc[built.manifest["split"] == SPLIT_HOLDOUT, "sample_id"])
    assert holdout_ids and holdout_ids.isdisjoint(sample_of.values()), "holdout never in kohya/"
    toml = (tmp_path / "export" / "kohya" / "sd_scripts_dataset.toml").read_text()
    assert toml.count("[[datasets.subsets]]") == len(folders)
    subsets = tomllib.loads(toml)["datasets"][0]["subsets"]
    assert {Path(subset["image_dir"]).name for subset in subsets} == set(folders)
    musubi = tomllib.loads((tmp_path / "export" / "kohya" / "musubi_dataset.toml").read_text())
    assert sum(item["num_repeats"] for item in musubi["datasets"]) == sum(
        int(folder.split("_")[0]) for folder in folders
    )
    assert result.train_samples == len(train)


def _read_imagefolder(folder: Path) -> list[dict[str, object]]:
    """The documented imagefolder format: metadata.jsonl, file_name relative to it."""
    records = []
    for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for key in [key for key in record if key == "file_name" or key.endswith("_file_name")]:
            column = key[: -len("_file_name")] or "image"
            path = folder / record.pop(key)
            assert path.resolve().is_relative_to(folder.resolve())
            with Image.open(path) as image:
                record[column] = image.copy()
        records.append(record)
    return records


def test_imagefolder_export_matches_the_documented_format(
    built, album: Album, tmp_path: Path
) -> None:
    result = export_training_set(built.manifest, album.data_root, tmp_path / "export")
    manifest = built.manifest.set_index("sample_id")
    for folder, split in (
        (result.imagefolder_dir, SPLIT_TRAIN),
        (result.holdout_imagefolder_dir, SPLIT_HOLDOUT),
    ):
        records = _read_imagefolder(folder)
        assert len(records) == (manifest["split"] == split).sum()
        for record in records:
            row = manifest.loc[record["sample_id"]]
            assert row["split"] == split
            assert record["text"] == row["caption"] and record["identity"] == row["identity"]
            assert (
                record["image"].size
                == record["mask"].size
                == (row["bucket_width"], row["bucket_height"])
            )


def test_imagefolder_export_loads_with_datasets_offline(
    built, album: Album, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded as diffusers' training scripts load it: the train samples, never the holdout."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    result = export_training_set(built.manifest, album.data_root, tmp_path / "export")
    train = built.manifest[built.manifest["split"] == SPLIT_TRAIN].set_index("sample_id")
    holdout = built.manifest[built.manifest["split"] == SPLIT_HOLDOUT]
    cache = str(tmp_path / "hf")
    # train_dreambooth_lora_*.py --dataset_name DIR, and train_text_to_image*.py
    # --train_data_dir DIR (data_files DIR/**): each must see exactly the train samples.
    by_name = datasets.load_dataset(str(result.imagefolder_dir), cache_dir=cache)
    by_glob = datasets.load_dataset(
        "imagefolder",
        data_files={"train": str(result.imagefolder_dir / "**")},
        cache_dir=cache,
    )
    for loaded in (by_name, by_glob):
        assert set(loaded) == {"train"}
        assert sorted(loaded["train"]["sample_id"]) == sorted(train.index)
    first = by_name["train"][0]
    row = train.loc[first["sample_id"]]
    assert first["text"] == row["caption"]
    assert first["image"].size == (row["bucket_width"], row["bucket_height"])
    assert first["mask"].size == first["image"].size
    held = datasets.load_dataset(str(result.holdout_imagefolder_dir), cache_dir=cache)["train"]
    assert sorted(held["sample_id"]) == sorted(holdout["sample_id"])


def test_export_swaps_in_whole_and_leaves_nothing_behind(
    built, album: Album, tmp_path: Path
) -> None:
    target = tmp_path / "export"
    export_training_set(built.manifest, album.data_root, target)
    stale = target / "kohya" / "img" / "stale.txt"
    stale.write_text("from the previous export")
    only_alice = built.manifest[built.manifest["identity"] == "Alice"]
    result = export_training_set(only_alice, album.data_root, target, hardlink=True)
    assert not stale.exists(), "the old export is replaced, not merged"
    assert set(result.kohya_folders) == {"Alice"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export", "musubi_cache"], (
        "no staging or .old left"
    )


def test_folder_names_are_safe_and_unique() -> None:
    assert folder_safe_name("Anne/Marie: \x07 ") == "Anne_Marie_ _"
    assert folder_safe_name("..") == "unnamed"
    folders = kohya_folder_names({"A/B": 2, "A_B": 2, "a_b": 3, "Zoë": 1})
    assert folders["Zoë"] == "1_Zoë"
    assert len({name.lower() for name in folders.values()}) == 4


# ----------------------------------------------------------------------------------------------
# Previews


def test_previews_are_written_and_charts_scale_bars(built, album: Album, tmp_path: Path) -> None:
    files = write_previews(built, album.data_root, tmp_path / "previews")
    for path in (files.balance_chart, files.bucket_chart, *files.contact_sheets.values()):
        with Image.open(path) as image:
            assert image.width >= 100 and image.height >= 40
    assert set(files.contact_sheets) == set(built.manifest["identity"])
    # Columns right of the label area: the legend swatch (same colour) is left of it.
    chart = np.asarray(bar_chart(["small", "large"], {"n": [1, 4]}, "test"))[:, 120:]
    bar_colour = np.all(chart == (150, 170, 200), axis=-1)
    rows = np.flatnonzero(bar_colour.any(axis=1))
    first, second = rows[rows < rows.mean()], rows[rows >= rows.mean()]
    small, large = bar_colour[first].sum(axis=1).max(), bar_colour[second].sum(axis=1).max()
    assert large == pytest.approx(4 * small, rel=0.05)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fixture_sanity(album: Album) -> None:
    assert os.path.exists(album.data_root / album.samples.iloc[0]["image_path"])
    assert album.samples["photo_id"].nunique() < len(album.samples), "shared photos exist"


def test_default_excluded_flags_are_flags_the_masks_stage_raises() -> None:
    masks_config = pytest.importorskip("identity_pipeline.masks.config")
    assert set(DatasetConfig().excluded_flags) <= set(masks_config.ALL_FLAGS)


def test_empty_input_builds_an_empty_but_typed_manifest(tmp_path: Path) -> None:
    empty = pd.DataFrame({column: pd.Series(dtype="object") for column in INPUT_COLUMNS})
    result = build_training_set(empty, tmp_path, tmp_path / "out", _config())
    assert result.manifest.empty
    assert {name: str(dtype) for name, dtype in result.manifest.dtypes.items()} == (
        EXPECTED_MANIFEST_DTYPES
    )
    assert set(result.removed_by_rule.values()) == {0}
    assert export_training_set(result.manifest, tmp_path, tmp_path / "export").train_samples == 0


def test_missing_input_column_is_an_error(album: Album) -> None:
    with pytest.raises(ValueError, match="face_quality"):
        build_training_set(
            album.samples.drop(columns=["face_quality"]),
            album.data_root,
            album.data_root,
            _config(),
        )


# ----------------------------------------------------------------------------------------------
# The asset: re-materialized with more photos, and unchanged


def _asset_defs(frames: dict[str, pd.DataFrame]) -> list:
    """training_set over a stand-in identity_masks (same partitions) and a stand-in LoRA."""
    from identity_pipeline.assets.training_set import training_set
    from identity_pipeline.partitions import albums_partitions

    @dg.asset(name="identity_masks", partitions_def=albums_partitions)
    def identity_masks(context):
        return frames[context.partition_key]

    @dg.asset(name="lora_checkpoint", deps=["training_set"])
    def lora_checkpoint():
        return dg.MaterializeResult()

    return [identity_masks, training_set, lora_checkpoint]


def test_rematerialized_training_set_keeps_trained_photos_out_of_the_holdout(
    layout, instance
) -> None:
    """An album grows; training_set runs again through Dagster: no photo it trained on before
    is held out now. Run again unchanged: same data version, the LoRA stays fresh."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    from identity_pipeline.io_manager import TableIOManager
    from identity_pipeline.resources import SettingsResource, StorageResource
    from identity_pipeline.storage import DataLayout

    # A dataset config whose guards hold photos out as the album grows.
    (layout.root / "pipeline.yaml").write_text(
        "dataset:\n"
        "  target_pixels: 9216\n  bucket_divisor: 16\n  min_face_size: 16.0\n"
        "  min_samples_per_identity: 1\n  holdout_fraction: 0.3\n"
        "  holdout_min_photos: 4\n  holdout_photos_per_identity: 1\n"
    )
    specs = [s for s in _album_specs() if not s.flags and not s.missing_image]
    rows = pd.DataFrame([_write_sample(layout.root, spec) for spec in specs])
    first_photos = set(rows["photo_id"].unique()[:7])
    frames = {ALBUM: rows[rows["photo_id"].isin(first_photos)].reset_index(drop=True)}
    assets = _asset_defs(frames)
    instance.add_dynamic_partitions("albums", [ALBUM])
    resources = {
        "io_manager": TableIOManager(),
        "storage": StorageResource(),
        "settings": SettingsResource(),
    }

    def materialize(*selection: str) -> None:
        for name in selection:
            partition = ALBUM if name == "identity_masks" else None
            result = dg.materialize(
                assets,
                selection=[name],
                partition_key=partition,
                instance=instance,
                resources=resources,
            )
            assert result.success

    def manifest() -> pd.DataFrame:
        return pd.read_parquet(DataLayout(layout.root).table_path("training_set"))

    def data_version() -> str:
        event = instance.get_latest_materialization_event(dg.AssetKey("training_set"))
        return event.asset_materialization.tags["dagster/data_version"]

    def stale() -> str:
        graph = dg.Definitions(assets=assets, resources=resources).resolve_asset_graph()
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        return resolver.get_status(dg.AssetKey("lora_checkpoint")).value

    materialize("identity_masks", "training_set", "lora_checkpoint")
    first = manifest()
    trained = set(first.loc[first["split"] == SPLIT_TRAIN, "photo_id"])
    first_version = manifest_version(first)
    assert trained and stale() == "FRESH"
    version = data_version()
    assert version == first_version

    # Unchanged inputs, materialized again: same data version, nothing to retrain.
    materialize("training_set")
    assert data_version() == version
    assert stale() == "FRESH"

    # The album grows (the rest of its photos): every trained photo is still trained.
    frames[ALBUM] = rows
    materialize("identity_masks", "training_set")
    grown = manifest()
    held = set(grown.loc[grown["split"] == SPLIT_HOLDOUT, "photo_id"])
    assert held, "the grown album holds photos out"
    assert not (held & trained), "a photo trained on before moved into the holdout"
    assert stale() == "STALE"
    assert data_version() == manifest_version(grown) != version


def test_snapshot_records_file_hashes_and_finds_changed_files(built, album: Album) -> None:
    manifest = built.manifest
    snapshot = snapshot_manifest(manifest, album.data_root)
    assert manifest_version(snapshot) != manifest_version(manifest)  # hashes are part of it
    assert manifest_version(manifest) == manifest_version(manifest.sample(frac=1.0))
    assert changed_files(snapshot, album.data_root) == {}
    assert changed_files(manifest, album.data_root) == {}  # no hashes recorded: nothing to check
    tampered = snapshot.copy()
    tampered.loc[0, "image_sha256"] = "0" * 64
    tampered.loc[1, "mask_path"] = "assets/training_set/files/masks/gone.png"
    changed = changed_files(tampered, album.data_root)
    assert set(changed) == {tampered.loc[0, "sample_id"], tampered.loc[1, "sample_id"]}
    assert "changed since training" in changed[tampered.loc[0, "sample_id"]]
    assert "is missing" in changed[tampered.loc[1, "sample_id"]]
