"""Build data/albums/demo/ from public-domain photos that ship inside registry packages.

Run once by a maintainer (the result is committed; `make demo` does not need this script):

    .venv/bin/python tools/build_demo_album.py --out data/albums/demo

Sources (see data/SOURCES.md for the licences): official White House photos of Barack Obama and
Joe Biden from the face_recognition 1.3.0 sdist on PyPI (tests/test_images/), Eileen Collins
(NASA) from scikit-image's data, Grace Hopper (US Navy) from matplotlib's sample data, and the
cameraman (CC0) from scikit-image. Downloads go through pip only (no other network access).

Everything is a deterministic transformation of those photos: crops, flips, colour changes,
format changes, collages (grids with and without gutters, a phone stack, an irregular layout)
and "group photos" composed from person cut-outs made with this project's own face detector and
segmenter. The composites are labelled as such in SOURCES.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageEnhance, ImageOps

from identity_pipeline.collage.synthetic import (
    big_beside_column,
    grid_layout,
    layout_boxes,
    stack_layout,
)
from identity_pipeline.faces import get_backend
from identity_pipeline.masks import FaceInTile, build_identity_masks

LONG_SIDE = 1024
JPEG_QUALITY = 88

# name -> (package spec, path inside the archive, sha256 of the file)
SOURCES: dict[str, tuple[str, str, str]] = {
    "obama_portrait": (
        "face_recognition==1.3.0",
        "face_recognition-1.3.0/tests/test_images/obama.jpg",
        "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    ),
    "obama_speech": (
        "face_recognition==1.3.0",
        "face_recognition-1.3.0/tests/test_images/obama2.jpg",
        "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    ),
    "obama_blue_room": (
        "face_recognition==1.3.0",
        "face_recognition-1.3.0/tests/test_images/obama3.jpg",
        "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    ),
    "biden_blue_room": (
        "face_recognition==1.3.0",
        "face_recognition-1.3.0/tests/test_images/biden.jpg",
        "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
    ),
    "hopper_portrait": (
        "matplotlib==3.11.2",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
    ),
    "collins_astronaut": (
        "scikit-image",
        "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    "cameraman": (
        "scikit-image",
        "skimage/data/camera.png",
        "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    ),
}


@dataclass(frozen=True)
class Person:
    image: Image.Image
    face: tuple[float, float, float, float]  # the largest face, in image pixels


def fetch_sources(cache: Path) -> dict[str, Image.Image]:
    """Every source photo, checked against its sha256."""
    cache.mkdir(parents=True, exist_ok=True)
    images: dict[str, Image.Image] = {}
    for name, (spec, inner, digest) in SOURCES.items():
        data = _read_source(spec, inner, cache)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise SystemExit(f"{name}: {inner} from {spec} has sha256 {actual}, expected {digest}")
        image = Image.open(io.BytesIO(data))
        images[name] = ImageOps.exif_transpose(image).convert("RGB")
    return images


def _read_source(spec: str, inner: str, cache: Path) -> bytes:
    if spec == "scikit-image":
        import skimage

        return (Path(skimage.__file__).parent / Path(inner).relative_to("skimage")).read_bytes()
    binary = "--no-binary=:all:" if spec.startswith("face_recognition") else "--only-binary=:all:"
    archives = list(cache.glob(f"{spec.split('==')[0].replace('-', '_')}-{spec.split('==')[1]}*"))
    if not archives:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", binary, spec, "-d", str(cache)],
            check=True,
        )
        archives = list(
            cache.glob(f"{spec.split('==')[0].replace('-', '_')}-{spec.split('==')[1]}*")
        )
    archive = archives[0]
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(inner)
    with tarfile.open(archive) as sdist:
        member = sdist.extractfile(inner)
        if member is None:
            raise SystemExit(f"{inner} missing in {archive}")
        return member.read()


def shrink(image: Image.Image, long_side: int = LONG_SIDE) -> Image.Image:
    scale = long_side / max(image.size)
    if scale >= 1:
        return image.copy()
    return image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
    )


def largest_face(detector, image: Image.Image) -> tuple[float, float, float, float]:
    faces = detector.detect(np.asarray(image))
    if not faces:
        raise SystemExit("no face found in a source photo")
    return max(faces, key=lambda f: f.size).box


def face_crop(person: Person, width: int, height: int, face_share: float) -> Image.Image:
    """A crop with the aspect of ``width`` x ``height`` where the face takes ``face_share`` of
    the height (less when the photo is too small), face centred horizontally, in the top third."""
    x0, y0, x1, y1 = person.face
    face_h = y1 - y0
    crop_h = min(person.image.height, face_h / face_share)
    crop_w = crop_h * width / height
    if crop_w > person.image.width:
        crop_w = person.image.width
        crop_h = crop_w * height / width
    cx = (x0 + x1) / 2
    top = max(0.0, min(person.image.height - crop_h, y0 - 0.3 * crop_h))
    left = max(0.0, min(person.image.width - crop_w, cx - crop_w / 2))
    return person.image.resize(
        (width, height), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h)
    )


def fill_layout(
    people: Sequence[Person],
    layout,
    size: tuple[int, int],
    gutter: int,
    margin: int,
    background: tuple[int, int, int],
    face_share: float = 0.3,
) -> Image.Image:
    canvas = Image.new("RGB", size, background)
    for box, person in zip(layout_boxes(layout, *size, gutter, margin), people, strict=True):
        canvas.paste(face_crop(person, box.width, box.height, face_share), (box.x0, box.y0))
    return canvas


def cut_out(detector, image: Image.Image) -> tuple[Image.Image, np.ndarray, tuple[float, ...]]:
    """The person with a soft alpha from this project's segmenter, and their face box."""
    rgb = np.asarray(image)
    face = max(detector.detect(rgb), key=lambda f: f.size)
    target = FaceInTile("demo", face.box, face.landmarks, "person")
    mask = build_identity_masks(rgb, [target])[0].mask
    return image, mask, face.box


