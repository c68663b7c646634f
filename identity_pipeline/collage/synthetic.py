"""Deterministic synthetic collages with known tile boxes, and single photos that must stay whole.

Used by the benchmark, the tests and the demo album. Layouts are guillotine trees (a ``Split``
divides a box into rows or columns by weights; a ``PHOTO`` leaf holds one photo), rendered with
exact integer gutters and margins, so the true boxes are known to the pixel. Sources are any
PIL images the caller passes; ``sample_photos`` loads license-clean ones shipped inside installed
packages (scikit-image's ``skimage.data``, scikit-learn's sample images) - nothing is downloaded.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from identity_pipeline.collage.boxes import Box, classify_layout, sort_boxes

ROWS = "rows"  # children stacked top to bottom
COLS = "cols"  # children side by side


@dataclass(frozen=True)
class Photo:
    """A leaf of a layout: one photo fills this box."""


PHOTO = Photo()


@dataclass(frozen=True)
class Split:
    direction: str  # ROWS or COLS
    weights: tuple[float, ...]
    children: tuple[Split | Photo, ...]

    def __post_init__(self) -> None:
        if self.direction not in (ROWS, COLS):
            raise ValueError(f"direction must be {ROWS!r} or {COLS!r}, not {self.direction!r}")
        if len(self.weights) != len(self.children) or len(self.children) < 2:
            raise ValueError("a split needs at least two children and one weight per child")


Layout = Split | Photo


@dataclass(frozen=True)
class Collage:
    """A rendered image and its true tiles (sorted top-to-bottom, then left-to-right)."""

    image: Image.Image
    boxes: tuple[Box, ...]
    family: str  # e.g. "grid", "stack", "irregular", "framed single", "single edges"
    borderless: bool = False

    @property
    def kind(self) -> str:
        return classify_layout(self.boxes)


# --- layouts -------------------------------------------------------------------------------------


def grid_layout(rows: int, cols: int) -> Layout:
    row = Split(COLS, (1.0,) * cols, (PHOTO,) * cols) if cols > 1 else PHOTO
    return Split(ROWS, (1.0,) * rows, (row,) * rows) if rows > 1 else row


def stack_layout(heights: Sequence[float]) -> Layout:
    return Split(ROWS, tuple(heights), (PHOTO,) * len(heights))


def rows_layout(columns_per_row: Sequence[int], row_heights: Sequence[float] = ()) -> Layout:
    """Rows with different column counts (e.g. 2 photos over 3)."""
    heights = tuple(row_heights) or (1.0,) * len(columns_per_row)
    rows = tuple(Split(COLS, (1.0,) * n, (PHOTO,) * n) if n > 1 else PHOTO for n in columns_per_row)
    return Split(ROWS, heights, rows)


def big_beside_column(small: int, big_first: bool = True, big_weight: float = 2.0) -> Layout:
    """One big photo beside a column of ``small`` photos."""
    column = Split(ROWS, (1.0,) * small, (PHOTO,) * small)
    if big_first:
        return Split(COLS, (big_weight, 1.0), (PHOTO, column))
    return Split(COLS, (1.0, big_weight), (column, PHOTO))


def layout_boxes(layout: Layout, width: int, height: int, gutter: int = 0, margin: int = 0) -> list:
    """Pixel boxes of the layout's photos, in leaf order; gutters and margins are exact."""
    inner = Box(margin, margin, width - margin, height - margin)
    if inner.width <= 0 or inner.height <= 0:
        raise ValueError("margin leaves no room for photos")
    boxes: list[Box] = []
    _place(layout, inner, gutter, boxes)
    return boxes


