"""Fit the pose segmenter's pixel-ownership weights on the tuning scenes (and only those).

    .venv/bin/python benchmarks/fit_pose_ownership.py [--scenes N] [--pixels N] [--seed S]
        [--write]

Who owns a pixel that one or more silhouettes claim is a choice among the people who may claim
it and "nobody" (background, or someone the pose model did not find). ``pose.assign_owners``
scores each candidate with a linear function of ``pose.OWNERSHIP_FEATURES`` and gives the pixel
to the best (nobody scores 0): a conditional logit (McFadden's choice model). Here its weights
are fitted by maximum likelihood on the ``tune`` split of ``group_masks.py`` (astronaut and
camera man on brick, grass and gravel; Grace Hopper and the report backgrounds are never seen):

1. ``--scenes`` scenes per layout of the tune split, seeded; the pose model runs once per scene
   as in the pipeline (working size, the pipeline's settings) and ``ownership_evidence`` gives
   every candidate's features.
2. Up to ``--pixels`` claimed pixels per scene (seeded sample; pixels fixed by hard evidence, a
   face or a hand, and the 2 px band along drawn outlines left out). The right answer is the
   person the scene put there when that person may claim it, else nobody.
3. L-BFGS on the mean negative log-likelihood (+ a small L2), from the hand-set weights.

Prints the fit and the hand-set weights' likelihood and pixel accuracy on the same pixels;
``--write`` stores the weights with their provenance in ``masks/pose_ownership.json``
(``config.fitted_pose_ownership()`` reads them; off by default: ahead of the hand-set weights
on the tune split, not on the report split).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.group_masks import scene_faces, scene_set  # noqa: E402
from benchmarks.shared_data import SCRATCH  # noqa: E402
from identity_pipeline.masks import DEFAULT_MASK_CONFIG  # noqa: E402
from identity_pipeline.masks.config import HANDSET_OWNERSHIP, PoseOwnership  # noqa: E402
from identity_pipeline.masks.geometry import resize_to_max_side  # noqa: E402
from identity_pipeline.masks.mediapipe_models import LITERT  # noqa: E402
from identity_pipeline.masks.pose import (  # noqa: E402
    OWNERSHIP_FEATURES,
    PoseSegmenter,
    ownership_evidence,
)
from identity_pipeline.masks.scenes import (  # noqa: E402
    fetch_grace_hopper,
    offline_face_backend,
    person_photos,
)

WEIGHTS_PATH = REPO_ROOT / "identity_pipeline" / "masks" / "pose_ownership.json"
L2 = 1e-3


def scene_pixels(scene, segmenter, config, face_backend, pixels: int, rng) -> dict | None:
    """Candidates' features (n, P, F), who may claim (n, P) and the answer (n,) of a sample of
    one scene's claimed pixels; answer P means nobody."""
    faces, owners = scene_faces(scene, face_backend)
    if not owners:
        return None
    work, scale = resize_to_max_side(scene.image, config.work_max_side)
    height, width = work.shape[:2]
    work_faces = [face.scaled(scale) for face in faces]
    poses, hands = segmenter.people(work, work_faces, config)
    evidence = ownership_evidence(poses, work_faces, (height, width), config, hands)
    people = len(faces)
    features = np.zeros((people, len(OWNERSHIP_FEATURES), height, width), np.float32)
    allowed = np.zeros((people, height, width), bool)
    forced = np.zeros((height, width), bool)
    for index, item in evidence.items():
        x0, y0, x1, y1 = item.box
        features[index, :, y0:y1, x0:x1] = item.features
        allowed[index, y0:y1, x0:x1] = item.allowed
        forced[y0:y1, x0:x1] |= item.forced

    def at_work(mask: np.ndarray) -> np.ndarray:
        small = cv2.resize(
            mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_AREA
        )
        return small >= 128

    truth = np.full((height, width), people, np.int64)  # nobody
    for index, face in enumerate(faces):
        if face.identity is not None:
            truth[at_work(scene.people[owners[face.identity]])] = index
    ignore = at_work(scene.ignore)
    chosen = np.flatnonzero((allowed.any(axis=0) & ~forced & ~ignore).ravel())
    if len(chosen) > pixels:
        chosen = rng.choice(chosen, pixels, replace=False)
    ys, xs = np.unravel_index(chosen, (height, width))
    answer = truth[ys, xs]
    can = allowed[:, ys, xs].T  # (n, P)
    is_person = answer < people
    answer[is_person & ~can[np.arange(len(answer)), np.minimum(answer, people - 1)]] = people
    return {
        "features": features[:, :, ys, xs].transpose(2, 0, 1),  # (n, P, F)
        "allowed": can,
        "answer": answer,
    }


