"""The learned splitter: a small seam map, decoded by recursive full-length cuts (a second opinion).

1. A small CNN (``SeamNet``, weights in ``splitter.safetensors``, trained by
   ``benchmarks/train_collage_splitter.py`` on synthetic collages of license-clean photos) looks
   at a copy of the image about 320 px long and gives, per pixel of a half-size map, the
   probability that a horizontal or a vertical boundary between two photos passes there
   (a gutter or a borderless seam alike).
2. Guillotine decoding: in a region, every row (column) whose map is high along the region's
   width is a candidate line; a logistic line scorer (same file) turns what the map says along
   the line (mean, weakest stretch), whether the full-size pixels hold a digitally flat band
   there, and the pieces it would leave into a probability. Lines at or above ``cut_probability``
   are cut in the direction of the surest one; each piece is split again, so irregular layouts
   come out too.
3. Plain rules stay rules: digitally flat margins and gutters are found at full size and cut
   out to the exact pixel (a seam is placed on the largest row-to-row step); no cut passes
   through a given face box; no piece is smaller than a photo can be.
4. Confidence: the product of the decisions' probabilities (cuts taken, and every candidate
   refused in the final tiles), mapped through an isotonic calibration fitted on held-out
   synthetic collages, is the probability that the photo's cut set is exactly right. A photo
   under ``review_below`` is flagged ``review``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from identity_pipeline.collage.boxes import (
    CUT_GUTTER,
    CUT_SEAM,
    DECIDED_AUTO,
    Box,
    Cut,
    SplitResult,
    classify_layout,
    sort_boxes,
)
from identity_pipeline.collage.flat_rows import FlatRows
from identity_pipeline.collage.rules import DEFAULT_CONFIG, SplitConfig

WEIGHTS_FILE = Path(__file__).with_name("splitter.safetensors")
NET_WIDTHS = (16, 24, 32, 48)
LINE_FEATURES = (
    "logit mean",
    "logit weakest stretch",
    "logit q25 stretch",
    "flat band",
    "log smaller piece share",
    "log line length over region depth",
    "share of the region's best line",
    "inside a piece",
)


@dataclass(frozen=True)
class SplitSettings:
    """Every threshold of the splitter (colour distances are L1 over RGB, 0..765)."""

    # The network sees a copy whose longer side is analysis_side, rounded to 8 px; a long
    # phone stack keeps analysis_min_short px across (its photos keep their texture), up to
    # analysis_max_side along.
    analysis_side: int = 320
    analysis_min_short: int = 96
    analysis_max_side: int = 768
    # A row whose mean boundary probability reaches this is a candidate line (cheap filter;
    # the line scorer decides).
    candidate_floor: float = 0.1
    # A candidate is cut when the line scorer gives it at least this probability.
    cut_probability: float = 0.5
    # Candidates closer than this many map pixels are one line (a gutter's two edges).
    candidate_radius: int = 3
    # Stretches along a line: the weakest one says whether the boundary runs the whole length.
    stretches: int = 8
    # A photo is at least this big: a share of the image's longer side, and pixels.
    min_tile_fraction: float = 0.05
    min_tile_px: int = 24
    max_depth: int = 6
    # Digitally flat: per-channel std along a full-size row at most this (an app's fill; JPEG
    # adds a little), and rows of one band within flat_colour_tolerance of each other.
    flat_std: float = 4.0
    flat_colour_tolerance: float = 30.0
    # Pixels sampled along a full-size row to judge its flatness (every n-th, n from the size).
    flat_samples: int = 300
    # The strongest this many candidates per direction and region are judged (the rest are weak).
    max_candidates: int = 8
    # A margin's inner edge is a step: this share of the row differs from the band by edge_step.
    edge_step: float = 30.0
    edge_share: float = 0.5
    # A margin never takes more than this share of a region (else the region is blank or a
    # photo of a flat thing, not a frame).
    max_margin_share: float = 0.4
    # Full-size rows searched for a flat band or the sharpest step, beyond the map pixel's own.
    refine_reach: int = 2
    # A line crossing a face box, away from its outer face_margin, is refused.
    face_margin: float = 0.2
    # Photos whose calibrated confidence is under this are flagged for review.
    review_below: float = 0.9
    # Take the line model's tiles where the fitted model (training pool only) says they are
    # likelier right than the rules' (split.py): on the benchmark's unseen pools it gains
    # held-back 94.9 -> 97.1 % exact, faces-dev 80.7 -> 81.5 %, and cuts no real single photo.
    line_model_overrides: bool = True
    # The rule-based splitter's thresholds (it makes the cuts while it wins; see split.py).
    rules: SplitConfig = DEFAULT_CONFIG


DEFAULT_SETTINGS = SplitSettings()


# --- the network --------------------------------------------------------------------------------


def build_seam_net(widths: Sequence[int] = NET_WIDTHS):
    """The seam network (torch imported here, so importing the splitter stays light)."""
    import torch
    from torch import nn

    def conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class SeamNet(nn.Module):
        """Encoder to 1/8 with whole-row and whole-column context, decoder back to 1/2 size;
        two outputs: horizontal and vertical boundary logits."""

        def __init__(self) -> None:
            super().__init__()
            c1, c2, c3, c4 = widths
            self.stem = nn.Sequential(conv(3, c1), conv(c1, c1, 2))
            self.enc2 = nn.Sequential(conv(c1, c2), conv(c2, c2))
            self.enc3 = nn.Sequential(conv(c2, c3, 2), conv(c3, c3))
            self.enc4 = nn.Sequential(conv(c3, c4, 2), conv(c4, c4, dilation=2))
            self.context = nn.Sequential(nn.Conv2d(3 * c4, c4, 1), nn.ReLU(inplace=True))
            self.dec3 = nn.Sequential(
                nn.Conv2d(c4 + c3, c3, 1), nn.ReLU(inplace=True), conv(c3, c3)
            )
            self.dec2 = nn.Sequential(
                nn.Conv2d(c3 + c2, c2, 1), nn.ReLU(inplace=True), conv(c2, c2)
            )
            self.head = nn.Conv2d(c2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            half = self.enc2(self.stem(x))
            quarter = self.enc3(half)
            eighth = self.enc4(quarter)
            rows = eighth.mean(dim=3, keepdim=True).expand_as(eighth)
            cols = eighth.mean(dim=2, keepdim=True).expand_as(eighth)
            eighth = self.context(torch.cat([eighth, rows, cols], 1))
            up = nn.functional.interpolate(eighth, size=quarter.shape[2:], mode="nearest")
            quarter = self.dec3(torch.cat([up, quarter], 1))
            up = nn.functional.interpolate(quarter, size=half.shape[2:], mode="nearest")
            return self.head(self.dec2(torch.cat([up, half], 1)))

    return SeamNet()


@dataclass(frozen=True)
class _Model:
    net: object  # SeamNet in eval mode
    line_weights: np.ndarray  # per LINE_FEATURES, then the bias
    calibration_x: np.ndarray  # raw log-confidence, increasing
    calibration_y: np.ndarray  # observed exact rate


@functools.cache
def _model(path: Path = WEIGHTS_FILE) -> _Model:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    net = build_seam_net()
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    net.eval()
    return _Model(
        net,
        tensors["line_scorer"].double().numpy(),
        tensors["calibration_x"].double().numpy(),
        tensors["calibration_y"].double().numpy(),
    )


def analysis_size(width: int, height: int, settings: SplitSettings) -> tuple[int, int]:
    """The network's input size for a ``width`` x ``height`` image (multiples of 8)."""
    scale = settings.analysis_side / max(width, height)
    if min(width, height) * scale < settings.analysis_min_short:
        scale = min(
            settings.analysis_min_short / min(width, height),
            settings.analysis_max_side / max(width, height),
        )
    return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)


