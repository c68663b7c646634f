"""License-clean multi-person scenes for tests and the benchmark, composed from free photos.

Two kinds:

* Quick scenes from one NASA photo (``skimage.data.astronaut()``, Eileen Collins, public
  domain): scaled, mirrored and pasted copies make two people with touching torsos in identical
  orange suits (the hardest case for colour-based GrabCut), a person partly hidden behind
  another, and a row of three at different sizes. No ground truth; the tests use them.
* Group scenes with ground truth (``group_scene``): people cut out of single-person photos whose
  masks are known and pasted on real backgrounds, overlapping, shoulder to shoulder, in front of
  and behind each other. Every pixel's owner is known, so masks can be scored per person.

Person photos and their masks (``scene_people/<name>.png``: 255 person, 128 a held object that
belongs to nobody and is left out of every score, 0 background; drawn for this project with
GrabCut from hand-placed strokes and checked by eye, outlines within a few pixels):

==============  ======================================================  ====================
astronaut       skimage.data.astronaut(): Eileen Collins, NASA          public domain
camera          skimage.data.camera(): photographer Lav Varshney        CC0
grace_hopper    matplotlib's sample_data/grace_hopper.jpg, US Navy      public domain
==============  ======================================================  ====================

Backgrounds: scikit-image's CC0 / public-domain photos (brick, grass, gravel, coffee, rocket,
chelsea, hubble_deep_field). The matplotlib photo is not installed with the project: the
benchmark fetches the wheel with ``pip download`` (``fetch_grace_hopper``) and reads it from
there; nothing is committed. Faces come from the offline face backend (YuNet), as in the
pipeline.
"""

from __future__ import annotations

import itertools
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from identity_pipeline.masks.records import FaceInTile
from identity_pipeline.wheel_files import download_wheel

SCENE_PEOPLE_DIR = Path(__file__).resolve().parent / "scene_people"
PERSON = 255
HELD_OBJECT = 128  # in a person mask: belongs to nobody (a helmet, a camera), never scored
MATPLOTLIB_WHEEL = "matplotlib==3.11.2"
GRACE_HOPPER_IN_WHEEL = "matplotlib/mpl-data/sample_data/grace_hopper.jpg"
# A thin band along each person's outline is left out of scores: the masks were drawn at the
# source photo's resolution, within about this many pixels.
OUTLINE_TOLERANCE_PX = 2.0

