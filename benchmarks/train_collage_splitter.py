"""Fit the collage splitter's confidence: identity_pipeline/collage/splitter.safetensors.

    .venv/bin/python benchmarks/train_collage_splitter.py [--confidence-cases 1200] [--seed 0]

Seeded and CPU-only (about 3 min of wall time on two cores shared with other work). On synthetic
collages as apps make them (``synthetic.random_case``, every family, seeds far from the
benchmark's) built from the *train* pool of benchmarks/collage_photos.py (fetched with pip /
apt-get; ``--sources`` / ``--hold-out`` as in train_line_model.py; the held-back pool and
../shared/data/faces-dev are never read here), it runs the
rule-based splitter and the line model and fits two logistic regressions over
``split.confidence_features`` (the rules' margin, the log tile count, the line model's
confidence, whether the two find the same tiles): P(the rules' tiles are exactly right), the
photo's confidence, and P(the line model's are), which lets its tiles override the rules'
(``SplitSettings.line_model_overrides``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.collage_photos import (  # noqa: E402
    add_source_arguments,
    pick_sources,
    sources_from_arguments,
)
from identity_pipeline.collage import line_split, rules  # noqa: E402
from identity_pipeline.collage.boxes import same_tiles  # noqa: E402
from identity_pipeline.collage.split import (  # noqa: E402
    CONFIDENCE_FEATURES,
    WEIGHTS_FILE,
    confidence_features,
)
from identity_pipeline.collage.synthetic import FAMILIES, random_case  # noqa: E402

FAR_SEED = 900_000_000
CONFIDENCE_SEED = 30_000_000
MATCH_IOU = 0.95

# What the shipped weights were fitted on (--sources, --hold-out): the whole train pool as it is
# (see train_line_model.py for the other kinds of source).
_PHOTOS: list = []  # [collage_photos.training_sources()]


def case_features(seed: int) -> tuple[np.ndarray, bool, bool]:
    """The confidence features of one case, and whether the rules' and the line model's tiles
    are exactly right."""
    # Fitted on collages as apps make them (the benchmark's generator, far seeds, train pool):
    # training_case's harder mix, made to teach a network, would make it under-confident.
    rng = random.Random(f"confidence:{seed}")
    family = rng.choice(FAMILIES)
    case = random_case(family, pick_sources(_PHOTOS[0], rng), FAR_SEED + seed)
    pixels = np.asarray(case.image)
    by_rules = rules.split_image(pixels)
    by_lines = line_split.split_image(pixels)
    return (
        confidence_features(by_rules, by_lines),
        same_tiles(by_rules.boxes, case.boxes, MATCH_IOU),
        same_tiles(by_lines.boxes, case.boxes, MATCH_IOU),
    )


def _worker_init(photos) -> None:
    _PHOTOS[:] = photos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--confidence-cases", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    add_source_arguments(parser)
    parser.add_argument("--workers", type=int, default=4, help="processes (two per core)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    args = parser.parse_args(argv)
    from safetensors.numpy import save_file
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    sources, part = sources_from_arguments(args)
    photos = [sources]
    print(f"{part}: " + ", ".join(f"{k} {len(v)}" for k, v in photos[0].items()))
    base = args.seed * 100_000_000 + CONFIDENCE_SEED
    seeds = list(range(base, base + args.confidence_cases))
    context = multiprocessing.get_context("fork")
    with context.Pool(args.workers, _worker_init, (photos,)) as workers:
        cases = workers.map(case_features, seeds, chunksize=4)
    x = np.array([case[0] for case in cases])
    tensors = {}
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
        tensors[key] = weights.astype(np.float64)
    seconds = time.perf_counter() - started
    metadata = {
        "trained_by": "benchmarks/train_collage_splitter.py",
        "args": json.dumps({k: str(v) for k, v in vars(args).items() if k != "out"}),
        "confidence_features": json.dumps(CONFIDENCE_FEATURES),
        "seconds": f"{seconds:.0f}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(".tmp")
    save_file(tensors, str(temporary), metadata=metadata)
    temporary.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
