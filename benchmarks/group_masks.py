"""Masks per person in group photos: scored against ground truth, and proxies on real photos.

    .venv/bin/python benchmarks/group_masks.py [--split report|tune] [--scenes N] [--out DIR]
        [--groups DIR] [--repeat N] [--methods pose,selector,...]

1. Composed scenes (``identity_pipeline.masks.scenes.group_scene``): people cut out of three
   free photos whose masks are known, pasted overlapping, shoulder to shoulder, in front of and
   behind each other, on real backgrounds. Per visible person with a detected face: IoU of the
   mask (>= 128) with what is visible of them, and *leak*: the share of the mask lying on other
   people. Held objects and a 2 px band along every outline are left out of both.
   Two disjoint sets: ``tune`` (astronaut and camera on brick, grass, gravel; seeds 0-99), on
   which every pose_* threshold was chosen, and ``report`` (every scene has Grace Hopper, whom
   tuning never saw, with the others, on rocket, coffee, chelsea, hubble; seeds 1000+).
   ``--scenes`` per layout, 16 by default (about 210 people): at 4 (55 people) the same two
   methods read 0.770 and 0.772 where 16 scenes put them 0.047 apart.
2. Real group photos (``../shared/data/faces-dev/groups``, third-party, benchmark only, read in
   place): no ground truth, so proxies per sample: the share of other people's face boxes the
   mask covers, the share of its own face box covered, the mask's connected components, and
   which backend the selector kept (the GrabCut fallback rate).
3. Seconds per group tile of 8 people with the pose segmenter on one thread (``cv2``, BLAS and
   LiteRT held to one thread; run it under ``taskset -c 0``; ``--only-timing`` runs just this):
   the median of --repeat runs, wall and process CPU time (the CPU time is what a loaded shared
   machine does not inflate), df9339a's settings in cv2.dnn beside.

Methods, same scenes, same run: ``selector`` (the default: pose first for two or more people,
chosen per person), ``selector-cv2`` (the same with the models in cv2.dnn),
``selector-per-tile`` (today's settings, but a backend kept only for a whole tile, as before),
``selector-df9339a`` (main df9339a: per tile, hand-set ownership, no sparing, cv2.dnn: the
previous version), ``selector-before`` (the selector before the pose model: selfie, then GrabCut,
per tile), ``pose``, ``pose-df9339a`` and ``pose-fast`` (the pose segmenter alone with today's,
df9339a's and the cheap settings), ``grabcut`` and ``selfie`` alone. Every method goes through
``build_identity_masks`` (split, clean-up, soft edges), as in the pipeline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.shared_data import FACES_DEV, SCRATCH  # noqa: E402
from identity_pipeline.masks import (  # noqa: E402
    DEFAULT_MASK_CONFIG,
    FaceInTile,
    GrabCutSegmenter,
    IdentityMask,
    MaskConfig,
    SelfieSegmenter,
    build_identity_masks,
    masks_contact_sheet,
    quality,  # noqa: E402
    select_segmenter,
)
from identity_pipeline.masks.config import HANDSET_OWNERSHIP  # noqa: E402
from identity_pipeline.masks.geometry import clip_box, reach_box, resize_to_max_side  # noqa: E402
from identity_pipeline.masks.mediapipe_models import CV2_DNN, LITERT  # noqa: E402
from identity_pipeline.masks.pose import PoseSegmenter  # noqa: E402
from identity_pipeline.masks.records import Segmenter  # noqa: E402
from identity_pipeline.masks.scenes import (  # noqa: E402
    GroupScene,
    detect_faces,
    fetch_grace_hopper,
    group_scene,
    offline_face_backend,
    person_photos,
    visible_face_owner,
)

DEFAULT_OUT = SCRATCH / "group_masks_bench"
SPLITS = {
    "tune": {
        "people": ("astronaut", "camera"),
        "required": None,
        "backgrounds": ("brick", "grass", "gravel"),
        "seed": 0,
    },
    "report": {
        "people": ("astronaut", "camera", "grace_hopper"),
        "required": "grace_hopper",
        "backgrounds": ("rocket", "coffee", "chelsea", "hubble_deep_field"),
        "seed": 1000,
    },
}
LAYOUT_PEOPLE = {"shoulder_to_shoulder": (2, 4), "front_and_behind": (3, 5), "two_rows": (6, 8)}


@dataclass
class PersonScore:
    scene: str
    layout: str
    person: str
    iou: float
    leak: float


def scene_set(split: str, count: int, photos) -> list[GroupScene]:
    """``count`` scenes per layout of one split, all drawn from its seed."""
    spec = SPLITS[split]
    rng = np.random.default_rng(spec["seed"])
    scenes = []
    for layout, (low, high) in LAYOUT_PEOPLE.items():
        for _ in range(count):
            size = int(rng.integers(low, high + 1))
            people = list(rng.choice(spec["people"], size=size))
            if spec["required"] and spec["required"] not in people:
                people[int(rng.integers(size))] = spec["required"]
            backdrop = str(rng.choice(spec["backgrounds"]))
            seed = int(rng.integers(spec["seed"], spec["seed"] + 100_000))
            scenes.append(group_scene(layout, seed, people, backdrop, photos))
    return scenes


def scene_faces(scene: GroupScene, face_backend) -> tuple[list[FaceInTile], dict[str, int]]:
    """Detected faces, each matched to the placed person it lies on (named p<index>)."""
    faces = []
    owners = {}
    for face in detect_faces(scene.image, backend=face_backend):
        owner = visible_face_owner(scene, face)
        name = None if owner is None or owner in owners.values() else f"p{owner}"
        faces.append(FaceInTile(face.face_id, face.box, face.landmarks, name))
        if name is not None:
            owners[name] = owner
    return faces, owners


def score_scene(
    scene: GroupScene, masks: Sequence[IdentityMask], owners: dict[str, int], method: str
) -> list[PersonScore]:
    valid = ~scene.ignore
    anyone = scene.people.any(axis=0)
    scores = []
    for mask in masks:
        owner = owners[mask.identity]
        truth = scene.people[owner] & valid
        others = anyone & ~scene.people[owner] & valid
        predicted = (mask.mask >= 128) & valid
        union = int((predicted | truth).sum())
        iou = int((predicted & truth).sum()) / union if union else 0.0
        area = int(predicted.sum())
        leak = int((predicted & others).sum()) / area if area else 0.0
        scores.append(
            PersonScore(scene.name, scene.layout, scene.placements[owner].person, iou, leak)
        )
    return scores


def surround_edge_contrast(gradient, region, labels, index, face, config) -> float:
    """The previous edge check, verbatim: outline gradient / mean gradient in the reach box."""
    height, width = region.shape
    kernel = np.ones((3, 3), np.uint8)
    as_uint8 = region.astype(np.uint8)
    outline = (cv2.dilate(as_uint8, kernel) - cv2.erode(as_uint8, kernel)).astype(bool)
    others = ((labels >= 0) & (labels != index)).astype(np.uint8)
    outline &= ~cv2.dilate(others, kernel, iterations=2).astype(bool)
    outline[:2, :] = outline[-2:, :] = False
    outline[:, :2] = outline[:, -2:] = False
    x0, y0, x1, y1 = clip_box(reach_box(face, config, height), width, height)
    around = float(gradient[y0:y1, x0:x1].mean()) if x1 > x0 and y1 > y0 else 0.0
    if not outline.any() or around <= 0:
        return 0.0
    return float(gradient[outline].mean()) / around


def fast_config(config: MaskConfig) -> MaskConfig:
    """The pose segmenter's cheaper setting: a second view only when the first is clearly off
    (more than 12 % of its side), no hand model (chosen on the tuning scenes), in LiteRT."""
    return replace(
        litert_config(config),
        pose_view_below=2.7,
        pose_refine_shift=0.12,
        pose_refine_scale=0.12,
        pose_refine_degrees=8.0,
        hands=False,
    )


class WithConfig:
    """A segmenter run with its own settings, whatever the caller passes."""

    def __init__(self, segmenter: Segmenter, config: MaskConfig) -> None:
        self.segmenter, self.config = segmenter, config
        self.name = segmenter.name

    def segment(self, image_rgb, faces, config):
        return self.segmenter.segment(image_rgb, faces, self.config)


def previous_config(config: MaskConfig) -> MaskConfig:
    """Main df9339a's pose settings (the defaults until this round): the hand-set ownership
    weights, no sparing of swallowed people when looking again, in cv2.dnn."""
    return replace(
        config, pose_ownership=HANDSET_OWNERSHIP, pose_spare_swallowed=False, pose_runtime=CV2_DNN
    )


def litert_config(config: MaskConfig) -> MaskConfig:
    return replace(config, pose_runtime=LITERT)


class WithSelectorConfig:
    """The selector run with its own settings (its pose segmenter in their runtime)."""

    name = "selector"

    def __init__(self, config: MaskConfig) -> None:
        self.config = config
        self.selector = select_segmenter(config)

    def segment(self, image_rgb, faces, config):
        return self.selector.segment(image_rgb, faces, self.config)


def per_tile(config: MaskConfig) -> MaskConfig:
    """Main df9339a's selection rule: a backend is kept for the whole tile only when every
    person's region is plausible (the selector with ``selector_broken_share`` 0)."""
    return replace(config, selector_broken_share=0.0)