MIN_DETECTION_SCORE = 0.6


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def scaled(image: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def touching_pair(side: int = 320) -> np.ndarray:
    """Two people side by side, orange sleeves pressed together along the middle column.

    The mirrored copy goes left: its sleeve (the original's left edge) then meets the original
    copy's sleeve at the seam.
    """
    person = scaled(astronaut(), side)
    return np.ascontiguousarray(np.concatenate([person[:, ::-1], person], axis=1))


def overlapping_pair(side: int = 360) -> np.ndarray:
    """A smaller person behind, a bigger mirrored one in front hiding the right of their body.

    The front copy's frame starts just right of the back person's face, so that face stays
    whole while their right shoulder and arm are covered.
    """
    back = scaled(astronaut(), side)
    front = scaled(astronaut(), int(side * 1.15))[:, ::-1]
    x0 = int(side * 0.62)
    canvas = np.full((front.shape[0], x0 + front.shape[1], 3), 200, np.uint8)
    canvas[canvas.shape[0] - side :, :side] = back
    canvas[:, x0:] = front
    return canvas


def row_of_three(height: int = 300) -> np.ndarray:
    """Three people at 100%, 85% and 70% size standing on one floor line."""
    person = astronaut()
    sizes = [height, int(height * 0.85), int(height * 0.7)]
    canvas = np.full((height, sum(sizes), 3), 180, np.uint8)
    x = 0
    for index, size in enumerate(sizes):
        copy = scaled(person, size)
        canvas[height - size :, x : x + size] = copy[:, ::-1] if index % 2 else copy
        x += size
    return canvas


def composed_scenes() -> dict[str, np.ndarray]:
    return {
        "astronaut": astronaut(),
        "touching_pair": touching_pair(),
        "overlapping_pair": overlapping_pair(),
        "row_of_three": row_of_three(),
    }


def offline_face_backend() -> object:
    """YuNet + SFace from the faces package (``get_backend("offline")`` once it exists)."""
    try:
        from identity_pipeline.faces import get_backend  # type: ignore[attr-defined]

        return get_backend("offline")
    except ImportError:
        from identity_pipeline.faces.offline import OfflineBackend

        return OfflineBackend()


def detect_faces(
    image_rgb: np.ndarray,
    identities: Sequence[str | None] | None = None,
    backend: object | None = None,
) -> list[FaceInTile]:
    """Faces found by the offline backend, left to right, named from ``identities`` in order.

    Faces beyond the names given are strangers (identity None).
    """
    if backend is None:
        backend = offline_face_backend()
    found = [f for f in backend.detect(image_rgb) if f.score >= MIN_DETECTION_SCORE]  # type: ignore[attr-defined]
    found.sort(key=lambda f: f.box[0])
    names = list(identities or [])
    faces = []
    for index, face in enumerate(found):
        identity = names[index] if index < len(names) else None
        box = tuple(float(v) for v in face.box)
        faces.append(FaceInTile(f"face{index}", box, np.asarray(face.landmarks), identity))  # type: ignore[arg-type]
    return faces


# --- group scenes with ground truth ---------------------------------------------------------


@dataclass(frozen=True)
class PersonPhoto:
    """A single-person photo and its mask (``PERSON`` / ``HELD_OBJECT`` / 0 per pixel)."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) uint8


@dataclass(frozen=True)
class Placement:
    """Where one person goes: scaled to ``height`` pixels, top-left corner at (x, y)."""

    person: str
    x: int
    y: int
    height: int
    mirror: bool = False


@dataclass(frozen=True)
class GroupScene:
    """A composed photo and who owns each pixel.

    ``people``: (N, H, W) bool, what is visible of each placed person (placement order, back to
    front). ``ignore``: pixels left out of every score (held objects, outline bands).
    """

    name: str
    layout: str
    image: np.ndarray
    people: np.ndarray
    ignore: np.ndarray
    placements: tuple[Placement, ...]


def fetch_grace_hopper(cache_dir: Path) -> Path:
    """matplotlib's Grace Hopper photo, taken from its wheel (``pip download``, cached)."""
    target = Path(cache_dir) / "grace_hopper.jpg"
    if target.is_file():
        return target
    wheel_path = download_wheel(MATPLOTLIB_WHEEL, target.parent)
    with zipfile.ZipFile(wheel_path) as wheel:
        target.write_bytes(wheel.read(GRACE_HOPPER_IN_WHEEL))
    return target


def person_photos(grace_hopper: Path | None = None) -> dict[str, PersonPhoto]:
    """The person photos with masks; Grace Hopper only when her photo's path is given."""
    from skimage import data

    images = {
        "astronaut": data.astronaut(),
        "camera": cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2RGB),
    }
    if grace_hopper is not None:
        images["grace_hopper"] = np.asarray(Image.open(grace_hopper).convert("RGB"))
    photos = {}
    for name, image in images.items():
        mask = np.asarray(Image.open(SCENE_PEOPLE_DIR / f"{name}.png").convert("L"))
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{name}: mask {mask.shape} does not match photo {image.shape}")
        photos[name] = PersonPhoto(name, np.ascontiguousarray(image), mask)
    return photos


