"""Open every file of an album defensively and say, for each one, whether it is a usable photo.

A bad file never raises out of here: it becomes a record with ``status = "skipped: <reason>"``.
Good photos are identified by the sha256 of their bytes, so renames and re-runs keep their ids.
"""

from __future__ import annotations

import errno
import io
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from identity_pipeline.photos.albums import AlbumFile, list_album
from identity_pipeline.storage import sha256_bytes

try:  # HEIC/HEIF from phones; the plugin is a declared dependency, but degrade to a clear reason.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - exercised only where pillow-heif is absent
    HEIF_SUPPORTED = False

STATUS_OK = "ok"
SKIPPED_PREFIX = "skipped: "

# What cameras, phones and messengers produce. Anything else PIL can open (PSD, EPS, ICO, PDF...)
# is refused: EPS would shell out to ghostscript, and none of them is a photo.
PHOTO_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}
    | HEIF_EXTENSIONS
)
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class PhotoLimits:
    """The ``photos`` settings: refusal thresholds, checked from the file header before any
    pixel is decoded (a decompression bomb is refused without being decoded)."""

    max_pixels: int = 100_000_000
    max_file_bytes: int = 512 * 1024 * 1024
    thumbnail_size: int = 128  # longer side of the contact sheet's thumbnails


@dataclass(frozen=True)
class PhotoRecord:
    """One row of ``raw_photos``."""

    path: str
    status: str
    bytes: int
    photo_id: str | None = None
    format: str | None = None
    width: int | None = None  # after EXIF orientation
    height: int | None = None
    mode: str | None = None
    exif_orientation: int | None = None
    frames: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_row(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class InspectedPhoto:
    record: PhotoRecord
    thumbnail: Image.Image | None = field(default=None, repr=False)


def skipped(reason: str) -> str:
    return SKIPPED_PREFIX + reason


def inspect_album(album_dir: Path, limits: PhotoLimits = PhotoLimits()) -> list[InspectedPhoto]:
    """Inspect every candidate file of an album, in path order; duplicates keep the first path."""
    album_root = album_dir.resolve()
    results = [inspect_file(entry, album_root, limits) for entry in list_album(album_dir).files]
    return mark_duplicates(results)


def mark_duplicates(results: list[InspectedPhoto]) -> list[InspectedPhoto]:
    """The same bytes twice (copies, a symlink to a sibling) would train on one photo twice."""
    first_path_of: dict[str, str] = {}
    marked: list[InspectedPhoto] = []
    for item in results:
        record = item.record
        if record.ok and record.photo_id is not None:
            original = first_path_of.setdefault(record.photo_id, record.path)
            if original != record.path:
                record = PhotoRecord(
                    **{**record.to_row(), "status": skipped(f"duplicate of {original}")}
                )
                item = InspectedPhoto(record, None)
        marked.append(item)
    return marked


def inspect_file(entry: AlbumFile, album_root: Path, limits: PhotoLimits) -> InspectedPhoto:
    display_path = _display_path(entry.relative_path)
    if display_path != entry.relative_path:
        return _skip(display_path, "file name is not valid UTF-8; rename the file")
    if entry.is_symlinked_dir:
        return _skip(display_path, "symlinked folder not followed (albums must not link elsewhere)")
    if entry.is_symlink:
        problem = _symlink_problem(entry.absolute_path, album_root)
        if problem:
            return _skip(display_path, problem)
    try:
        size = entry.absolute_path.stat().st_size
    except OSError as error:
        return _skip(display_path, f"cannot stat file ({error.strerror or error})")
    extension = Path(entry.relative_path).suffix.lower()
    if size == 0:
        return _skip(display_path, "empty file (0 bytes)")
    if size > limits.max_file_bytes:
        return _skip(display_path, f"file too large ({size} bytes > {limits.max_file_bytes})", size)
    try:
        data = entry.absolute_path.read_bytes()
    except OSError as error:
        return _skip(display_path, f"cannot read file ({error.strerror or error})", size)
    return inspect_bytes(display_path, data, extension, limits)


def inspect_bytes(path: str, data: bytes, extension: str, limits: PhotoLimits) -> InspectedPhoto:
    size = len(data)
    photo_id = sha256_bytes(data)

    def fail(reason: str, **known: object) -> InspectedPhoto:
        record = PhotoRecord(
            path=path, status=skipped(reason), bytes=size, photo_id=photo_id, **known
        )  # type: ignore[arg-type]
        return InspectedPhoto(record)

    with warnings.catch_warnings():
        # Our own pixel limit below decides; PIL's warning would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            return fail(f"decompression bomb refused ({error})")
        except UnidentifiedImageError:
            if extension in HEIF_EXTENSIONS and not HEIF_SUPPORTED:
                return fail("unsupported format HEIC (install pillow-heif)")
            if extension in IMAGE_EXTENSIONS:
                return fail(
                    f"not a valid image: content is not a recognised image format ({extension})"
                )
            return fail(f"not an image file ({extension or 'no extension'})")
        except Exception as error:  # noqa: BLE001 - any decoder failure is a per-file reason
            return fail(f"cannot open image ({type(error).__name__}: {error})")

        with image:
            fmt = image.format or "unknown"
            if fmt not in PHOTO_FORMATS:
                return fail(f"unsupported format {fmt}", format=fmt)
            raw_width, raw_height = image.size
            pixels = raw_width * raw_height
            if pixels > limits.max_pixels:
                return fail(
                    f"decompression bomb refused ({raw_width}x{raw_height} = {pixels} pixels > "
                    f"limit {limits.max_pixels})",
                    format=fmt,
                )
            orientation = _exif_orientation(image)
            width, height = (
                (raw_height, raw_width)
                if orientation in TRANSPOSING_ORIENTATIONS
                else (raw_width, raw_height)
            )
            frames = int(getattr(image, "n_frames", 1) or 1)
            mode = image.mode
            try:
                thumbnail = _decode_thumbnail(image, limits.thumbnail_size)
            except Exception as error:  # noqa: BLE001 - truncated/corrupt data surfaces at decode
                return fail(
                    f"truncated or corrupt image data ({type(error).__name__}: {error})",
                    format=fmt,
                    width=width,
                    height=height,
                    mode=mode,
                )

    record = PhotoRecord(
        path=path,
        status=STATUS_OK,
        bytes=size,
        photo_id=photo_id,
        format=fmt,
        width=width,
        height=height,
        mode=mode,
        exif_orientation=orientation,
        frames=frames,
    )
    return InspectedPhoto(record, thumbnail)


def load_photo(
    path: Path, max_pixels: int = PhotoLimits.max_pixels, *, reduce: int = 1
) -> Image.Image:
    """A photo as 8-bit RGB, EXIF orientation applied, first frame of animations.

    The one way downstream stages read album files, so every stage sees the same pixels.
    ``reduce`` (1, 2, 4 or 8) returns it that many times smaller on each side, rounded up
    (``reduced_size``): a JPEG is decoded straight at that size (libjpeg's DCT scaling, PIL's
    draft mode: several times faster, and the full-size pixels never exist); other formats are
    decoded whole, then box-reduced.
    """
    if reduce not in DCT_REDUCTIONS:
        raise ValueError(f"reduce must be one of {DCT_REDUCTIONS}, got {reduce}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            if image.size[0] * image.size[1] > max_pixels:
                raise ValueError(f"{path}: {image.size} exceeds {max_pixels} pixels")
            raw_width = image.size[0]
            if reduce > 1 and image.format in {"JPEG", "MPO"}:
                # draft picks the largest DCT scale whose size is at least the one asked for.
                image.draft(
                    "RGB", (max(1, image.size[0] // reduce), max(1, image.size[1] // reduce))
                )
            image.load()
            rest = reduce // max(1, round(raw_width / image.size[0]))
            # Reduced before it is turned upright, as libjpeg does: the same pixel blocks.
            # ceil(ceil(w / a) / b) == ceil(w / (a * b)); reduce keeps the EXIF info.
            stored = image if rest == 1 else to_rgb8(image).reduce(rest)
            return to_rgb8(ImageOps.exif_transpose(stored))


# The reductions libjpeg decodes directly (it has 1/8 steps; these are the ones PIL's draft uses).
DCT_REDUCTIONS = (1, 2, 4, 8)


def reduced_size(size: tuple[int, int], reduce: int) -> tuple[int, int]:
    """``size`` divided by ``reduce``, rounded up: what libjpeg and ``Image.reduce`` produce."""
    return (-(-size[0] // reduce), -(-size[1] // reduce))


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header alone (no pixel is decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            if _exif_orientation(image) in TRANSPOSING_ORIENTATIONS:
                return height, width
            return width, height


def to_rgb8(image: Image.Image) -> Image.Image:
    """Convert any PIL mode a photo can have to 8-bit RGB without clipping 16-bit data."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        gray = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode in {"RGBA", "LA", "PA", "P", "RGBa", "La"} or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _decode_thumbnail(image: Image.Image, size: int) -> Image.Image:
    """Decode all pixel data (this is what exposes truncation) into a small RGB thumbnail."""
    if image.format in {"JPEG", "MPO"}:
        image.draft("RGB", (size * 2, size * 2))  # DCT-domain downscale: decodes every block, fast
    image.load()
    upright = ImageOps.exif_transpose(image)
    thumbnail = to_rgb8(upright)
    thumbnail.thumbnail((size, size), Image.Resampling.LANCZOS)
    return thumbnail


def _exif_orientation(image: Image.Image) -> int | None:
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the photo
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def _symlink_problem(path: Path, album_root: Path) -> str | None:
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python 3.11 reports loops this way
        return "symlink loop"
    except OSError as error:
        return "symlink loop" if error.errno == errno.ELOOP else "broken symlink"
    if not target.is_relative_to(album_root):
        return "symlink points outside the album"
    if not target.is_file():
        return "symlink does not point to a file"
    return None


def _display_path(relative_path: str) -> str:
    try:
        relative_path.encode("utf-8")
        return relative_path
    except UnicodeEncodeError:
        return relative_path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _skip(path: str, reason: str, size: int = 0) -> InspectedPhoto:
    return InspectedPhoto(PhotoRecord(path=path, status=skipped(reason), bytes=size))