def stacked(samples: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The samples padded to the largest number of people; nobody becomes the last column."""
    most = max(sample["allowed"].shape[1] for sample in samples)
    features, allowed, answers = [], [], []
    for sample in samples:
        n, people, count = sample["features"].shape
        padded = np.zeros((n, most, count), np.float32)
        padded[:, :people] = sample["features"]
        can = np.zeros((n, most), bool)
        can[:, :people] = sample["allowed"]
        answer = sample["answer"].copy()
        answer[answer == people] = most
        features.append(padded)
        allowed.append(can)
        answers.append(answer)
    return (
        torch.from_numpy(np.concatenate(features)),
        torch.from_numpy(np.concatenate(allowed)),
        torch.from_numpy(np.concatenate(answers)),
    )


def choice_logits(weights: torch.Tensor, features, allowed) -> torch.Tensor:
    scores = weights[0] + features @ weights[1:]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.cat([scores, torch.zeros(len(scores), 1)], dim=1)


def evaluate(weights: torch.Tensor, features, allowed, answers) -> tuple[float, float]:
    with torch.no_grad():
        logits = choice_logits(weights, features, allowed)
        loss = torch.nn.functional.cross_entropy(logits, answers).item()
        accuracy = (logits.argmax(dim=1) == answers).float().mean().item()
    return loss, accuracy


def fit(features, allowed, answers, start: np.ndarray) -> torch.Tensor:
    weights = torch.tensor(start, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = choice_logits(weights, features, allowed)
        loss = torch.nn.functional.cross_entropy(logits, answers)
        loss = loss + L2 * (weights[1:] ** 2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    return weights.detach()


def fitted_config(config):
    """The settings the fitted ownership was chosen with on the tune split."""
    return replace(config, pose_spare_swallowed=True, pose_runtime=LITERT)


def tune_pixels(config, scenes_per_layout: int, pixels: int, seed: int) -> list[dict]:
    """``scene_pixels`` of the tune split's scenes (seeded)."""
    rng = np.random.default_rng(seed)
    photos = person_photos(fetch_grace_hopper(SCRATCH / "identity_pipeline_people"))
    segmenter = PoseSegmenter(config.pose_model, config.pose_runtime)
    face_backend = offline_face_backend()
    samples = []
    for scene in scene_set("tune", scenes_per_layout, photos):
        sample = scene_pixels(scene, segmenter, config, face_backend, pixels, rng)
        if sample is not None:
            samples.append(sample)
    return samples


def fitted_ownership(samples: list[dict]) -> PoseOwnership:
    features, allowed, answers = stacked(samples)
    start = HANDSET_OWNERSHIP.as_array().copy()
    start[0] = 2.0  # the hand-set bias is a wall, not a starting point
    weights = fit(features, allowed, answers, start)
    return PoseOwnership(*(round(float(value), 3) for value in weights))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=10, help="tune scenes per layout")
    parser.add_argument("--pixels", type=int, default=20_000, help="sampled pixels per scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    # The pose settings the fitted weights go with (the fit's features depend on them).
    config = fitted_config(DEFAULT_MASK_CONFIG)
    samples = tune_pixels(config, args.scenes, args.pixels, args.seed)
    features, allowed, answers = stacked(samples)
    handset = HANDSET_OWNERSHIP.as_array()
    nobody = int((answers == allowed.shape[1]).sum())
    print(
        f"tune split: {len(samples)} scenes, {len(answers)} claimed pixels "
        f"({100 * nobody / len(answers):.1f} % nobody's)"
    )
    weights = torch.from_numpy(fitted_ownership(samples).as_array())
    names = ("bias", *OWNERSHIP_FEATURES)
    for label, values in (("hand-set", torch.from_numpy(handset)), ("fitted", weights)):
        loss, accuracy = evaluate(values, features, allowed, answers)
        print(f"  {label:<9} NLL {loss:.4f}  pixel accuracy {100 * accuracy:.2f} %")
    fitted = {name: round(float(value), 4) for name, value in zip(names, weights, strict=True)}
    print("  weights: " + ", ".join(f"{k} {v:+.3f}" for k, v in fitted.items()))
    if args.write:
        loss, accuracy = evaluate(weights, features, allowed, answers)
        record = {
            "features": list(names),
            "weights": fitted,
            "fitted_on": {
                "split": "tune",
                "scenes_per_layout": args.scenes,
                "scenes": len(samples),
                "pixels": len(answers),
                "seed": args.seed,
                "l2": L2,
            },
            "nll": round(loss, 5),
            "pixel_accuracy": round(accuracy, 5),
        }
        WEIGHTS_PATH.write_text(json.dumps(record, indent=2) + "\n")
        print(f"written: {WEIGHTS_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