def background(name: str, size: tuple[int, int]) -> np.ndarray:
    """A scikit-image photo (CC0 / public domain) cropped to the aspect of ``size`` and resized."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    width, height = size
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    resized = cv2.resize(image, (max(width, round(w * scale)), max(height, round(h * scale))))
    top = (resized.shape[0] - height) // 2
    left = (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[top : top + height, left : left + width, :3])


def compose(
    name: str,
    layout: str,
    backdrop: np.ndarray,
    placements: Sequence[Placement],
    photos: dict[str, PersonPhoto],
) -> GroupScene:
    """Paste the people on ``backdrop`` in order (later ones in front) and record ownership.

    A person is cut out with their held objects (a helmet stays in the hand) and a one-pixel
    soft edge; pixels a later person covers are no longer the earlier one's.
    """
    height, width = backdrop.shape[:2]
    canvas = backdrop.astype(np.float32)
    owner = np.full((height, width), -1, np.int16)  # placement index, -2 a held object
    for index, place in enumerate(placements):
        photo = photos[place.person]
        scale = place.height / photo.image.shape[0]
        size = (max(1, round(photo.image.shape[1] * scale)), place.height)
        image = cv2.resize(photo.image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(photo.mask, size, interpolation=cv2.INTER_NEAREST)
        if place.mirror:
            image, mask = image[:, ::-1], mask[:, ::-1]
        x0, y0 = max(0, place.x), max(0, place.y)
        x1, y1 = min(width, place.x + size[0]), min(height, place.y + size[1])
        if x1 <= x0 or y1 <= y0:
            continue
        local = (slice(y0 - place.y, y1 - place.y), slice(x0 - place.x, x1 - place.x))
        mask, image = mask[local], image[local]
        cut = (mask > 0).astype(np.float32)
        alpha = cv2.GaussianBlur(cut, (0, 0), 0.7)[..., None]
        region = canvas[y0:y1, x0:x1]
        region[:] = region * (1 - alpha) + image.astype(np.float32) * alpha
        window = owner[y0:y1, x0:x1]
        window[mask == PERSON] = index
        window[mask == HELD_OBJECT] = -2
    people = np.stack([owner == i for i in range(len(placements))])
    # Bands along what is visible of each outline (a hidden outline is no edge in the picture).
    band = max(1, round(OUTLINE_TOLERANCE_PX))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    outline = np.zeros((height, width), bool)
    for visible in people.astype(np.uint8):
        outline |= cv2.dilate(visible, kernel) != cv2.erode(visible, kernel)
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return GroupScene(name, layout, image, people, (owner == -2) | outline, tuple(placements))


LAYOUTS = ("shoulder_to_shoulder", "front_and_behind", "two_rows")
# Share of a person's head (the top of their outline) that must stay visible in a scene.
MIN_VISIBLE_HEAD = 0.9


def group_scene(
    layout: str,
    seed: int,
    people: Sequence[str],
    backdrop: str,
    photos: dict[str, PersonPhoto],
) -> GroupScene:
    """One random scene of ``layout`` with ``people`` (photo names; repeats are copies).

    * ``shoulder_to_shoulder``: one row of busts of similar size, each touching or overlapping
      its neighbour, who is in front decided at random.
    * ``front_and_behind``: a back row of smaller people, heads about as high as the front
      row's, and a front row standing before the gaps, hiding part of their bodies.
    * ``two_rows``: the same with more, smaller people (a crowd).

    Faces always stay visible (a head hidden by more than a tenth is moved clear).
    """
    rng = np.random.default_rng(seed)
    height = {"shoulder_to_shoulder": 420, "front_and_behind": 460, "two_rows": 520}.get(layout)
    if height is None:
        raise ValueError(f"unknown layout {layout!r}; one of {LAYOUTS}")
    if layout == "shoulder_to_shoulder":
        rows = [[(name, rng.uniform(0.62, 0.78)) for name in people]]
    else:
        front_share = 0.75 if layout == "front_and_behind" else 0.62
        back = [(name, front_share * rng.uniform(0.7, 0.82)) for name in people[::2]]
        front = [(name, front_share * rng.uniform(0.92, 1.05)) for name in people[1::2]]
        rows = [back, front]
    placements: list[Placement] = []
    row_spans: list[list[tuple[int, int]]] = []
    for row_index, row in enumerate(rows):
        spans = []
        cursor = 0.0
        for slot, (name, share) in enumerate(row):
            mirror = bool(rng.random() < 0.5)
            box_height = int(height * share)
            left, right, top = _person_extent(photos[name], box_height, mirror)
            width = right - left
            if row_index == 0:
                # Neighbours touch or overlap by up to a quarter of a body.
                person_left = cursor - rng.uniform(0.0, 0.25) * width if slot else 0.0
            else:
                # Front row: centred on the gap between two back people (or past the ends).
                gaps = [(a[1] + b[0]) / 2 for a, b in itertools.pairwise(row_spans[0])]
                ends = [row_spans[0][0][0], row_spans[0][-1][1]]
                anchors = gaps + ends if len(gaps) < len(row) else gaps
                centre = anchors[slot % len(anchors)] + rng.uniform(-0.1, 0.1) * width
                person_left = centre - width / 2
            if row_index == 0 and len(rows) == 2:
                y = int(height * rng.uniform(0.04, 0.1)) - top  # heads level with the front
            else:
                y = height - box_height  # the cut at the photo's bottom meets the frame's
            placements.append(Placement(name, round(person_left - left), y, box_height, mirror))
            spans.append((round(person_left), round(person_left + width)))
            cursor = person_left + width
        row_spans.append(spans)
    shift = -min(p.x + _person_extent(photos[p.person], p.height, p.mirror)[0] for p in placements)
    placements = [_shifted(p, shift + 20) for p in placements]
    width = 40 + max(
        p.x + _person_extent(photos[p.person], p.height, p.mirror)[1] for p in placements
    )
    if layout == "shoulder_to_shoulder":
        order = list(rng.permutation(len(placements)))
    else:
        order = list(range(len(placements)))  # back row first
    ordered = _clear_heads([placements[i] for i in order], photos, (width, height))
    name = f"{layout}-{backdrop}-{seed}"
    return compose(name, layout, background(backdrop, (width, height)), ordered, photos)


def _person_extent(photo: PersonPhoto, height: int, mirror: bool) -> tuple[int, int, int]:
    """Left, right and top of the person's pixels in their cut-out scaled to ``height``."""
    scale = height / photo.mask.shape[0]
    ys, xs = np.nonzero(photo.mask == PERSON)
    left, right = xs.min() * scale, (xs.max() + 1) * scale
    if mirror:
        width = photo.mask.shape[1] * scale
        left, right = width - right, width - left
    return round(left), round(right), round(ys.min() * scale)


