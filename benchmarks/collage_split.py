"""Benchmark the collage splitter on synthetic, degraded collages with known tiles.

    .venv/bin/python benchmarks/collage_split.py [--quick] [--seed S] [--family F] [--failures DIR]
        [--set FIELD=VALUE ...] [--real DIR | --real none] [--photos DIR]

Builds its own cases (identity_pipeline.collage.synthetic) from license-clean photos shipped inside
installed packages (scikit-image, scikit-learn): regular grids, phone stacks and irregular layouts,
each with gutters (2-20 px, white/black/grey/colour, with or without outer margin) and borderless;
framed singles and letterboxes; plain single photos; and single scenes with strong straight edges
(horizons, door frames, windows). Every case is downscaled (random filter) and re-compressed as
JPEG 60-95. Splitting runs on one thread.

Per family it prints: cases, exact-correct % (tile count equal and every true tile matched
one-to-one at IoU >= 0.95), over-splits (more tiles than true), under-splits (fewer), mean ms per
image, and mean megapixels. A separate line times images at a 1600 px longer side.

``--photos DIR`` builds the cases from the photos of a folder instead (read in place; photos
with a border of their own and the folder's known collages left out): e.g. the real portraits
of faces-dev, people photos like an album's, and small (250 px), so blown up to fill tiles.

Then it splits real photos as they are (``--real``, default the labelled third-party set
../shared/data/faces-dev beside the repository or under $IDENTITY_PIPELINE_SHARED, read in
place, never copied): how many single photos are cut, and
how many of the few that are collages themselves get their tile count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.shared_data import FACES_DEV  # noqa: E402
from identity_pipeline.collage import Box, SplitConfig, draw_cuts, split_image  # noqa: E402
from identity_pipeline.collage import split as split_module  # noqa: E402
from identity_pipeline.collage.synthetic import (  # noqa: E402
    FAMILIES,
    Collage,
    random_case,
    sample_photos,
)
from identity_pipeline.faces.cli import find_images  # noqa: E402
from identity_pipeline.photos import load_photo  # noqa: E402

MATCH_IOU = 0.95
# Cases per family in a full run (about 270 in all); --quick takes a quarter.
CASES_PER_FAMILY = {
    "grid": 40,
    "grid borderless": 40,
    "stack": 25,
    "stack borderless": 25,
    "irregular": 25,
    "irregular borderless": 25,
    "framed single": 20,
    "single": 30,
    "single edges": 45,
}
SINGLE_FAMILIES = ("single", "single edges", "framed single")
DEFAULT_REAL_PHOTOS = FACES_DEV
# The photos of DEFAULT_REAL_PHOTOS that are collages themselves, with their tile count (judged
# by eye: press composites cropped to one face with slivers of the photos beside it, and two
# portraits side by side); every other photo there is one photo.
REAL_COLLAGE_TILES = {
    "groups/fr_two_people.jpg": 2,
    "images/Andrea_Yates/Andrea_Yates_0001.jpg": 3,
    "images/Keith_Foulke/Keith_Foulke_0001.jpg": 3,
}


@dataclass
class Outcome:
    family: str
    seed: int
    exact: bool
    true_count: int
    found_count: int
    ms: float
    megapixels: float
    kind: str
    true_kind: str


def exact_match(
    found: tuple[Box, ...], truth: tuple[Box, ...], threshold: float = MATCH_IOU
) -> bool:
    """Same count and a one-to-one matching at IoU >= threshold (unique at such high IoU)."""
    if len(found) != len(truth):
        return False
    unused = list(found)
    for box in truth:
        best = max(unused, key=box.iou, default=None)
        if best is None or box.iou(best) < threshold:
            return False
        unused.remove(best)
    return True


def run_case(collage: Collage, family: str, seed: int, config: SplitConfig) -> Outcome:
    array = np.asarray(collage.image)
    start = time.perf_counter()
    result = split_image(array, config)
    elapsed = (time.perf_counter() - start) * 1000
    return Outcome(
        family=family,
        seed=seed,
        exact=exact_match(result.boxes, collage.boxes),
        true_count=len(collage.boxes),
        found_count=len(result.boxes),
        ms=elapsed,
        megapixels=array.shape[0] * array.shape[1] / 1e6,
        kind=result.kind,
        true_kind=collage.kind,
    )


def print_table(outcomes: list[Outcome]) -> None:
    header = f"{'family':<22}{'cases':>6}{'exact %':>9}{'over':>6}{'under':>7}{'kind %':>8}{'ms/img':>8}{'MP':>6}"
    print(header)
    print("-" * len(header))
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.family, []).append(outcome)
    rows = [(family, groups[family]) for family in FAMILIES if family in groups]
    borderless = [o for o in outcomes if o.family.endswith("borderless")]
    collages = [o for o in outcomes if o.family not in SINGLE_FAMILIES]
    rows += [("ALL borderless", borderless), ("ALL collages", collages), ("ALL", outcomes)]
    for name, group in rows:
        if not group:
            continue
        if name.startswith("ALL") and name == "ALL borderless":
            print("-" * len(header))
        exact = 100.0 * sum(o.exact for o in group) / len(group)
        over = sum(o.found_count > o.true_count for o in group)
        under = sum(o.found_count < o.true_count for o in group)
        kind = 100.0 * sum(o.kind == o.true_kind for o in group) / len(group)
        ms = statistics.fmean(o.ms for o in group)
        mp = statistics.fmean(o.megapixels for o in group)
        print(
            f"{name:<22}{len(group):>6}{exact:>9.1f}{over:>6}{under:>7}{kind:>8.1f}{ms:>8.1f}{mp:>6.2f}"
        )
    singles_cut = sum(o.found_count > 1 for o in outcomes if o.family in SINGLE_FAMILIES)
    print(
        f"single photos cut: {singles_cut} of {sum(o.family in SINGLE_FAMILIES for o in outcomes)}"
    )


def time_at_1600(photos: list, config: SplitConfig, count: int) -> list[float]:
    """ms per image for cases resized so their longer side is exactly 1600 px."""
    timings = []
    for index in range(count):
        family = FAMILIES[index % len(FAMILIES)]
        collage = random_case(family, photos, 10_000 + index)
        array = np.asarray(collage.image)
        factor = 1600 / max(array.shape[:2])
        size = (round(array.shape[1] * factor), round(array.shape[0] * factor))
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
        split_image(array, config)  # warm caches for this size
        start = time.perf_counter()
        split_image(array, config)
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument("--failures", type=Path, help="write failed cases with cuts drawn here")
    parser.add_argument("--timing-cases", type=int, default=18)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a SplitConfig field, e.g. --set seam_score=0.4 (repeatable)",
    )
    parser.add_argument(
        "--photos", type=Path, help="build the cases from the photos of this folder instead"
    )
    parser.add_argument(
        "--real",
        default=str(DEFAULT_REAL_PHOTOS),
        help="a folder of real photos to split as they are ('none' to skip)",
    )
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    photos = folder_photos(args.photos) if args.photos else [p for _, p in sample_photos()]
    config = config_with(args.set)
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    for family, count in CASES_PER_FAMILY.items():
        if args.family and family not in args.family:
            continue
        count = max(2, count // 4) if args.quick else count
        for index in range(count):
            seed = args.seed * 100_000 + index
            collage = random_case(family, photos, seed)
            outcome = run_case(collage, family, seed, config)
            outcomes.append(outcome)
            if args.failures and not outcome.exact:
                save_failure(args.failures, collage, outcome, config)
    print(
        f"{len(outcomes)} cases, {len(photos)} source photos, {time.perf_counter() - started:.0f} s"
    )
    print_table(outcomes)
    if args.timing_cases:
        timings = time_at_1600(photos, config, args.timing_cases)
        print(
            f"1600 px longer side: mean {statistics.fmean(timings):.1f} ms, "
            f"max {max(timings):.1f} ms over {len(timings)} images (one thread)"
        )
    real = Path(args.real)
    if args.real != "none" and real.is_dir():
        print_real_photos(real, split_real_photos(real, config))
    elif args.real != "none":
        print(f"real photos: {real} not found, skipped")
    return 0


def known_tiles(folder: Path, name: str) -> int:
    """True tile count of the photo ``name`` (relative to ``folder``): 1 unless it is one of
    the default folder's known collages."""
    return REAL_COLLAGE_TILES.get(name, 1) if folder == DEFAULT_REAL_PHOTOS else 1


