"""Tile boxes, cut lines and split results, and naming a layout from its boxes (no pixels here)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DECIDED_AUTO = "auto"
DECIDED_MANUAL = "manual"

KIND_SINGLE = "single"
KIND_IRREGULAR = "irregular"
KIND_MANUAL = "manual"

CUT_GUTTER = "gutter"
CUT_SEAM = "seam"
CUT_MANUAL = "manual"


@dataclass(frozen=True, order=True)
class Box:
    """A half-open pixel box ``[x0, x1) x [y0, y1)`` in the image's (EXIF-upright) coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        if self.x1 < self.x0 or self.y1 < self.y0:
            raise ValueError(f"box has negative size: {self.as_list()}")

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def intersection(self, other: Box) -> int:
        width = min(self.x1, other.x1) - max(self.x0, other.x0)
        height = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(0, width) * max(0, height)

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def clipped(self, width: int, height: int) -> Box:
        x0, x1 = sorted((min(max(self.x0, 0), width), min(max(self.x1, 0), width)))
        y0, y1 = sorted((min(max(self.y0, 0), height), min(max(self.y1, 0), height)))
        return Box(x0, y0, x1, y1)

    def scaled(self, factor_x: float, factor_y: float | None = None) -> Box:
        factor_y = factor_x if factor_y is None else factor_y
        return Box(
            round(self.x0 * factor_x),
            round(self.y0 * factor_y),
            round(self.x1 * factor_x),
            round(self.y1 * factor_y),
        )

    def contains(self, box: Sequence[float]) -> bool:
        """Does this box hold ``box`` (x0, y0, x1, y1) whole?"""
        return self.x0 <= box[0] and self.y0 <= box[1] and box[2] <= self.x1 and box[3] <= self.y1

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class Cut:
    """A cut line segment, for drawing on a preview; ``source`` is gutter, seam or manual."""

    x0: int
    y0: int
    x1: int
    y1: int
    source: str

    @property
    def horizontal(self) -> bool:
        return self.y0 == self.y1


@dataclass(frozen=True)
class SplitResult:
    """The tiles of one image (sorted top-to-bottom, then left-to-right) and how they were found.

    ``confidence`` is in [0, 1]: the calibrated probability that the cut set is exactly right
    (1 for a manual hint). ``review``: under the splitter's review bar, worth a person's look.
    ``decided_by`` is ``auto`` or ``manual``.
    """

    boxes: tuple[Box, ...]
    kind: str
    confidence: float
    decided_by: str
    cuts: tuple[Cut, ...] = ()
    review: bool = False

    def to_json(self) -> dict[str, object]:
        return {"tiles": [box.as_list() for box in self.boxes], "kind": self.kind}


def same_tiles(found: Sequence[Box], truth: Sequence[Box], iou: float = 0.95) -> bool:
    """Same count and a one-to-one matching at IoU >= ``iou`` (unique at such high IoU)."""
    if len(found) != len(truth):
        return False
    unused = list(found)
    for box in truth:
        best = max(unused, key=box.iou, default=None)
        if best is None or box.iou(best) < iou:
            return False
        unused.remove(best)
    return True


def sort_boxes(boxes: Iterable[Box]) -> tuple[Box, ...]:
    """Top-to-bottom, then left-to-right (by top-left corner)."""
    return tuple(sorted(boxes, key=lambda box: (box.y0, box.x0, box.y1, box.x1)))


def classify_layout(boxes: Sequence[Box], tolerance: float = 0.02) -> str:
    """``single``, ``stack N`` (one column), ``grid RxC`` (aligned rows and columns) or ``irregular``.

    ``tolerance`` is a fraction of the layout's extent: how far edges may differ and still count
    as aligned (gutters and JPEG-blurred seams move edges by a few pixels).
    """
    if len(boxes) <= 1:
        return KIND_SINGLE
    span_x = max(b.x1 for b in boxes) - min(b.x0 for b in boxes)
    span_y = max(b.y1 for b in boxes) - min(b.y0 for b in boxes)
    tol_x, tol_y = max(2.0, tolerance * span_x), max(2.0, tolerance * span_y)
    rows = _cluster([(b.y0 + b.y1) / 2 for b in boxes], tol_y)
    cols = _cluster([(b.x0 + b.x1) / 2 for b in boxes], tol_x)
    if len(rows) * len(cols) != len(boxes):
        return KIND_IRREGULAR
    if not (_aligned(boxes, "y", tol_y) and _aligned(boxes, "x", tol_x)):
        return KIND_IRREGULAR
    if len(cols) == 1:
        return f"stack {len(rows)}"
    return f"grid {len(rows)}x{len(cols)}"


def _cluster(values: Sequence[float], tolerance: float) -> list[list[float]]:
    groups: list[list[float]] = []
    for value in sorted(values):
        if groups and value - groups[-1][-1] <= tolerance:
            groups[-1].append(value)
        else:
            groups.append([value])
    return groups


def _aligned(boxes: Sequence[Box], axis: str, tolerance: float) -> bool:
    """Every box whose centre falls in the same band shares that band's start and end edges."""
    starts = [(b.y0, b.y1) if axis == "y" else (b.x0, b.x1) for b in boxes]
    for start, end in starts:
        centre = (start + end) / 2
        for other_start, other_end in starts:
            if abs((other_start + other_end) / 2 - centre) <= tolerance and (
                abs(other_start - start) > tolerance or abs(other_end - end) > tolerance
            ):
                return False
    return True
