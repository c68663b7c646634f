"""Choose the faces stage's second-look gate on license-clean scenes (never on faces-dev).

    .venv/bin/python benchmarks/tune_face_gate.py [--scenes 24] [--seed 0] [--cache DIR]

The faces come from public-domain and CC0 photos that ship in registry packages (the demo
album's sources, fetched with pip by tools/build_demo_album.py, licences in data/SOURCES.md:
White House photos of Barack Obama and Joe Biden from the face_recognition 1.3.0 sdist, Grace
Hopper from matplotlib's sample data, Eileen Collins and the cameraman from scikit-image). Each scene is a non-face photo from scikit-image or scikit-learn
(coffee cup, cat, rocket, motorcycle, bricks, grass, gravel, the Hubble deep field, a Chinese
temple, a flower) with 2-7 of those heads pasted in (feathered ellipses), their faces 0.8-12 % of
the long side, some blurred, the whole scene JPEG-compressed; then the same scene at 12 MP and 48
MP (Lanczos upscale, JPEG 92), like the benchmark's sweep. A detection is a real face when it
overlaps a pasted face (IoU >= 0.4); everything else it finds (the cat's face, cup rims, texture)
is a non-face.

For every candidate the pipeline would consider (detector score >= 0.3, merged), it prints how
the second look separates the two: per size, how many real and non-faces are small in the
working copy (below ``zoom_face_px`` there), and the share of each kept at each threshold on the
score of the second look. The shipped threshold is ``det_score_threshold`` (the same bar as
everywhere); this shows what it keeps and drops, and what a lower or higher one would.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from identity_pipeline.faces import FaceConfig, get_backend  # noqa: E402
from identity_pipeline.faces.backend import DetectedFace, FaceBackend  # noqa: E402
from identity_pipeline.faces.multiscale import detect_multiscale, overlaps  # noqa: E402
from identity_pipeline.faces.pixels import FilePixels  # noqa: E402
from identity_pipeline.faces.verify import (  # noqa: E402
    cut_regions,
    look_again,
    needs_second_look,
)
from tools.build_demo_album import fetch_sources  # noqa: E402

BACKGROUNDS_SKIMAGE = (
    "coffee",
    "chelsea",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "motorcycle_left",
)
BACKGROUNDS_SKLEARN = ("china.jpg", "flower.jpg")
SCENE_SIZE = (1600, 1200)
SIZES = (("scene", None), ("12 MP", 12e6), ("48 MP", 48e6))
SAME_FACE_IOU = 0.4
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class Head:
    image: Image.Image  # a square around the face
    face: tuple[float, float, float, float]  # in that square


def heads(backend: FaceBackend, cache: Path) -> list[Head]:
    pictures = [np.asarray(image) for image in fetch_sources(cache / "sources").values()]
    found = []
    for picture in pictures:
        rgb = np.stack([picture] * 3, axis=-1) if picture.ndim == 2 else picture[..., :3]
        rgb = np.ascontiguousarray(rgb)
        faces = [f for f in backend.detect(rgb) if f.score >= 0.9]
        if not faces:
            continue
        face = max(faces, key=lambda f: f.size)
        x0, y0, x1, y1 = face.box
        half = 1.3 * face.size
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.1 * face.size
        box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
        crop = Image.fromarray(rgb).crop(box)  # outside the photo: black, like a dark room
        found.append(Head(crop, (x0 - box[0], y0 - box[1], x1 - box[0], y1 - box[1])))
    return found


def backgrounds() -> list[Image.Image]:
    import skimage.data
    from sklearn.datasets import load_sample_image

    images = []
    for name in BACKGROUNDS_SKIMAGE:
        load = getattr(skimage.data, name, None) or (lambda: skimage.data.stereo_motorcycle()[0])
        array = np.asarray(load())
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        images.append(Image.fromarray(np.ascontiguousarray(array[..., :3])))
    images += [Image.fromarray(load_sample_image(name)) for name in BACKGROUNDS_SKLEARN]
    return images


def scene(
    rng: np.random.Generator, faces: list[Head], grounds: list[Image.Image]
) -> tuple[Image.Image, list[tuple[float, ...]]]:
    width, height = SCENE_SIZE if rng.random() < 0.7 else SCENE_SIZE[::-1]
    canvas = grounds[rng.integers(len(grounds))].resize((width, height), Image.Resampling.BICUBIC)
    boxes: list[tuple[float, ...]] = []
    for _ in range(int(rng.integers(2, 8))):
        head = faces[rng.integers(len(faces))]
        face_px = max(width, height) * float(np.exp(rng.uniform(np.log(0.008), np.log(0.12))))
        scale = face_px / max(head.face[2] - head.face[0], head.face[3] - head.face[1])
        side = max(4, round(head.image.width * scale))
        piece = head.image.resize((side, side), Image.Resampling.LANCZOS)
        if rng.random() < 0.4:  # out of focus or moving
            piece = piece.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.02, 0.08)) * face_px))
        x, y = (
            int(rng.integers(0, max(1, width - side))),
            int(rng.integers(0, max(1, height - side))),
        )
        box = tuple(v * scale + (x if i % 2 == 0 else y) for i, v in enumerate(head.face))
        if any(overlaps(box, other)[1] > 0.0 for other in boxes):
            continue
        mask = Image.new("L", (side, side), 0)
        ImageDraw.Draw(mask).ellipse((side * 0.12, side * 0.05, side * 0.88, side * 0.98), 255)
        mask = mask.filter(ImageFilter.GaussianBlur(side * 0.04))
        canvas.paste(piece, (x, y), mask)
        boxes.append(box)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=int(rng.integers(70, 95)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), boxes


@dataclass
class Candidate:
    size: str
    real: bool
    small: bool  # below zoom_face_px in the working copy: gets the second look
    score: float
    second: float  # score of the second look (0: not found again); nan when not small
    fraction: float  # face size / long side
    crop: Image.Image | None = None  # non-faces the first look keeps, for --sheet


def candidates_of(
    path: Path, truth: list[tuple[float, ...]], size: str, backend: FaceBackend, config: FaceConfig
) -> list[Candidate]:
    pixels = FilePixels(path)
    low = replace(config, det_score_threshold=0.3)
    found = detect_multiscale(pixels, backend, low)
    regions = cut_regions(pixels, found, config)
    rows = []
    for face, region in zip(found, regions, strict=True):
        small = needs_second_look(face, pixels.long_side, backend, config)
        second = float("nan")
        if small:
            again: DetectedFace | None = look_again(face, region, backend, config)
            second = again.score if again is not None else 0.0
        real = any(overlaps(face.box, box)[0] >= SAME_FACE_IOU for box in truth)
        crop = None
        if not real and face.score >= config.det_score_threshold:
            crop = Image.fromarray(region.pixels)
        rows.append(
            Candidate(size, real, small, face.score, second, face.size / pixels.long_side, crop)
        )
    pixels.release()
    return rows


def report(rows: list[Candidate], config: FaceConfig) -> list[str]:
    lines = [
        "  size    kind      all  small | kept by the first look (score >= "
        f"{config.det_score_threshold}) | small ones kept by second-look score >= "
        + " ".join(f"{t:.1f}" for t in THRESHOLDS)
    ]
    for size, _ in SIZES:
        for real in (True, False):
            group = [r for r in rows if r.size == size and r.real == real]
            small = [r for r in group if r.small and r.score >= config.det_score_threshold]
            first = sum(r.score >= config.det_score_threshold for r in group)
            shares = " ".join(
                f"{sum(r.second >= t for r in small) / len(small):4.0%}" if small else "   -"
                for t in THRESHOLDS
            )
            lines.append(
                f"  {size:<7} {'face' if real else 'non-face':<9} {len(group):<4d} "
                f"{len(small):<5d} | {first:<4d}{'':32}| {shares}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", type=Path, default=None, help="PNG of non-faces kept at first")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "face-gate")
    args = parser.parse_args(argv)
    backend = get_backend("offline")
    config = FaceConfig()
    faces, grounds = heads(backend, args.cache), backgrounds()
    print(f"{len(faces)} heads, {len(grounds)} backgrounds, {args.scenes} scenes, config {config}")
    rng = np.random.default_rng(args.seed)
    rows: list[Candidate] = []
    with tempfile.TemporaryDirectory(prefix="face-gate-") as scratch:
        for index in range(args.scenes):
            image, truth = scene(rng, faces, grounds)
            for size, pixels in SIZES:
                factor = 1.0 if pixels is None else (pixels / (image.width * image.height)) ** 0.5
                shown = image.resize(
                    (round(image.width * factor), round(image.height * factor)),
                    Image.Resampling.LANCZOS,
                )
                path = Path(scratch) / f"{index}-{size.replace(' ', '')}.jpg"
                shown.save(path, quality=92)
                scaled_truth = [tuple(v * factor for v in box) for box in truth]
                rows += candidates_of(path, scaled_truth, size, backend, config)
                path.unlink()
            print(f"  scene {index}: {len(truth)} faces", flush=True)
    for line in report(rows, config):
        print(line)
    if args.sheet is not None:
        from identity_pipeline.previews import SheetItem, contact_sheet

        items = [
            SheetItem(r.crop, f"{r.size} {r.score:.2f} 2nd {r.second:.2f} {r.fraction:.1%}")
            for r in rows
            if r.crop is not None
        ]
        if items:
            contact_sheet(items, cell=160, columns=6).save(args.sheet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