def folder_photos(folder: Path) -> list:
    """Source photos from ``folder``: not its known collages, nor photos with a border of their
    own (letterbox bars): a tile's true box would include the border the splitter trims."""
    photos, left_out = [], 0
    for path in find_images([folder]):
        if known_tiles(folder, path.relative_to(folder).as_posix()) > 1:
            left_out += 1
            continue
        photo = load_photo(path)
        whole = Box(0, 0, *photo.size)
        splitter = split_module._Splitter(np.asarray(photo), SplitConfig(), ())
        if splitter._trim_margins(whole) != whole:
            left_out += 1
            continue
        photos.append(photo)
    print(f"source photos from {folder}: {len(photos)} ({left_out} left out)")
    return photos


@dataclass(frozen=True)
class RealOutcome:
    name: str  # path relative to the folder
    true_count: int
    found_count: int
    ms: float


def split_real_photos(folder: Path, config: SplitConfig) -> list[RealOutcome]:
    """Every photo under ``folder``, split as it is (EXIF-upright, no degradation)."""
    outcomes = []
    for path in find_images([folder]):
        name = path.relative_to(folder).as_posix()
        array = np.asarray(load_photo(path))
        start = time.perf_counter()
        result = split_image(array, config)
        elapsed = (time.perf_counter() - start) * 1000
        outcomes.append(RealOutcome(name, known_tiles(folder, name), len(result.boxes), elapsed))
    return outcomes