def _place(node: Layout, box: Box, gutter: int, out: list[Box]) -> None:
    if isinstance(node, Photo):
        out.append(box)
        return
    along_rows = node.direction == ROWS
    start, extent = (box.y0, box.height) if along_rows else (box.x0, box.width)
    available = extent - gutter * (len(node.children) - 1)
    if available < 2 * len(node.children):
        raise ValueError("layout too dense for this size and gutter")
    total = sum(node.weights)
    edges = [round(available * sum(node.weights[:i]) / total) for i in range(len(node.weights) + 1)]
    for index, child in enumerate(node.children):
        lo = start + edges[index] + gutter * index
        hi = start + edges[index + 1] + gutter * index
        child_box = Box(box.x0, lo, box.x1, hi) if along_rows else Box(lo, box.y0, hi, box.y1)
        _place(child, child_box, gutter, out)


# --- rendering -----------------------------------------------------------------------------------


def compose_collage(
    photos: Sequence[Image.Image],
    layout: Layout,
    size: tuple[int, int],
    gutter: int = 0,
    margin: int = 0,
    background: tuple[int, int, int] = (255, 255, 255),
    seed: int = 0,
    family: str = "",
    jitter_colours: bool = True,
) -> Collage:
    """Fill each photo box of ``layout`` with a random crop of the next photo (cycled).

    Each photo is cropped to its box's aspect ratio (random zoom and offset, from ``seed``) and
    resized to fill it, like collage apps do.
    """
    if not photos:
        raise ValueError("compose_collage needs at least one photo")
    rng = random.Random(seed)
    width, height = size
    canvas = Image.new("RGB", (width, height), background)
    boxes = layout_boxes(layout, width, height, gutter, margin)
    for index, box in enumerate(boxes):
        tile = cover_crop(photos[index % len(photos)], box.width, box.height, rng)
        if jitter_colours:
            tile = jitter(tile, rng)
        canvas.paste(tile, (box.x0, box.y0))
    return Collage(
        canvas,
        sort_boxes(boxes),
        family or ("single" if len(boxes) == 1 else "collage"),
        borderless=gutter == 0,
    )


def cover_crop(photo: Image.Image, width: int, height: int, rng: random.Random) -> Image.Image:
    """A random crop of ``photo`` with the aspect ratio of ``width`` x ``height``, resized to it."""
    source = photo.convert("RGB")
    if rng.random() < 0.5:
        source = source.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    target_aspect = width / height
    full_w, full_h = source.size
    if full_w / full_h > target_aspect:
        crop_h, crop_w = full_h, full_h * target_aspect
    else:
        crop_w, crop_h = full_w, full_w / target_aspect
    zoom = rng.uniform(0.45, 1.0)
    crop_w, crop_h = max(8.0, crop_w * zoom), max(8.0, crop_h * zoom)
    left = rng.uniform(0, full_w - crop_w)
    top = rng.uniform(0, full_h - crop_h)
    return source.resize(
        (width, height),
        Image.Resampling.BICUBIC,
        box=(left, top, left + crop_w, top + crop_h),
    )


def jitter(tile: Image.Image, rng: random.Random) -> Image.Image:
    """Mild brightness/contrast/saturation changes, so repeated sources do not look identical."""
    tile = ImageEnhance.Brightness(tile).enhance(rng.uniform(0.85, 1.15))
    tile = ImageEnhance.Contrast(tile).enhance(rng.uniform(0.85, 1.15))
    return ImageEnhance.Color(tile).enhance(rng.uniform(0.7, 1.3))


def degrade(collage: Collage, scale: float, jpeg_quality: int, seed: int = 0) -> Collage:
    """Downscale (random resampling filter) and re-compress, like messengers do; boxes follow."""
    rng = random.Random(seed)
    image = collage.image
    if scale != 1.0:
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resample = rng.choice(
            [
                Image.Resampling.BILINEAR,
                Image.Resampling.BICUBIC,
                Image.Resampling.LANCZOS,
                Image.Resampling.BOX,
            ]
        )
        factor_x, factor_y = new_size[0] / image.width, new_size[1] / image.height
        image = image.resize(new_size, resample)
        boxes = tuple(box.scaled(factor_x, factor_y) for box in collage.boxes)
    else:
        boxes = collage.boxes
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=jpeg_quality, subsampling=rng.choice([0, 2]))
    buffer.seek(0)
    jpeg = Image.open(buffer)
    jpeg.load()
    return replace(collage, image=jpeg.convert("RGB"), boxes=sort_boxes(boxes))


