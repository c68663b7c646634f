"""Benchmark the shipped collage splitter beside the learned line model, same cases, same run.

    .venv/bin/python benchmarks/collage_split.py [--quick] [--cases N] [--seed S] [--pool P ...]
        [--family F ...] [--photos DIR] [--failures DIR] [--timing-cases N] [--frac F]
        [--before REV]

Cases are synthetic, degraded collages with known tiles (identity_pipeline.collage.synthetic
``random_case``): grids, phone stacks and irregular layouts, each with gutters (2-20 px,
white / black / grey / colour, with or without an outer margin) and borderless; framed singles
and letterboxes; plain single photos; single scenes with strong straight edges. Every case is
downscaled and re-compressed as JPEG 60-95. Three pools of source photos:

- ``in-repo``: the photos bundled with scikit-image / scikit-learn: the cases of earlier versions
  of this benchmark (the line model trained on these photos, on other seeds);
- ``held-back``: photos of packages the training script never reads (benchmarks/collage_photos.py);
- ``faces-dev``: real people, ``--photos`` (default ../shared/data/faces-dev beside the
  repository, or under $IDENTITY_PIPELINE_SHARED), read in place,
  never copied; portraits with a border of their own and the folder's known collages left out;
- ``held-back small``: the held-back photos as small album photos (150-400 px, JPEG 70-95,
  ``collage_photos.album_copies``) blown up into their tiles: soft tiles with little texture,
  like faces-dev's 250 px portraits;
- ``validation`` / ``validation small`` / ``validation portraits`` (only when asked for with
  --pool): the part of the train pool that the training scripts hold back
  (``collage_photos.split_train``), as it is, as album copies, as face-dataset portraits
  (``collage_photos.portrait_crops``), to choose settings on without looking at the pools above.

Three splitters, same cases, same run: "shipped" is photo_tiles' splitter (``split.split_image``
with its defaults: the rule-based cuts of rules.py, except where a model fitted on the training
pool says the line model's tiles are likelier right, ``line_model_overrides``; its confidence
reads the rules' margin and the line model's opinion); "line model" is the learned splitter
alone (``line_split.split_image``: per-line evidence read by a small 1D network, lines.py,
decoded by recursive cuts, decoder.py); "rules" is the baseline: the shipped splitter with the
override off (the rules' tiles everywhere). ``--before REV`` adds a column: the splitter shipped
at git revision REV (its line model and logistic weights, read with git show; today's rules), or
with the weights files kept in folder REV (repeatable).
Each component runs once per image (``Splitters``); a column's ms is the sum of its parts'.
Per pool and family: exact % (tile count equal and every true tile matched one-to-one at IoU >=
0.95), over- and under-splits, ms per image (one thread). Then, on the pools no model or
threshold was fitted on (held-back, faces-dev): each splitter's reliability table (confidence
bins -> observed exact rate), how right the photos it is >= 90 % sure of are, how many wrong
ones its 5 / 10 / 15 % least sure photos hold, what its review flag catches, and, for the shipped
tiles, flagging every photo where the line model disagrees. A last line times them at a 1600 px
longer side. With --photos pointing at faces-dev, its photos are also split as they are: single
photos cut.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.collage_photos import (  # noqa: E402
    album_copies,
    pool,
    portrait_crops,
    split_train,
)
from benchmarks.shared_data import FACES_DEV  # noqa: E402
from identity_pipeline.collage import SplitResult, draw_cuts, line_split, rules, split  # noqa: E402
from identity_pipeline.collage.boxes import same_tiles  # noqa: E402
from identity_pipeline.collage.lines import net_from_tensors  # noqa: E402
from identity_pipeline.collage.synthetic import (  # noqa: E402
    FAMILIES,
    Collage,
    random_case,
    sample_photos,
)
from identity_pipeline.faces.cli import find_images  # noqa: E402
from identity_pipeline.photos import load_photo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MATCH_IOU = 0.95
DEFAULT_REAL_PHOTOS = FACES_DEV
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
REPORTED_POOLS = ("in-repo", "held-back", "faces-dev", "held-back small")
VALIDATION_POOLS = ("validation", "validation small", "validation portraits")
POOLS = (*REPORTED_POOLS, *VALIDATION_POOLS)
UNSEEN_POOLS = ("held-back", "faces-dev", "held-back small", *VALIDATION_POOLS)
# Photos of faces-dev that are collages themselves, with their tile count (judged by eye).
REAL_COLLAGE_TILES = {
    "groups/fr_two_people.jpg": 2,
    "images/Andrea_Yates/Andrea_Yates_0001.jpg": 3,
    "images/Keith_Foulke/Keith_Foulke_0001.jpg": 3,
}
FLAG_SHARES = (0.05, 0.10, 0.15)  # flag rates at which rankings are compared
RELIABILITY_BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0001)

MAIN, NEW, RULES, BEFORE = "shipped", "line model", "rules", "before"


class Splitters:
    """Every splitter of the comparison on one image, each component run once: the rules'
    tiles, the line model's (and, with ``before``, the line model of an earlier commit), then
    ``split.combine`` of them as photo_tiles does. A column's ms is the sum of its components'."""

    def __init__(self, before: list[str] | tuple[str, ...] = ()) -> None:
        self.rules_only = replace(split.DEFAULT_SETTINGS, line_model_overrides=False)
        self.before = {f"{BEFORE} {Path(b).name or b}": load_before(b) for b in before}
        self.names = [MAIN, NEW, RULES, *self.before]

    def __call__(self, pixels: np.ndarray) -> dict[str, tuple[SplitResult, float]]:
        by_rules, rules_ms = timed(lambda p: rules.split_image(p), pixels)
        by_lines, lines_ms = timed(line_split.split_image, pixels)
        out = {
            MAIN: (split.combine(by_rules, by_lines), rules_ms + lines_ms),
            NEW: (by_lines, lines_ms),
            RULES: (split.combine(by_rules, by_lines, self.rules_only), rules_ms + lines_ms),
        }
        for name, (net, confidence, models) in self.before.items():
            old, old_ms = timed(
                functools.partial(line_split.split_image, net=net, confidence_weights=confidence),
                pixels,
            )
            out[name] = (split.combine(by_rules, old, models=models), rules_ms + old_ms)
        return out


class _FirstFeatures:
    """An earlier line model, which read the first ``count`` of today's line features."""

    def __init__(self, net, count: int) -> None:
        self.net, self.count = net, count

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return self.net.probabilities(features[:, : self.count])