def to_analysis(image: np.ndarray, settings: SplitSettings) -> np.ndarray:
    size = analysis_size(image.shape[1], image.shape[0], settings)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def boundary_maps(analysis: np.ndarray, model: _Model | None = None) -> np.ndarray:
    """Horizontal and vertical boundary probabilities (2 x H/2 x W/2) of an analysis image."""
    import torch

    model = model or _model()
    tensor = torch.from_numpy(analysis).permute(2, 0, 1)[None].float() / 255.0 - 0.5
    with torch.inference_mode():
        logits = model.net(tensor)[0].numpy()
    return 1.0 / (1.0 + np.exp(-logits))


# --- decoding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A candidate cut across a region: full-size ``[start, end)`` rows (a band; start == end
    for a seam), its line features and probability."""

    name: str  # "h": a horizontal line (cuts rows), "v": vertical
    start: int
    end: int
    features: np.ndarray
    probability: float

    @property
    def flat(self) -> bool:
        return self.end > self.start


LineScorer = Callable[[np.ndarray], float]
# Called with (region, direction, candidates) for each region looked at: training's hook.
Recorder = Callable[[Box, str, list[Candidate]], None]


@dataclass
class _Decoder(FlatRows):
    image: np.ndarray
    analysis: np.ndarray  # what the network saw
    maps: np.ndarray  # 2 x mh x mw, dilated across the line by one map pixel
    settings: SplitSettings
    faces: Sequence[Box]
    score: LineScorer
    record: Recorder | None = None
    log_confidence: float = 0.0
    cuts: list[Cut] = field(default_factory=list)

    def __post_init__(self) -> None:
        height, width = self.image.shape[:2]
        self.map_scale = (self.maps.shape[2] / width, self.maps.shape[1] / height)  # x, y
        self.min_tile = max(
            self.settings.min_tile_px, self.settings.min_tile_fraction * max(width, height)
        )
        # Columns sampled along a full-size row: flatness needs a few hundred pixels, not all.
        self.step = max(1, max(width, height) // self.settings.flat_samples)

    def split(self, region: Box, depth: int = 0) -> list[Box]:
        region = self.trim_margins(region)
        if region.area == 0:
            return []
        candidates = {name: self.candidates(region, name, depth) for name in ("h", "v")}
        for name, found in candidates.items():
            if self.record:
                self.record(region, name, found)
        taken = {
            name: [c for c in found if c.probability >= self.settings.cut_probability]
            for name, found in candidates.items()
        }
        if depth >= self.settings.max_depth or not (taken["h"] or taken["v"]):
            for found in candidates.values():
                self.log_confidence += sum(math.log1p(-min(c.probability, 0.999)) for c in found)
            return [region]
        name = max(taken, key=lambda key: max((c.probability for c in taken[key]), default=0.0))
        lines = self.spaced(taken[name], region, name)
        pieces = []
        start = region.y0 if name == "h" else region.x0
        for line in lines:
            self.log_confidence += math.log(max(line.probability, 1e-3))
            pieces.append((start, line.start))
            start = line.end
            self.cuts.append(self.cut_of(region, name, line))
        pieces.append((start, region.y1 if name == "h" else region.x1))
        boxes: list[Box] = []
        for lo, hi in pieces:
            piece = (
                Box(region.x0, lo, region.x1, hi)
                if name == "h"
                else Box(lo, region.y0, hi, region.y1)
            )
            if not self.blank(piece):
                boxes.extend(self.split(piece, depth + 1))
        return boxes

    def spaced(self, lines: list[Candidate], region: Box, name: str) -> list[Candidate]:
        """Surest first, keep a line while every piece stays at least a photo long."""
        lo, hi = (region.y0, region.y1) if name == "h" else (region.x0, region.x1)
        chosen: list[Candidate] = []
        for line in sorted(lines, key=lambda c: -c.probability):
            edges = sorted([(lo, lo), (hi, hi)] + [(c.start, c.end) for c in chosen + [line]])
            if all(b[0] - a[1] >= self.min_tile for a, b in zip(edges, edges[1:], strict=False)):
                chosen.append(line)
        return sorted(chosen, key=lambda c: c.start)

    def cut_of(self, region: Box, name: str, line: Candidate) -> Cut:
        source = CUT_GUTTER if line.flat else CUT_SEAM
        at = (line.start + line.end) // 2
        if name == "h":
            return Cut(region.x0, at, region.x1, at, source)
        return Cut(at, region.y0, at, region.y1, source)

    # --- candidates ---

    def candidates(self, region: Box, name: str, depth: int) -> list[Candidate]:
        s = self.settings
        sx, sy = self.map_scale
        if name == "h":
            grid = self.maps[0]
            a0, a1, scale_a = region.y0, region.y1, sy
            b0, b1 = int(region.x0 * sx), max(int(region.x0 * sx) + 1, int(region.x1 * sx))
        else:
            grid = self.maps[1].T
            a0, a1, scale_a = region.x0, region.x1, sx
            b0, b1 = int(region.y0 * sy), max(int(region.y0 * sy) + 1, int(region.y1 * sy))
        r0, r1 = math.ceil(a0 * scale_a), min(grid.shape[0], math.floor(a1 * scale_a))
        if r1 - r0 < 3:
            return []
        band = grid[r0:r1, b0:b1]
        parts = max(1, min(s.stretches, (b1 - b0) // 3))
        bounds = np.linspace(0, b1 - b0, parts + 1).astype(int)
        stretch = np.add.reduceat(band, bounds[:-1], axis=1) / np.maximum(1, np.diff(bounds))
        mean = band.mean(axis=1)
        found = []
        top = float(mean.max(initial=0.0))
        peaks = [
            row
            for row in np.flatnonzero(mean >= s.candidate_floor)
            if mean[row]
            >= mean[max(0, row - s.candidate_radius) : row + s.candidate_radius + 1].max()
            and not (row > 0 and mean[row - 1] == mean[row])
        ]
        for row in sorted(peaks, key=lambda r: -mean[r])[: s.max_candidates]:
            centre = round((r0 + row + 0.5) / scale_a)
            lo, hi, flat = self.refine(region, name, centre, 1 / scale_a)
            smaller = min(lo - a0, a1 - hi)
            if smaller < self.min_tile or self.crosses_face(region, name, lo, hi):
                continue
            p = np.clip(
                [mean[row], stretch[row].min(), np.quantile(stretch[row], 0.25)], 1e-4, 1 - 1e-4
            )
            along = (region.x1 - region.x0) if name == "h" else (region.y1 - region.y0)
            features = np.array(
                [
                    *np.log(p / (1 - p)),
                    float(flat),
                    math.log(smaller / (a1 - a0)),
                    math.log(along / (a1 - a0)),
                    mean[row] / max(top, 1e-6),
                    float(depth > 0),
                ]
            )
            found.append(Candidate(name, lo, hi, features, self.score(features)))
        return found

    def refine(self, region: Box, name: str, centre: int, pixel: float) -> tuple[int, int, bool]:
        """Place a line at full size near ``centre``: a digitally flat band there (extended as far
        as it goes), else the largest row-to-row step. Returns (start, end, flat)."""
        a0, a1 = (region.y0, region.y1) if name == "h" else (region.x0, region.x1)
        reach = math.ceil((self.settings.refine_reach + 1) * pixel)
        lo, hi = max(a0 + 1, centre - reach), min(a1 - 1, centre + reach)
        if hi - lo < 2:
            return centre, centre, False
        rows = self.rows(region, name, lo, hi)
        flat, colour = self.flat_rows(rows)
        if flat.any():
            seeds = np.flatnonzero(flat)
            seed = lo + int(seeds[np.argmin(np.abs(seeds + lo - centre))])
            start, end = self.extend_band(region, name, seed, a0, a1)
            return start, end, True
        steps = np.abs(np.diff(colour, axis=0)).sum(axis=1)
        at = lo + 1 + int(np.argmax(steps))
        return at, at, False

    def crosses_face(self, region: Box, name: str, lo: int, hi: int) -> bool:
        m = self.settings.face_margin
        for face in self.faces:
            if name == "h":
                inner = (face.y0 + m * face.height, face.y1 - m * face.height)
                overlap = min(face.x1, region.x1) - max(face.x0, region.x0) > 0
            else:
                inner = (face.x0 + m * face.width, face.x1 - m * face.width)
                overlap = min(face.y1, region.y1) - max(face.y0, region.y0) > 0
            if overlap and lo < inner[1] and hi > inner[0]:
                return True
        return False

    # --- blank pieces (flat rows and margins come from FlatRows) ---

    def blank(self, piece: Box) -> bool:
        """A piece with no detail at all (a gutter, a margin): flat all over (as the network saw
        it: a flat piece stays flat when shrunk, a photo keeps its detail)."""
        fx, fy = (
            self.analysis.shape[1] / self.image.shape[1],
            self.analysis.shape[0] / self.image.shape[0],
        )
        x0, x1 = int(piece.x0 * fx), max(int(piece.x0 * fx) + 1, math.ceil(piece.x1 * fx))
        y0, y1 = int(piece.y0 * fy), max(int(piece.y0 * fy) + 1, math.ceil(piece.y1 * fy))
        pixels = self.analysis[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)
        return piece.area == 0 or bool(pixels.std(axis=0).mean() <= self.settings.flat_std)


def logistic_scorer(weights: np.ndarray) -> LineScorer:
    def score(features: np.ndarray) -> float:
        z = float(features @ weights[:-1] + weights[-1])
        return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))

    return score


def calibrated(log_confidence: float, model: _Model) -> float:
    return float(np.interp(log_confidence, model.calibration_x, model.calibration_y))


def learned_split(
    image: np.ndarray,
    settings: SplitSettings = DEFAULT_SETTINGS,
    face_boxes: Sequence[Box] = (),
    *,
    scorer: LineScorer | None = None,
    record: Recorder | None = None,
    model: _Model | None = None,
) -> SplitResult:
    """Tile boxes of one image (H x W x 3 uint8 RGB, EXIF-upright), sorted top-to-bottom.

    ``face_boxes`` (full-image pixel boxes) are evidence: no cut passes through a face.
    ``confidence`` is the calibrated probability that the cut set is exactly right; ``review``
    is set under ``settings.review_below``. (``scorer``, ``record``, ``model``: for training.)
    """
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB array, got {array.dtype} {array.shape}")
    height, width = array.shape[:2]
    whole = Box(0, 0, width, height)
    if height < 16 or width < 16:
        return SplitResult((whole,), "single", 1.0, DECIDED_AUTO)
    model = model or _model()
    analysis = to_analysis(array, settings)
    maps = boundary_maps(analysis, model)
    maps = np.stack([cv2.dilate(maps[0], np.ones((3, 1))), cv2.dilate(maps[1], np.ones((1, 3)))])
    decoder = _Decoder(
        np.ascontiguousarray(array),
        analysis,
        maps,
        settings,
        tuple(face_boxes),
        scorer or logistic_scorer(model.line_weights),
        record,
    )
    boxes = sort_boxes(box for box in decoder.split(whole) if box.area > 0) or (whole,)
    confidence = round(calibrated(decoder.log_confidence, model), 3)
    return SplitResult(
        boxes,
        classify_layout(boxes),
        confidence,
        DECIDED_AUTO,
        tuple(decoder.cuts),
        review=confidence < settings.review_below,
    )
