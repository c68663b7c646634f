"""A reliability corpus: an album of every kind of odd or broken file, built from scratch.

Each entry says what raw_photos must report for it. Kept importable so every stage's tests (and
the crash tests) can run over the same corpus.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image


@dataclass(frozen=True)
class Expected:
    status_prefix: str
    mode: str | None = None
    size: tuple[int, int] | None = None  # (width, height) after EXIF orientation
    frames: int | None = None


def _photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8), "RGB")


def _jpeg(image: Image.Image, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge image; opening it must not allocate the pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def build_bad_input_album(album_dir: Path, outside_dir: Path) -> dict[str, Expected]:
    """Write the corpus into ``album_dir``; ``outside_dir`` holds a file the album must not read."""
    album_dir.mkdir(parents=True, exist_ok=True)
    outside_dir.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Expected] = {}

    def put(name: str, data: bytes, expectation: Expected | None) -> None:
        path = album_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if expectation is not None:
            expected[name] = expectation

    good = _jpeg(_photo(seed=1))
    put("good.jpg", good, Expected("ok", mode="RGB", size=(64, 48)))
    put("2024/trip/nested.jpg", _jpeg(_photo(seed=2)), Expected("ok", size=(64, 48)))
    put("été 📷 ünïcode.jpg", _jpeg(_photo(seed=3)), Expected("ok"))
    put("empty.jpg", b"", Expected("skipped: empty file"))
    put(
        "truncated.jpg",
        _jpeg(_photo(320, 240, seed=4))[:1500],
        Expected("skipped: truncated or corrupt"),
    )
    put("fake.png", b"this is not an image, just text", Expected("skipped: not a valid image"))
    put("notes.txt", b"shopping list", Expected("skipped: not an image file"))
    put("bomb.png", _png_header_only(30_000, 30_000), Expected("skipped: decompression bomb"))
    put("big_header.png", _png_header_only(12_000, 12_000), Expected("skipped: decompression bomb"))

    cmyk = io.BytesIO()
    _photo(seed=5).convert("CMYK").save(cmyk, "JPEG")
    put("cmyk.jpg", cmyk.getvalue(), Expected("ok", mode="CMYK"))

    sixteen = io.BytesIO()
    deep = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(deep).save(sixteen, "PNG")
    put("gray16.png", sixteen.getvalue(), Expected("ok", mode="I;16", size=(64, 48)))

    palette = io.BytesIO()
    _photo(seed=6).quantize(16).save(palette, "PNG", transparency=0)
    put("palette_alpha.png", palette.getvalue(), Expected("ok", mode="P"))

    rgba = io.BytesIO()
    rgba_image = _photo(seed=7).convert("RGBA")
    rgba_image.putalpha(128)
    rgba_image.save(rgba, "PNG")
    put("alpha.png", rgba.getvalue(), Expected("ok", mode="RGBA"))

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    put(
        "rotated.jpg",
        _jpeg(_photo(60, 40, seed=8), exif=exif.tobytes()),
        Expected("ok", size=(40, 60)),
    )

    put("gray.jpg", _jpeg(_photo(seed=9).convert("L")), Expected("ok", mode="L"))

    webp = io.BytesIO()
    _photo(seed=10).save(webp, "WEBP", quality=80)
    put("photo.webp", webp.getvalue(), Expected("ok"))

    heic = io.BytesIO()
    pillow_heif.register_heif_opener()
    _photo(seed=11).save(heic, "HEIF", quality=80)
    put("phone.heic", heic.getvalue(), Expected("ok"))

    gif = io.BytesIO()
    frames = [_photo(seed=20 + i).convert("P") for i in range(3)]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("animated.gif", gif.getvalue(), Expected("ok", frames=3))

    ico = io.BytesIO()
    _photo(32, 32, seed=12).save(ico, "ICO")
    put("favicon.ico", ico.getvalue(), Expected("skipped: unsupported format ICO"))

    # Ignored entirely: no row at all.
    put(".DS_Store", b"\0\0\0\1Bud1", None)
    put("Thumbs.db", b"\xd0\xcf\x11\xe0", None)
    put(".hidden.jpg", good, None)
    put("__MACOSX/._good.jpg", good, None)

    # Symlinks: none may read outside the album or loop.
    (outside_dir / "secret.jpg").write_bytes(_jpeg(_photo(seed=13)))
    os.symlink(outside_dir / "secret.jpg", album_dir / "link_outside.jpg")
    expected["link_outside.jpg"] = Expected("skipped: symlink points outside the album")
    os.symlink(album_dir / "good.jpg", album_dir / "link_inside.jpg")
    expected["link_inside.jpg"] = Expected("skipped: duplicate of good.jpg")
    os.symlink(album_dir / "loop_b.jpg", album_dir / "loop_a.jpg")
    os.symlink(album_dir / "loop_a.jpg", album_dir / "loop_b.jpg")
    expected["loop_a.jpg"] = Expected("skipped: symlink loop")
    expected["loop_b.jpg"] = Expected("skipped: symlink loop")
    os.symlink(album_dir / "does_not_exist.jpg", album_dir / "broken_link.jpg")
    expected["broken_link.jpg"] = Expected("skipped: broken symlink")
    os.symlink(outside_dir, album_dir / "linked_folder")
    expected["linked_folder"] = Expected("skipped: symlinked folder not followed")

    put("zz_copy_of_good.jpg", good, Expected("skipped: duplicate of good.jpg"))

    # A name that is not valid UTF-8 (old zip archives produce these).
    raw_name = os.fsencode(album_dir) + b"/caf\xe9.jpg"
    with open(raw_name, "wb") as handle:
        handle.write(_jpeg(_photo(seed=14)))
    expected["caf\\xe9.jpg"] = Expected("skipped: file name is not valid UTF-8")
    return expected
