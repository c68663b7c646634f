"""Guillotine decoding: cut a region where the line model says a cut runs, place it to the pixel.

In a region (the whole image first), the line model (``lines.py``) gives every row and every
column the probability that a cut runs there across the whole region. A run of likely lines is
one candidate (a gutter's two edges and its inside are one); the direction whose surest
candidate is surer is cut at every candidate at or above ``cut_probability`` that leaves pieces
a photo can be; each piece is decoded again, so irregular layouts come out too.

Plain rules stay rules: digitally flat margins are cut off to the exact pixel; a cut in a flat
band takes the band out exactly (a seam goes on the largest row-to-row step at full size); no cut
crosses a given face box; a piece flat all over (a gutter, a margin) is no photo. A grid's
lines found over the parent region's whole length keep that placement in its pieces
(``inherited``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from identity_pipeline.collage.boxes import CUT_GUTTER, CUT_SEAM, Box, Cut
from identity_pipeline.collage.flat_rows import FlatRows
from identity_pipeline.collage.lines import LineEvidence, LineNet


@dataclass(frozen=True)
class LineSplitSettings:
    """Every threshold of the decoder (colour distances are L1 over RGB, 0..765)."""

    # The line model sees a copy whose longer side is analysis_side; a long phone stack keeps
    # analysis_min_short px across (its photos keep their texture), up to analysis_max_side.
    analysis_side: int = 512
    analysis_min_short: int = 160
    analysis_max_side: int = 1280
    # Lines at or above this probability make a candidate (a run of them is one candidate).
    candidate_floor: float = 0.2
    # A candidate is cut at or above this probability.
    cut_probability: float = 0.5
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
    # A margin's inner edge is a step: this share of the row differs from the band by edge_step.
    edge_step: float = 30.0
    edge_share: float = 0.5
    # A margin never takes more than this share of a region (else the region is blank or a
    # photo of a flat thing, not a frame).
    max_margin_share: float = 0.4
    # Full-size rows searched beyond a candidate's run for a flat band or the sharpest step.
    refine_reach: int = 1
    # A line crossing a face box, away from its outer face_margin, is refused.
    face_margin: float = 0.2
    # Photos whose calibrated confidence is under this are flagged for review.
    review_below: float = 0.9


LineModel = Callable[[np.ndarray], np.ndarray]  # features (n x F) -> probabilities (n)
# Training's hook: called with (region, direction, analysis rows a0, features, lines' full-size
# positions) for every region and direction looked at.
Recorder = Callable[[Box, str, np.ndarray, np.ndarray], None]
# Training's oracle: (region, direction, full-size positions of the lines) -> probabilities.
Oracle = Callable[[Box, str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Candidate:
    """A candidate cut across a region: full-size ``[start, end)`` (a band; start == end for a
    seam) and the line model's probability (the run's best line)."""

    name: str  # "h": a horizontal line (cuts rows), "v": vertical
    start: int
    end: int
    probability: float
    flat: bool
    colour: tuple[float, float, float] | None = None


@dataclass
class Decision:
    """What the decoder decided in one region: for the confidence model."""

    region: Box
    taken: list[Candidate]
    refused: list[Candidate]


@dataclass
class Decoder(FlatRows):
    image: np.ndarray
    evidence: LineEvidence
    model: LineModel
    settings: LineSplitSettings
    faces: Sequence[Box] = ()
    record: Recorder | None = None
    oracle: Oracle | None = None
    cuts: list[Cut] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)  # the photos found (by ``decode``)

    def __post_init__(self) -> None:
        height, width = self.image.shape[:2]
        self.height, self.width = height, width
        self.sx = self.evidence.width / width
        self.sy = self.evidence.height / height
        self.min_tile = max(
            self.settings.min_tile_px, self.settings.min_tile_fraction * max(width, height)
        )
        self.step = max(1, max(width, height) // self.settings.flat_samples)

    # --- recursion ---

    def split(self, region: Box, depth: int = 0, inherited: Sequence[Candidate] = ()) -> list[Box]:
        """``inherited``: the lines the parent region would have cut in the direction it was not
        cut, placed over the parent's whole length (a grid's other lines: over the whole length
        a photo's own flat edge, next to a gutter of its colour, is not flat and stays out)."""
        if depth == 0:  # an app's outer margin goes round the collage; inside, a flat edge
            region = self.trim_margins(region)  # of a piece is a photo's own (or a gutter's)
        if region.area == 0:
            return []
        found = {name: self.placed(self.candidates(region, name), inherited) for name in "hv"}
        cut = self.settings.cut_probability
        taken = {name: [c for c in lines if c.probability >= cut] for name, lines in found.items()}
        if depth >= self.settings.max_depth or not (taken["h"] or taken["v"]):
            self.decisions.append(Decision(region, [], found["h"] + found["v"]))
            return [region]
        name = max(taken, key=lambda key: max((c.probability for c in taken[key]), default=0.0))
        lines = self.spaced(taken[name], region, name)
        other = "v" if name == "h" else "h"
        self.decisions.append(
            Decision(region, lines, [c for c in found[name] if c not in lines] + found[other])
        )
        pieces = []
        start = region.y0 if name == "h" else region.x0
        for line in lines:
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
                boxes.extend(self.split(piece, depth + 1, taken[other]))
        return boxes

    def placed(self, found: list[Candidate], inherited: Sequence[Candidate]) -> list[Candidate]:
        """A candidate on an inherited line takes the inherited placement (found over the
        parent's whole length)."""
        if not inherited:
            return found
        out = []
        for line in found:
            for parent in inherited:
                if (
                    parent.name == line.name
                    and parent.flat == line.flat
                    and line.start <= parent.end + 1
                    and parent.start <= line.end + 1
                ):
                    line = Candidate(
                        line.name,
                        parent.start,
                        parent.end,
                        line.probability,
                        line.flat,
                        line.colour,
                    )
                    break
            out.append(line)
        return out

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

    def analysis_region(self, region: Box, name: str) -> tuple[int, int, int, int]:
        """The region in analysis pixels, oriented: rows a0..a1 across the lines, b0..b1 along
        (a blended analysis pixel at an inner edge of the region is left out along)."""
        sa, sb = (self.sy, self.sx) if name == "h" else (self.sx, self.sy)
        f0, f1, g0, g1 = (
            (region.y0, region.y1, region.x0, region.x1)
            if name == "h"
            else (region.x0, region.x1, region.y0, region.y1)
        )
        limit = self.width if name == "h" else self.height
        a0, a1 = math.floor(f0 * sa + 0.5), math.ceil(f1 * sa - 0.5)
        b0 = math.ceil(g0 * sb) + (1 if g0 > 0 else 0)
        b1 = math.floor(g1 * sb) - (1 if g1 < limit else 0)
        return a0, a1, b0, max(b0, b1)

    def line_positions(self, name: str, a0: int, count: int) -> np.ndarray:
        """Full-size positions of the region's lines (line i between analysis rows a0+i, a0+i+1)."""
        scale = self.sy if name == "h" else self.sx
        return (a0 + 1 + np.arange(count)) / scale

    def candidates(self, region: Box, name: str) -> list[Candidate]:
        a0, a1, b0, b1 = self.analysis_region(region, name)
        features = self.evidence.region_features(name, a0, a1, b0, b1)
        if len(features) == 0:
            return []
        positions = self.line_positions(name, a0, len(features))
        if self.record:
            self.record(region, name, features, positions)
        if self.oracle:
            probabilities = self.oracle(region, name, positions)
        else:
            probabilities = self.model(features)
        lo_edge, hi_edge = (region.y0, region.y1) if name == "h" else (region.x0, region.x1)
        scale = self.sy if name == "h" else self.sx
        found: list[Candidate] = []
        likely = probabilities >= self.settings.candidate_floor
        index = 0
        while index < len(likely):
            if not likely[index]:
                index += 1
                continue
            end = index
            while end + 1 < len(likely) and likely[end + 1]:
                end += 1
            best = index + int(np.argmax(probabilities[index : end + 1]))
            reach = (self.settings.refine_reach + 0.5) / scale
            lo = max(lo_edge + 1, math.floor(positions[index] - reach))
            hi = min(hi_edge - 1, math.ceil(positions[end] + reach))
            line = self.refine(region, name, lo, hi, positions[best], float(probabilities[best]))
            index = end + 1
            if line is None:
                continue
            smaller = min(line.start - lo_edge, hi_edge - line.end)
            if smaller >= self.min_tile and not self.crosses_face(region, line):
                found.append(line)
        return found

    # --- full-size placement ---

    def refine(
        self, region: Box, name: str, lo: int, hi: int, centre: float, probability: float
    ) -> Candidate | None:
        """Place a line in full-size rows [lo, hi): a digitally flat band there (extended as far
        as it goes), else the largest row-to-row step nearest ``centre``."""
        if hi - lo < 2:
            return None
        rows = self.rows(region, name, lo, hi)
        flat, colour = self.flat_rows(rows)
        if flat.any():
            seeds = np.flatnonzero(flat)
            seed = lo + int(seeds[np.argmin(np.abs(seeds + lo - centre))])
            a0, a1 = (region.y0, region.y1) if name == "h" else (region.x0, region.x1)
            start, end = self.extend_band(region, name, seed, a0, a1)
            band_colour = tuple(float(v) for v in colour[seed - lo])
            return Candidate(name, start, end, probability, True, band_colour)
        steps = np.abs(np.diff(colour, axis=0)).sum(axis=1)
        at = lo + 1 + int(np.argmax(steps))
        return Candidate(name, at, at, probability, False)

    def crosses_face(self, region: Box, line: Candidate) -> bool:
        m = self.settings.face_margin
        for face in self.faces:
            if line.name == "h":
                inner = (face.y0 + m * face.height, face.y1 - m * face.height)
                overlap = min(face.x1, region.x1) - max(face.x0, region.x0) > 0
            else:
                inner = (face.x0 + m * face.width, face.x1 - m * face.width)
                overlap = min(face.y1, region.y1) - max(face.y0, region.y0) > 0
            if overlap and line.start < inner[1] and line.end > inner[0]:
                return True
        return False

    # --- blank pieces (flat rows and margins come from FlatRows) ---

    def blank(self, piece: Box) -> bool:
        """A piece with no detail at all (a gutter, a margin): flat all over."""
        if piece.area == 0:
            return True
        step = max(1, max(piece.width, piece.height) // 64)
        pixels = self.image[piece.y0 : piece.y1 : step, piece.x0 : piece.x1 : step]
        return bool(
            pixels.reshape(-1, 3).astype(np.float32).std(axis=0).mean() <= self.settings.flat_std
        )


def decode(
    image: np.ndarray,
    analysis: np.ndarray,
    net: LineNet | None,
    settings: LineSplitSettings,
    faces: Sequence[Box] = (),
    *,
    record: Recorder | None = None,
    oracle: Oracle | None = None,
) -> Decoder:
    decoder = Decoder(
        image,
        LineEvidence(analysis),
        net.probabilities if net is not None else (lambda f: np.zeros(len(f))),
        settings,
        tuple(faces),
        record,
        oracle,
    )
    decoder.boxes = decoder.split(Box(0, 0, image.shape[1], image.shape[0]))
    return decoder