def studio_backdrop(
    width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int], seed: int
) -> Image.Image:
    """A plain photo-studio backdrop: a vertical gradient with a little grain. No faces in it."""
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    colours = (1 - ramp) * np.array(top, np.float32) + ramp * np.array(bottom, np.float32)
    grain = np.random.default_rng(seed).normal(0, 3, (height, width, 1)).astype(np.float32)
    pixels = np.broadcast_to(colours, (height, width, 3)) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def compose_group(
    detector,
    images: Sequence[Image.Image],
    height: int,
    overlap: float,
    backdrop: tuple[tuple[int, int, int], tuple[int, int, int]],
    seed: int,
) -> Image.Image:
    """People cut out of their photos, scaled to one face size, standing shoulder to shoulder
    (bottoms on the frame's bottom edge) before a studio backdrop. A composite, not a real group
    photo: see SOURCES.md."""
    target_face = 0.15 * height
    placed = []
    for image in images:
        image, mask, box = cut_out(detector, image)
        scale = target_face / (box[3] - box[1])
        size = (round(image.width * scale), round(image.height * scale))
        person = image.resize(size, Image.Resampling.LANCZOS)
        alpha = Image.fromarray(mask).resize(size, Image.Resampling.BILINEAR)
        bbox = alpha.point(lambda v: 255 if v > 128 else 0).getbbox() or (0, 0, *size)
        placed.append((person, alpha, bbox))
    widths = [bbox[2] - bbox[0] for _, _, bbox in placed]
    width = int(sum(widths[:-1]) * (1 - overlap) + widths[-1]) + 60
    canvas = studio_backdrop(width, height, *backdrop, seed)
    x = 30
    for (person, alpha, bbox), w in zip(placed, widths, strict=True):
        canvas.paste(person, (x - bbox[0], height - bbox[3]), alpha)
        x += int(w * (1 - overlap))
    return canvas


