"""Train the learned collage splitter: identity_pipeline/collage/splitter.safetensors.

    .venv/bin/python benchmarks/train_collage_splitter.py [--cases 3000] [--steps 1500] [--seed 0]

Seeded and CPU-only (about 55 min of wall time on two cores shared with other work). Three stages, each on its own synthetic cases
built from the *train* pool of benchmarks/collage_photos.py (fetched with pip / apt-get; the
held-back pool and ../shared/data/faces-dev are never read here):

1. the seam network (SeamNet): per-pixel horizontal / vertical boundary maps at half the
   analysis size, binary cross-entropy on crops, targets drawn from the true tile boxes (a band
   one map pixel either side of every boundary between two photos, gutters included; the next
   pixel out is left unscored);
2. the line scorer: a logistic regression over the decoder's line features, fitted on every
   candidate line of every region the decoder visits, labelled true when no tile of the region
   straddles it (two rounds: the second with the first round's scorer deciding the walk);
3. the confidence calibration: an isotonic map from the decoder's raw log-confidence to the
   observed rate of exactly right photos.

Cases: ``synthetic.training_case`` (realistic albums: one-event tiles, blown-up small photos,
photos with flat dark or light edges, coloured and thin gutters, deeper irregular layouts,
JPEG 60-95 and re-compression) and ``synthetic.random_case`` on seeds far from the benchmark's.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.collage_photos import pool  # noqa: E402
from identity_pipeline.collage.boxes import Box  # noqa: E402
from identity_pipeline.collage.learned import (  # noqa: E402
    DEFAULT_SETTINGS,
    LINE_FEATURES,
    NET_WIDTHS,
    WEIGHTS_FILE,
    _Model,
    build_seam_net,
    logistic_scorer,
    to_analysis,
)
from identity_pipeline.collage.learned import (  # noqa: E402
    learned_split as split_image,
)
from identity_pipeline.collage.synthetic import FAMILIES, random_case, training_case  # noqa: E402

CROP = 192
RANDOM_CASE_SHARE = 0.25  # of cases from the benchmark's generator, on far seeds
FAR_SEED = 900_000_000
SCORER_SEED, CALIBRATION_SEED, CONFIDENCE_SEED = 10_000_000, 20_000_000, 30_000_000
MATCH_IOU = 0.95

_PHOTOS: list = []
_MODEL: list = []  # the model under fitting, in forked workers


def make_case(seed: int):
    rng = random.Random(f"case:{seed}")
    if rng.random() < RANDOM_CASE_SHARE:
        return random_case(rng.choice(FAMILIES), _PHOTOS, FAR_SEED + seed)
    return training_case(_PHOTOS, seed)


def boundary_targets(boxes: tuple[Box, ...], width: int, height: int, map_w: int, map_h: int):
    """2 x map_h x map_w uint8: 1 on a boundary between two photos, 0 off it, 255 unscored."""
    targets = np.zeros((2, map_h, map_w), np.uint8)
    sx, sy = map_w / width, map_h / height
    max_gap = 0.1 * max(width, height)
    for index, name in enumerate(("h", "v")):
        grid = targets[index] if name == "h" else targets[index].T
        scale_a, scale_b = (sy, sx) if name == "h" else (sx, sy)
        oriented = [
            (b.y0, b.y1, b.x0, b.x1) if name == "h" else (b.x0, b.x1, b.y0, b.y1) for b in boxes
        ]
        for a in oriented:
            for b in oriented:
                gap = b[0] - a[1]
                lo, hi = max(a[2], b[2]), min(a[3], b[3])
                if not (0 <= gap <= max_gap and hi - lo > 0):
                    continue
                between = any(
                    c[0] >= a[1] and c[1] <= b[0] and min(c[3], hi) > max(c[2], lo)
                    for c in oriented
                    if c is not a and c is not b
                )
                if between:
                    continue
                r0, r1 = math.floor(a[1] * scale_a) - 1, math.ceil(b[0] * scale_a) + 1
                c0, c1 = math.ceil(lo * scale_b), math.floor(hi * scale_b)
                ring = grid[max(0, r0 - 1) : r1 + 1, c0:c1]
                ring[ring == 0] = 255
                grid[max(0, r0) : r1, c0:c1] = 1
    return targets


def make_sample(seed: int):
    case = make_case(seed)
    pixels = np.asarray(case.image)
    analysis = to_analysis(pixels, DEFAULT_SETTINGS)
    height, width = analysis.shape[:2]
    targets = boundary_targets(
        case.boxes, pixels.shape[1], pixels.shape[0], width // 2, height // 2
    )
    return analysis, targets


def _init(photos) -> None:
    _PHOTOS[:] = photos


def build_samples(photos, seeds, workers: int):
    with multiprocessing.get_context("fork").Pool(workers, _init, (photos,)) as workers_pool:
        return workers_pool.map(make_sample, seeds, chunksize=16)


def cached_samples(net_cache: Path | None, photos, seeds, workers: int):
    """Build the training cases, or read them from beside the network cache (plain arrays)."""
    path = net_cache.with_suffix(f".cases{len(seeds)}.npz") if net_cache else None
    if path and path.exists():
        with np.load(path) as data:
            return [(data[f"image{i}"], data[f"target{i}"]) for i in range(len(seeds))]
    samples = build_samples(photos, seeds, workers)
    if path:
        arrays = {f"image{i}": image for i, (image, _) in enumerate(samples)}
        arrays.update({f"target{i}": target for i, (_, target) in enumerate(samples)})
        np.savez(path, **arrays)
    return samples


def crop_batch(samples, rng: np.random.Generator, size: int):
    import torch

    images = np.zeros((len(samples), size, size, 3), np.uint8)
    targets = np.full((len(samples), 2, size // 2, size // 2), 255, np.uint8)
    for i, (image, target) in enumerate(samples):
        height, width = image.shape[:2]
        top = 2 * rng.integers(0, max(0, height - size) // 2 + 1)
        left = 2 * rng.integers(0, max(0, width - size) // 2 + 1)
        crop = image[top : top + size, left : left + size]
        if rng.random() < 0.5:  # mirror: seams have no handedness
            crop, flip = crop[:, ::-1], True
        else:
            flip = False
        images[i, : crop.shape[0], : crop.shape[1]] = crop
        t = target[:, top // 2 : top // 2 + size // 2, left // 2 : left // 2 + size // 2]
        targets[i, :, : t.shape[1], : t.shape[2]] = t[:, :, ::-1] if flip else t
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - 0.5
    return x, torch.from_numpy(targets)


def train_net(samples, steps: int, seed: int, batch: int = 8, checkpoint: Path | None = None):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_seam_net(NET_WIDTHS)
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, 3e-3, total_steps=steps, pct_start=0.1
    )
    pos_weight = torch.tensor(3.0)
    net.train()
    started, running = time.perf_counter(), 0.0
    for step in range(steps):
        chosen = [samples[i] for i in rng.integers(0, len(samples), batch)]
        x, target = crop_batch(chosen, rng, CROP)
        logits = net(x)
        scored = target != 255
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits[scored], target[scored].float(), pos_weight=pos_weight
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if step % 50 == 0 or step == steps - 1:
            print(
                f"  step {step:5d}  loss {running:.4f}  {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        if checkpoint and step % 200 == 199:  # to look at, or to stop early with
            save_file(
                {k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(checkpoint)
            )
    net.eval()
    return net


def straddled(
    region: Box, name: str, lo: int, hi: int, boxes: tuple[Box, ...], tolerance: int
) -> bool:
    """Does a true tile inside ``region`` cross the line [lo, hi) (beyond ``tolerance`` px)?"""
    for box in boxes:
        if box.intersection(region) < 0.5 * box.area:
            continue
        b0, b1 = (box.y0, box.y1) if name == "h" else (box.x0, box.x1)
        if b0 < lo - tolerance and b1 > hi + tolerance:
            return True
    return False


def true_line(region: Box, name: str, lo: int, hi: int, boxes, tolerance: int) -> bool:
    """A true cut of the region: no tile straddles it, and tiles lie on both sides of it."""
    if straddled(region, name, lo, hi, boxes, tolerance):
        return False
    inside = [b for b in boxes if b.intersection(region) >= 0.5 * b.area]
    ends = [(b.y1 if name == "h" else b.x1) for b in inside]
    starts = [(b.y0 if name == "h" else b.x0) for b in inside]
    return any(e <= hi + tolerance for e in ends) and any(s >= lo - tolerance for s in starts)


def _case_lines(task):
    """(features, labels) of every candidate line the decoder looks at in one case."""
    seed, weights = task
    case = make_case(seed)
    pixels = np.asarray(case.image)
    tolerance = max(2, round(0.01 * max(pixels.shape[:2])))
    features, labels = [], []

    def record(region, name, found):
        for c in found:
            features.append(c.features)
            labels.append(true_line(region, name, c.start, c.end, case.boxes, tolerance))

    split_image(pixels, scorer=logistic_scorer(weights), record=record, model=_MODEL[0])
    return features, labels


def _case_confidence(seed: int):
    case = make_case(seed)
    result = split_image(np.asarray(case.image), model=_MODEL[0])
    return result.confidence, exact_match(result.boxes, case.boxes)


def _case_both(seed: int):
    """Features of the combined confidence, and whether the rules' and the line model's tiles
    are exactly right."""
    from identity_pipeline.collage import line_split, rules
    from identity_pipeline.collage.split import confidence_features

    # Fitted on collages as apps make them (the benchmark's generator, far seeds, train pool):
    # training_case's harder mix, made to teach the network, would make it under-confident.
    rng = random.Random(f"confidence:{seed}")
    case = random_case(rng.choice(FAMILIES), _PHOTOS, FAR_SEED + seed)
    pixels = np.asarray(case.image)
    by_rules = rules.split_image(pixels)
    by_lines = line_split.split_image(pixels)
    return (
        confidence_features(by_rules, by_lines),
        exact_match(by_rules.boxes, case.boxes),
        exact_match(by_lines.boxes, case.boxes),
    )


def fit_confidence(args, photos, workers: int) -> None:
    """Stage 4: the combined confidence (split.py: P(the rules' tiles are exactly right)) and
    P(the line model's are), added to the weights file; both logistic over the same features."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from sklearn.linear_model import LogisticRegression

    from identity_pipeline.collage.learned import _model
    from identity_pipeline.collage.split import CONFIDENCE_FEATURES

    model = _model(args.out)
    base = args.seed * 100_000_000 + CONFIDENCE_SEED
    cases = in_workers(
        _case_both, list(range(base, base + args.confidence_cases)), photos, model, workers
    )
    x = np.array([case[0] for case in cases])
    with safe_open(str(args.out), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        metadata = handle.metadata()
    for key, column, label in (("confidence_model", 1, "rules"), ("lines_right", 2, "line model")):
        y = np.array([case[column] for case in cases])
        fit = LogisticRegression(C=1.0, max_iter=5000).fit(x, y)
        weights = np.concatenate([fit.coef_[0], fit.intercept_])
        print(
            f"{key}: {len(y)} cases, {label} exactly right {y.mean():.3f}; weights "
            + ", ".join(
                f"{n}={w:+.2f}"
                for n, w in zip(CONFIDENCE_FEATURES + ("bias",), weights, strict=True)
            )
        )
        tensors[key] = torch.tensor(weights, dtype=torch.float64)
    metadata["confidence_features"] = json.dumps(CONFIDENCE_FEATURES)
    temporary = args.out.with_suffix(".tmp")
    save_file(tensors, str(temporary), metadata=metadata)
    temporary.replace(args.out)


def _worker_init(photos, model) -> None:
    import torch

    torch.set_num_threads(1)
    _PHOTOS[:] = photos
    _MODEL[:] = [model]


def in_workers(function, tasks, photos, model, workers: int):
    """``function`` over ``tasks`` in forked workers (more share of a busy machine's cores)."""
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, _worker_init, (photos, model)) as workers_pool:
        return workers_pool.map(function, tasks, chunksize=4)


def collect_lines(model: _Model, weights, seeds, photos, workers: int):
    results = in_workers(_case_lines, [(seed, weights) for seed in seeds], photos, model, workers)
    features = [f for case_features, _ in results for f in case_features]
    labels = [label for _, case_labels in results for label in case_labels]
    return np.array(features), np.array(labels)


def exact_match(found, truth) -> bool:
    if len(found) != len(truth):
        return False
    unused = list(found)
    for box in truth:
        best = max(unused, key=box.iou, default=None)
        if best is None or box.iou(best) < MATCH_IOU:
            return False
        unused.remove(best)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--scorer-cases", type=int, default=240)
    parser.add_argument("--calibration-cases", type=int, default=400)
    parser.add_argument("--confidence-cases", type=int, default=1200)
    parser.add_argument(
        "--confidence-only", action="store_true", help="stage 4 alone, on the --out weights"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    parser.add_argument(
        "--net-cache",
        type=Path,
        help="reuse the network trained by an earlier run with the same arguments (stage 1), "
        "or save it there",
    )
    args = parser.parse_args(argv)
    import torch
    from safetensors.torch import save_file
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    torch.set_num_threads(args.workers)
    started = time.perf_counter()
    photos = [photo for _, photo in pool("train")]
    print(f"train pool: {len(photos)} photos")
    if args.confidence_only:
        fit_confidence(args, photos, 2 * args.workers)
        return 0
    base = args.seed * 100_000_000
    if args.net_cache and args.net_cache.exists():
        from safetensors.torch import load_file

        net = build_seam_net(NET_WIDTHS)
        net.load_state_dict(load_file(str(args.net_cache)))
        net.eval()
        print(f"network from {args.net_cache}")
    else:
        samples = cached_samples(
            args.net_cache, photos, range(base, base + args.cases), args.workers
        )
        print(f"{len(samples)} cases ready in {time.perf_counter() - started:.0f} s", flush=True)
        partial = args.net_cache.with_suffix(".partial.safetensors") if args.net_cache else None
        net = train_net(samples, args.steps, args.seed, checkpoint=partial)
        del samples
        if args.net_cache:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(args.net_cache))
    net_seconds = time.perf_counter() - started

    # Line scorer: round 1 walks with the map's mean alone, round 2 with round 1's scorer.
    identity_x = np.linspace(-60.0, 0.0, 60_001)
    model = _Model(net, np.zeros(len(LINE_FEATURES) + 1), identity_x, identity_x)
    walk = np.array([1.0] + [0.0] * (len(LINE_FEATURES) - 1) + [0.0])
    seeds = range(base + SCORER_SEED, base + SCORER_SEED + args.scorer_cases)
    workers = 2 * args.workers
    x, y = collect_lines(model, walk, seeds, photos, workers)
    fit = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    weights = np.concatenate([fit.coef_[0], fit.intercept_])
    print(
        f"line scorer, round 1: {len(y)} lines ({time.perf_counter() - started:.0f} s)", flush=True
    )
    x2, y2 = collect_lines(model, weights, seeds, photos, workers)
    fit = LogisticRegression(C=1.0, max_iter=2000).fit(np.vstack([x, x2]), np.concatenate([y, y2]))
    weights = np.concatenate([fit.coef_[0], fit.intercept_])
    print(
        f"line scorer: {len(y) + len(y2)} lines, {int(y.sum() + y2.sum())} true; weights "
        + ", ".join(
            f"{n}={w:+.2f}" for n, w in zip(LINE_FEATURES + ("bias",), weights, strict=True)
        )
    )

    # Calibration: raw log-confidence (identity map) against exactly right.
    model = _Model(net, weights, identity_x, identity_x)
    seeds = range(base + CALIBRATION_SEED, base + CALIBRATION_SEED + args.calibration_cases)
    pairs = in_workers(_case_confidence, list(seeds), photos, model, workers)
    raw, exact = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], float)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(raw, exact)
    cal_x, cal_y = iso.X_thresholds_, iso.y_thresholds_
    print(f"calibration: {len(raw)} cases, {exact.mean():.3f} exactly right; {len(cal_x)} knots")

    tensors = {f"net.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    tensors["line_scorer"] = torch.tensor(weights, dtype=torch.float64)
    tensors["calibration_x"] = torch.tensor(cal_x, dtype=torch.float64)
    tensors["calibration_y"] = torch.tensor(cal_y, dtype=torch.float64)
    seconds = time.perf_counter() - started
    metadata = {
        "trained_by": "benchmarks/train_collage_splitter.py",
        "args": json.dumps({k: str(v) for k, v in vars(args).items() if k != "out"}),
        "line_features": json.dumps(LINE_FEATURES),
        "net_widths": json.dumps(NET_WIDTHS),
        "seconds": f"{seconds:.0f}",
        "net_seconds": f"{net_seconds:.0f}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(".tmp")
    save_file(tensors, str(temporary), metadata=metadata)
    temporary.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {seconds:.0f} s")
    fit_confidence(args, photos, workers)
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