class BeforeSelector(WithSelectorConfig):
    """The selector before the pose model (main before it): selfie model, then GrabCut, per
    tile, judged with the edge check of then (outline gradient over the gradient of the whole
    person's surroundings, at least 1.5)."""

    def __init__(self, config: MaskConfig) -> None:
        before = replace(config, backend_order=("sam", "selfie", "grabcut"))
        super().__init__(per_tile(replace(before, min_edge_contrast=1.5)))

    def segment(self, image_rgb, faces, config):
        with mock.patch.object(quality, "edge_contrast", surround_edge_contrast):
            return super().segment(image_rgb, faces, config)


def build_methods(config: MaskConfig) -> dict[str, Segmenter]:
    previous = previous_config(config)
    return {
        "pose": PoseSegmenter(config.pose_model, config.pose_runtime),
        "pose-df9339a": WithConfig(PoseSegmenter(config.pose_model, CV2_DNN), previous),
        "pose-fast": WithConfig(PoseSegmenter(config.pose_model, LITERT), fast_config(config)),
        "selector": select_segmenter(config),
        "selector-cv2": WithSelectorConfig(replace(config, pose_runtime=CV2_DNN)),
        "selector-per-tile": WithSelectorConfig(per_tile(config)),
        "selector-df9339a": WithSelectorConfig(per_tile(previous)),
        "selector-before": BeforeSelector(config),
        "grabcut": GrabCutSegmenter(),
        "selfie": SelfieSegmenter(config.selfie_model),
    }


