"""Redraw a ground-truth person mask of the group scenes from its hand-placed strokes.

    .venv/bin/python tools/draw_person_mask.py astronaut [--out PATH] [--overlay PATH]

The masks in ``identity_pipeline/masks/scene_people/`` were drawn this way: GrabCut started from
strokes placed by hand (``scene_people/strokes/<name>.json``: a box around the person, sure
person and sure background polygons and lines), its largest region kept with its holes filled,
held objects painted 128 (left out of every score), then checked by eye on the overlay and the
strokes corrected until the outline sat on the person. Writing the mask again from the strokes
gives the committed file (GrabCut is seeded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.shared_data import SCRATCH  # noqa: E402
from identity_pipeline.masks.scenes import (  # noqa: E402
    HELD_OBJECT,
    PERSON,
    SCENE_PEOPLE_DIR,
    fetch_grace_hopper,
)


def photo(name: str) -> np.ndarray:
    from skimage import data

    if name == "astronaut":
        return data.astronaut()
    if name == "camera":
        return cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2RGB)
    if name == "grace_hopper":
        path = fetch_grace_hopper(SCRATCH / "identity_pipeline_people")
        return np.asarray(Image.open(path).convert("RGB"))
    raise ValueError(f"no photo named {name!r}")


def draw(image: np.ndarray, strokes: dict) -> np.ndarray:
    height, width = image.shape[:2]
    seeds = np.full((height, width), cv2.GC_BGD, np.uint8)
    x0, y0, x1, y1 = strokes["rect"]
    seeds[y0:y1, x0:x1] = cv2.GC_PR_BGD
    for key, label in (("fg_polys", cv2.GC_FGD), ("bg_polys", cv2.GC_BGD)):
        for polygon in strokes.get(key, []):
            cv2.fillPoly(seeds, [np.int32(polygon)], label)
    for key, label in (("fg_lines", cv2.GC_FGD), ("bg_lines", cv2.GC_BGD)):
        for thickness, *points in strokes.get(key, []):
            cv2.polylines(seeds, [np.int32(points)], False, label, thickness)
    cv2.setRNGSeed(0)
    background, foreground = np.zeros((1, 65)), np.zeros((1, 65))
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    cv2.grabCut(bgr, seeds, None, background, foreground, 8, cv2.GC_INIT_WITH_MASK)
    person = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(person)
    if count > 1:
        person = (labels == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(1 - person, connectivity=4)
    for index in range(1, count):
        x, y, w, h, _ = stats[index]
        if x > 0 and y > 0 and x + w < width and y + h < height:
            person[labels == index] = 1  # a hole inside the person
    mask = np.where(person > 0, PERSON, 0).astype(np.uint8)
    for polygon in strokes.get("void_polys", []):
        cv2.fillPoly(mask, [np.int32(polygon)], HELD_OBJECT)
    return mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=["astronaut", "camera", "grace_hopper"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--overlay", type=Path, default=None)
    args = parser.parse_args(argv)
    strokes = json.loads((SCENE_PEOPLE_DIR / "strokes" / f"{args.name}.json").read_text())
    image = photo(args.name)
    mask = draw(image, strokes)
    out = args.out or SCRATCH / f"{args.name}_mask.png"
    Image.fromarray(mask).save(out)
    committed = np.asarray(Image.open(SCENE_PEOPLE_DIR / f"{args.name}.png"))
    print(f"{out}: {np.mean(mask == committed):.4%} of pixels as committed")
    if args.overlay:
        shown = image.astype(np.float32)
        shown[mask == PERSON] = shown[mask == PERSON] * 0.5 + np.float32([0, 255, 0]) * 0.5
        shown[mask == HELD_OBJECT] = (
            shown[mask == HELD_OBJECT] * 0.5 + np.float32([255, 0, 255]) * 0.5
        )
        Image.fromarray(shown.astype(np.uint8)).save(args.overlay)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
