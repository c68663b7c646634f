"""Split a collage into its photos by recursive full-length cuts (guillotine), gutters or not.

One pass over a downscaled copy (the "analysis" image: longer side 800 px, but a long narrow
phone stack keeps 300 px across so each photo keeps its texture), plus a full-resolution look at
the few rows around each cut to place it to the pixel:

1. Uniform bands: rows (or columns) that are digitally flat along the whole region. Bands at the
   region's border whose inner edge is a straight step are margins or frames and are trimmed,
   and frames are even: as many rows of the frame's colour on the opposite side go too, and
   on both sides of the other direction where none was seen there (a photo's black edge
   against a black frame shows no step);
   interior bands with a photo edge on both sides are gutters (unless the scene visibly goes on
   behind them, like a window bar: the two sides differ no more than two rows of one side as
   far apart, unless two of the collage's gutters have its colour and thickness (two alike
   photos); or they repeat closer than photos can be, like blank paper between lines of
   text). A bar found to be over one scene also vetoes the rest of itself in smaller pieces
   and its crossing bar (same colour and thickness: a window's cross); bars flat but for
   shading along their length are looked for too: over one scene, or else lit along like a
   door's post (one thicker than a window's bar only beside its flat twin); so are bars lit
   steeply along (light bars in the sun, too uneven for any band): painted if the scene goes on
   behind them or a painted bar like them crosses them, unless one direction has more of them
   than a window has bars, posts included (blank lines on an unevenly lit page); two lit bars
   alike that cross each other are a window's cross. A band whose brightness rises steadily
   from one end to the other is lit like a painted bar (an app's gutter is one fill), and so
   are the smooth rows beside it (light across a rounded bar), if what lies past both its
   edges differs from it (a page's blank margin does not): no gutter, nor is its crossing bar
   or its twin (a door's other post), and the lines at its edges are no seams.
   Nor is a band shaded steadily across, from one edge to the other (a pole, a rounded bar).
   A band a row or two thick that is a blend of the rows beside it is the smeared edge
   between them (a wall and a door post), no gutter.
   Margins and frames are digitally flat; a band that is not (a painted wall) stays. Where one
   of two bands of one colour and thickness can be no gutter (a blank or too thin strip of wall
   beside it), neither is: a door's two posts.
2. Seams (no gutter): candidate lines are local maxima of the share of the line showing a step
   much larger than the step just beside it (``_seam_evidence``), or of the step profile (the
   step across the line against the steps 3 rows away, per stretch of the line). Each is judged
   by a learned scorer (``seam_scorer.json``: gradient-boosted trees walked in numpy; trained by
   ``benchmarks/train_collage_scorer.py`` on synthetic collages of seeds the benchmark does not
   evaluate, built from augmented copies of the source photos) over 28 features: evidence
   share, step ratios, a periodic structure around it (bricks, text), an object's other edge
   close by (a post, a bar), objects crossing it (a pole across a horizon, however thin: a
   blend of pole and background on each side; three of them veto it, and so do two that go
   on standing out far on both sides, like two trunks), how alike the two
   sides look, each side's colour and texture next to the line (robust to one smooth side), the
   share of the line's stretches that agree, how much stronger it is than close parallel lines,
   how far the two sides lie apart for their own variability, a change point in multi-scale
   texture (gravel over grass), the same over the whole region (how much of the variance of
   each row's texture one split there explains, and whether no other split explains more),
   rows of detail that repeat on both sides (lines of text) and whether their rhythm goes on
   across the line, the region's aspect and the cut that made it (a tile of a phone stack is
   rarely cut across), and the pieces it would leave (size, aspect, detail).
3. Hard limits stay rules: a cut through a given face box, a piece too small, thin or blank for a
   photo (too thin only if it is not cut across in turn: a row of photos); a thin flat strip
   between two close edges is a thin gutter.
4. The first cuts set the collage's style: after gutters only gutters of that colour follow,
   after seams only seams (collages use one or the other throughout).
5. Cut along the chosen lines of one direction and recurse into each piece, so irregular layouts
   (a big photo beside a column, rows with different column counts) come out too. Grid prior:
   lines taken across the whole region in the other direction are cut in every piece, and after
   a borderless split a weaker line continuing a seam cut elsewhere is taken too.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class SplitConfig:
    """Every threshold of the splitter. Colour distances are L1 over RGB (0..765) unless noted."""

    # Analysis happens on a copy whose longer side is at most analysis_max_side, unless that
    # leaves the shorter side under analysis_min_side (a phone stack ten photos tall keeps the
    # texture of each photo), and of at most analysis_max_pixels; cuts are refined at full size.
    analysis_max_side: int = 800
    analysis_min_side: int = 300
    analysis_max_pixels: int = 640_000
    # Box blur along each candidate line: averages away noise and JPEG speckle, keeps the step.
    line_blur: int = 5
    # A photo is at least this big: a fraction of the image's longer side, and absolute pixels.
    min_tile_fraction: float = 0.05
    min_tile_px: int = 24
    # ... and no thinner than 1:max_tile_aspect (a piece that is gets cut across: a row of
    # photos).
    max_tile_aspect: float = 6.0
    max_depth: int = 6

    # Uniform bands (gutters, margins, frames): digitally flat along the line.
    uniform_max_std: float = 3.0  # per-channel std along a row, analysis scale
    # Shading along a painted bar is what a blur over this many pixels keeps (analysis scale).
    shading_reach: int = 15
    shaded_bar_max_share: float = 0.03  # of the line's length: thicker is a smooth photo area
    shaded_bar_max_std: float = 12.0  # along a row of a shaded bar, shading included
    # ... or up to this for a bar lit steeply along its length (a light bar in the sun): then
    # painted, if the scene goes on behind it or a painted bar like it crosses it.
    lit_bar_max_std: float = 30.0
    # Light across a rounded bar drifts its rows' colour, edge to edge, by up to this many
    # times band_colour_tolerance; a window's bars differ by as much from each other.
    shaded_bar_colour_drift: float = 3.0
    # Bars lit steeply, or shaded bars not over one scene (door posts), per direction in a
    # region: more are a page's blank lines.
    lit_bars_max: int = 2
    # Light falling along a painted bar (window, door post) brightens it steadily from one end
    # to the other; an app's gutter is one fill. A band is painted when the brightness of its
    # inner rows, over shading_stretches stretches of the line, fits a straight ramp that rises
    # by at least shading_min_ramp grey levels and by shading_min_significance times the
    # stretches' scatter about it (plus shading_scatter_floor: JPEG quantises flat fills).
    shading_stretches: int = 16
    shading_min_ramp: float = 1.5
    shading_min_significance: float = 5.0
    shading_scatter_floor: float = 0.2
    painted_bar_max_share: float = 0.08  # of the line's length: thicker is a smooth photo area
    band_colour_tolerance: float = 24.0  # a row joins a band within this of its mean
    # A band whose inner rows brighten (or darken) row by row, by this many grey levels from
    # one to the other, is shaded across like a pole, not filled like a gutter.
    rounded_bar_drift: float = 12.0
    edge_step: float = 30.0  # a pixel beside a band differs from its colour by at least this
    gutter_edge_fraction: float = 0.5  # of the line length, on each side of a gutter
    known_gutter_edge_fraction: float = 0.3  # ... once the collage's gutter colour is known
    # Detail correlation across a band at or above which the scene continues behind it.
    gutter_continuity: float = 0.55
    # A band is a gutter only if the two sides differ more than rows of one side as far apart
    # (log ratio; see _bridged_step).
    gutter_bridged_step: float = 0.2
    # ... and sides this different (same measure) are two photos whatever the continuity says.
    gutter_distinct_step: float = 1.0
    margin_edge_fraction: float = 0.6  # of the line length, on the inner side of a margin
    # Frames, letterbox bars and app-made gutters are digitally flat: mean per-channel std
    # along their rows at most this (a painted wall or bar has noise and shading).
    margin_max_std: float = 1.5

    # Seams (no gutter).
    seam_step: float = 24.0  # the step across the line at one position must be at least this
    seam_step_ratio: float = 2.0  # ... and this many times the step just beside it, on one side
    seam_pool: int = 9  # steps are averaged over this many pixels along the line
    seam_fraction: float = 0.75  # of the line length that must show the step
    partner_fraction: float = 0.6  # weakest line that counts as an object's other edge
    # Learned line scorer (seam_scorer.json, trained by benchmarks/train_collage_scorer.py on
    # synthetic collages of other seeds than the benchmark's): a line is a seam at this score.
    seam_score: float = 0.35
    # Candidates: lines with at least this share of step evidence, or this log step ratio
    # (median over profile_segments stretches; steps get profile_floor added, so flat rows
    # beside flat rows are not a ratio of noise).
    seam_candidate_fraction: float = 0.5
    seam_candidate_profile: float = 0.5
    # Lines taken across a whole region in the direction not cut first are cut in each piece.
    inherit_lines: bool = True
    # A line continuing a seam already cut elsewhere in the collage needs only this score.
    aligned_seam_score: float = 0.15
    profile_segments: int = 8
    # A stretch of the line agrees with a seam when its step is this log ratio above the
    # larger step beside it (scorer feature: the share of agreeing stretches).
    stretch_step_ratio: float = 0.3
    side_rows: int = 6  # analysis rows on each side of a line compared for its side contrast
    profile_floor: float = 6.0
    # Analysis rows within which two seam candidates are one line (a thin gutter's two edges).
    nms_radius: int = 3
    thin_object_rows: int = 6  # two edges this close: a thin gutter if flat between, else an object
    thin_gutter_max_std: float = 8.0  # thin gutters blur into the photos: a looser flatness
    # A band a row or two thick that is this share (low, high) of the row before it, the rest
    # the row after, all along the line, is the blended edge between the two (see
    # _blend_of_sides), no gutter.
    blend_share_range: tuple[float, float] = (0.15, 0.85)
    # This many other lines on each side, closer than a photo could be: a periodic structure.
    periodic_lines: int = 2
    # Objects crossing a line (continuing across it, standing out beside it) say it is an edge
    # inside one scene: a scorer feature, and crossing_objects of them are a veto. Objects
    # wider than crossing_max_width of the line do not count.
    crossing_objects: int = 3
    crossing_max_width: float = 0.15
    crossing_reach: int = 8  # analysis rows an object must continue on each side of the line
    # long_crossing_objects crossing objects that go on standing out long_crossing_reach
    # analysis rows on both sides (two trunks across a horizon) are a veto too: two photos'
    # details that happen to line up at a seam rarely go on far on both.
    long_crossing_objects: int = 2
    long_crossing_reach: int = 48
    # A thin object's blur is at most this share background (see _thin_crossings).
    thin_crossing_max_share: float = 0.8
    # Rhythm of lines of text across a seam candidate: periods of rhythm_min_period rows up to
    # half of rhythm_reach rows, looked for on each side of the line.
    rhythm_min_period: int = 5
    rhythm_reach: int = 160
    # Two strong parallel lines at most object_max_fraction of the image's longer side apart,
    # with a strip between whose colour only drifts slowly along it (L1 detail at most
    # object_strip_detail after removing a trend over object_trend_window of the length), are the
    # two edges of one object: a door post, a window bar, a mortar line.
    object_max_fraction: float = 0.06
    object_strip_detail: float = 12.0
    object_trend_window: float = 0.05

    # A piece left by a seam cut must have detail: this fraction of its pixels differ from their
    # 5x5 neighbourhood mean by at least blank_detail grey levels (analysis scale).
    blank_detail: float = 4.0
    blank_fraction: float = 0.04
    # Between gutters only a truly empty piece is refused (a painted wall beside a door post):
    # a photo framed by gutters is one even if it is mostly smooth.
    blank_fraction_gutter: float = 0.025
    # A smooth photo (the moon, a clear sky) beside seams the scorer is sure of.
    confident_seam_score: float = 0.9
    blank_fraction_confident: float = 0.005
    # Beside gutters or confident seams, a piece without that detail is still a photo if it has
    # detail at a coarser scale: blank_coarse_fraction of its pixels at 1/blank_coarse_factor of
    # the analysis scale differ so. A smooth portrait (a face, upscaled from a small photo) has
    # features there; a painted wall has none.
    blank_coarse_factor: int = 4
    blank_coarse_fraction: float = 0.12

    # The first cuts decide the collage's style: after gutters only gutters of their colour,
    # after seams only seams (collages use gutters everywhere or nowhere).
    consistent_gutters: bool = True

    # Faces: a line crossing a face box, away from its outer face_margin, is refused.
    face_margin: float = 0.2
    face_veto_gutters: bool = False

    # Full-resolution refinement.
    refine_colour_tolerance: float = 36.0  # a pixel belongs to a band's colour within this
    refine_band_share: float = 0.85  # a row belongs to a band when this share of it does
    refine_uniform_std: float = 8.0  # per-channel std of a thin gutter row at full size
    thin_gutter_share: float = 0.5  # of a full-res row in the known gutter colour: a thin gutter
    # ... once the collage's gutter colour is known, for a line found as two close edges.
    known_gutter_share: float = 0.9


DEFAULT_CONFIG = SplitConfig()
SCORER_FILE = Path(__file__).with_name("seam_scorer.json")
SCORER_FEATURES = (
    "evidence share",
    "step ratio median",
    "step ratio q25",
    "step ratio to calmer side",
    "periodic lines",
    "object edge",
    "crossing objects",
    "side similarity",
    "log smaller piece share",
    "log worse aspect",
    "smaller detail share",
    "style is seams",
    "close parallel lines",
    "evidence margin over close lines",
    "log region aspect",
    "side colour distance",
    "texture step",
    "stretch agreement",
    "parent pieces",
    "side shift near",
    "side shift far",
    "texture change near",
    "texture change far",
    "texture split share",
    "texture split rank",
    "texture split share near",
    "rhythm on both sides",
    "rhythm across",
)


@dataclass(frozen=True)
class _Scorer:
    """Gradient-boosted decision trees over the line features, from a readable JSON file.

    All trees are walked at once: one array of nodes (a leaf points to itself), one cursor per
    tree, as many steps as the deepest tree is deep.
    """

    feature: np.ndarray  # per node; -1 at a leaf
    threshold: np.ndarray  # go left when the feature is at most this
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray  # a leaf's contribution to the log-odds
    roots: np.ndarray
    depth: int
    baseline: float

    def score(self, features: np.ndarray) -> float:
        node = self.roots
        for _ in range(self.depth):
            feature = self.feature[node]
            leaf = feature < 0
            goes_left = features[np.where(leaf, 0, feature)] <= self.threshold[node]
            node = np.where(leaf, node, np.where(goes_left, self.left[node], self.right[node]))
        z = self.baseline + float(self.value[node].sum())
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


@functools.cache
def _scorer() -> _Scorer:
    data = json.loads(SCORER_FILE.read_text(encoding="utf-8"))
    if tuple(data["features"]) != SCORER_FEATURES:
        raise ValueError(f"{SCORER_FILE.name} was trained on other features; retrain it")
    return scorer_from_trees(data["trees"], float(data["baseline"]))


def scorer_from_trees(trees: Sequence[dict], baseline: float) -> _Scorer:
    """Flatten trees given as lists (feature, threshold, left, right, value per node; node 0
    the root; feature -1 at a leaf) into one node array."""
    columns: dict[str, list] = {key: [] for key in ("feature", "threshold", "left", "right")}
    values: list[float] = []
    roots, depth, offset = [], 1, 0
    for tree in trees:
        roots.append(offset)
        leaf = np.asarray(tree["feature"]) < 0
        for key in ("left", "right"):
            children = np.asarray(tree[key]) + offset
            own = np.arange(offset, offset + len(leaf))
            columns[key].extend(np.where(leaf, own, children).tolist())
        columns["feature"].extend(tree["feature"])
        columns["threshold"].extend(tree["threshold"])
        values.extend(tree["value"])
        depth = max(depth, _tree_depth(tree))
        offset += len(leaf)
    return _Scorer(
        np.asarray(columns["feature"], np.int64),
        np.asarray(columns["threshold"], np.float64),
        np.asarray(columns["left"], np.int64),
        np.asarray(columns["right"], np.int64),
        np.asarray(values, np.float64),
        np.asarray(roots, np.int64),
        depth,
        baseline,
    )


def _tree_depth(tree: dict) -> int:
    deepest, pending = 0, [(0, 0)]
    while pending:
        node, level = pending.pop()
        if tree["feature"][node] < 0:
            deepest = max(deepest, level)
        else:
            pending += [(tree["left"][node], level + 1), (tree["right"][node], level + 1)]
    return deepest


@dataclass(frozen=True)
class _Line:
    """A candidate cut in analysis coordinates: ``[start, end)`` rows; start == end for a seam."""

    start: int
    end: int
    strength: float  # seam: fraction of the line with a step; gutter: 1 + edge fraction
    gutter: bool
    colour: tuple[float, float, float] | None = None
    # A band digitally flat along its whole length (a collage app's gutter, not a painted bar).
    flat: bool = False

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2


@dataclass(frozen=True)
class _Candidate:
    """A possible seam at analysis row ``row``: its evidence share, what a close parallel line
    makes of it (a thin gutter, an object edge's reason, or None), the objects crossing it and
    its scorer features."""

    row: int
    value: float
    verdict: _Line | str | None
    crossings: int
    long_crossings: int
    features: np.ndarray


@dataclass(frozen=True)
class _LitBar:
    """A bar lit steeply along its length, not (yet) known to be painted (analysis rows)."""

    name: str
    start: int
    end: int
    region: tuple[int, int, int, int]  # a0, a1, b0, b1 of the region it was found in
    colour: np.ndarray


@dataclass(frozen=True)
class _SceneBar:
    """A flat band (analysis rows) the scene was seen to go on behind (a window bar), or one
    lit along its length like a painted bar (``shaded``)."""

    start: int
    end: int
    colour: np.ndarray
    shaded: bool = False  # light falls along it: painted for certain (see _shaded_along)


@dataclass
class _Decisions:
    """Margins of every decision taken, for the confidence."""

    margins: list[float] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)


# The direction ("h" or "v") and piece count of the cut that made a region; None at the top.
_ParentCut = tuple[str, int] | None


@dataclass(frozen=True)
class _LineSearch:
    """Lines to cut a region along, and, when none is taken but some seam was refused, the
    margin of that refusal (for the confidence)."""

    lines: list[_Line]
    refusal_margin: float | None = None


class _Axis:
    """Line statistics for cuts along rows of ``analysis``; columns use the transposed image."""

    def __init__(
        self,
        analysis: np.ndarray,
        full: np.ndarray,
        scale: float,
        config: SplitConfig,
        texture: tuple[np.ndarray, ...],
        fineness: float,
    ) -> None:
        self.config = config
        # Integral images of texture (see _texture_integrals), oriented like ``analysis``.
        self.texture = texture
        self.full = full  # full-resolution image, oriented like ``analysis``
        self.scale = scale  # analysis rows per full-resolution row
        # Rows beside a band that may still be a blend of band and photo: resizing and JPEG
        # smear a sharp edge over a few full-resolution pixels.
        self.blend_rows = max(2, round(1 + 2 * scale))
        # Pixels along a line that count as one at the usual analysis scale (see
        # _analysis_factor): line blur and detail scales grow with it.
        self.fineness = fineness
        blur = max(1, round(config.line_blur * fineness))
        # Pixels along a line on each side of a sharp change that the blur below mixes into it.
        self.blur_reach = blur // 2
        img = cv2.blur(analysis, (blur, 1)) if blur > 1 else analysis
        self.img = img
        lines, length = img.shape[:2]
        # 2-D integral images (one C pass each): any block's colour sum and sum of squares.
        self.integral, self.integral_sq = cv2.integral2(
            np.ascontiguousarray(img), sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F
        )
        evidence, step = _seam_evidence(img, config)
        self.evidence = np.zeros((lines, length + 1), np.int32)
        np.cumsum(evidence, axis=1, out=self.evidence[:, 1:])
        # Step across each row (row r-1 against row r+1), summed along the line: for the
        # step profile of a line against the lines beside it, per stretch of the line.
        self.step = np.zeros((lines, length + 1), np.float64)
        np.cumsum(step, axis=1, out=self.step[:, 1:])

    def row_stats(self, a0: int, a1: int, b0: int, b1: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean colour and mean per-channel std of rows a0..a1 over columns b0..b1."""
        count = max(1, b1 - b0)
        total = _row_sums(self.integral, a0, a1, b0, b1)
        total_sq = _row_sums(self.integral_sq, a0, a1, b0, b1)
        mean = total / count
        variance = np.maximum(total_sq / count - mean**2, 0.0)
        return mean, np.sqrt(variance.mean(axis=1))

    def block_moments(self, a0: int, a1: int, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean colour and per-channel variance of rows a0..a1 in each stretch of the line."""
        mean = self.block_means(a0, a1, bounds)
        squares = self.strip_means(np.array([a0]), a1 - a0, bounds, self.integral_sq)[0]
        return mean, np.maximum(squares - mean**2, 0.0)

    def strip_means(
        self, starts: np.ndarray, depth: int, bounds: np.ndarray, table: np.ndarray
    ) -> np.ndarray:
        """Means from an integral ``table`` of the strips of ``depth`` rows from each of
        ``starts``, per stretch ``bounds[i]..bounds[i+1]``: strips x stretches x channels."""
        sums = np.diff(table[starts + depth][:, bounds] - table[starts][:, bounds], axis=1)
        return sums / np.maximum(1, depth * np.diff(bounds))[None, :, None]

    def block_means(self, a0: int, a1: int, bounds: np.ndarray) -> np.ndarray:
        """Mean colour of rows a0..a1 in each stretch ``bounds[i]..bounds[i+1]`` of the line."""
        return self.strip_means(np.array([a0]), a1 - a0, bounds, self.integral)[0]

    def evidence_rows(self, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
        """The per-pixel seam evidence of rows a0..a1, columns b0..b1, as booleans."""
        return np.diff(self.evidence[a0:a1, b0 : b1 + 1], axis=1) > 0

    def seam_fraction(self, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
        count = max(1, b1 - b0)
        return (self.evidence[a0:a1, b1] - self.evidence[a0:a1, b0]) / count

    def unshaded_std(self, rows: np.ndarray, b0: int, b1: int) -> np.ndarray:
        """Per row, the mean per-channel std over columns b0..b1 once shading along the line
        (what a blur over shading_reach keeps) is set aside."""
        pixels = self.img[rows, b0:b1]
        reach = max(3, round(self.config.shading_reach * self.fineness))
        return (pixels - cv2.blur(pixels, (reach, 1))).std(axis=1).mean(axis=1)

    def edge_fraction(self, rows: range, b0: int, b1: int, colour: np.ndarray) -> float:
        """Best share, over ``rows``, of a row that differs from ``colour`` by a clear step.

        Several rows because the first row past a band may be a blend of band and photo (resizing,
        JPEG chroma bleeding).
        """
        rows = range(max(rows.start, 0), min(rows.stop, self.img.shape[0]))
        if b1 <= b0 or not rows:
            return 0.0
        distance = np.abs(self.img[rows.start : rows.stop, b0:b1] - colour).sum(axis=2)
        return float((distance >= self.config.edge_step).mean(axis=1).max())


def _texture_integrals(analysis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integral images of brightness and of its change along and across rows over 1, 2 and 4
    pixels (of a box-blurred copy for the wider ones): 7 channels in two tables.

    Unblurred, since texture is what tells gravel from grass. Comparisons sum over all
    channels, so the transposed tables serve the columns as they are.
    """
    grey = _channel_sum(np.ascontiguousarray(analysis)) / 3
    channels = [grey]
    for reach in (1, 2, 4):
        smooth = cv2.blur(grey, (reach, reach)) if reach > 1 else grey
        along = np.zeros_like(grey)
        across = np.zeros_like(grey)
        along[:, reach:] = np.abs(smooth[:, reach:] - smooth[:, :-reach])
        across[reach:] = np.abs(smooth[reach:] - smooth[:-reach])
        channels += [along, across]
    return (
        cv2.integral(cv2.merge(channels[:4]), sdepth=cv2.CV_64F),
        cv2.integral(cv2.merge(channels[4:]), sdepth=cv2.CV_64F),
    )


def _texture_rows(axis: _Axis, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
    """Per row of a0..a1: the log of its mean brightness and texture (the _texture_integrals
    channels) over columns b0..b1."""
    means = [_row_sums(table, a0, a1, b0, b1) for table in axis.texture]
    return np.log(np.concatenate(means, axis=1) / max(1, b1 - b0) + 4.0)


def _split_share(rows: np.ndarray, reach: int | None = None, margin: int = 2) -> np.ndarray:
    """Per row k: the share of a descriptor's variance over ``rows`` (a sequence of descriptors)
    explained by splitting the sequence before k into two runs with a mean each, for the
    descriptor it explains best; within k-reach..k+reach when ``reach`` is given, else over the
    whole sequence. Only for splits leaving ``margin`` rows on each side (0 elsewhere): a few
    rows at a border (a blended edge) would be explained best on their own.

    Two photos of one palette (gravel over grass) differ in some texture all along each side:
    the boundary is where one split explains most. Inside one photo, texture drifts or repeats.
    Per descriptor, since the one that tells two textures apart may vary least.
    """
    count = len(rows)
    share = np.zeros(count)
    margin = max(2, margin)
    if count - margin <= margin:
        return share
    sums = np.zeros((count + 1, rows.shape[1]))
    squares = np.zeros((count + 1, rows.shape[1]))
    np.cumsum(rows, axis=0, out=sums[1:])
    np.cumsum(rows * rows, axis=0, out=squares[1:])

    def scatter(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        n = np.maximum(hi - lo, 1)[:, None]
        total = sums[hi] - sums[lo]
        return squares[hi] - squares[lo] - total * total / n

    split = np.arange(margin, count - margin + 1)
    lo = np.zeros_like(split) if reach is None else np.maximum(0, split - reach)
    hi = np.full_like(split, count) if reach is None else np.minimum(count, split + reach)
    whole = scatter(lo, hi)
    parts = scatter(lo, split) + scatter(split, hi)
    share[split] = (1.0 - parts / np.maximum(whole, 1e-9)).max(axis=1)
    return share


def _stretch_bounds(b0: int, b1: int, parts: int, min_width: int = 8) -> np.ndarray:
    """Bounds of ``parts`` equal stretches of the line b0..b1, fewer where a stretch would be
    shorter than ``min_width``."""
    count = max(1, min(parts, (b1 - b0) // min_width))
    return np.linspace(b0, b1, count + 1).round().astype(int)


def _row_sums(table: np.ndarray, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
    """Per row of a0..a1: the sum over columns b0..b1, from a 2-D integral image."""
    across = table[:, b1] - table[:, b0]
    return across[a0 + 1 : a1 + 1] - across[a0:a1]


def _seam_evidence(img: np.ndarray, config: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: does a horizontal line through this row look like the boundary of two photos?

    ``step[r]`` compares row r-1 with row r+1, so a seam blended into one row by downscaling still
    shows up in full; steps are pooled over a short stretch of the line so texture averages out.
    Evidence: the step across r is large, and much larger than the step two rows above *or* two
    rows below (a textured photo beside a smooth one is a seam even if the texture is strong).
    A thin line (a narrow gutter) shows up as two such edges one or two rows apart.
    """
    step = np.zeros(img.shape[:2], np.float32)
    if img.shape[0] < 5:
        return step.astype(bool), step
    step[1:-1] = _channel_sum(cv2.absdiff(img[2:], img[:-2]))
    raw = step
    if config.seam_pool > 1:
        step = cv2.blur(step, (config.seam_pool, 1))
    beside = np.empty_like(step)  # the smaller of the steps two rows above and below
    beside[2:-2] = np.minimum(step[:-4], step[4:])
    beside[:2], beside[-2:] = step[2:4], step[-4:-2]
    evidence = step >= config.seam_step
    evidence &= step >= config.seam_step_ratio * beside
    return evidence, raw


def _analysis_factor(height: int, width: int, config: SplitConfig) -> tuple[float, float]:
    """The downscale factor of the analysis copy (1.0: full size), and how many times finer
    it is than the longer side alone would make it (1.0 but for long, narrow images).

    A finer copy keeps more noise and JPEG block edges along a row: line statistics smooth
    over that many more pixels, so flat still means flat.
    """
    by_longer_side = min(1.0, config.analysis_max_side / max(height, width))
    factor = max(by_longer_side, config.analysis_min_side / max(1, min(height, width)))
    factor = min(1.0, factor, float(np.sqrt(config.analysis_max_pixels / max(1, height * width))))
    return factor, max(1.0, factor / by_longer_side)


def _channel_sum(image: np.ndarray) -> np.ndarray:
    """Sum over the colour channels of an H x W x 3 float32 image, in one C pass."""
    flat = image.reshape(-1, 3)
    return cv2.transform(flat[:, None, :], np.ones((1, 3), np.float32)).reshape(image.shape[:2])


class _Splitter:
    def __init__(self, image: np.ndarray, config: SplitConfig, face_boxes: Sequence[Box]) -> None:
        self.config = config
        self.image = image
        height, width = image.shape[:2]
        self.height, self.width = height, width
        factor, fineness = _analysis_factor(height, width, config)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        small = image if factor == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        analysis = small.astype(np.float32)
        self.sx, self.sy = size[0] / width, size[1] / height
        texture = _texture_integrals(analysis)
        self.axes = {
            "h": _Axis(analysis, image, self.sy, config, texture, fineness),
            "v": _Axis(
                np.ascontiguousarray(analysis.transpose(1, 0, 2)),
                image.transpose(1, 0, 2),
                self.sx,
                config,
                tuple(table.transpose(1, 0, 2) for table in texture),
                fineness,
            ),
        }
        self.detail = _detail_integral(analysis, config)
        coarse = config.blank_coarse_factor
        coarse_size = (max(1, size[0] // coarse), max(1, size[1] // coarse))
        self.coarse_detail = _detail_integral(
            cv2.resize(analysis, coarse_size, interpolation=cv2.INTER_AREA), config
        )
        self.min_tile = max(config.min_tile_px, config.min_tile_fraction * max(height, width))
        self.faces = tuple(face_boxes)
        self.decisions = _Decisions()
        self.trace: list[str] | None = None  # set to a list to record why each line was kept
        # A collage uses gutters everywhere or nowhere. The first cuts (across the whole image)
        # decide: after gutters, a straight edge without one is inside a photo; after seams, a
        # flat band is part of a photo (a mortar line, a window bar).
        self.style: str | None = None  # None until the first cut, then CUT_GUTTER or CUT_SEAM
        self.gutter_colour: np.ndarray | None = None
        # Per direction, bands judged to be bars over one scene (see _scene_bar).
        self.scene_bars: dict[str, list[_SceneBar]] = {"h": [], "v": []}
        # Per direction, the bands cut as gutters so far (see _gutters: a band among its like).
        self.gutters_cut: dict[str, list[_Line]] = {"h": [], "v": []}

    def _note(self, message: str) -> None:
        if self.trace is not None:
            self.trace.append(message)

    # --- recursion --------------------------------------------------------------------------

    def split(self) -> list[Box]:
        boxes = self._split_region(Box(0, 0, self.width, self.height), depth=0)
        if self.style == CUT_SEAM and self.config.aligned_seam_score < self.config.seam_score:
            boxes = self._aligned_pass(boxes)
        return boxes

    def _aligned_pass(self, boxes: list[Box]) -> list[Box]:
        """Grid prior: a weaker seam in one tile that continues a seam cut elsewhere in the
        collage (the same row or column) is taken too; collage tools line tiles up.

        Two similar photos side by side show little evidence, but the line it lies on is
        already known from the neighbouring tiles.
        """
        pending = list(boxes)
        done: list[Box] = []
        while pending:
            box = pending.pop()
            pieces = None
            for name in ("h", "v"):
                pieces = self._aligned_cut(name, box)
                if pieces:
                    break
            if pieces:
                pending.extend(pieces)
            else:
                done.append(box)
        return done

    def _aligned_cut(self, name: str, region: Box) -> list[Box] | None:
        axis = self.axes[name]
        a0, a1, b0, b1 = self._analysis_region(name, region)
        min_rows = self.min_tile * axis.scale
        if a1 - a0 < 2 * min_rows or b1 - b0 < 4:
            return None
        positions = sorted(
            {
                cut.y0 if name == "h" else cut.x0
                for cut in self.decisions.cuts
                if cut.source == CUT_SEAM and cut.horizontal == (name == "h")
            }
        )
        rows = [
            round(position * axis.scale - 0.5)
            for position in positions
            if a0 + min_rows <= position * axis.scale <= a1 - min_rows
        ]
        if not rows:
            return None
        lines = []
        for candidate in self._seam_candidates(name, region, a0, a1, b0, b1, [], rows):
            score = self._score(candidate)
            self._note(
                f"{name} aligned seam {candidate.row} in {region.as_list()} score {score:.2f}"
            )
            line = _Line(candidate.row, candidate.row, score, False)
            if score >= self.config.aligned_seam_score and not self._crosses_face(
                name, region, line
            ):
                lines.append(line)
        lines = _space_out(lines, a0, a1, min_rows)
        lines = self._drop_implausible_pieces(name, region, a0, a1, lines)
        if not lines:
            return None
        return self._cut(name, region, lines)

    def _split_region(
        self,
        region: Box,
        depth: int,
        inherited: tuple[str, Sequence[_Line]] | None = None,
        parent: _ParentCut = None,
    ) -> list[Box]:
        """``inherited``: lines taken across the parent region in the direction it was not cut
        (full-length there, so full-length across this piece too: a grid's other cuts).
        ``parent``: the cut that made ``region``."""
        region = self._trim_margins(region)
        if region.width < 2 or region.height < 2:
            return []
        if depth >= self.config.max_depth:
            return [region]
        if self.style is None:  # the first cut decides whether gutters are the style
            judged = {name: self._shaded_bars(name, region) for name in ("h", "v")}
            # A window's bar whose crossing bar was found after it, or is lit too unevenly
            # to be judged alone: two lit bars alike, crossing, are a window's cross.
            for name, (undecided, _) in judged.items():
                crossing = judged["v" if name == "h" else "h"][1]
                for bar in undecided:
                    if self._crosses_painted_bar(
                        bar.name, bar.start, bar.end, bar.colour
                    ) or self._crosses_lit_band(bar, crossing):
                        self._painted_bar(bar.name, bar.start, bar.end, bar.region, bar.colour)
        searches = {
            name: self._lines(
                name, region, inherited[1] if inherited and inherited[0] == name else (), parent
            )
            for name in ("h", "v")
        }
        for search in searches.values():
            if search.refusal_margin is not None:
                self.decisions.margins.append(search.refusal_margin)
        choices = {name: search.lines for name, search in searches.items()}
        name = max(choices, key=lambda key: _orientation_score(choices[key]))
        lines = choices[name]
        if not lines:
            return [region]
        pieces = self._cut(name, region, lines)
        if self.style is None and self.config.consistent_gutters:
            self.style = CUT_GUTTER if self.gutter_colour is not None else CUT_SEAM
        other = "v" if name == "h" else "h"
        across = (other, choices[other]) if self.config.inherit_lines else None
        boxes: list[Box] = []
        for piece in pieces:
            boxes.extend(self._split_region(piece, depth + 1, across, (name, len(pieces))))
        return boxes

    # --- coordinates ------------------------------------------------------------------------

    def _oriented(self, name: str, region: Box) -> tuple[int, int, int, int]:
        """Region as (line start, line end, along start, along end) in full-res coordinates."""
        if name == "h":
            return region.y0, region.y1, region.x0, region.x1
        return region.x0, region.x1, region.y0, region.y1

    def _analysis_span(self, name: str, start: int, end: int, limit: int) -> tuple[int, int]:
        """Full-res [start, end) to analysis rows, dropping a row at inner edges (blended)."""
        scale = self.axes[name].scale
        lo = int(np.ceil(start * scale - 1e-6)) + (1 if start > 0 else 0)
        hi = int(np.floor(end * scale + 1e-6)) - (1 if end < limit else 0)
        return lo, max(lo, hi)

    def _analysis_region(self, name: str, region: Box) -> tuple[int, int, int, int]:
        f0, f1, g0, g1 = self._oriented(name, region)
        other = "v" if name == "h" else "h"
        line_limit, along_limit = (
            (self.height, self.width) if name == "h" else (self.width, self.height)
        )
        a0, a1 = self._analysis_span(name, f0, f1, line_limit)
        b0, b1 = self._analysis_span(other, g0, g1, along_limit)
        return a0, a1, b0, b1

    def _box(self, name: str, f0: int, f1: int, g0: int, g1: int) -> Box:
        return Box(g0, f0, g1, f1) if name == "h" else Box(f0, g0, f1, g1)

    # --- margins ----------------------------------------------------------------------------

    def _trim_margins(self, region: Box) -> Box:
        outer = region
        for _ in range(2):  # trimming one direction changes the rows the other one sees
            before = region
            for name in ("h", "v"):
                region = self._trim_direction(name, region)
            if region == before:
                break
        return self._frame_all_round(outer, region)

    def _frame_all_round(self, outer: Box, region: Box) -> Box:
        """A frame trimmed evenly in one direction and not at all in the other: as many
        columns of its colour on both sides of the other direction are frame too, where the
        photo runs into the frame's colour on both sides (no step to see)."""
        trims = {
            "h": (region.y0 - outer.y0, outer.y1 - region.y1),
            "v": (region.x0 - outer.x0, outer.x1 - region.x1),
        }
        for name, other in (("h", "v"), ("v", "h")):
            thickness = min(trims[name])
            if thickness < 2 or abs(trims[name][0] - trims[name][1]) > 2 or any(trims[other]):
                continue
            f0, f1, g0, g1 = self._oriented(name, outer)
            colour = self._full_colour(name, f0, f0 + thickness, g0, g1)
            o0, o1, p0, p1 = self._oriented(other, region)
            if o1 - o0 <= 4 * thickness:
                continue
            sides = ((o0, o0 + thickness), (o1 - thickness, o1))
            if all(self._band_member_rows(other, lo, hi, p0, p1, colour).all() for lo, hi in sides):
                return self._box(other, o0 + thickness, o1 - thickness, p0, p1)
        return region

    def _trim_direction(self, name: str, region: Box) -> Box:
        axis = self.axes[name]
        a0, a1, b0, b1 = self._analysis_region(name, region)
        if a1 - a0 < 3 or b1 - b0 < 3:
            return region
        mean, std = axis.row_stats(a0, a1, b0, b1)
        bands = _bands(mean, std, self.config)
        f0, f1, g0, g1 = self._oriented(name, region)
        outer = (f0, f1)
        frame_colour = None
        for start, end, colour in bands:
            if start == 0 and end == a1 - a0:
                return region  # entirely flat: nothing to trim towards
            if not _digitally_flat(std[start:end], self.config, axis.fineness):
                continue  # a painted wall or a clear sky at the photo's edge, not a frame
            if start == 0:
                inner = range(a0 + end, min(a0 + end + 3, a1))
                if axis.edge_fraction(inner, b0, b1, colour) >= self.config.margin_edge_fraction:
                    f0 = self._refine_band_end(
                        name, f0, (a0 + end + 1) / axis.scale, g0, g1, colour
                    )
                    frame_colour = colour
            elif end == a1 - a0:
                inner = range(max(a0 + start - 3, a0), a0 + start)
                if axis.edge_fraction(inner, b0, b1, colour) >= self.config.margin_edge_fraction:
                    f1 = self._refine_band_start(
                        name, (a0 + start - 1) / axis.scale, f1, g0, g1, colour
                    )
                    frame_colour = colour
        if frame_colour is not None:
            f0, f1 = self._even_frame(name, outer, f0, f1, g0, g1, frame_colour)
        if f1 - f0 < 2:
            return region
        return self._box(name, f0, f1, g0, g1)

    # --- candidate lines --------------------------------------------------------------------

    def _lines(
        self,
        name: str,
        region: Box,
        inherited: Sequence[_Line] = (),
        parent: _ParentCut = None,
    ) -> _LineSearch:
        """Gutters and seams to cut ``region`` along in direction ``name``. Takes no cut and
        records no margin: the caller takes the lines (or not) and records the refusal margin.
        Bars judged over one scene on the way are remembered (``scene_bars``)."""
        axis = self.axes[name]
        a0, a1, b0, b1 = self._analysis_region(name, region)
        min_rows = self.min_tile * axis.scale
        if a1 - a0 < 2 * min_rows or b1 - b0 < 4:
            return _LineSearch([])
        mean, std = axis.row_stats(a0, a1, b0, b1)
        gutters = _drop_crowded(self._gutters(name, a0, a1, b0, b1, mean, std), min_rows)
        seams, best_refused = self._seams(name, region, a0, a1, b0, b1, [], parent)
        beside_gutter = [
            line
            for line in seams
            if not line.gutter and any(g.start - 3 <= line.start <= g.end + 2 for g in gutters)
        ]
        # A painted bar's edges are no seams: the scene goes on behind the bar.
        seams = [line for line in seams if not self._at_painted_bar(name, line)]
        plain_seams = [line for line in seams if not line.gutter and line not in beside_gutter]
        if self.style is None and gutters and len(plain_seams) > len(gutters):
            # More seams than flat bands across the whole image: a borderless collage with a
            # flat stretch (night sky, blank paper) in one photo, not a gutter collage.
            gutters = []
        if self.style == CUT_SEAM or (self.style is None and not gutters):
            gutters, seams = [], [line for line in seams if not line.gutter]
        elif self.style == CUT_GUTTER and self.gutter_colour is not None:
            colour = tuple(float(v) for v in self.gutter_colour)
            seams = [
                replace(line, gutter=True, colour=colour)
                for line in seams
                if line not in beside_gutter
                and (
                    self._known_gutter_near(name, region, line.start)
                    or self._known_gutter_near(name, region, line.end)
                )
            ]
        else:
            # Thin gutters seen as two close edges; beside flat gutters only those of their
            # colour (a light mortar line in a brick photo is not a white gutter).
            seams = [
                line
                for line in seams
                if line.gutter
                and (
                    not gutters
                    or any(_colours_match(line.colour, g.colour, self.config) for g in gutters)
                )
            ]
        radius = self.config.nms_radius
        seams += [
            line
            for line in inherited
            if not any(abs(line.centre - other.centre) <= radius for other in gutters + seams)
        ]
        candidates = [
            line
            for line in gutters + seams
            if line.start - a0 >= min_rows
            and a1 - line.end >= min_rows
            and not self._crosses_face(name, region, line)
        ]
        if self.style is None:
            # A band too close to the border for a photo beside it is painted (a door post),
            # and so is a band of its colour and thickness (the other post).
            painted = [g for g in gutters if g.start - a0 < min_rows or a1 - g.end < min_rows]
            candidates = [
                line
                for line in candidates
                if not any(_same_band(line, post, self.config) for post in painted)
            ]
        chosen = _space_out(candidates, a0, a1, min_rows)
        chosen = self._drop_implausible_pieces(name, region, a0, a1, chosen)
        self._note(
            f"{name} {region.as_list()} rows {a0}-{a1} gutters "
            f"{[(g.start, g.end, round(g.strength, 2)) for g in gutters]} seams "
            f"{[(c.start, round(c.strength, 2)) for c in seams]} chosen "
            f"{[(c.start, c.end) for c in chosen]}"
        )
        rejected = [c.strength for c in seams if c not in chosen and not c.gutter]
        if best_refused is not None:
            rejected.append(best_refused)
        if not rejected or chosen:
            return _LineSearch(chosen)
        threshold = self.config.seam_score
        return _LineSearch(chosen, max(0.0, (threshold - max(rejected)) / threshold))

    def _gutters(
        self,
        name: str,
        a0: int,
        a1: int,
        b0: int,
        b1: int,
        mean: np.ndarray,
        std: np.ndarray,
    ) -> list[_Line]:
        """Interior flat bands with a photo edge on both sides.

        An edge: the rows beside the band differ from its colour along most of the line, or the
        seam evidence says a full-length boundary is there (a white gutter beside a white cup).
        """
        config = self.config
        axis = self.axes[name]
        found: list[_Line] = []
        alike_sided: list[_Line] = []  # judged once all the region's gutters are found
        for start, end, colour in _bands(mean, std, config):
            if start == 0 or end == a1 - a0:
                continue  # margins were trimmed before; a band here touching the edge is content
            known = self._scene_bar(name, a0 + start, a0 + end, colour)
            if known is not None:
                if known.shaded:  # its edges are then no seams either (see _at_painted_bar)
                    self.scene_bars[name].append(_SceneBar(a0 + start, a0 + end, colour, True))
                continue
            if not self._gutter_colour_fits(colour):
                continue
            before = range(max(a0, a0 + start - 3), a0 + start)
            after = range(a0 + end, min(a1, a0 + end + 3))
            edges, distinct_edges = [], []
            evidence_rows = _edge_evidence_rows(a0 + start, a0 + end, axis.img.shape[0])
            for rows, (lo, hi) in zip((before, after), evidence_rows, strict=True):
                distinct = axis.edge_fraction(rows, b0, b1, colour)
                evidence = axis.seam_fraction(lo, hi, b0, b1).max() if hi > lo else 0.0
                distinct_edges.append(distinct)
                edges.append(max(distinct, evidence if evidence >= config.seam_fraction else 0.0))
            if max(distinct_edges) < config.gutter_edge_fraction and self.gutter_colour is None:
                continue  # neither side stands apart from it: blank paper between lines of text
            if end - start <= 2 and _blend_of_sides(axis.img, a0 + start, a0 + end, b0, b1, config):
                self._note(f"{name} band {a0 + start}-{a0 + end}: the blend of an edge")
                continue
            needed = (
                config.known_gutter_edge_fraction
                if self.gutter_colour is not None
                else config.gutter_edge_fraction
            )
            edged = min(edges) >= needed  # a photo edge on both sides
            if edged and self._painted_bar(name, a0 + start, a0 + end, (a0, a1, b0, b1), colour):
                continue
            if edged and self._rounded(name, a0 + start, a0 + end, b0, b1):
                self._note(f"{name} rounded bar {a0 + start}-{a0 + end}: shaded across, no gutter")
                continue
            behind = self._scene_behind(name, a0 + start, a0 + end, b0, b1)
            if behind is not None and not (edged and behind == "alike sides"):
                self._record_scene_bar(name, a0 + start, a0 + end, colour, behind)
                continue
            if not edged:
                continue
            line = _Line(
                a0 + start,
                a0 + end,
                1.0 + min(edges),
                True,
                tuple(float(v) for v in colour),
                _digitally_flat(std[start:end], config, axis.fineness),
            )
            if behind is None:
                found.append(line)
            else:
                alike_sided.append(line)
        # A bar found painted later in the loop (the other half of a rounded bar, a door's
        # other post) tells what the bands before it were.
        found = [line for line in found if not self._part_of_painted_bar(name, line)]
        # Two photos alike (two pages of text) look like one scene behind a band; among a
        # collage's gutters of its colour and thickness, the band is one of them.
        gutters = found + self.gutters_cut[name]
        for line in alike_sided:
            if line.flat and sum(_same_band(line, gutter, config) for gutter in gutters) >= 2:
                self._note(f"{name} gutter {line.start}-{line.end} among its like, sides alike")
                found.append(line)
            else:
                self._record_scene_bar(
                    name, line.start, line.end, np.array(line.colour), "alike sides"
                )
        return sorted(found, key=lambda line: line.start)

    def _part_of_painted_bar(self, name: str, line: _Line) -> bool:
        """Is the band a painted bar's, touching it or its twin (see _scene_bar)?"""
        bar = self._scene_bar(name, line.start, line.end, np.asarray(line.colour))
        return bar is not None and bar.shaded

    def _rounded(self, name: str, start: int, end: int, b0: int, b1: int) -> bool:
        """Does the band start..end brighten (or darken) steadily across (a pole, a rounded
        bar, a chunk of a gradient sky)? An app's gutter is one fill; only its edge rows blend
        with the photos."""
        inner0, inner1 = _inner_rows(start, end)
        if inner1 - inner0 < 3:
            return False  # too thin to tell shading from the blur of its edges
        # Brightness only: JPEG smears colour (chroma) across a thin coloured gutter.
        brightness = self.axes[name].row_stats(inner0, inner1, b0, b1)[0].mean(axis=1)
        config = self.config
        steps = np.diff(brightness)
        if np.all(steps > 0) or np.all(steps < 0):
            return bool(abs(brightness[-1] - brightness[0]) >= config.rounded_bar_drift)
        # Noise in a thick band breaks the steps' run: a straight ramp across then.
        rise, scatter = _linear_ramp(brightness)
        significance = rise / (scatter + config.shading_scatter_floor)
        return rise >= config.rounded_bar_drift and significance >= config.shading_min_significance

    def _shaded_along(self, name: str, start: int, end: int, b0: int, b1: int) -> bool:
        """Does the band start..end brighten steadily along the line (light on a painted bar)?

        Only its inner rows count: the rows at its edges blend with the photos beside it.
        """
        config = self.config
        axis = self.axes[name]
        if end - start < 3 or b1 - b0 < 2 * config.shading_stretches:
            return False
        if end - start > config.painted_bar_max_share * (b1 - b0):
            return False  # a smooth stretch of a photo (a lit wall, the sky), not a bar
        bounds = _stretch_bounds(b0, b1, config.shading_stretches)
        brightness = axis.block_means(*_inner_rows(start, end), bounds).mean(axis=1)
        ramp, scatter = _linear_ramp(brightness)
        significance = ramp / (scatter + config.shading_scatter_floor)
        return ramp >= config.shading_min_ramp and significance >= config.shading_min_significance

    def _painted_bar(
        self,
        name: str,
        start: int,
        end: int,
        region: tuple[int, int, int, int],
        colour: np.ndarray,
    ) -> bool:
        """Is the band start..end (part of) a bar lit along its length? Recorded if so."""
        b0, b1 = region[2:]
        if not self._shaded_along(name, start, end, b0, b1):
            return False
        start, end = self._smooth_extent(name, start, end, region)
        if not self._stands_apart(name, start, end, b0, b1, colour):
            return False
        self._note(f"{name} shaded bar {start}-{end}: painted, not a gutter")
        self.scene_bars[name].append(_SceneBar(start, end, colour, True))
        return True

    def _stands_apart(
        self, name: str, start: int, end: int, b0: int, b1: int, colour: np.ndarray
    ) -> bool:
        """Does the scene past both edges of the bar start..end differ from it? Past a thin line
        beside a band, a blank page's margin is the band's colour again."""
        axis = self.axes[name]
        reach = axis.blend_rows + 1  # past the blend of bar and scene, and a line along it
        beyond = (range(start - reach - 3, start - reach), range(end + reach, end + reach + 3))
        return all(
            axis.edge_fraction(rows, b0, b1, colour) >= self.config.gutter_edge_fraction
            for rows in beyond
        )

    def _smooth_extent(
        self, name: str, start: int, end: int, region: tuple[int, int, int, int]
    ) -> tuple[int, int]:
        """The band start..end with the rows beside it that go on smoothly from it: light
        across a rounded bar shifts its colour from edge to edge, so a band (one colour) may be
        only part of the bar, and its far edge is no seam either."""
        config = self.config
        axis = self.axes[name]
        a0, a1, b0, b1 = region
        thickest = config.painted_bar_max_share * (b1 - b0)
        # Steps from row to row as steep as within the band go on with it (light across).
        inside = np.abs(np.diff(axis.row_stats(start, end, b0, b1)[0], axis=0)).sum(axis=1)
        steep = 1.5 * float(inside.mean()) if len(inside) else 0.0
        steepest = max(config.band_colour_tolerance / 2, steep)

        def goes_on(row: int, beside: int) -> bool:
            unshaded = axis.unshaded_std(np.array([row]), b0, b1)[0]
            means = axis.img[[row, beside], b0:b1].mean(axis=1)
            step = np.abs(means[0] - means[1]).sum()
            return bool(unshaded <= config.uniform_max_std and step <= steepest)

        while start > a0 + 1 and end - start < thickest and goes_on(start - 1, start):
            start -= 1
        while end < a1 - 1 and end - start < thickest and goes_on(end, end - 1):
            end += 1
        return start, end

    def _over_one_scene(
        self, name: str, start: int, end: int, b0: int, b1: int, colour: np.ndarray
    ) -> bool:
        """Does the scene go on behind the band start..end (a window bar)? Recorded if so."""
        behind = self._scene_behind(name, start, end, b0, b1)
        if behind is not None:
            self._record_scene_bar(name, start, end, colour, behind)
        return behind is not None

    def _record_scene_bar(
        self, name: str, start: int, end: int, colour: np.ndarray, reason: str
    ) -> None:
        """Remember the band start..end as a bar over one scene (see _scene_bar)."""
        self._note(f"{name} bar over one scene {start}-{end}: {reason}")
        self.scene_bars[name].append(_SceneBar(start, end, colour))

    def _scene_behind(self, name: str, start: int, end: int, b0: int, b1: int) -> str | None:
        """Why the scene seems to go on behind the band start..end (a window bar): its detail
        lines up across it ("continues"), or its two sides differ no more than rows of one
        side as far apart ("alike sides"); None if neither."""
        config = self.config
        axis = self.axes[name]
        # Rows a few away from the band: JPEG ringing along its edges is alike on both sides.
        blend = axis.blend_rows
        continuity = _continuity(
            axis.img, start - blend - 2, end + blend + 1, b0, b1, axis.fineness
        )
        bridged = _bridged_step(axis.img, start - blend, end + blend - 1, b0, b1, config)
        # Detail lining up across the band says the scene goes on behind it, unless the two
        # sides plainly differ: rows of a grid line up too, where they cross the other gutters.
        continues = continuity >= config.gutter_continuity and (
            bridged is None or bridged < config.gutter_distinct_step
        )
        if continues:
            return "continues"
        if bridged is not None and bridged < config.gutter_bridged_step:
            return "alike sides"
        return None

    def _shaded_bars(self, name: str, region: Box) -> tuple[list[_LitBar], list[_LitBar]]:
        """Record bars over one scene that are flat but for shading along their length (too
        uneven for a band, so never a gutter): a window's other bar, crossing this one, is
        then known for what it is whichever direction is judged first; those not over one
        scene are painted if lit along (a door's posts). Bars lit steeply along (light bars in
        the sun) are painted if the scene goes on behind them or a painted bar like them
        crosses them. Returned: those still undecided, and every bar lit steeply, steady
        along or not (see _crosses_lit_band)."""
        config = self.config
        axis = self.axes[name]
        a0, a1, b0, b1 = self._analysis_region(name, region)
        if a1 - a0 < 8 or b1 - b0 < 16:
            return [], []
        mean, std = axis.row_stats(a0, a1, b0, b1)
        shaded = np.flatnonzero((std > config.uniform_max_std) & (std <= config.lit_bar_max_std))
        if len(shaded) == 0:
            return [], []
        unshaded_std = np.where(std <= config.uniform_max_std, std, np.inf)
        unshaded_std[shaded] = axis.unshaded_std(a0 + shaded, b0, b1)
        bounds = _stretch_bounds(b0, b1, 16)
        lit_bars: list[tuple[_LitBar, bool]] = []  # steeply lit, steady or not: judged together
        posts: list[tuple[int, int, np.ndarray]] = []  # not over one scene: a door's posts
        # Stretches where a painted bar crosses (a window's other bar) are no jump along it.
        other = "v" if name == "h" else "h"
        crossed = np.array(
            [
                any(
                    bar.shaded and bar.start < hi and lo < bar.end for bar in self.scene_bars[other]
                )
                for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
            ]
        )
        # Light across a rounded bar shifts its colour from one edge to the other.
        tolerance = config.band_colour_tolerance * config.shaded_bar_colour_drift
        plain = _bands(mean, std, config)  # candidates for gutters, or for a post's twin
        for start, end, colour in _bands(mean, unshaded_std, config, tolerance):
            if start == 0 or end == a1 - a0 or np.median(std[start:end]) <= config.uniform_max_std:
                continue  # touching the border, or a plain band (judged as a gutter)
            inner0, inner1 = _inner_rows(start, end)  # its edge rows blend with the photos
            along = std[inner0:inner1] if inner1 > inner0 else std[start:end]
            lit = bool(along.max() > config.shaded_bar_max_std)  # steeply, along
            if end - start > config.painted_bar_max_share * (b1 - b0):
                continue  # a smooth stretch of a photo (sky, wall), not a bar
            # Thicker than a window's bar: a close-up door's post only beside its flat twin.
            slim = end - start <= config.shaded_bar_max_share * (b1 - b0)
            if not (lit or slim or _has_twin(colour, end - start, plain, config)):
                continue
            edges = (range(a0 + start - 3, a0 + start), range(a0 + end, a0 + end + 3))
            if not all(
                axis.edge_fraction(rows, b0, b1, colour) >= config.gutter_edge_fraction
                for rows in edges
            ):
                continue
            steady = self._steady_along(name, a0 + start, a0 + end, bounds, crossed)
            if lit:
                bar = _LitBar(name, a0 + start, a0 + end, (a0, a1, b0, b1), colour)
                lit_bars.append((bar, steady))
            elif steady and not (
                slim and self._over_one_scene(name, a0 + start, a0 + end, b0, b1, colour)
            ):
                posts.append((a0 + start, a0 + end, colour))
        if len(lit_bars) + len(posts) > config.lit_bars_max:
            return [], []  # blank paper between lines of text, not a window's bars
        for start, end, colour in posts:
            # Lit along like a painted bar, a door post between the wall and the view: its
            # twin (the other post) is then known for no gutter either.
            self._painted_bar(name, start, end, (a0, a1, b0, b1), colour)
        undecided = []
        for bar, steady in lit_bars:
            if not steady:
                continue
            if (
                self._crosses_painted_bar(name, bar.start, bar.end, bar.colour)
                or self._scene_behind(name, bar.start, bar.end, b0, b1) is not None
            ):
                self._painted_bar(name, bar.start, bar.end, bar.region, bar.colour)
            else:
                undecided.append(bar)
        return undecided, [bar for bar, _ in lit_bars]

    def _steady_along(
        self, name: str, start: int, end: int, bounds: np.ndarray, crossed: np.ndarray
    ) -> bool:
        """Does the band start..end change alike from stretch to stretch of the line (no
        change, or steady light)? A jump is a smooth photo beside a gutter, not shading;
        stretches ``crossed`` by a painted bar are left out."""
        steps = np.diff(self.axes[name].block_means(start, end, bounds), axis=0)
        steps = steps[~(crossed[:-1] | crossed[1:])]
        if len(steps) == 0:
            return False
        jumps = np.abs(steps - np.median(steps, axis=0)).sum(axis=1)
        return bool(jumps.max() <= self.config.band_colour_tolerance / 2)

    def _crosses_painted_bar(self, name: str, start: int, end: int, colour: np.ndarray) -> bool:
        """Is a painted bar of about this thickness and colour known in the other direction?"""
        other = "v" if name == "h" else "h"
        return any(
            bar.shaded
            and _loosely_alike(end - start, colour, bar.end - bar.start, bar.colour, self.config)
            for bar in self.scene_bars[other]
        )

    def _crosses_lit_band(self, bar: _LitBar, crossing: Sequence[_LitBar]) -> bool:
        """Is one of the ``crossing`` bars, lit steeply along in the other direction (steady
        or not), of about the bar's thickness and colour?"""
        return any(
            _loosely_alike(
                bar.end - bar.start, bar.colour, other.end - other.start, other.colour, self.config
            )
            for other in crossing
        )

    def _scene_bar(self, name: str, start: int, end: int, colour: np.ndarray) -> _SceneBar | None:
        """The bar over one scene this band is part of: the rest of one seen before in a bigger
        region, the crossing bar of a window (the other direction's bar: same colour, about as
        thick), or the twin of a shaded bar (a door's other post). Collage gutters are told
        apart from window bars on the whole line."""
        for bar in self.scene_bars[name]:
            if bar.start <= end and start <= bar.end:
                return bar
        other = "v" if name == "h" else "h"
        width = (end - start) / self.axes[name].scale
        alike = [(bar, other) for bar in self.scene_bars[other]]
        alike += [(bar, name) for bar in self.scene_bars[name] if bar.shaded]
        for bar, axis in alike:
            thickness = (bar.end - bar.start) / self.axes[axis].scale
            if _alike_bars(colour, width, bar.colour, thickness, self.config):
                return bar
        return None

    def _at_painted_bar(self, name: str, line: _Line) -> bool:
        """Is the line at a bar found shaded, or alike one: an edge of a painted bar?"""
        reach = self.axes[name].blend_rows + 1
        return any(
            bar.shaded and bar.start - reach <= line.start and line.end <= bar.end + reach
            for bar in self.scene_bars[name]
        )

    def _gutter_colour_fits(self, colour: np.ndarray) -> bool:
        if self.gutter_colour is None:
            return True
        return _colours_match(colour, self.gutter_colour, self.config)

    def _seams(
        self,
        name: str,
        region: Box,
        a0: int,
        a1: int,
        b0: int,
        b1: int,
        gutters: list[_Line],
        parent: _ParentCut = None,
    ) -> tuple[list[_Line], float | None]:
        """Seams the learned line scorer accepts, and thin gutters seen as two close edges;
        and the best score among the seams it refused (None if none was)."""
        config = self.config
        lines: list[_Line] = []
        best_refused: float | None = None
        paired: set[int] = set()
        for candidate in self._seam_candidates(
            name, region, a0, a1, b0, b1, gutters, parent=parent
        ):
            if candidate.row in paired:
                continue
            if isinstance(candidate.verdict, _Line):
                # A thin gutter, unless the collage has none: then its stronger edge may be a
                # seam (a photo's dark border row against the next photo).
                lines.append(candidate.verdict)
                paired.update((candidate.verdict.start, candidate.verdict.end))
            score = self._score(candidate)
            self._note(
                f"{name} seam {candidate.row} {candidate.value:.2f} verdict {candidate.verdict} "
                f"score {score:.2f} features {np.round(candidate.features, 2).tolist()}"
            )
            if score >= config.seam_score:
                lines.append(_Line(candidate.row, candidate.row, score, False))
            elif best_refused is None or score > best_refused:
                best_refused = score
        return lines, best_refused

    def _score(self, candidate: _Candidate) -> float:
        """The learned scorer's belief that the line is a seam. Objects crossing the line
        (trunks across a horizon) lower it; crossing_objects of them, or long_crossing_objects
        that go on far on both sides, are an edge inside one scene, whatever else the line looks
        like."""
        config = self.config
        if (
            candidate.crossings >= config.crossing_objects
            or candidate.long_crossings >= config.long_crossing_objects
        ):
            return 0.0
        return _scorer().score(candidate.features)

    def _seam_candidates(
        self,
        name: str,
        region: Box,
        a0: int,
        a1: int,
        b0: int,
        b1: int,
        gutters: list[_Line],
        near_rows: Sequence[int] | None = None,
        parent: _ParentCut = None,
    ) -> list[_Candidate]:
        """Every line that might be a seam, with the features the line scorer judges it by.

        Candidates are local maxima of the share of the line showing a step (``_seam_evidence``)
        or of the step profile (the step across the line against the steps 3 rows away, per
        stretch of the line, so two textured photos with one palette show up too).
        """
        config = self.config
        axis = self.axes[name]
        fraction = axis.seam_fraction(a0, a1, b0, b1)
        edge = config.nms_radius + 1  # rows next to the region's border see its blended edge

        def usable(index: int) -> bool:
            return edge <= index < len(fraction) - edge and not any(
                g.start - 3 <= a0 + index <= g.end + 2 for g in gutters
            )

        peaks = [
            (a0 + index, value)
            for index, value in _peaks(fraction, config.partner_fraction, config.nms_radius)
            if usable(index)
        ]
        ratio_max, ratio_min = self._step_profile(axis, a0, a1, b0, b1)
        median_max = np.median(ratio_max, axis=1)
        if near_rows is None:
            found = _peaks(fraction, config.seam_candidate_fraction, config.nms_radius)
            found += _peaks(median_max, config.seam_candidate_profile, config.nms_radius)
            rows = sorted({index for index, _ in found if usable(index)})
        else:  # the best row within a couple of rows of each given one
            rows = []
            for wanted in near_rows:
                lo, hi = max(0, wanted - a0 - 2), min(len(fraction), wanted - a0 + 3)
                if hi > lo:
                    best = lo + int(np.argmax(fraction[lo:hi] + median_max[lo:hi]))
                    if usable(best):
                        rows.append(best)
        # Two candidates within the NMS radius are one line: keep the better of the two.
        merged: list[int] = []
        for index in rows:
            if merged and index - merged[-1] <= config.nms_radius:
                previous = merged[-1]
                if fraction[index] + median_max[index] > fraction[previous] + median_max[previous]:
                    merged[-1] = index
                continue
            merged.append(index)
        min_rows = self.min_tile * axis.scale
        kept = [
            index
            for index in merged
            # A piece too small for a photo is never taken; a gutter collage is cut at its
            # gutters only.
            if min_rows <= index <= (a1 - a0) - min_rows
            and not (
                self.style == CUT_GUTTER and not self._known_gutter_near(name, region, a0 + index)
            )
        ]
        if not kept:
            return []
        texture_rows = _texture_rows(axis, a0, a1, b0, b1)
        row_detail = axis.row_stats(a0, a1, b0, b1)[1]  # std along each row (see _rhythm)
        piece_rows = int(np.ceil(min_rows))  # no cut leaves fewer
        split_share = _split_share(texture_rows, margin=piece_rows)
        best_split = max(float(split_share.max()), 1e-6)
        near_split_share = _split_share(texture_rows, reach=max(8, piece_rows), margin=piece_rows)
        object_rows = config.object_max_fraction * max(axis.img.shape[:2])
        candidates = []
        for index in kept:
            row = a0 + index
            value = float(fraction[max(0, index - 1) : index + 2].max())
            near = [(r, v) for r, v in peaks if config.nms_radius < abs(r - row) < min_rows]
            before = sum(1 for r, _ in near if r < row)
            periodic = min(before, len(near) - before)
            verdict = None
            if value >= config.seam_fraction and periodic < config.periodic_lines:
                # An object may be wider than the closest lines that count as near.
                partners = [
                    (r, v)
                    for r, v in peaks
                    if config.nms_radius < abs(r - row) < max(min_rows, object_rows + 1)
                ]
                verdict = self._pair_verdict(name, axis, row, partners, peaks, object_rows, b0, b1)
            rival = max((v for _, v in near), default=0.0)
            objects = self._crossing_objects(axis, row, b0, b1)
            crossings = len(objects)
            long_crossings = (
                sum(self._goes_on(axis, row, a0, a1, b0, b1, span) for span in objects)
                if config.long_crossing_objects <= crossings < config.crossing_objects
                else 0
            )
            features = np.array(
                [
                    value,
                    float(median_max[index]),
                    float(np.quantile(ratio_max[index], 0.25)),
                    float(np.median(ratio_min[index])),
                    min(periodic, 4),
                    1.0 if verdict is not None else 0.0,
                    min(crossings, 3),
                    self._side_similarity(axis, row, a0, a1, b0, b1),
                    *self._piece_features(name, region, row, a0, a1, b0, b1),
                    1.0 if self.style == CUT_SEAM else 0.0,
                    min(len(near), 8),
                    value - rival,
                    float(np.log(max(1, a1 - a0) / max(1, b1 - b0))),
                    *self._side_contrast(name, axis, row, a0, a1, b0, b1),
                    float((ratio_max[index] > config.stretch_step_ratio).mean()),
                    _parent_pieces(name, parent),
                    *self._side_shift(axis, row, a0, a1, b0, b1),
                    *self._texture_change(axis, row, a0, a1, b0, b1),
                    float(split_share[index]),
                    float(split_share[index]) / best_split,
                    float(near_split_share[index]),
                    *_rhythm(row_detail, index, config),
                ],
                dtype=np.float64,
            )
            candidates.append(_Candidate(row, value, verdict, crossings, long_crossings, features))
        return candidates

    def _step_profile(
        self, axis: _Axis, a0: int, a1: int, b0: int, b1: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row of a0..a1 and per stretch of the line: log of the step across the row over
        the larger (and over the smaller) of the steps 3 rows above and below.

        A seam is a step against both photos' own row-to-row change, along its whole length.
        """
        config = self.config
        bounds = _stretch_bounds(b0, b1, config.profile_segments)
        lines = axis.step.shape[0]
        lo, hi = max(0, a0 - 3), min(lines, a1 + 3)
        sums = axis.step[lo:hi, bounds[1:]] - axis.step[lo:hi, bounds[:-1]]
        means = sums / np.maximum(1, bounds[1:] - bounds[:-1])
        padded = np.full((a1 - a0 + 6, len(bounds) - 1), np.nan)
        padded[lo - (a0 - 3) : hi - (a0 - 3)] = means
        here = padded[3:-3]
        above, below = padded[:-6], padded[6:]
        above = np.where(np.isnan(above), below, above)
        below = np.where(np.isnan(below), above, below)
        here = np.nan_to_num(here)
        floor = config.profile_floor
        beside_max = np.nan_to_num(np.maximum(above, below))
        beside_min = np.nan_to_num(np.minimum(above, below))
        return (
            np.log((here + floor) / (beside_max + floor)),
            np.log((here + floor) / (beside_min + floor)),
        )

    def _side_contrast(
        self, name: str, axis: _Axis, row: int, a0: int, a1: int, b0: int, b1: int
    ) -> tuple[float, float]:
        """How the strips just above and below a line differ, each judged on its own: the median
        over stretches of the line of their mean-colour distance (/100), and the absolute log
        ratio of their shares of detailed pixels (a textured photo over a smooth one)."""
        config = self.config
        depth = config.side_rows
        bounds = _stretch_bounds(b0, b1, config.profile_segments)
        top, bottom = max(a0, row - 1 - depth), min(a1, row + 2 + depth)
        if row - 1 <= top or bottom <= row + 2:
            return 0.0, 0.0
        above = axis.block_means(top, row - 1, bounds)
        below = axis.block_means(row + 2, bottom, bounds)
        colour = float(np.median(np.abs(above - below).sum(axis=1))) / 100
        texture_depth = max(depth, int(0.5 * self.min_tile * axis.scale))
        floor = 0.02
        detail_above = self._detail_share(name, max(a0, row - 1 - texture_depth), row - 1, b0, b1)
        detail_below = self._detail_share(name, row + 2, min(a1, row + 2 + texture_depth), b0, b1)
        texture = abs(float(np.log((detail_above + floor) / (detail_below + floor))))
        return colour, texture

    def _side_shift(
        self, axis: _Axis, row: int, a0: int, a1: int, b0: int, b1: int
    ) -> tuple[float, float]:
        """How far the two sides of a line lie apart for their own variability: per stretch of
        the line, the colour difference of the strips above and below over their pooled
        standard deviation (texture included), the median over stretches; for strips of
        side_rows rows and of four times that.

        Two photos differ in level or in texture along the whole line even where a step is
        hidden in one photo's texture (gravel beside text); one textured photo does not.
        """
        config = self.config
        bounds = _stretch_bounds(b0, b1, config.profile_segments)
        shifts = []
        for depth in (config.side_rows, 4 * config.side_rows):
            top, bottom = max(a0, row - 1 - depth), min(a1, row + 2 + depth)
            if row - 1 <= top or bottom <= row + 2:
                shifts.append(0.0)
                continue
            mean_above, var_above = axis.block_moments(top, row - 1, bounds)
            mean_below, var_below = axis.block_moments(row + 2, bottom, bounds)
            spread = np.sqrt(var_above + var_below + config.profile_floor**2)
            texture = np.abs(np.log((var_above + 1.0) / (var_below + 1.0)))
            shift = (np.abs(mean_above - mean_below) / spread).mean(axis=1) + texture.mean(axis=1)
            shifts.append(float(np.median(shift)))
        return shifts[0], shifts[1]

    def _texture_change(
        self, axis: _Axis, row: int, a0: int, a1: int, b0: int, b1: int
    ) -> tuple[float, float]:
        """A change point in brightness and texture (change over 1, 2 and 4 pixels, along and
        across the line): how much the strips just above and below differ, against how much
        each differs from the next strip on its own side; log ratio. Per quarter of the line
        (median) for strips of 2 * side_rows rows, and for the whole line with 4 * side_rows.

        Gravel over grass: both textured, one palette, but each side is like itself.
        """
        config = self.config
        changes = []
        for depth, parts in ((2 * config.side_rows, 4), (4 * config.side_rows, 1)):
            depth = min(depth, (row - 1 - a0) // 2, (a1 - row - 2) // 2)
            if depth < 2:
                changes.append(0.0)
                continue
            bounds = _stretch_bounds(b0, b1, parts, min_width=16)
            starts = np.array([row - 1 - 2 * depth, row - 1 - depth, row + 2, row + 2 + depth])
            far_above, above, below, far_below = np.concatenate(
                [axis.strip_means(starts, depth, bounds, table) for table in axis.texture], axis=2
            )
            across = np.abs(above - below).sum(axis=1)
            within = np.maximum(
                np.abs(far_above - above).sum(axis=1), np.abs(below - far_below).sum(axis=1)
            )
            floor = config.profile_floor
            changes.append(float(np.median(np.log((across + floor) / (within + floor)))))
        return changes[0], changes[1]

    def _piece_features(
        self, name: str, region: Box, row: int, a0: int, a1: int, b0: int, b1: int
    ) -> tuple[float, float, float]:
        """The pieces a cut at ``row`` leaves: log of the smaller one's share of the region,
        log of the worse aspect ratio, the smaller share of detailed pixels of the two."""
        first, second = row - a0, a1 - row
        along = max(1, b1 - b0)
        aspect = max(max(length, along) / max(1, min(length, along)) for length in (first, second))
        detail = min(
            self._detail_share(name, a0 + 1, row - 1, b0, b1),
            self._detail_share(name, row + 1, a1 - 1, b0, b1),
        )
        return (
            float(np.log(max(1, min(first, second)) / max(1, a1 - a0))),
            float(np.log(aspect)),
            float(min(detail, 0.5)),
        )

    def _side_similarity(self, axis: _Axis, row: int, a0: int, a1: int, b0: int, b1: int) -> float:
        """Appearance-histogram intersection (0..1) of the strips on the two sides of a line.

        Two photos side by side usually differ in palette; the two sides of an edge inside one
        photo (a shelf, a text line) usually share it, so such a line needs stronger evidence.
        """
        depth = int(max(2 * self.min_tile * axis.scale, 0.2 * (a1 - a0)))
        above = axis.img[max(a0, row - 1 - depth) : row - 1, b0:b1:2][::-2]  # every 2nd row
        below = axis.img[row + 2 : min(a1, row + 2 + depth) : 2, b0:b1:2]
        if above.size == 0 or below.size == 0:
            return 0.0
        return float(np.minimum(_appearance(above), _appearance(below)).sum())

    def _pair_verdict(
        self,
        name: str,
        axis: _Axis,
        row: int,
        near: list[tuple[int, float]],
        peaks: list[tuple[int, float]],
        object_rows: float,
        b0: int,
        b1: int,
    ) -> _Line | str | None:
        """What a parallel line close to ``row`` makes of it: a thin gutter (the two are its
        edges), an object edge (a reason), or nothing (None).

        A close line that belongs to a periodic structure on its far side (brick courses, lines
        of text) says nothing about ``row``: ``row`` is where that structure ends.
        """
        config = self.config
        min_rows = self.min_tile * axis.scale
        value = float(axis.seam_fraction(row, row + 1, b0, b1)[0])
        for other, other_value in sorted(near, key=lambda item: abs(item[0] - row)):
            lo, hi = sorted((row, other))
            direction = 1 if other > row else -1
            beyond = sum(
                1
                for r, _ in peaks
                if 0 < (r - other) * direction < min_rows and abs(r - other) > config.nms_radius
            )
            if beyond >= config.periodic_lines:
                continue
            if hi - lo <= config.thin_object_rows:
                colour = self._thin_band(axis, lo, hi, b0, b1)
                if colour is None:
                    return f"thin object {lo}-{hi}"
                edges = axis.seam_fraction(lo, hi + 1, b0, b1)
                return _Line(lo, hi, 1.0 + float(min(edges[0], edges[-1])), True, colour)
            if (
                hi - lo <= object_rows
                and min(value, other_value) >= config.seam_fraction
                and self._object_strip(axis, lo, hi, b0, b1)
            ):
                return f"object strip {lo}-{hi}"
        return None

    def _thin_band(
        self, axis: _Axis, lo: int, hi: int, b0: int, b1: int
    ) -> tuple[float, float, float] | None:
        """Colour of a thin gutter between two close edges at rows lo and hi, if it is one: a
        flat row between them whose colour differs from the photo rows beyond both edges."""
        lo, hi = max(lo, 2), min(hi, axis.img.shape[0] - 3)
        if hi - lo < 2:
            return None
        mean, std = axis.row_stats(lo + 1, hi, b0, b1)
        flattest = int(np.argmin(std))
        if std[flattest] > self.config.thin_gutter_max_std:
            return None
        colour = mean[flattest]
        before = axis.edge_fraction(range(lo - 2, lo), b0, b1, colour)
        after = axis.edge_fraction(range(hi + 1, hi + 3), b0, b1, colour)
        if min(before, after) < self.config.gutter_edge_fraction:
            return None
        return tuple(float(v) for v in colour)

    def _crossing_objects(self, axis: _Axis, row: int, b0: int, b1: int) -> list[tuple[int, int]]:
        """Objects that continue across the line (a pole across a horizon): one scene, not two.

        A stretch of the line where the colour is the same just above, just below, and a few rows
        further on both sides, and that stands out from its neighbours along the line both above
        and below; or an object too thin to keep its own colour (see _thin_crossings). Two
        unrelated photos rarely line up like that by chance. [start, end) along the line, from b0.
        """
        config = self.config
        reach = config.crossing_reach
        if row < reach + 2 or row + reach + 2 > axis.img.shape[0]:
            return []
        img = axis.img
        near_above = img[row - 4 : row - 1, b0:b1].mean(axis=0)
        near_below = img[row + 2 : row + 5, b0:b1].mean(axis=0)
        far_above = img[row - reach - 2 : row - reach + 1, b0:b1].mean(axis=0)
        far_below = img[row + reach : row + reach + 3, b0:b1].mean(axis=0)
        step = config.seam_step
        # Each side goes on along the object, away from the line.
        steady = (np.abs(near_above - far_above).sum(axis=1) < step) & (
            np.abs(near_below - far_below).sum(axis=1) < step
        )
        continuous = steady & (np.abs(near_above - near_below).sum(axis=1) < step)
        gap = axis.blur_reach  # the object's own blur halo is no neighbour
        wide = _wide_crossings(near_above, near_below, continuous, gap, config)
        thin = _thin_crossings(near_above, near_below, steady, gap, config)
        # A wide object's blended edges may pass for thin ones.
        thin = [
            (lo, hi)
            for lo, hi in thin
            if not any(lo < w1 + gap + 3 and w0 - gap - 3 < hi for w0, w1 in wide)
        ]
        return wide + thin

    def _goes_on(
        self, axis: _Axis, row: int, a0: int, a1: int, b0: int, b1: int, span: tuple[int, int]
    ) -> bool:
        """Does the object crossing the line at ``span`` go on standing out from its
        neighbours along the line for long_crossing_reach rows on both sides, inside a0..a1?

        Three rows in a row may fail (a branch, a JPEG block); a longer gap ends the object.
        """
        reach = self.config.long_crossing_reach
        if row - reach - 2 < a0 or row + reach + 3 > a1:
            return False
        lo, hi = span
        gap = axis.blur_reach
        context = max(3, hi - lo)
        c0, c1 = b0 + lo - gap - context, b0 + hi + gap + context
        if c0 < b0 or c1 > b1:
            return False
        # The object within the columns c0..c1, with its full context on both sides.
        g0, g1 = np.array([context + gap]), np.array([c1 - c0 - context - gap])
        for rows in (slice(row - reach - 2, row - 1), slice(row + 2, row + reach + 3)):
            columns = axis.img[rows, c0:c1]
            # Three-row means, as the line's own strips are.
            strips = (columns[:-2] + columns[1:-1] + columns[2:]) / 3
            stands = _stands_out(strips, g0, g1, np.array([context]), self.config.edge_step, gap)
            if any(end - start > 3 for start, end in _runs(~stands[:, 0])):
                return False
        return True

    def _object_strip(self, axis: _Axis, lo: int, hi: int, b0: int, b1: int) -> bool:
        """Is the strip between two close parallel lines one object (a post, a bar, mortar)?

        An object's colour changes only slowly along its length (shading); a strip of photo
        content between a seam and an edge inside the photo has detail.
        """
        if hi - lo < 3:
            return True
        strip = axis.img[lo + 2 : hi - 1, b0:b1]
        window = max(3, int(self.config.object_trend_window * (b1 - b0)) | 1)
        trend = cv2.blur(strip, (window, 1))
        detail = float(np.abs(strip - trend).sum(axis=2).mean())
        return detail <= self.config.object_strip_detail

    def _crosses_face(self, name: str, region: Box, line: _Line) -> bool:
        if not self.faces or (line.gutter and not self.config.face_veto_gutters):
            return False
        axis = self.axes[name]
        position = (line.centre + 0.5) / axis.scale
        _, _, g0, g1 = self._oriented(name, region)
        margin = self.config.face_margin
        for face in self.faces:
            f0, f1, h0, h1 = self._oriented(name, face)
            inset = margin * (f1 - f0)
            if h0 < g1 and h1 > g0 and f0 + inset < position < f1 - inset:
                return True
        return False

    def _drop_implausible_pieces(
        self, name: str, region: Box, a0: int, a1: int, lines: list[_Line]
    ) -> list[_Line]:
        """Drop the weakest line beside a piece that is blank or too thin, until none is.

        A blank piece (a painted wall beside a door post, an empty sky) is not a photo.
        """
        lines = sorted(lines, key=lambda line: line.start)
        while lines:
            edges = [a0] + [x for line in lines for x in (line.start, line.end)] + [a1]
            bad_piece = None
            for index in range(len(lines) + 1):
                lo, hi = edges[2 * index], edges[2 * index + 1]
                beside = [lines[i] for i in (index - 1, index) if 0 <= i < len(lines)]
                if not self._plausible_piece(name, region, lo, hi, beside, len(lines) + 1):
                    bad_piece = beside
                    break
            if bad_piece is None:
                return lines
            weakest = min(bad_piece, key=lambda line: line.strength)
            # Before the collage's style is known, a band like the dropped one (a door's
            # other post) goes with it: a collage's gutters can all frame photos.
            lines = [
                line
                for line in lines
                if line is not weakest
                and not (self.style is None and _same_band(line, weakest, self.config))
            ]
        return lines

    def _plausible_piece(
        self, name: str, region: Box, lo: int, hi: int, beside: list[_Line], pieces: int
    ) -> bool:
        axis = self.axes[name]
        _, _, g0, g1 = self._oriented(name, region)
        across = (hi - lo) / axis.scale
        along = g1 - g0
        too_long = max(across, along) > self.config.max_tile_aspect * max(1.0, min(across, along))
        # Too long for one photo, unless it is a row of photos (an irregular collage's row of
        # three): then it is cut across in turn.
        if too_long and (along <= across or not self._cut_across(name, region, lo, hi, pieces)):
            return False
        _, _, b0, b1 = self._analysis_region(name, region)
        if beside and all(line.flat for line in beside):
            return True  # framed by digitally flat gutters: a photo, however smooth
        # Beside gutters or seams the scorer is sure of, a photo may lack fine detail (a
        # thumbnail blown up); beside a doubtful seam, a piece with none is an empty sky, even
        # if clouds give it coarse detail.
        strong = True
        if all(line.gutter for line in beside):
            needed = self.config.blank_fraction_gutter
        elif all(line.strength >= self.config.confident_seam_score for line in beside):
            needed = self.config.blank_fraction_confident
        else:
            needed, strong = self.config.blank_fraction, False
        if self._detail_share(name, lo + 1, hi - 1, b0, b1) >= needed:
            return True
        return (
            strong
            and self._coarse_detail_share(name, lo + 1, hi - 1, b0, b1)
            >= self.config.blank_coarse_fraction
        )

    def _cut_across(self, name: str, region: Box, lo: int, hi: int, pieces: int) -> bool:
        """Would the piece at analysis rows lo..hi of ``region``, one of ``pieces``, be cut in
        the other direction? Asked before any cut is taken, so it leaves nothing behind: the
        bars it judges go to a scratch copy (a judgement on a piece that may never exist)."""
        scale = self.axes[name].scale
        _, _, g0, g1 = self._oriented(name, region)
        piece = self._box(name, round(lo / scale), round(hi / scale), g0, g1)
        scene_bars = self.scene_bars
        self.scene_bars = {key: list(bars) for key, bars in scene_bars.items()}
        self._note(f"look-ahead: is {piece.as_list()} cut across?")
        try:
            other = "v" if name == "h" else "h"
            return bool(self._lines(other, piece, parent=(name, pieces)).lines)
        finally:
            self.scene_bars = scene_bars

    def _detail_share(
        self, name: str, a0: int, a1: int, b0: int, b1: int, table: np.ndarray | None = None
    ) -> float:
        """Share of the analysis rows a0..a1, columns b0..b1 with detail (in ``table``, an
        integral image of detail at the analysis scale unless given)."""
        if a1 <= a0 or b1 <= b0:
            return 0.0
        y0, y1, x0, x1 = (a0, a1, b0, b1) if name == "h" else (b0, b1, a0, a1)
        table = self.detail if table is None else table
        total = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        return float(total) / ((y1 - y0) * (x1 - x0))

    def _coarse_detail_share(self, name: str, a0: int, a1: int, b0: int, b1: int) -> float:
        """_detail_share at 1/blank_coarse_factor of the analysis scale (whole coarse pixels)."""
        factor = self.config.blank_coarse_factor
        a0, b0 = -(-a0 // factor), -(-b0 // factor)
        a1, b1 = a1 // factor, b1 // factor
        return self._detail_share(name, a0, a1, b0, b1, self.coarse_detail)

    # --- cutting ----------------------------------------------------------------------------

    def _cut(self, name: str, region: Box, lines: list[_Line]) -> list[Box]:
        f0, f1, g0, g1 = self._oriented(name, region)
        pieces: list[Box] = []
        start = f0
        for line in sorted(lines, key=lambda item: item.start):
            lo, hi, source, margin = self._place_cut(name, line, g0, g1, f0, f1)
            self.decisions.margins.append(margin)
            middle = (lo + hi) // 2
            self.decisions.cuts.append(
                Cut(g0, middle, g1, middle, source)
                if name == "h"
                else Cut(middle, g0, middle, g1, source)
            )
            if lo > start:
                pieces.append(self._box(name, start, lo, g0, g1))
            start = max(start, hi)
        if f1 > start:
            pieces.append(self._box(name, start, f1, g0, g1))
        return pieces

    def _place_cut(
        self, name: str, line: _Line, g0: int, g1: int, f0: int, f1: int
    ) -> tuple[int, int, str, float]:
        """Full-res rows [lo, hi) the cut removes (empty for a seam), its source, its margin."""
        if line.gutter and (line.end > line.start or self.gutter_colour is not None):
            self.gutters_cut[name].append(line)
            lo, hi = self._refine_gutter(name, line, g0, g1, f0, f1)
            self._adopt_gutter(self._full_colour(name, lo, hi, g0, g1) if hi > lo else line.colour)
            return lo, hi, CUT_GUTTER, 1.0
        lo, hi = self._refine_seam(name, line, g0, g1, f0, f1)
        if line.gutter or hi > lo:  # a gutter thinner than a row or two: located like a seam
            if hi > lo:
                self._adopt_gutter(self._full_colour(name, lo, hi, g0, g1))
            else:
                self._adopt_gutter(self._thin_core_colour(name, lo, g0, g1))
            return lo, hi, CUT_GUTTER, 1.0
        threshold = self.config.seam_score
        margin = (line.strength - threshold) / max(1e-6, 1.0 - threshold)
        return lo, hi, CUT_SEAM, min(1.0, max(0.0, margin))

    def _thin_core_colour(self, name: str, position: int, g0: int, g1: int) -> np.ndarray:
        """Colour of the flattest full-res row around a thin gutter (its least blended row)."""
        lo = max(0, position - 3)
        rows = self._full_rows(name, lo, position + 3, g0, g1).astype(np.float32)
        if len(rows) == 0:
            return self._full_colour(name, position, position + 1, g0, g1)
        return rows[int(np.argmin(rows.std(axis=1).mean(axis=1)))].mean(axis=0)

    def _known_gutter_near(self, name: str, region: Box, row: int) -> bool:
        """Do full-res rows around analysis row ``row`` show the collage's gutter colour?"""
        if self.gutter_colour is None:
            return False
        axis = self.axes[name]
        f0, f1, g0, g1 = self._oriented(name, region)
        lo = max(f0, int(np.floor((row - 3) / axis.scale)))
        hi = min(f1, int(np.ceil((row + 4) / axis.scale)))
        if hi <= lo:
            return False
        rows = self._full_rows(name, lo, hi, g0, g1)
        distance = np.abs(rows - self.gutter_colour.astype(np.int16)).sum(axis=2)
        share = (distance <= self.config.refine_colour_tolerance).mean(axis=1)
        self._note(f"{name} known gutter colour near {row}: share {share.max():.2f}")
        return bool(share.max() >= self.config.known_gutter_share)

    def _adopt_gutter(self, colour: tuple[float, float, float] | np.ndarray | None) -> None:
        """Remember the collage's gutter colour: later gutters must have it."""
        if self.config.consistent_gutters and self.gutter_colour is None and colour is not None:
            self.gutter_colour = np.asarray(colour, dtype=np.float64)

    def _full_colour(self, name: str, lo: int, hi: int, g0: int, g1: int) -> np.ndarray:
        return self._full_rows(name, lo, hi, g0, g1).reshape(-1, 3).mean(axis=0)

    def _full_rows(self, name: str, lo: int, hi: int, g0: int, g1: int) -> np.ndarray:
        return self.axes[name].full[lo:hi, g0:g1].astype(np.int16)

    def _refine_seam(
        self, name: str, line: _Line, g0: int, g1: int, f0: int, f1: int
    ) -> tuple[int, int]:
        """Full-res position of a seam (lo == hi), or the rows of a thin gutter found there."""
        axis = self.axes[name]
        reach = self.config.nms_radius + 1.5
        lo = max(f0 + 1, int(np.floor((line.start - reach) / axis.scale)))
        hi = min(f1 - 1, int(np.ceil((line.start + reach + 1) / axis.scale)))
        if hi <= lo:
            position = int(round((line.start + 0.5) / axis.scale))
            return position, position
        rows = self._full_rows(name, lo - 1, hi + 1, g0, g1)
        steps = np.abs(rows[1:] - rows[:-1]).sum(axis=2).mean(axis=1)  # boundary lo..hi
        position = lo + int(np.argmax(steps))
        return self._thin_gutter_around(rows, lo - 1, position)

    def _thin_gutter_around(self, rows: np.ndarray, first: int, position: int) -> tuple[int, int]:
        """Flat rows right after (or right before) the strongest step form a thin gutter when a
        photo edge bounds them on the other side too; else the cut is the step itself."""
        config = self.config
        flat = rows.std(axis=1).mean(axis=1) <= config.refine_uniform_std
        index = position - first
        for step in (1, -1):
            begin = index if step == 1 else index - 1
            end = begin
            while 0 <= end < len(flat) and flat[end] and _similar(rows, begin, end, config):
                end += step
            if end == begin or not 0 <= end < len(flat):
                continue  # no flat run, or it runs out of the window: a smooth photo edge
            colour = rows[begin:end:step].reshape(-1, 3).mean(axis=0)
            beyond = np.abs(rows[end] - colour).sum(axis=1) >= config.edge_step
            if beyond.mean() < config.gutter_edge_fraction:
                continue  # the flat run fades into the photo: part of it, not a gutter
            lo, hi = sorted((begin, end - step))
            return first + lo, first + hi + 1
        return position, position

    def _refine_gutter(
        self, name: str, line: _Line, g0: int, g1: int, f0: int, f1: int
    ) -> tuple[int, int]:
        axis = self.axes[name]
        colour = np.asarray(line.colour, dtype=np.float32)
        lo = max(f0, int(np.floor((line.start - 3) / axis.scale)))
        hi = min(f1, int(np.ceil((line.end + 4) / axis.scale)))
        member = self._band_member_rows(name, lo, hi, g0, g1, colour)
        if not member.any():  # thin gutters are blended with the photos beside them
            member = self._band_member_rows(
                name, lo, hi, g0, g1, colour, self.config.thin_gutter_share
            )
        centre = min(len(member) - 1, max(0, int(round(line.centre / axis.scale)) - lo))
        if not member.any():  # too blended to match the analysis colour: find the edges instead
            return self._refine_seam(name, replace(line, end=line.start), g0, g1, f0, f1)
        if not member[centre]:
            centre = int(np.argmin(np.abs(np.flatnonzero(member) - centre)))
            centre = int(np.flatnonzero(member)[centre])
        start = centre
        while start > 0 and member[start - 1]:
            start -= 1
        end = centre
        while end < len(member) and member[end]:
            end += 1
        return lo + start, lo + end

    def _band_member_rows(
        self,
        name: str,
        lo: int,
        hi: int,
        g0: int,
        g1: int,
        colour: np.ndarray,
        share_needed: float | None = None,
    ) -> np.ndarray:
        rows = self._full_rows(name, lo, hi, g0, g1)
        distance = np.abs(rows - colour.astype(np.int16)).sum(axis=2)
        share = (distance <= self.config.refine_colour_tolerance).mean(axis=1)
        return share >= (self.config.refine_band_share if share_needed is None else share_needed)

    def _refine_band_end(
        self, name: str, f0: int, approx: float, g0: int, g1: int, colour: np.ndarray
    ) -> int:
        """First full-res row after a margin that starts at f0."""
        axis = self.axes[name]
        hi = min(self._line_limit(name), int(np.ceil(approx + 2.0 / axis.scale)))
        member = self._band_member_rows(name, f0, hi, g0, g1, colour.astype(np.float32))
        end = 0
        while end < len(member) and member[end]:
            end += 1
        return f0 + end if end > 0 else int(round(approx))

    def _refine_band_start(
        self, name: str, approx: float, f1: int, g0: int, g1: int, colour: np.ndarray
    ) -> int:
        """First full-res row of a margin that ends at f1."""
        axis = self.axes[name]
        lo = max(0, int(np.floor(approx - 2.0 / axis.scale)))
        member = self._band_member_rows(name, lo, f1, g0, g1, colour.astype(np.float32))
        start = len(member)
        while start > 0 and member[start - 1]:
            start -= 1
        return lo + start if start < len(member) else int(round(approx))

    def _even_frame(
        self,
        name: str,
        outer: tuple[int, int],
        f0: int,
        f1: int,
        g0: int,
        g1: int,
        colour: np.ndarray,
    ) -> tuple[int, int]:
        """Frames are even: where one side was trimmed and the other not, as many rows of the
        frame's colour on the other side are frame too, though the photo beside them is as
        dark as a black frame (no edge to see)."""
        start_frame, end_frame = f0 - outer[0], outer[1] - f1
        if (start_frame > 0) == (end_frame > 0):
            return f0, f1
        thickness = max(start_frame, end_frame)
        lo, hi = (
            (outer[1] - thickness, outer[1]) if start_frame else (outer[0], outer[0] + thickness)
        )
        if hi - lo >= f1 - f0 or not self._band_member_rows(name, lo, hi, g0, g1, colour).all():
            return f0, f1
        return (f0, lo) if start_frame else (hi, f1)

    def _line_limit(self, name: str) -> int:
        return self.height if name == "h" else self.width


def _digitally_flat(row_std: np.ndarray, config: SplitConfig, fineness: float) -> bool:
    """A band made by software (frame, letterbox, app gutter), not a painted or shaded one.

    JPEG's colour noise is blocky, so a finer analysis copy (see _analysis_factor) keeps more
    of it than line blur takes away.
    """
    return bool(row_std.mean() <= config.margin_max_std * np.sqrt(fineness))


def _parent_pieces(name: str, parent: _ParentCut) -> float:
    """Log of the number of pieces the enclosing region was cut into: positive when a line in
    direction ``name`` would cross those cuts (a tile of a grid row, or of a phone stack:
    rarely cut across), negative when it runs along them, 0 at the top."""
    if parent is None:
        return 0.0
    direction, pieces = parent
    return float(np.log(pieces)) * (1.0 if direction != name else -1.0)


def _edge_evidence_rows(start: int, end: int, lines: int) -> tuple[tuple[int, int], ...]:
    """Rows (lo, hi) whose seam evidence speaks for the first and for the second edge of the
    band start..end, each from its own half of the band only: a thin band's other edge is no
    evidence for this one (a gradient sky's last band at a horizon). Evidence at row r steps
    from r-1 to r+1, so in a band a row or two thick it spans both edges there (the blended
    last row of a door post beside the view)."""
    middle = (start + end) // 2
    return (
        (max(0, start - 2), min(start + 3, middle + 1, end - 1)),
        (max(end - 3, middle, start + 1), min(lines, end + 2)),
    )


def _blend_of_sides(
    img: np.ndarray, start: int, end: int, b0: int, b1: int, config: SplitConfig
) -> bool:
    """Is the thin band start..end the blend of the rows beside it (one share of each, all
    along the line)? Resizing smears the edge between a wall and a door post into a row of
    their mixed colour, flat where both are; a gutter has a colour of its own."""
    if start < 1 or end >= len(img):
        return False
    before, after = img[start - 1, b0:b1], img[end, b0:b1]
    band = img[start:end, b0:b1].mean(axis=0)
    contrast = before - after
    power = float((contrast**2).sum())
    if np.abs(contrast).sum(axis=1).mean() < config.edge_step:
        return False  # no edge here to blend
    share = float(((band - after) * contrast).sum()) / power
    residual = np.abs(band - after - share * contrast).sum(axis=1).mean()
    low, high = config.blend_share_range
    return low <= share <= high and residual <= config.band_colour_tolerance / 2


def _inner_rows(start: int, end: int) -> tuple[int, int]:
    """The rows of the band start..end that do not blend with what lies beside it."""
    inset = 1 if end - start < 6 else 2
    return start + inset, end - inset


def _linear_ramp(values: np.ndarray) -> tuple[float, float]:
    """Rise from first to last of the least-squares line through ``values`` (absolute), and the
    root-mean-square scatter of the values about that line."""
    position = np.arange(len(values)) - (len(values) - 1) / 2
    centred = values - values.mean()
    slope = float((position * centred).sum() / (position**2).sum())
    scatter = float(np.sqrt(((centred - slope * position) ** 2).mean()))
    return abs(slope) * (len(values) - 1), scatter


def _rhythm(detail: np.ndarray, index: int, config: SplitConfig) -> tuple[float, float]:
    """Lines of text or brick courses on both sides of the line at ``index`` of ``detail``
    (each row's std along the line), and whether their rhythm goes on across it. Each side's
    detail repeats best at some period p; returned: the worse of the two sides'
    autocorrelations at that p, and the correlation of the p rows just above the line with
    the p rows just below. Between two lines of one page the rhythm goes on; at a seam
    between two pages it restarts."""
    reach = min(index, len(detail) - index, config.rhythm_reach)
    if reach < 2 * config.rhythm_min_period:
        return 0.0, 0.0
    above, below = detail[index - reach : index], detail[index : index + reach]
    periods = np.arange(config.rhythm_min_period, reach // 2 + 1)
    sides = np.minimum(_autocorrelations(above, periods), _autocorrelations(below, periods))
    period = int(periods[np.argmax(sides)])
    across = _correlation(above[-period:], below[:period])
    return float(sides.max()), across


def _correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson correlation of two equally long profiles; 0 where either is flat."""
    first, second = first - first.mean(), second - second.mean()
    norm = float(np.sqrt((first**2).sum() * (second**2).sum()))
    return float((first * second).sum()) / norm if norm > 1e-9 else 0.0


def _autocorrelations(values: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Per lag p, the Pearson correlation of values[:-p] with values[p:]; 0 where flat."""
    values = values.astype(np.float64)
    count = len(values) - lags
    prefix = np.concatenate([[0.0], np.cumsum(values)])
    prefix_sq = np.concatenate([[0.0], np.cumsum(values**2)])
    head_sum, tail_sum = prefix[count], prefix[-1] - prefix[lags]
    head_sq, tail_sq = prefix_sq[count], prefix_sq[-1] - prefix_sq[lags]
    products = np.correlate(values, values, "full")[len(values) - 1 + lags]
    covariance = products - head_sum * tail_sum / count
    spread = (head_sq - head_sum**2 / count) * (tail_sq - tail_sum**2 / count)
    safe = spread > 1e-9
    return np.where(safe, covariance / np.sqrt(np.where(safe, spread, 1.0)), 0.0)


def _colours_match(
    first: Sequence[float] | np.ndarray | None,
    second: Sequence[float] | np.ndarray | None,
    config: SplitConfig,
) -> bool:
    """Two band colours within the refinement tolerance (L1); an unknown colour matches none."""
    if first is None or second is None:
        return False
    distance = np.abs(np.subtract(first, second)).sum()
    return bool(distance <= config.refine_colour_tolerance)


def _same_band(line: _Line, other: _Line, config: SplitConfig) -> bool:
    """Two flat bands of one colour and about one thickness: a collage app's gutters, or a
    door's two posts."""
    if not (line.gutter and other.gutter):
        return False
    return _alike_bars(
        line.colour, line.end - line.start + 1, other.colour, other.end - other.start + 1, config
    )


def _alike_bars(
    colour: Sequence[float] | np.ndarray | None,
    thickness: float,
    other_colour: Sequence[float] | np.ndarray | None,
    other_thickness: float,
    config: SplitConfig,
) -> bool:
    """One colour and about one thickness (within a factor of 3/2): a pair of bars of one
    window or door, or of one collage's gutters."""
    return _alike_thickness(thickness, other_thickness) and _colours_match(
        colour, other_colour, config
    )


def _has_twin(
    colour: np.ndarray,
    thickness: int,
    bands: list[tuple[int, int, np.ndarray]],
    config: SplitConfig,
) -> bool:
    """Is one of ``bands`` (start, end, colour) alike the bar (see _alike_bars)?"""
    return any(
        _alike_bars(colour, thickness, other, end - start, config) for start, end, other in bands
    )


def _loosely_alike(
    thickness: int,
    colour: np.ndarray,
    other_thickness: int,
    other_colour: tuple[float, float, float] | np.ndarray,
    config: SplitConfig,
) -> bool:
    """Two crossing bars of one window: about as thick, and of one colour matched loosely, as
    light differs along each of them."""
    tolerance = config.band_colour_tolerance * config.shaded_bar_colour_drift
    return _alike_thickness(thickness, max(1, other_thickness)) and bool(
        np.abs(np.asarray(other_colour) - colour).sum() <= tolerance
    )


def _alike_thickness(thickness: float, other_thickness: float) -> bool:
    return 2 / 3 <= thickness / other_thickness <= 3 / 2


def _similar(rows: np.ndarray, a: int, b: int, config: SplitConfig) -> bool:
    difference = np.abs(rows[a].mean(axis=0) - rows[b].mean(axis=0)).sum()
    return bool(difference <= config.band_colour_tolerance * 2)


def _bands(
    mean: np.ndarray, std: np.ndarray, config: SplitConfig, tolerance: float | None = None
) -> list[tuple[int, int, np.ndarray]]:
    """Runs of flat rows of one colour: (start, end, colour), indices relative to the region.

    Rows with std up to ``uniform_max_std`` seed a band; next to a seed, rows up to twice that
    join too (JPEG noise peaks near photo edges), as long as the colour stays near the band's
    running mean (within ``tolerance``: band_colour_tolerance unless given). A run of one or two
    rows touching a longer band is the blend between band and
    photo and is folded into it.
    """
    tolerance = config.band_colour_tolerance if tolerance is None else tolerance
    seed = std <= config.uniform_max_std
    loose = std <= 2 * config.uniform_max_std
    runs: list[list] = []  # [start, end, colour sum, has seed]
    for index in np.flatnonzero(loose):
        if runs and runs[-1][1] == index:
            start, end, total, seeded = runs[-1]
            if np.abs(mean[index] - total / (end - start)).sum() <= tolerance:
                runs[-1] = [start, index + 1, total + mean[index], seeded or bool(seed[index])]
                continue
        runs.append([int(index), int(index) + 1, mean[index].astype(np.float64), bool(seed[index])])
    runs = [run for run in runs if run[3]]
    merged: list[list] = []
    for run in runs:
        if (
            merged
            and merged[-1][1] == run[0]
            and min(merged[-1][1] - merged[-1][0], run[1] - run[0]) <= 2
        ):
            previous = merged[-1]
            longer = previous if previous[1] - previous[0] >= run[1] - run[0] else run
            colour = longer[2] / (longer[1] - longer[0])
            merged[-1] = [previous[0], run[1], colour * (run[1] - previous[0]), True]
        else:
            merged.append(run)
    return [(start, end, total / (end - start)) for start, end, total, _ in merged]


def _appearance(pixels: np.ndarray) -> np.ndarray:
    """What a photo looks like, coarsely: histograms of brightness (16 bins), of colour
    (4 x 4 opponent-colour bins) and of local contrast (8 bins), each normalised, concatenated.

    Brightness and contrast tell two grey photos apart; colour tells two colour photos apart.
    """
    pixels = pixels.astype(np.float32)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    brightness = (red + green + blue) / 3
    red_green = np.clip((red - green) / 64 + 2, 0, 3.999).astype(np.int32)
    yellow_blue = np.clip(((red + green) / 2 - blue) / 64 + 2, 0, 3.999).astype(np.int32)
    contrast = np.abs(np.diff(brightness, axis=1))
    parts = (
        np.bincount(np.clip(brightness / 16, 0, 15).astype(np.int32).ravel(), minlength=16),
        np.bincount((red_green * 4 + yellow_blue).ravel(), minlength=16),
        np.bincount(np.clip(np.log2(contrast + 1), 0, 7.999).astype(np.int32).ravel(), minlength=8),
    )
    return np.concatenate([part / max(1, part.sum()) for part in parts]) / len(parts)


def _continuity(
    img: np.ndarray, row_a: int, row_b: int, b0: int, b1: int, fineness: float
) -> float:
    """Correlation of the detail along two rows (e.g. either side of a band): a scene seen
    through a window bar continues across it, two photos on either side of a gutter do not."""
    if min(row_a, row_b) < 0 or max(row_a, row_b) >= img.shape[0] or b1 - b0 < 16:
        return 0.0
    profiles = img[[row_a, row_b], b0:b1]
    detail = profiles - cv2.blur(profiles, (round(15 * fineness), 1))
    a, b = detail[0].ravel(), detail[1].ravel()
    if min(a.std(), b.std()) < 3.0:  # a smooth side carries no evidence either way
        return 0.0
    scale = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / scale if scale > 1e-6 else 0.0


def _bridged_step(
    img: np.ndarray, row_a: int, row_b: int, b0: int, b1: int, config: SplitConfig
) -> float | None:
    """The seam test across a band, as if the band were cut out: log of the difference between
    the rows on either side of it over the larger difference between two rows as far apart
    within one side (median over stretches of the line; None too close to the border).

    Behind a window bar the scene goes on, so the two sides differ about as much as any two
    rows of one photo that far apart; two photos on either side of a gutter differ more.
    """
    distance = row_b - row_a
    if row_a - distance < 0 or row_b + distance >= img.shape[0] or b1 - b0 < 16:
        return None
    rows = cv2.blur(img[[row_a - distance, row_a, row_b, row_b + distance], b0:b1], (9, 1))
    starts = _stretch_bounds(0, b1 - b0, config.profile_segments)

    def difference(first: int, second: int) -> np.ndarray:
        per_pixel = np.abs(rows[first] - rows[second]).sum(axis=1)
        return np.add.reduceat(per_pixel, starts[:-1]) / np.maximum(1, np.diff(starts))

    floor = config.profile_floor
    across = difference(1, 2)
    within = np.minimum(difference(0, 1), difference(2, 3))
    return float(np.median(np.log((across + floor) / (within + floor))))


def _peaks(values: np.ndarray, floor: float, radius: int) -> list[tuple[int, float]]:
    """Local maxima at or above ``floor``; on a plateau, the first index."""
    peaks = []
    for index in np.flatnonzero(values >= floor):
        value = values[index]
        before = values[max(0, index - radius) : index]
        after = values[index + 1 : index + radius + 1]
        if (before.size and before.max() >= value) or (after.size and after.max() > value):
            continue
        peaks.append((int(index), float(value)))
    return peaks


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate(([False], mask, [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(changes[::2].tolist(), changes[1::2].tolist(), strict=True))


def _stands_out(
    strip: np.ndarray,
    g0: np.ndarray,
    g1: np.ndarray,
    context: np.ndarray,
    step: float,
    gap: int = 0,
) -> np.ndarray:
    """Per stretch g0..g1 of a strip (length x 3, or strips stacked: ... x length x 3): does
    it differ from the ``context`` pixels left and right of it (fewer at the strip's ends),
    ``gap`` pixels away?"""
    length = strip.shape[-2]
    prefix = np.zeros((*strip.shape[:-2], length + 1, strip.shape[-1]), np.float64)
    np.cumsum(strip, axis=-2, out=prefix[..., 1:, :])

    def mean(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return (prefix[..., hi, :] - prefix[..., lo, :]) / (hi - lo)[:, None]

    inside = mean(g0, g1)
    left = mean(np.maximum(0, g0 - gap - context), g0 - gap)
    right = mean(g1 + gap, np.minimum(length, g1 + gap + context))
    return (np.abs(inside - left).sum(axis=-1) >= step) & (
        np.abs(inside - right).sum(axis=-1) >= step
    )


def _wide_crossings(
    above: np.ndarray, below: np.ndarray, continuous: np.ndarray, gap: int, config: SplitConfig
) -> list[tuple[int, int]]:
    """Stretches of one colour above and below the line (``continuous``) that stand out from
    their neighbours on both sides of it, ``gap`` pixels away (see _crossing_objects)."""
    max_width = config.crossing_max_width * len(continuous)
    runs = np.asarray(_runs(continuous), dtype=np.int64).reshape(-1, 2)
    g0, g1 = runs[:, 0], runs[:, 1]
    width = g1 - g0
    keep = (width >= 2) & (width <= max_width)
    keep &= (g0 - gap >= 3) & (g1 + gap + 3 <= len(continuous))  # room for neighbours
    g0, g1 = g0[keep], g1[keep]
    context = np.maximum(3, g1 - g0)
    stands = np.ones(len(g0), bool)
    for strip in (above, below):
        stands &= _stands_out(strip, g0, g1, context, config.edge_step, gap)
    return [(int(lo), int(hi)) for lo, hi in zip(g0[stands], g1[stands], strict=True)]


def _thin_crossings(
    above: np.ndarray, below: np.ndarray, steady: np.ndarray, gap: int, config: SplitConfig
) -> list[tuple[int, int]]:
    """Stretches where an object too thin to keep its own colour crosses the line: a thin
    pole, blurred into what lies behind it, is a blend of the pole and of the sky above the
    line and of the ground below it.

    At each pixel of the strips ``above`` and ``below`` the line, the background is the mean of
    the pixels ``gap``+1..``gap``+3 to the left and right. An object stands out from it, more
    than the background differs from left to right, on both sides; and the change of its
    colour across the line is the change of the background, times the background's share of
    the blend (at most ``thin_crossing_max_share``): the object itself is the same on both
    sides, and unmixed from the blend it has a colour a photo can hold. ``steady``: each side
    goes on along the object, away from the line.
    """
    length = len(above)
    if length < 2 * gap + 8:
        return []
    centre = np.arange(gap + 3, length - gap - 3)
    backgrounds, standing = [], np.ones(len(centre), bool)
    for strip in (above, below):
        prefix = np.zeros((length + 1, strip.shape[1]), np.float64)
        np.cumsum(strip, axis=0, out=prefix[1:])
        left = (prefix[centre - gap] - prefix[centre - gap - 3]) / 3
        right = (prefix[centre + gap + 4] - prefix[centre + gap + 1]) / 3
        background = (left + right) / 2
        contrast = np.abs(strip[centre] - background).sum(axis=1)
        uneven = np.abs(left - right).sum(axis=1)
        standing &= (contrast >= config.edge_step) & (contrast > uneven)
        backgrounds.append(background)
    change = above[centre] - below[centre]
    background_change = backgrounds[0] - backgrounds[1]
    power = (background_change**2).sum(axis=1)
    share = np.clip((change * background_change).sum(axis=1) / np.maximum(power, 1e-6), 0, 1)
    residual = np.abs(change - share[:, None] * background_change).sum(axis=1)
    blended = (residual < config.seam_step) & (share <= config.thin_crossing_max_share)
    # The object's own colour, unmixed from the blend, is a colour: chance alignments of two
    # photos' details mostly unmix to none.
    own = (above[centre] - share[:, None] * backgrounds[0]) / np.maximum(1 - share, 1e-6)[:, None]
    blended &= np.all((own >= -config.edge_step) & (own <= 255 + config.edge_step), axis=1)
    mask = np.zeros(length, bool)
    mask[centre] = standing & blended & steady[centre]
    # A blurred object blends over a few pixels; a lone pixel is a chance alignment.
    return [(lo, hi) for lo, hi in _runs(mask) if 2 <= hi - lo <= 2 * gap + 3]


def _drop_crowded(gutters: list[_Line], min_rows: float) -> list[_Line]:
    """Flat bands closer together than a photo can be tall are not gutters (the paper between
    lines of text, the mortar between bricks)."""
    crowded = set()
    ordered = sorted(gutters, key=lambda line: line.start)
    for first, second in zip(ordered, ordered[1:], strict=False):
        if 3 < second.start - first.end < min_rows:
            crowded.update((id(first), id(second)))
    return [line for line in ordered if id(line) not in crowded]


def _space_out(candidates: list[_Line], a0: int, a1: int, min_rows: float) -> list[_Line]:
    """Strongest first, keep a line only if every piece stays at least ``min_rows`` long."""
    chosen: list[_Line] = []
    for line in sorted(candidates, key=lambda item: -item.strength):
        if all(
            line.start - other.end >= min_rows or other.start - line.end >= min_rows
            for other in chosen
        ):
            chosen.append(line)
    return sorted(chosen, key=lambda item: item.start)


def _orientation_score(lines: list[_Line]) -> float:
    return max((line.strength for line in lines), default=0.0)


def _detail_integral(analysis: np.ndarray, config: SplitConfig) -> np.ndarray:
    """Integral image of 'this pixel differs from its 5x5 neighbourhood': where photos have detail."""
    grey = _channel_sum(analysis) / 3
    detail = cv2.absdiff(grey, cv2.blur(grey, (5, 5))) >= config.blank_detail
    return cv2.integral(detail.astype(np.uint8))


def split_image(
    image: np.ndarray,
    config: SplitConfig = DEFAULT_CONFIG,
    face_boxes: Sequence[Box] = (),
) -> SplitResult:
    """Tile boxes of one image (H x W x 3 uint8 RGB, EXIF-upright), sorted top-to-bottom.

    ``face_boxes`` (full-image pixel boxes) are evidence: no cut passes through a face.
    """
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB array, got {array.dtype} {array.shape}")
    height, width = array.shape[:2]
    if height < 2 or width < 2:
        box = Box(0, 0, width, height)
        return SplitResult((box,), "single", 1.0, DECIDED_AUTO)
    splitter = _Splitter(np.ascontiguousarray(array), config, face_boxes)
    boxes = sort_boxes(box for box in splitter.split() if box.area > 0)
    if not boxes:
        boxes = (Box(0, 0, width, height),)
    confidence = min(splitter.decisions.margins, default=1.0)
    return SplitResult(
        boxes,
        classify_layout(boxes),
        round(float(confidence), 3),
        DECIDED_AUTO,
        tuple(splitter.decisions.cuts),
    )