def composed_table(scenes, methods, config, face_backend, out: Path | None) -> dict:
    results: dict[str, list[PersonScore]] = defaultdict(list)
    kept: dict[str, Counter] = defaultdict(Counter)
    undetected = 0
    people = 0
    for scene in scenes:
        faces, owners = scene_faces(scene, face_backend)
        people += len(scene.placements)
        undetected += len(scene.placements) - len(owners)
        if not owners:
            continue
        for name, method in methods.items():
            masks = build_identity_masks(scene.image, faces, method, config)
            results[name].extend(score_scene(scene, masks, owners, name))
            kept[name].update(mask.backend for mask in masks)
            if out is not None and name in ("pose", "selector-before"):
                write_overlay(out / f"{scene.name}__{name}.png", scene.image, masks)
    return {"scores": results, "kept": kept, "people": people, "undetected": undetected}


def print_composed(table: dict, split: str) -> None:
    scores = table["scores"]
    print(
        f"\ncomposed scenes ({split}): {table['people']} people placed, "
        f"{table['undetected']} without a detected face (not scored)"
    )
    layouts = sorted({s.layout for rows in scores.values() for s in rows})
    header = f"{'method':<16} {'IoU':>6} {'leak':>6} {'IoU<0.7':>8}  " + "  ".join(
        f"{layout[:14]:>14}" for layout in layouts
    )
    print(header + "   kept backends")
    print("-" * (len(header) + 16))
    for name, rows in scores.items():
        ious = np.array([r.iou for r in rows])
        leaks = np.array([r.leak for r in rows])
        per_layout = "  ".join(
            f"{np.mean([r.iou for r in rows if r.layout == layout]):>6.3f}/"
            f"{100 * np.mean([r.leak for r in rows if r.layout == layout]):>5.1f}%"
            for layout in layouts
        )
        kept = ", ".join(f"{k} {v}" for k, v in table["kept"][name].most_common())
        print(
            f"{name:<16} {ious.mean():>6.3f} {100 * leaks.mean():>5.1f}% "
            f"{(ious < 0.7).sum():>4}/{len(ious):<3}  {per_layout}   {kept}"
        )
    print("(per layout: mean IoU / mean leak into other people)")
    print("\nper person photo (IoU / leak):")
    for name, rows in scores.items():
        by_person = defaultdict(list)
        for r in rows:
            by_person[r.person].append(r)
        parts = [
            f"{person} {np.mean([r.iou for r in rs]):.3f}/{100 * np.mean([r.leak for r in rs]):.1f}%"
            f" (n={len(rs)})"
            for person, rs in sorted(by_person.items())
        ]
        print(f"  {name:<16} " + "  ".join(parts))