def print_real_photos(folder: Path, outcomes: list[RealOutcome]) -> None:
    singles = [o for o in outcomes if o.true_count == 1]
    collages = [o for o in outcomes if o.true_count > 1]
    cut = [o for o in singles if o.found_count > 1]
    right = [o for o in collages if o.found_count == o.true_count]
    ms = statistics.fmean(o.ms for o in outcomes) if outcomes else 0.0
    print(f"real photos ({folder}): {len(outcomes)} photos, {ms:.1f} ms/img")
    print(f"  single photos cut: {len(cut)} of {len(singles)}")
    for outcome in cut:
        print(f"    {outcome.name}: {outcome.found_count} tiles")
    if collages:
        print(f"  collages with their tile count: {len(right)} of {len(collages)}")
        for outcome in collages:
            if outcome.found_count != outcome.true_count:
                print(f"    {outcome.name}: {outcome.found_count} tiles of {outcome.true_count}")


def config_with(overrides: list[str]) -> SplitConfig:
    """SplitConfig with ``FIELD=VALUE`` overrides, each value parsed as its field's type."""
    defaults = SplitConfig()
    changes = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if not hasattr(defaults, key):
            raise SystemExit(f"--set: SplitConfig has no field {key!r}")
        current = getattr(defaults, key)
        changes[key] = (
            value.lower() in ("1", "true", "yes")
            if isinstance(current, bool)
            else type(current)(value)
        )
    return replace(defaults, **changes)


def save_failure(folder: Path, collage: Collage, outcome: Outcome, config: SplitConfig) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = split_image(np.asarray(collage.image), config)
    drawn = draw_cuts(collage.image, result)
    name = f"{outcome.family.replace(' ', '_')}_{outcome.seed}_t{outcome.true_count}_f{outcome.found_count}.jpg"
    drawn.save(folder / name, quality=85)


if __name__ == "__main__":
    sys.exit(main())