def save(image: Image.Image, path: Path, **options: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in {".jpg", ".jpeg"}:
        image.save(path, "JPEG", quality=options.pop("quality", JPEG_QUALITY), **options)
    elif suffix == ".heic":
        pillow_heif.register_heif_opener()
        image.save(path, "HEIF", quality=80)
    elif suffix == ".webp":
        image.save(path, "WEBP", quality=85)
    else:
        image.save(path, optimize=True)


def build(out: Path, cache: Path) -> list[tuple[str, str]]:
    """Write the album; returns (file, how it was made) for SOURCES.md."""
    src = fetch_sources(cache)
    detector = get_backend("offline")
    small = {name: shrink(image) for name, image in src.items()}
    people = {
        name: Person(image, largest_face(detector, image))
        for name, image in small.items()
        if name != "cameraman"
    }
    made: list[tuple[str, str]] = []

    def emit(name: str, image: Image.Image, how: str, **options: object) -> None:
        save(image, out / name, **options)
        made.append((name, how))

    # Real photos, downscaled to 1024 px.
    emit("2012-12 obama portrait.jpg", small["obama_portrait"], "obama.jpg, downscaled")
    emit("2009-09 obama speech.jpg", small["obama_speech"], "obama2.jpg, downscaled")
    emit("2010-05 obama blue room.jpg", small["obama_blue_room"], "obama3.jpg, downscaled")
    emit("2010-05 biden blue room.jpg", small["biden_blue_room"], "biden.jpg, downscaled")
    emit("nasa/collins astronaut.png", small["collins_astronaut"], "astronaut.png")
    emit("navy/hopper portrait.jpg", small["hopper_portrait"], "grace_hopper.jpg")
    emit("cameraman.png", small["cameraman"].convert("L"), "camera.png (a stranger: never named)")

    # Transformed variants: each person reaches three or more photos.
    biden_bust = face_crop(people["biden_blue_room"], 480, 600, 0.22)
    emit(
        "biden close-up warm.webp",
        _tone(biden_bust, warm=True),
        "biden.jpg: crop, warmer colours, WebP",
    )
    collins_mirror = ImageOps.mirror(face_crop(people["collins_astronaut"], 420, 512, 0.3))
    emit(
        "nasa/collins mirrored.jpg",
        _tone(collins_mirror, warm=False),
        "astronaut.png: mirror, crop, cooler",
    )
    emit(
        "nasa/collins phone.heic",
        face_crop(people["collins_astronaut"], 360, 480, 0.4),
        "astronaut.png: tight crop, HEIC",
    )
    emit(
        "navy/hopper mirrored bw.jpg",
        ImageOps.mirror(small["hopper_portrait"]).convert("L"),
        "grace_hopper.jpg: mirror, greyscale",
    )
    rotated = face_crop(people["hopper_portrait"], 420, 520, 0.3).transpose(
        Image.Transpose.ROTATE_90
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways like a phone photo; viewers rotate it upright
    emit(
        "navy/hopper phone rotated.jpg",
        rotated,
        "grace_hopper.jpg: crop, stored rotated + EXIF orientation 6",
        exif=exif.tobytes(),
    )

    # Composed group photos (cut-outs on a blurred backdrop).
    emit(
        "group obama biden.jpg",
        compose_group(
            detector,
            [small["obama_blue_room"], small["biden_blue_room"]],
            900,
            0.15,
            ((214, 206, 190), (150, 140, 125)),
            seed=1,
        ),
        "composite: obama3.jpg + biden.jpg cut-outs, shoulders touching, studio backdrop",
    )
    emit(
        "group collins hopper obama.jpg",
        compose_group(
            detector,
            [small["collins_astronaut"], small["hopper_portrait"], small["obama_portrait"]],
            760,
            0.12,
            ((90, 110, 150), (40, 48, 70)),
            seed=2,
        ),
        "composite: astronaut.png + grace_hopper.jpg + obama.jpg cut-outs, studio backdrop",
    )

    # Collages: every kind the splitter must handle.
    order = ["obama_speech", "collins_astronaut", "hopper_portrait", "biden_blue_room"]
    emit(
        "collages/grid 2x2 white gutters.jpg",
        fill_layout(
            [people[n] for n in order], grid_layout(2, 2), (1000, 1000), 14, 14, (255, 255, 255)
        ),
        "collage: 2x2 grid, 14 px white gutters and margin",
    )
    emit(
        "collages/borderless 1x3.jpg",
        fill_layout(
            [people[n] for n in ["hopper_portrait", "obama_portrait", "collins_astronaut"]],
            grid_layout(1, 3),
            (1200, 600),
            0,
            0,
            (0, 0, 0),
        ),
        "collage: 1x3 borderless (photos touch)",
    )
    emit(
        "collages/phone stack.jpg",
        fill_layout(
            [
                people[n]
                for n in [
                    "obama_portrait",
                    "collins_astronaut",
                    "biden_blue_room",
                    "hopper_portrait",
                ]
            ],
            stack_layout([1.0, 0.7, 1.2, 0.8]),
            (540, 1800),
            0,
            0,
            (0, 0, 0),
            face_share=0.35,
        ),
        "collage: vertical phone stack of 4, different heights, borderless",
        quality=75,
    )
    emit(
        "collages/big beside column.jpg",
        fill_layout(
            [
                people[n]
                for n in ["obama_blue_room", "hopper_portrait", "collins_astronaut", "obama_speech"]
            ],
            big_beside_column(3),
            (1200, 900),
            8,
            0,
            (30, 30, 30),
        ),
        "collage: irregular, one big photo beside a column of 3, 8 px dark gutters",
    )
    return made


def _tone(image: Image.Image, warm: bool) -> Image.Image:
    r, g, b = image.split()
    if warm:
        r = r.point(lambda v: min(255, int(v * 1.08)))
        b = b.point(lambda v: int(v * 0.9))
    else:
        b = b.point(lambda v: min(255, int(v * 1.08)))
        r = r.point(lambda v: int(v * 0.92))
    return ImageEnhance.Contrast(Image.merge("RGB", (r, g, b))).enhance(1.05)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/albums/demo"))
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "identity-pipeline-demo-sources"
    )
    args = parser.parse_args(argv)
    made = build(args.out, args.cache)
    for name, how in made:
        size = (args.out / name).stat().st_size
        print(f"| `{name}` | {how} | {size // 1024} KB |")
    total = sum((args.out / name).stat().st_size for name, _ in made)
    print(f"\n{len(made)} files, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