# --- single photos with strong straight edges ----------------------------------------------------


def framed_single(
    photo: Image.Image,
    size: tuple[int, int],
    frame: tuple[int, int, int, int],
    colour: tuple[int, int, int],
    seed: int = 0,
) -> Collage:
    """One photo inside a uniform frame (left, top, right, bottom widths): one tile, the photo."""
    width, height = size
    left, top, right, bottom = frame
    box = Box(left, top, width - right, height - bottom)
    canvas = Image.new("RGB", size, colour)
    canvas.paste(cover_crop(photo, box.width, box.height, random.Random(seed)), (box.x0, box.y0))
    return Collage(canvas, (box,), "framed single")


def plain_single(photo: Image.Image, size: tuple[int, int], seed: int = 0) -> Collage:
    width, height = size
    image = cover_crop(photo, width, height, random.Random(seed))
    return Collage(image, (Box(0, 0, width, height),), "single")


def horizon_scene(photo: Image.Image, size: tuple[int, int], seed: int = 0) -> Collage:
    """Sky over ground with a dead-straight, full-width horizon; sometimes poles/trees cross it."""
    rng = random.Random(seed)
    width, height = size
    ground = np.asarray(cover_crop(photo, width, height, rng), dtype=np.float32)
    horizon = round(height * rng.uniform(0.25, 0.65))
    sky = _sky(width, horizon, rng)
    scene = ground.copy()
    scene[:horizon] = sky
    image = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        _draw_crossing_objects(image, horizon, rng)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))  # lens softness
    return Collage(image, (Box(0, 0, width, height),), "single edges")


def _sky(width: int, height: int, rng: random.Random) -> np.ndarray:
    top = np.array([rng.uniform(40, 120), rng.uniform(90, 170), rng.uniform(170, 250)])
    bottom = np.array([rng.uniform(170, 240), rng.uniform(190, 245), rng.uniform(210, 255)])
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    sky = top[None, None, :] * (1 - t) + bottom[None, None, :] * t
    sky = np.broadcast_to(sky, (height, width, 3)).astype(np.float32)
    if rng.random() < 0.6:  # soft clouds: smooth noise, brighter, soft-edged
        clouds = _smooth_noise(width, height, rng, cell=rng.randint(40, 160))
        softness = rng.uniform(0.5, 1.5)
        cover = softness * np.log1p(np.exp(clouds / softness))  # smooth, never a hard edge
        sky = sky + cover[..., None] * rng.uniform(20, 60)
    return sky + np.random.default_rng(rng.randint(0, 2**31)).normal(0, 1.5, sky.shape)


def _smooth_noise(width: int, height: int, rng: random.Random, cell: int) -> np.ndarray:
    coarse = np.random.default_rng(rng.randint(0, 2**31)).normal(
        0, 1, (height // cell + 2, width // cell + 2)
    )
    field = Image.fromarray(coarse.astype(np.float32), "F").resize(
        (width, height), Image.Resampling.BICUBIC
    )
    return np.asarray(field, dtype=np.float32)


def _draw_crossing_objects(image: Image.Image, horizon: int, rng: random.Random) -> None:
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):
        x = rng.randint(0, image.width - 1)
        pole = max(3, round(image.width * rng.uniform(0.005, 0.03)))
        top = round(horizon * rng.uniform(0.1, 0.8))
        bottom = min(
            image.height, horizon + round((image.height - horizon) * rng.uniform(0.1, 0.9))
        )
        shade = rng.randint(20, 110)
        draw.rectangle((x, top, x + pole, bottom), fill=(shade, shade - 10 if shade > 10 else 0, 0))
        if rng.random() < 0.5:  # a crown
            radius = pole * rng.randint(3, 6)
            green = (20, rng.randint(70, 140), 30)
            draw.ellipse((x - radius, top - radius, x + pole + radius, top + radius), fill=green)


