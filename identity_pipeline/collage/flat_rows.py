"""Digitally flat rows at full size: the plain rules the line model's decoder keeps.

A gutter or a margin is digitally flat: along a row (a column for vertical lines) every pixel has
the same colour. The line model's decoder (``decoder.py``) decides where lines run; this finds
flat rows, follows a flat band as far as it goes, and trims flat margins that end in a clear step,
to the exact pixel.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from identity_pipeline.collage.boxes import Box


class FlatRowSettings(Protocol):
    flat_std: float  # a row is flat under this colour spread
    flat_colour_tolerance: float  # rows of one band differ by at most this (summed RGB)
    max_margin_share: float  # a margin or band is at most this share of the region
    edge_step: float  # a margin ends in a step at least this large (summed RGB) ...
    edge_share: float  # ... along at least this share of its edge


class FlatRows:
    """Mixed into a decoder with ``image`` (H x W x 3), ``settings``, ``step`` (the columns sampled
    along a row) and ``min_tile`` (the smallest photo side, px)."""

    image: np.ndarray
    settings: FlatRowSettings
    step: int
    min_tile: float

    def rows(self, region: Box, name: str, lo: int, hi: int) -> np.ndarray:
        """Full-size rows lo..hi of the region (columns for "v"), sampled along: n x m x 3."""
        if name == "h":
            return self.image[lo:hi, region.x0 : region.x1 : self.step].astype(np.float32)
        return (
            self.image[region.y0 : region.y1 : self.step, lo:hi]
            .transpose(1, 0, 2)
            .astype(np.float32)
        )

    def flat_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: digitally flat? and its mean colour."""
        return rows.std(axis=1).mean(axis=1) <= self.settings.flat_std, rows.mean(axis=1)

    def extend_band(self, region: Box, name: str, seed: int, a0: int, a1: int) -> tuple[int, int]:
        """The run of flat rows of the seed row's colour around it (at most a margin's share)."""
        limit = round(self.settings.max_margin_share * (a1 - a0))
        colour = self.rows(region, name, seed, seed + 1).mean(axis=1)[0]
        before = self.run_length(region, name, seed - 1, -1, colour, seed - max(a0, seed - limit))
        after = self.run_length(region, name, seed + 1, 1, colour, min(a1, seed + limit) - seed - 1)
        return seed - before, seed + 1 + after

    def run_length(
        self, region: Box, name: str, first: int, sign: int, colour: np.ndarray, limit: int
    ) -> int:
        """How many rows from ``first`` on (``sign``: +1 onwards, -1 backwards), at most
        ``limit``, are flat and of ``colour``: read in growing chunks, most runs are short."""
        count, chunk = 0, 8
        while count < limit:
            take = min(chunk, limit - count)
            lo = first + sign * count
            hi = lo + sign * take
            rows = self.rows(region, name, min(lo, hi + 1), max(lo + 1, hi))
            if sign < 0:
                rows = rows[::-1]
            flat, means = self.flat_rows(rows)
            same = flat & (
                np.abs(means - colour).sum(axis=1) <= self.settings.flat_colour_tolerance
            )
            if not same.all():
                return count + int(np.argmin(same))
            count, chunk = count + take, chunk * 2
        return count

    def trim_margins(self, region: Box) -> Box:
        """Cut off digitally flat bands at the region's border that end in a clear step."""
        for _ in range(2):
            for name in ("h", "v"):
                region = self.trim_direction(region, name)
        return region

    def trim_direction(self, region: Box, name: str) -> Box:
        a0, a1 = (region.y0, region.y1) if name == "h" else (region.x0, region.x1)
        if a1 - a0 < 4:
            return region
        limit = max(1, round(self.settings.max_margin_share * (a1 - a0)))
        depths = []
        for edge, sign in ((a0, 1), (a1 - 1, -1)):
            border = self.rows(region, name, edge, edge + 1)
            flat, colour = self.flat_rows(border)
            depth = 0
            if flat[0]:
                depth = 1 + self.run_length(region, name, edge + sign, sign, colour[0], limit)
            if 0 < depth <= limit:
                inner = self.rows(region, name, edge + sign * depth, edge + sign * depth + 1)[0]
                step = np.abs(inner - colour[0]).sum(axis=1) >= self.settings.edge_step
                depth = depth if step.mean() >= self.settings.edge_share else 0
            else:
                depth = 0
            depths.append(depth)
        lo, hi = a0 + depths[0], a1 - depths[1]
        if hi - lo < self.min_tile:
            return region
        return (
            Box(region.x0, lo, region.x1, hi) if name == "h" else Box(lo, region.y0, hi, region.y1)
        )