def load_before(revision: str):
    """The line model, its confidence and the two logistic models shipped at git ``revision``
    (read with git show), or kept in folder ``revision``; the rules are today's (rules.py is
    unchanged since)."""
    from safetensors.numpy import load

    def tensors(path: str) -> dict[str, np.ndarray]:
        if Path(revision).is_dir():
            return load((Path(revision) / Path(path).name).read_bytes())
        blob = subprocess.run(
            ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        return load(blob)

    lines_tensors = tensors("identity_pipeline/collage/line_model.safetensors")
    splitter_tensors = tensors("identity_pipeline/collage/splitter.safetensors")
    net = net_from_tensors(lines_tensors)
    models = {k: v.astype(np.float64) for k, v in splitter_tensors.items()}
    return (
        _FirstFeatures(net, len(lines_tensors["line.mean"])),
        lines_tensors["confidence.weights"].astype(np.float64),
        models,
    )


@dataclass
class Outcome:
    pool: str
    family: str
    seed: int
    true_count: int
    found: dict[str, int]  # splitter -> tiles found
    exact: dict[str, bool]
    ms: dict[str, float]
    confidence: dict[str, float]
    review: dict[str, bool]
    agree: bool = True  # the shipped tiles are the line model's


def timed(splitter: Callable, pixels: np.ndarray) -> tuple[SplitResult, float]:
    start = time.perf_counter()
    result = splitter(pixels)
    return result, (time.perf_counter() - start) * 1000


def run_case(pool_name: str, collage: Collage, family: str, seed: int, splitters) -> Outcome:
    pixels = np.asarray(collage.image)
    outcome = Outcome(pool_name, family, seed, len(collage.boxes), {}, {}, {}, {}, {})
    results = splitters(pixels)
    for name, (result, ms) in results.items():
        outcome.found[name], outcome.ms[name] = len(result.boxes), ms
        outcome.exact[name] = same_tiles(result.boxes, collage.boxes, MATCH_IOU)
        outcome.confidence[name], outcome.review[name] = result.confidence, result.review
    outcome.agree = same_tiles(results[MAIN][0].boxes, results[NEW][0].boxes)
    return outcome


def summary_rows(outcomes: list[Outcome]) -> list[tuple[str, list[Outcome]]]:
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.family, []).append(outcome)
    rows = [(family, groups[family]) for family in FAMILIES if family in groups]
    rows.append(("ALL borderless", [o for o in outcomes if o.family.endswith("borderless")]))
    rows.append(("ALL collages", [o for o in outcomes if o.family not in SINGLE_FAMILIES]))
    rows.append(("ALL", outcomes))
    return rows