def door_scene(photo: Image.Image, size: tuple[int, int], seed: int = 0) -> Collage:
    """A painted wall with a door opening onto the photo; close-ups have full-height posts."""
    rng = random.Random(seed)
    width, height = size
    wall = _painted_surface(width, height, rng)
    door_w = round(width * rng.uniform(0.3, 0.6))
    x0 = rng.randint(round(width * 0.05), width - door_w - round(width * 0.05))
    close_up = rng.random() < 0.5
    y0 = -10 if close_up else round(height * rng.uniform(0.05, 0.3))
    view = np.asarray(cover_crop(photo, door_w, height - max(y0, 0), rng), dtype=np.float32)
    wall[max(y0, 0) :, x0 : x0 + door_w] = view
    image = Image.fromarray(np.clip(wall, 0, 255).astype(np.uint8))
    post = max(6, round(width * rng.uniform(0.015, 0.05)))
    frame_colour = _paint_colour(rng)
    _shaded_bar(image, (x0 - post, y0 - post, x0, height), frame_colour, rng)
    _shaded_bar(image, (x0 + door_w, y0 - post, x0 + door_w + post, height), frame_colour, rng)
    if not close_up:
        _shaded_bar(image, (x0 - post, y0 - post, x0 + door_w + post, y0), frame_colour, rng)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return Collage(image, (Box(0, 0, width, height),), "single edges")


def window_scene(photo: Image.Image, size: tuple[int, int], seed: int = 0) -> Collage:
    """A window with a cross of mullions; close-ups fill the picture and the bars span it."""
    rng = random.Random(seed)
    width, height = size
    close_up = rng.random() < 0.5
    if close_up:
        wall = np.asarray(cover_crop(photo, width, height, rng), dtype=np.float32)
        window = Box(0, 0, width, height)
    else:
        wall = _painted_surface(width, height, rng)
        win_w = round(width * rng.uniform(0.35, 0.7))
        win_h = round(height * rng.uniform(0.35, 0.7))
        x0 = rng.randint(round(width * 0.1), width - win_w - round(width * 0.1))
        y0 = rng.randint(round(height * 0.1), height - win_h - round(height * 0.1))
        window = Box(x0, y0, x0 + win_w, y0 + win_h)
        view = np.asarray(cover_crop(photo, win_w, win_h, rng), dtype=np.float32)
        wall[window.y0 : window.y1, window.x0 : window.x1] = view
    image = Image.fromarray(np.clip(wall, 0, 255).astype(np.uint8))
    bar = max(5, round(min(width, height) * rng.uniform(0.015, 0.04)))
    colour = _paint_colour(rng)
    mid_x = window.x0 + round(window.width * rng.uniform(0.4, 0.6))
    mid_y = window.y0 + round(window.height * rng.uniform(0.35, 0.65))
    _shaded_bar(
        image, (mid_x - bar // 2, window.y0, mid_x + bar - bar // 2, window.y1), colour, rng
    )
    _shaded_bar(
        image, (window.x0, mid_y - bar // 2, window.x1, mid_y + bar - bar // 2), colour, rng
    )
    if not close_up:
        x0, y0, x1, y1 = window.x0, window.y0, window.x1, window.y1
        for rect in (
            (x0 - bar, y0 - bar, x1 + bar, y0),
            (x0 - bar, y1, x1 + bar, y1 + bar),
            (x0 - bar, y0, x0, y1),
            (x1, y0, x1 + bar, y1),
        ):
            _shaded_bar(image, rect, colour, rng)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return Collage(image, (Box(0, 0, width, height),), "single edges")


def _paint_colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.choice([(235, 232, 225), (60, 45, 35), (120, 80, 50), (200, 200, 205), (30, 30, 32)])


def _painted_surface(width: int, height: int, rng: random.Random) -> np.ndarray:
    """A painted wall: one colour under a smooth light falloff, plus sensor noise."""
    base = np.array([rng.uniform(120, 235) for _ in range(3)], dtype=np.float32)
    light = 1.0 + 0.12 * _smooth_noise(width, height, rng, cell=max(width, height) // 2)
    ramp = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.1), width, dtype=np.float32)
    surface = base[None, None, :] * (light * ramp[None, :])[..., None]
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 2.0, surface.shape)
    return surface + noise