def real_groups(groups: Path, methods, config, face_backend, out: Path, min_named_px: float):
    """Proxies on real group photos (no ground truth)."""
    rows = defaultdict(list)
    sheet = []
    for path in sorted(groups.glob("*.jpg")) if groups.is_dir() else []:
        image = np.asarray(Image.open(path).convert("RGB"))
        found = detect_faces(image, backend=face_backend)
        faces = [
            FaceInTile(f.face_id, f.box, f.landmarks, f"p{i}" if f.size >= min_named_px else None)
            for i, f in enumerate(found)
        ]
        for name, method in methods.items():
            started = time.perf_counter()
            masks = build_identity_masks(image, faces, method, config)
            seconds = time.perf_counter() - started
            for mask in masks:
                rows[name].append(proxies(mask, faces, seconds / max(1, len(masks))))
            if name == "selector":
                sheet.append((image, masks))
                write_overlay(out / f"{path.stem}__{name}.png", image, masks)
    if not rows:
        print(f"\nno real group photos under {groups}")
        return sheet
    print(f"\nreal group photos ({groups}, no ground truth): per sample")
    header = (
        f"{'method':<16} {'samples':>7} {'on others':>9} {'own face':>8} {'parts':>5} "
        f"{'s/sample':>8}  kept"
    )
    print(header)
    print("-" * (len(header) + 20))
    for name, samples in rows.items():
        kept = Counter(s["backend"] for s in samples)
        print(
            f"{name:<16} {len(samples):>7} {100 * np.mean([s['on_others'] for s in samples]):>8.1f}% "
            f"{100 * np.mean([s['own_face'] for s in samples]):>7.1f}% "
            f"{np.mean([s['components'] for s in samples]):>5.2f} "
            f"{np.mean([s['seconds'] for s in samples]):>8.2f}  "
            + ", ".join(f"{k} {v}" for k, v in kept.most_common())
        )
    print(
        "(on others: share of other people's face boxes under the mask; own face: share of "
        "its own face box covered; parts: connected components of the mask)"
    )
    return sheet