def print_side_by_side(pool_name: str, outcomes: list[Outcome], names: list[str]) -> None:
    print(f"\npool {pool_name}: exact % / over / under / ms per image, " + " vs ".join(names))
    header = f"{'family':<22}{'cases':>6}" + "".join(
        f"{n + ' exact':>21}{'over':>6}{'under':>6}{'ms':>7}" for n in names
    )
    print(header)
    print("-" * len(header))
    for family, group in summary_rows(outcomes):
        if not group:
            continue
        line = f"{family:<22}{len(group):>6}"
        for name in names:
            exact = 100.0 * sum(o.exact[name] for o in group) / len(group)
            over = sum(o.found[name] > o.true_count for o in group)
            under = sum(o.found[name] < o.true_count for o in group)
            ms = statistics.fmean(o.ms[name] for o in group)
            line += f"{exact:>21.1f}{over:>6}{under:>6}{ms:>7.0f}"
        print(line)
    singles = [o for o in outcomes if o.family in SINGLE_FAMILIES]
    print(
        "single photos cut: "
        + ", ".join(f"{n} {sum(o.found[n] > 1 for o in singles)}" for n in names)
        + f" of {len(singles)}"
    )


def print_reliability(outcomes: list[Outcome], name: str, review_below: float) -> None:
    pools = ", ".join(sorted({o.pool for o in outcomes}))
    label = "the shipped splitter" if name == MAIN else name
    print(f"\nreliability of {label}'s confidence, pool {pools}:")
    print(f"{'confidence':<14}{'photos':>8}{'mean conf':>11}{'exact %':>9}")
    for lo, hi in zip(RELIABILITY_BINS, RELIABILITY_BINS[1:], strict=False):
        group = [o for o in outcomes if lo <= o.confidence[name] < hi]
        if group:
            mean = statistics.fmean(o.confidence[name] for o in group)
            exact = 100.0 * sum(o.exact[name] for o in group) / len(group)
            print(
                f"[{lo:.2f}, {min(hi, 1):.2f}]".ljust(14)
                + f"{len(group):>8}{mean:>11.3f}{exact:>9.1f}"
            )
    sure = [o for o in outcomes if o.confidence[name] >= 0.9]
    wrong = [o for o in outcomes if not o.exact[name]]
    flagged = [o for o in outcomes if o.review[name]]
    if sure:
        right = 100 * sum(o.exact[name] for o in sure) / len(sure)
        print(f"photos >= 90 % sure: {len(sure)}, exactly right {right:.1f} %")
    caught = sum(o.review[name] for o in wrong)
    by_confidence = sorted(outcomes, key=lambda o: o.confidence[name])
    print(
        "the least sure photos, ranked by this confidence: "
        + ", ".join(
            f"{share:.0%} of them catch {sum(not o.exact[name] for o in by_confidence[:k])}"
            for share in FLAG_SHARES
            for k in [round(share * len(outcomes))]
        )
        + f" of {len(wrong)} wrong"
    )
    print(
        f"review flag (confidence < {review_below}): flags {len(flagged)} of {len(outcomes)} "
        f"photos ({100 * len(flagged) / max(1, len(outcomes)):.1f} %), catches {caught} "
        f"of {len(wrong)} wrong ({100 * caught / max(1, len(wrong)):.1f} %)"
    )