def _shaded_bar(
    image: Image.Image,
    rect: tuple[int, int, int, int],
    colour: tuple[int, int, int],
    rng: random.Random,
) -> None:
    """Paint a frame bar with a light gradient along it and noise (real wood is never flat)."""
    x0, y0, x1, y1 = (max(0, v) for v in rect)
    x1, y1 = min(image.width, x1), min(image.height, y1)
    if x1 <= x0 or y1 <= y0:
        return
    w, h = x1 - x0, y1 - y0
    along = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(1.0, 1.2), max(w, h), dtype=np.float32)
    gradient = along[None, :w] if w >= h else along[:h, None]
    across = np.linspace(0.9, 1.05, min(w, h), dtype=np.float32)  # rounded profile
    profile = across[:, None] if w >= h else across[None, :]
    bar = np.array(colour, dtype=np.float32)[None, None, :] * (gradient * profile)[..., None]
    bar += np.random.default_rng(rng.randint(0, 2**31)).normal(0, 3.0, bar.shape)
    image.paste(Image.fromarray(np.clip(bar, 0, 255).astype(np.uint8)), (x0, y0))


# --- license-clean sources -----------------------------------------------------------------------

SKIMAGE_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "brick",
    "hubble_deep_field",
    "moon",
    "rocket",
    "immunohistochemistry",
    "page",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def sample_photos() -> list[tuple[str, Image.Image]]:
    """Photos shipped inside installed packages (no download); scikit-image ones if present."""
    photos: list[tuple[str, Image.Image]] = []
    from sklearn.datasets import load_sample_image

    for name in SKLEARN_PHOTOS:
        photos.append((name.removesuffix(".jpg"), Image.fromarray(load_sample_image(name))))
    try:
        import skimage.data as skdata
    except ImportError:  # scikit-image comes with insightface; degrade to the two sklearn photos
        return photos
    for name in SKIMAGE_PHOTOS:
        try:
            array = getattr(skdata, name)()
        except Exception:  # noqa: BLE001 - a data file missing from this install: skip it
            continue
        photos.append((name, Image.fromarray(array).convert("RGB")))
    try:
        left, right, _ = skdata.stereo_motorcycle()
        photos.append(("motorcycle_left", Image.fromarray(left)))
        photos.append(("motorcycle_right", Image.fromarray(right)))
    except Exception:  # noqa: BLE001
        pass
    return photos


# --- random benchmark cases ----------------------------------------------------------------------

FAMILIES = (
    "grid",
    "grid borderless",
    "stack",
    "stack borderless",
    "irregular",
    "irregular borderless",
    "framed single",
    "single",
    "single edges",
)
GRID_SHAPES = ((2, 2), (3, 3), (1, 3), (2, 3), (3, 2), (1, 2), (2, 1), (4, 4), (2, 4))