def proxies(mask: IdentityMask, faces: Sequence[FaceInTile], seconds: float) -> dict:
    inside = mask.mask >= 128
    height, width = inside.shape

    def covered(face: FaceInTile) -> float:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        box = inside[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
        return float(box.mean()) if box.size else 0.0

    own = next(f for f in faces if f.face_id == mask.face_id)
    others = [covered(f) for f in faces if f.face_id != mask.face_id]
    count, _ = cv2.connectedComponents(inside.astype(np.uint8))
    return {
        "on_others": float(np.mean(others)) if others else 0.0,
        "own_face": covered(own),
        "components": count - 1,
        "seconds": seconds,
        "backend": mask.backend,
    }


def time_group_tile(photos, config, face_backend, repeat: int) -> None:
    """Seconds per 8-person tile with the pose segmenter (one thread): the segmentation alone
    (``PoseSegmenter.segment`` at working size, what ``segment_seconds`` records) and the whole
    ``build_identity_masks`` (plus split, soft edges, eight blurred training copies)."""
    cv2.setNumThreads(1)
    scene = group_scene(
        "two_rows", 7, ["astronaut", "grace_hopper", "camera"] * 3, "rocket", photos
    )
    faces, owners = scene_faces(scene, face_backend)
    faces = faces[:8]
    work, scale = resize_to_max_side(scene.image, config.work_max_side)
    work_faces = [face.scaled(scale) for face in faces]
    print(
        f"\nseconds per 8-person tile ({scene.image.shape[1]}x{scene.image.shape[0]}, "
        f"{len(faces)} faces), 1 thread, median of {repeat} runs (min), wall and process CPU:"
    )
    settings = {
        "pose": config,
        "pose-cv2": replace(config, pose_runtime=CV2_DNN),
        "pose-no-hands": replace(config, hands=False),
        "pose-fast": fast_config(config),
        "pose-df9339a": previous_config(config),
    }
    for name, settings_used in settings.items():
        pose = PoseSegmenter(settings_used.pose_model, settings_used.pose_runtime)
        for label, run in (
            ("segment", lambda p=pose, c=settings_used: p.segment(work, work_faces, c)),
            (
                "build masks",
                lambda p=pose, c=settings_used: build_identity_masks(scene.image, faces, p, c),
            ),
        ):
            walls, cpus = [], []
            pose.runs = 0
            if pose.hands:
                pose.hands.runs = 0
            for _ in range(repeat):
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            runs = (pose.runs + (pose.hands.runs if pose.hands else 0)) / repeat
            print(
                f"  {name:<13} {pose.runtime:<8} {label:<12} wall {statistics.median(walls):5.2f} s "
                f"({min(walls):.2f})  CPU {statistics.median(cpus):5.2f} s ({min(cpus):.2f})  "
                f"model runs {runs:.0f}"
            )


def write_overlay(path: Path, image: np.ndarray, masks: Sequence[IdentityMask]) -> None:
    from identity_pipeline.masks.preview import people_overlay

    people_overlay(image, masks, max_side=900).save(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="report")
    parser.add_argument("--scenes", type=int, default=16, help="scenes per layout")
    parser.add_argument("--groups", type=Path, default=FACES_DEV / "groups")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--methods",
        default="pose,pose-df9339a,pose-fast,selector,selector-cv2,selector-per-tile,"
        "selector-df9339a,selector-before,grabcut,selfie",
    )
    parser.add_argument("--min-named-px", type=float, default=40.0)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--only-timing", action="store_true", help="just the 8-person tile")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    config = DEFAULT_MASK_CONFIG
    face_backend = offline_face_backend()
    photos = person_photos(fetch_grace_hopper(SCRATCH / "identity_pipeline_people"))
    wanted = args.methods.split(",")
    methods = {k: v for k, v in build_methods(config).items() if k in wanted}
    if not args.only_timing:
        scenes = scene_set(args.split, args.scenes, photos)
        table = composed_table(scenes, methods, config, face_backend, args.out)
        print_composed(table, args.split)
    if not args.skip_real and not args.only_timing:
        sheet = real_groups(args.groups, methods, config, face_backend, args.out, args.min_named_px)
        if sheet:
            samples = [(image, mask) for image, masks in sheet for mask in masks]
            masks_contact_sheet(samples).save(args.out / "contact_sheet.png")
    time_group_tile(photos, config, face_backend, args.repeat)
    print(f"\noverlays: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