def print_second_opinion(outcomes: list[Outcome]) -> None:
    """The shipped tiles, flagged where their confidence is under the bar or the splitters find
    other tiles: does disagreement catch wrong splits the shipped flag misses?"""
    wrong = [o for o in outcomes if not o.exact[MAIN]]
    for label, flag in (
        ("its flag", lambda o: o.review[MAIN]),
        ("its flag or the splitters disagree", lambda o: o.review[MAIN] or not o.agree),
    ):
        flagged = sum(flag(o) for o in outcomes)
        caught = sum(flag(o) for o in wrong)
        print(
            f"  shipped tiles, {label}: flags {flagged} of {len(outcomes)} "
            f"({100 * flagged / max(1, len(outcomes)):.1f} %), catches {caught} of {len(wrong)} "
            f"wrong ({100 * caught / max(1, len(wrong)):.1f} %)"
        )


def folder_photos(folder: Path, flat_std: float = 2.0, step: float = 30.0) -> list:
    """Source photos from ``folder``: not its known collages, nor photos with a border of their
    own (two digitally flat rows or columns at an edge, then a clear step): a tile's true box
    would include the border that the splitter rightly trims."""
    photos, left_out = [], 0
    for path in find_images([folder]):
        if REAL_COLLAGE_TILES.get(path.relative_to(folder).as_posix(), 1) > 1:
            left_out += 1
            continue
        photo = load_photo(path)
        pixels = np.asarray(photo, dtype=np.float32)
        bordered = False
        for edge in (
            pixels,
            pixels[::-1],
            pixels.transpose(1, 0, 2),
            pixels.transpose(1, 0, 2)[::-1],
        ):
            flat = edge[:2].std(axis=1).mean() <= flat_std
            stepped = (np.abs(edge[4] - edge[0]).sum(axis=1) >= step).mean() >= 0.5
            bordered |= bool(flat and stepped)
        if bordered:
            left_out += 1
            continue
        photos.append(photo)
    print(f"source photos from {folder}: {len(photos)} ({left_out} left out)")
    return photos


def time_at_1600(photos: list, splitters, count: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in splitters.names}
    for index in range(count):
        collage = random_case(FAMILIES[index % len(FAMILIES)], photos, 10_000 + index)
        array = np.asarray(collage.image)
        factor = 1600 / max(array.shape[:2])
        size = (round(array.shape[1] * factor), round(array.shape[0] * factor))
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
        splitters(array)  # warm caches for this size
        for name, (_, ms) in splitters(array).items():
            timings[name].append(ms)
    return timings