def random_case(family: str, photos: Sequence[Image.Image], seed: int) -> Collage:
    """One degraded (downscaled, JPEG 60-95) case of ``family``, fully determined by ``seed``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    rng = random.Random(f"{family}:{seed}")
    scale = rng.uniform(0.45, 1.0)
    quality = rng.randint(60, 95)
    # Distinct sources within one case: two crops of one photo side by side, possibly mirrored,
    # can be seamless even to a person, which no real collage app produces on purpose.
    order = list(range(len(photos)))
    rng.shuffle(order)
    picks = [photos[order[i % len(order)]] for i in range(16)]
    base, kind = family.removesuffix(" borderless"), family
    if base in ("grid", "stack", "irregular"):
        layout, size = _random_layout(base, rng, scale)
        borderless = family.endswith("borderless")
        gutter = 0 if borderless else max(1, round(rng.uniform(2, 20) / scale))
        margin = (
            0 if borderless or rng.random() < 0.5 else max(1, round(rng.uniform(2, 40) / scale))
        )
        collage = compose_collage(
            picks, layout, size, gutter, margin, _gutter_colour(rng), rng.randint(0, 2**31), kind
        )
    elif family == "framed single":
        size = _photo_size(rng, rng.uniform(1000, 2200) / 1.0)
        frame = _random_frame(size, rng)
        collage = framed_single(picks[0], size, frame, _gutter_colour(rng), rng.randint(0, 2**31))
    elif family == "single":
        collage = plain_single(
            picks[0], _photo_size(rng, rng.uniform(900, 2200)), rng.randint(0, 2**31)
        )
    else:
        scene = rng.choice([horizon_scene, door_scene, window_scene])
        size = _photo_size(rng, rng.uniform(900, 2200))
        collage = scene(picks[0], size, rng.randint(0, 2**31))
    return degrade(replace(collage, family=kind), scale, quality, rng.randint(0, 2**31))


def _photo_size(rng: random.Random, long_side: float) -> tuple[int, int]:
    aspect = rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0, 5 / 4])
    short = round(long_side / aspect)
    return (round(long_side), short) if rng.random() < 0.6 else (short, round(long_side))


def _random_frame(size: tuple[int, int], rng: random.Random) -> tuple[int, int, int, int]:
    unit = min(size)
    if rng.random() < 0.5:
        width = round(unit * rng.uniform(0.015, 0.08))
        return (width, width, width, width)
    if rng.random() < 0.5:  # letterbox: bars on two opposite sides only
        bar = round(unit * rng.uniform(0.05, 0.2))
        return (0, bar, 0, bar) if rng.random() < 0.5 else (bar, 0, bar, 0)
    return tuple(round(unit * rng.uniform(0.01, 0.1)) for _ in range(4))  # type: ignore[return-value]


def _gutter_colour(rng: random.Random) -> tuple[int, int, int]:
    pick = rng.random()
    if pick < 0.35:
        return (255, 255, 255)
    if pick < 0.6:
        return (0, 0, 0)
    if pick < 0.7:
        grey = rng.randint(60, 200)
        return (grey, grey, grey)
    return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))


def _random_layout(base: str, rng: random.Random, scale: float) -> tuple[Layout, tuple[int, int]]:
    """A layout and a canvas size that gives its photos plausible aspect ratios."""
    if base == "grid":
        rows, cols = rng.choice(GRID_SHAPES)
        tile_aspect = rng.uniform(0.7, 1.5)
        final_long = rng.uniform(900, 1800)
        width_units, height_units = cols * tile_aspect, rows * 1.0
        return grid_layout(rows, cols), _canvas(width_units, height_units, final_long / scale)
    if base == "stack":
        count = rng.randint(3, 8)
        aspects = [rng.uniform(0.75, 2.0) for _ in range(count)]  # width / height of each photo
        heights = tuple(1.0 / a for a in aspects)
        final_long = rng.uniform(1200, 2400)
        return stack_layout(heights), _canvas(1.0, sum(heights), final_long / scale)
    layout = _random_irregular(rng)
    width_units, height_units = rng.choice([(1.0, 1.0), (4.0, 3.0), (3.0, 4.0), (3.0, 2.0)])
    return layout, _canvas(width_units, height_units, rng.uniform(900, 1800) / scale)


def _canvas(width_units: float, height_units: float, long_side: float) -> tuple[int, int]:
    factor = long_side / max(width_units, height_units)
    return max(64, round(width_units * factor)), max(64, round(height_units * factor))


def _random_irregular(rng: random.Random) -> Layout:
    pick = rng.random()
    if pick < 0.35:
        small = rng.randint(2, 4)
        return big_beside_column(small, rng.random() < 0.5, rng.uniform(1.5, 2.5))
    if pick < 0.7:
        counts = rng.choice([(2, 3), (1, 2), (3, 2), (2, 1, 2), (1, 3), (3, 1, 2), (2, 3, 2)])
        heights = tuple(rng.uniform(0.7, 1.4) for _ in counts)
        return rows_layout(counts, heights)
    # nested: two columns, each a stack with a different count and heights
    left = Split(ROWS, tuple(rng.uniform(0.6, 1.5) for _ in range(2)), (PHOTO, PHOTO))
    right_count = rng.randint(2, 3)
    right = Split(
        ROWS, tuple(rng.uniform(0.6, 1.5) for _ in range(right_count)), (PHOTO,) * right_count
    )
    return Split(COLS, (rng.uniform(0.8, 1.3), 1.0), (left, right))


# --- training cases: what real albums add to the benchmark's families ----------------------------

TRAINING_FAMILY_WEIGHTS = {
    "grid": 0.16,
    "grid borderless": 0.14,
    "stack": 0.09,
    "stack borderless": 0.11,
    "irregular": 0.1,
    "irregular borderless": 0.1,
    "framed single": 0.06,
    "single": 0.12,
    "single edges": 0.12,
}


def training_case(photos: Sequence[Image.Image], seed: int) -> Collage:
    """One case for training the line model, rendered at its final size (no upscaled
    canvas), with what real albums of people photos add to ``random_case``:

    - tiles from one event: several crops (other zoom, other place) of one or two photos;
    - small photos blown up to fill a tile (soft, little texture), like 250 px portraits;
    - photos whose own edge is flat and dark or light (a vignette, a shadow, a clipped sky)
      next to a gutter of about that colour;
    - coloured gutters, thin gutters, uneven outer margins; deeper irregular layouts;
    - re-compression: JPEG 60-95, sometimes twice with a resize between.
    """
    rng = random.Random(f"training:{seed}")
    names = list(TRAINING_FAMILY_WEIGHTS)
    family = rng.choices(names, weights=[TRAINING_FAMILY_WEIGHTS[n] for n in names])[0]
    sources = _event_sources(photos, rng)
    base = family.removesuffix(" borderless")
    if base in ("grid", "stack", "irregular"):
        collage = _training_collage(family, base, sources, rng)
    elif family == "framed single":
        size = _photo_size(rng, rng.uniform(700, 1800))
        colour = _gutter_colour(rng)
        collage = framed_single(
            _prepared(sources[0], rng),
            size,
            _random_frame(size, rng),
            colour,
            rng.randint(0, 2**31),
        )
    elif family == "single":
        size = _photo_size(rng, rng.uniform(700, 1800))
        collage = plain_single(_prepared(sources[0], rng), size, rng.randint(0, 2**31))
        collage = replace(collage, image=_own_edge(collage.image, rng, chance=0.4))
    else:
        scene = rng.choice([horizon_scene, door_scene, window_scene])
        collage = scene(sources[0], _photo_size(rng, rng.uniform(700, 1800)), rng.randint(0, 2**31))
    collage = replace(collage, family=family)
    if rng.random() < 0.3:  # an earlier save at another size and quality
        collage = degrade(
            collage, rng.uniform(0.7, 1.0), rng.randint(70, 95), rng.randint(0, 2**31)
        )
    return degrade(collage, 1.0, rng.randint(60, 95), rng.randint(0, 2**31))


def _event_sources(photos: Sequence[Image.Image], rng: random.Random) -> list[Image.Image]:
    """16 sources for one case: distinct photos, or crops of one or two (one event)."""
    order = list(range(len(photos)))
    rng.shuffle(order)
    if rng.random() < 0.3:
        chosen = [photos[i] for i in order[: rng.randint(1, 2)]]
        return [_random_crop(chosen[i % len(chosen)], rng) for i in range(16)]
    return [photos[order[i % len(order)]] for i in range(16)]


def _random_crop(photo: Image.Image, rng: random.Random) -> Image.Image:
    width, height = photo.size
    crop_w, crop_h = round(width * rng.uniform(0.4, 0.8)), round(height * rng.uniform(0.4, 0.8))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    return photo.crop((left, top, left + crop_w, top + crop_h))


def _prepared(photo: Image.Image, rng: random.Random) -> Image.Image:
    """Sometimes a small photo (150-400 px) that will be blown up to fill its tile."""
    if rng.random() < 0.35:
        small = photo.copy()
        small.thumbnail((rng.randint(150, 400),) * 2, Image.Resampling.LANCZOS)
        return small
    return photo


def _own_edge(tile: Image.Image, rng: random.Random, chance: float = 0.25) -> Image.Image:
    """Sometimes a flat, dark or light, edge of the photo's own: a vignette or a clipped band."""
    if rng.random() >= chance:
        return tile
    pixels = np.asarray(tile, dtype=np.float32).copy()
    height, width = pixels.shape[:2]
    shade = rng.choice([0.0, 255.0, rng.uniform(0, 60)])
    if rng.random() < 0.5:  # a vignette: edges fade towards the shade
        ys = np.abs(np.linspace(-1, 1, height))[:, None]
        xs = np.abs(np.linspace(-1, 1, width))[None, :]
        fade = np.clip((np.maximum(ys, xs) - rng.uniform(0.6, 0.85)) * 4, 0, 1)[..., None]
        pixels = pixels * (1 - fade) + shade * fade
    else:  # a band at one side in (nearly) one colour: shadow, clipped sky, dark wall
        side = rng.randrange(4)
        extent = height if side in (0, 1) else width
        depth = max(1, round(extent * rng.uniform(0.02, 0.12)))
        noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, rng.uniform(0, 3), (1,))
        band = (slice(0, depth), slice(height - depth, height))[side] if side < 2 else None
        if side < 2:
            pixels[band] = shade + noise
        else:
            columns = slice(0, depth) if side == 2 else slice(width - depth, width)
            pixels[:, columns] = shade + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _training_collage(
    family: str, base: str, sources: list[Image.Image], rng: random.Random
) -> Collage:
    if base == "irregular" and rng.random() < 0.4:
        layout: Layout = _random_tree(rng, depth=0)
        units = rng.choice([(1.0, 1.0), (4.0, 3.0), (3.0, 4.0), (3.0, 2.0), (2.0, 3.0)])
        size = _canvas(*units, rng.uniform(700, 1800))
    else:
        layout, size = _random_layout(base, rng, 1.0)
        factor = rng.uniform(700, 1800) / max(size)
        size = (max(64, round(size[0] * factor)), max(64, round(size[1] * factor)))
    borderless = family.endswith("borderless")
    gutter = (
        0 if borderless else rng.choice([1, 2, 3]) if rng.random() < 0.25 else rng.randint(2, 24)
    )
    margin = 0 if borderless or rng.random() < 0.5 else rng.randint(2, 40)
    colour = _gutter_colour(rng)
    canvas = Image.new("RGB", size, colour)
    try:
        boxes = layout_boxes(layout, *size, gutter, margin)
    except ValueError:
        layout, gutter, margin = grid_layout(2, 2), 4, 0
        boxes = layout_boxes(layout, *size, gutter, margin)
    for index, box in enumerate(boxes):
        photo = _prepared(sources[index % len(sources)], rng)
        tile = jitter(cover_crop(photo, box.width, box.height, rng), rng)
        canvas.paste(_own_edge(tile, rng), (box.x0, box.y0))
    return Collage(canvas, sort_boxes(boxes), family, borderless=borderless)


def _random_tree(rng: random.Random, depth: int) -> Layout:
    """A random guillotine layout: 2-3 children per split, up to three levels deep."""
    if depth > 0 and (depth >= 3 or rng.random() < 0.35 + 0.2 * depth):
        return PHOTO
    count = rng.choice([2, 2, 3])
    direction = rng.choice([ROWS, COLS])
    children = tuple(_random_tree(rng, depth + 1) for _ in range(count))
    return Split(direction, tuple(rng.uniform(0.6, 1.6) for _ in range(count)), children)