def _shifted(place: Placement, dx: int) -> Placement:
    return Placement(place.person, place.x + dx, place.y, place.height, place.mirror)


def _clear_heads(
    placements: list[Placement], photos: dict[str, PersonPhoto], size: tuple[int, int]
) -> list[Placement]:
    """Move people in front sideways until no head behind them is hidden by more than 10 %."""
    placements = list(placements)
    for _ in range(12):
        backdrop = np.zeros((size[1], size[0], 3), np.uint8)
        scene = compose("check", "check", backdrop, placements, photos)
        hidden = None
        for index, place in enumerate(placements):
            head = _head_region(place, photos[place.person], size)
            if head.any() and scene.people[index][head].mean() < MIN_VISIBLE_HEAD:
                hidden = index
                break
        if hidden is None:
            return placements
        # Push everyone in front of the hidden head away from it.
        centre = placements[hidden].x + placements[hidden].height / 2
        for later in range(hidden + 1, len(placements)):
            place = placements[later]
            direction = 1 if place.x + place.height / 2 >= centre else -1
            placements[later] = _shifted(place, direction * max(8, place.height // 12))
    return placements


def _head_region(place: Placement, photo: PersonPhoto, size: tuple[int, int]) -> np.ndarray:
    """The top fifth of a placed person's outline, in scene pixels (bool (H, W))."""
    width, height = size
    scale = place.height / photo.mask.shape[0]
    mask = cv2.resize(
        (photo.mask == PERSON).astype(np.uint8),
        (max(1, round(photo.mask.shape[1] * scale)), place.height),
        interpolation=cv2.INTER_NEAREST,
    ).astype(bool)
    if place.mirror:
        mask = mask[:, ::-1]
    rows = np.nonzero(mask.any(axis=1))[0]
    mask[rows[0] + (rows[-1] - rows[0]) // 5 :] = False
    region = np.zeros((height, width), bool)
    x0, y0 = max(0, place.x), max(0, place.y)
    x1, y1 = min(width, place.x + mask.shape[1]), min(height, place.y + mask.shape[0])
    if x1 > x0 and y1 > y0:
        region[y0:y1, x0:x1] = mask[y0 - place.y : y1 - place.y, x0 - place.x : x1 - place.x]
    return region


def visible_face_owner(scene: GroupScene, face: FaceInTile) -> int | None:
    """The placed person whose visible pixels cover most of ``face``'s inner box, if any."""
    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
    inner = scene.people[:, max(0, y0 + dy) : max(0, y1 - dy), max(0, x0 + dx) : max(0, x1 - dx)]
    if inner.size == 0:
        return None
    share = inner.reshape(len(scene.people), -1).mean(axis=1)
    best = int(np.argmax(share))
    return best if share[best] >= 0.5 else None