def split_real_photos(folder: Path, splitters) -> None:
    """Every photo under ``folder``, split as it is: single photos cut, collages found."""
    cut = {name: [] for name in splitters.names}
    right = dict.fromkeys(splitters.names, 0)
    singles = 0
    for path in find_images([folder]):
        name = path.relative_to(folder).as_posix()
        pixels = np.asarray(load_photo(path))
        truth = REAL_COLLAGE_TILES.get(name, 1)
        singles += truth == 1
        for splitter_name, (result, _) in splitters(pixels).items():
            found = len(result.boxes)
            if truth == 1 and found > 1:
                cut[splitter_name].append(name)
            right[splitter_name] += truth > 1 and found == truth
    print(f"\nreal photos of {folder} split as they are ({singles} single photos):")
    for splitter_name in splitters.names:
        print(
            f"  {splitter_name}: single photos cut {len(cut[splitter_name])}"
            f"{' (' + ', '.join(cut[splitter_name][:5]) + ')' if cut[splitter_name] else ''}; "
            f"collages with their tile count {right[splitter_name]} of {len(REAL_COLLAGE_TILES)}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the cases")
    parser.add_argument("--cases", type=int, help="cases per family (instead of the table's)")
    parser.add_argument("--frac", type=float, help="this share of the table's cases per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool", action="append", choices=POOLS, help="only these pools")
    parser.add_argument("--family", action="append", help="only these families (repeatable)")
    parser.add_argument(
        "--photos", type=Path, default=DEFAULT_REAL_PHOTOS, help="real people photos"
    )
    parser.add_argument("--failures", type=Path, help="write the new splitter's failures here")
    parser.add_argument("--timing-cases", type=int, default=18)
    parser.add_argument(
        "--before",
        metavar="REV",
        action="append",
        default=[],
        help="also run the splitter shipped at this git revision (its weights, today's rules), "
        "or whose weights files are in this folder (repeatable)",
    )
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    from identity_pipeline.collage.split import DEFAULT_SETTINGS

    splitters = Splitters(args.before)
    names = splitters.names
    pools = args.pool or list(REPORTED_POOLS)
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    photos_by_pool = {}
    for pool_name in pools:
        if pool_name == "in-repo":
            photos = [p for _, p in sample_photos()]
        elif pool_name in ("held-back", "held-back small"):
            named = pool("held_back")
            photos = [p for _, p in (album_copies(named) if "small" in pool_name else named)]
        elif pool_name == "validation portraits":
            photos = [p for _, p in portrait_crops(split_train(pool("train"))[1])]
        elif pool_name.startswith("validation"):
            named = split_train(pool("train"))[1]
            photos = [p for _, p in (album_copies(named) if "small" in pool_name else named)]
        elif args.photos.is_dir():
            photos = folder_photos(args.photos)
        else:
            print(f"pool faces-dev: {args.photos} not found, skipped")
            continue
        photos_by_pool[pool_name] = photos
        pool_outcomes = []
        for family, count in CASES_PER_FAMILY.items():
            if args.family and family not in args.family:
                continue
            if args.frac:
                count = max(2, round(count * args.frac))
            count = args.cases or (max(2, count // 4) if args.quick else count)
            for index in range(count):
                seed = args.seed * 100_000 + index
                collage = random_case(family, photos, seed)
                outcome = run_case(pool_name, collage, family, seed, splitters)
                pool_outcomes.append(outcome)
                if args.failures and not outcome.exact[NEW]:
                    save_failure(args.failures, pool_name, collage, outcome)
        print_side_by_side(pool_name, pool_outcomes, names)
        outcomes += pool_outcomes
    print(f"\n{len(outcomes)} cases in {time.perf_counter() - started:.0f} s")
    unseen = [o for o in outcomes if o.pool in UNSEEN_POOLS]
    groups = [[o for o in outcomes if o.pool == p] for p in pools if p in UNSEEN_POOLS]
    if len({o.pool for o in unseen}) > 1:
        groups.append(unseen)
    for group in (g for g in groups if g):
        for name in names:
            print_reliability(group, name, DEFAULT_SETTINGS.review_below)
        print(
            f"\nshipped tiles, its flag against flagging every disagreement, pool {group[0].pool}"
            + (" and more" if len({o.pool for o in group}) > 1 else "")
            + ":"
        )
        print_second_opinion(group)
    if args.timing_cases:
        photos = next(iter(photos_by_pool.values()), [p for _, p in sample_photos()])
        timings = time_at_1600(photos, splitters, args.timing_cases)
        print(
            "\n1600 px longer side, one thread: "
            + "; ".join(
                f"{n} mean {statistics.fmean(t):.0f} ms, max {max(t):.0f} ms"
                for n, t in timings.items()
            )
            + f" over {args.timing_cases} images"
        )
    if "faces-dev" in pools and args.photos.is_dir():
        split_real_photos(args.photos, splitters)
    return 0


def save_failure(folder: Path, pool_name: str, collage: Collage, outcome: Outcome) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = line_split.split_image(np.asarray(collage.image))
    name = (
        f"{pool_name}_{outcome.family.replace(' ', '_')}_{outcome.seed}_t{outcome.true_count}"
        f"_f{outcome.found[NEW]}_c{result.confidence:.2f}.jpg"
    )
    draw_cuts(collage.image, result).save(folder / name, quality=85)


if __name__ == "__main__":
    sys.exit(main())
