"""Where does a cut run? Per-line evidence of a region, and a small 1D network that reads it.

A collage's photos meet along straight lines. Along such a line the picture changes *at once and
all the way along*: the step across the line is large compared with the steps just beside it, in
every stretch of the line; the fine structure of the two rows either side stops being correlated
(two unrelated photos); colour and texture of the two sides differ; or a flat band (a gutter)
runs the full length. Inside one photo a straight edge (a horizon, a door post) shows some of
this, but rarely all of it, in every stretch, at once.

``LineEvidence`` computes, for one analysis-size copy of the image, per-pixel maps of that
evidence once, as running sums along the lines (so any region's per-line features cost O(lines));
``region_features`` turns a region into one feature vector per line (``LINE_FEATURES``); the
``LineNet`` (a 1D convolution over the lines of the region, about 7k weights, run in numpy)
gives per line the probability that a cut runs there across the whole region. Multi-scale
context (a gutter's two edges, a lone peak among lines of texture) comes from the convolution's
dilated receptive field, +-15 lines; the region's strongest line is given to every line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

WEIGHTS_FILE = Path(__file__).with_name("line_model.safetensors")
LINE_FEATURES = (
    "log step",
    "log step over the steps beside",
    "share of the line with a clear step",
    "weakest stretch: share with a step",
    "lower quartile stretch: share with a step",
    "share of stretches mostly stepped",
    "weakest stretch: step over beside",
    "flatter of the two rows: log std",
    "busier of the two rows: log std",
    "fine structure correlation across the line",
    "fine structure correlation three rows across",
    "colour change, 2 rows each side",
    "colour change, 6 rows each side",
    "colour change, 16 rows each side",
    "texture change, 6 rows each side",
    "texture change, 16 rows each side",
    "colour steps within the sides",
    "log share of the smaller side",
    "log line length over region depth",
    "log region depth over the image's longer side",
    "step over beside, below the region's best",
    "share with a step, below the region's best",
)
KERNEL = 3
DILATIONS = (1, 2, 4, 8)
HIDDEN = 24
SIDE_WINDOWS = (2, 6, 16)
STRETCHES = 8
BLOCK = 4  # analysis pixels summed together along a line (a region is read in whole blocks)


def analysis_size(
    width: int, height: int, side: int, min_short: int, max_side: int
) -> tuple[int, int]:
    """The analysis copy's size: longer side ``side``; a long phone stack keeps ``min_short``
    across (its photos keep their texture), up to ``max_side`` along."""
    scale = side / max(width, height)
    if min(width, height) * scale < min_short:
        scale = min(min_short / min(width, height), max_side / max(width, height))
    scale = min(scale, 1.0)
    return max(8, round(width * scale)), max(8, round(height * scale))


def _running(values: np.ndarray) -> np.ndarray:
    """Running sums along the last axis, over blocks of BLOCK pixels, with a leading zero: the
    sum over blocks [c0, c1) is r[..., c1] - r[..., c0]."""
    usable = values.shape[-1] // BLOCK * BLOCK
    blocks = values[..., 0:usable:BLOCK].copy()
    for offset in range(1, BLOCK):
        blocks += values[..., offset:usable:BLOCK]
    out = np.zeros((*blocks.shape[:-1], blocks.shape[-1] + 1), np.float32)
    np.cumsum(blocks, axis=-1, out=out[..., 1:])
    return out


@dataclass
class _Oriented:
    """Running sums of one direction's maps: rows are lines' sides, columns run along them."""

    lines: np.ndarray  # 5 x (h-1) x (w/BLOCK+1): per boundary between rows b and b+1
    rows: np.ndarray  # 6 x h x (w/BLOCK+1): per row (colour 3, squared norm, |gx|, gx squared)


class LineEvidence:
    """The evidence maps of one analysis image, both directions ("h": lines across rows)."""

    def __init__(self, analysis: np.ndarray) -> None:
        # Planar (3 x h x w) and centred: fast elementwise work, precise running sums.
        planes = analysis.transpose(2, 0, 1).astype(np.float32) - 128.0
        self.height, self.width = planes.shape[1:]
        self.oriented = {
            "h": self._orient(np.ascontiguousarray(planes)),
            "v": self._orient(np.ascontiguousarray(planes.transpose(0, 2, 1))),
        }

    @staticmethod
    def _orient(planes: np.ndarray) -> _Oriented:
        def channels(x: np.ndarray) -> np.ndarray:
            return x[0] + x[1] + x[2]

        step = channels(np.abs(planes[:, 1:] - planes[:, :-1]))  # (h-1, w)
        padded = np.concatenate([planes[:, :1], planes, planes[:, -1:]], axis=1)
        wide = channels(np.abs(padded[:, 3:] - padded[:, :-3]))  # rows b-1 and b+2
        around = np.pad(step, ((4, 4), (0, 0)), mode="edge")
        n = step.shape[0]
        beside = np.minimum(
            around[2 : 2 + n] + around[6 : 6 + n], around[1 : 1 + n] + around[7 : 7 + n]
        )
        beside *= 0.5
        clear = (wide > 2.0 * beside + 12.0).astype(np.float32)
        ratio = np.clip(np.log((wide + 6.0) / (beside + 6.0)), -2.0, 4.0)
        grey = channels(planes) * (1.0 / 3.0)
        gx = np.zeros_like(grey)
        gx[:, 1:] = grey[:, 1:] - grey[:, :-1]
        gpad = np.concatenate([gx[:1], gx, gx[-1:]], axis=0)
        lines = _running(
            np.stack([np.log1p(step), ratio, clear, gx[:-1] * gx[1:], gpad[:-3] * gpad[3:]])
        )
        rows = _running(
            np.concatenate(
                [planes, channels(planes * planes)[None], np.abs(gx)[None], (gx * gx)[None]]
            )
        )
        return _Oriented(lines, rows)

    def region_features(self, name: str, a0: int, a1: int, b0: int, b1: int) -> np.ndarray:
        """Features (n x len(LINE_FEATURES)) of the lines between rows a0..a1-1 of the region
        [a0, a1) x [b0, b1) (analysis pixels; for "v", a runs along x): line i lies between
        rows a0+i and a0+i+1. Along the line, the region is read in whole blocks."""
        o = self.oriented[name]
        n = a1 - a0 - 1
        c0 = -(-b0 // BLOCK)
        c1 = min(b1 // BLOCK, o.lines.shape[-1] - 1)
        if n < 1 or c1 - c0 < 1:
            return np.zeros((0, len(LINE_FEATURES)), np.float32)
        blocks = float(c1 - c0)
        width = blocks * BLOCK
        lines = o.lines[:, a0 : a1 - 1]
        mean = (lines[:, :, c1] - lines[:, :, c0]) / width  # 5 x n
        parts = max(1, min(STRETCHES, c1 - c0))
        bounds = np.linspace(c0, c1, parts + 1).round().astype(int)
        part = (lines[1:3][:, :, bounds[1:]] - lines[1:3][:, :, bounds[:-1]]) / (
            BLOCK * np.maximum(1, np.diff(bounds))
        )  # (ratio, clear) x n x parts
        rows = o.rows[:, a0:a1]
        row_mean = (rows[:, :, c1] - rows[:, :, c0]) / width  # 6 x (a1-a0)
        colour = row_mean[:3]
        std = np.sqrt(np.maximum(row_mean[3] - (colour**2).sum(axis=0), 0.0) / 3.0)
        log_std = np.log1p(std)
        texture, energy = row_mean[4], row_mean[5]
        corr = mean[3] / np.sqrt(energy[:-1] * energy[1:] + 1.0)
        e_pad = np.concatenate([energy[:1], energy, energy[-1:]])
        corr3 = mean[4] / np.sqrt(e_pad[:-3] * e_pad[3:] + 1.0)
        cum_colour = np.concatenate([np.zeros((3, 1)), np.cumsum(colour, axis=1)], axis=1)
        cum_texture = np.concatenate([[0.0], np.cumsum(texture)])
        colour_steps = np.abs(np.diff(colour, axis=1)).sum(axis=0)  # n
        cum_steps = np.concatenate([[0.0], np.cumsum(colour_steps)])
        at = np.arange(1, n + 1)  # the line's position in region rows
        side_colour, side_texture = [], []
        for k in SIDE_WINDOWS:
            lo, hi = np.maximum(0, at - k), np.minimum(n + 1, at + k)
            above = (cum_colour[:, at] - cum_colour[:, lo]) / (at - lo)
            below = (cum_colour[:, hi] - cum_colour[:, at]) / (hi - at)
            side_colour.append(np.log1p(np.abs(above - below).sum(axis=0)))
            t_above = (cum_texture[at] - cum_texture[lo]) / (at - lo)
            t_below = (cum_texture[hi] - cum_texture[at]) / (hi - at)
            side_texture.append(np.abs(np.log1p(t_above) - np.log1p(t_below)))
        lo, hi = np.maximum(0, at - 1 - 6), np.minimum(n, at + 6)
        within = (cum_steps[hi] - cum_steps[at]) + (cum_steps[at - 1] - cum_steps[lo])
        within = np.log1p(within / np.maximum(1, hi - lo - 1))
        position = at / (n + 1)
        smaller = np.log(np.minimum(position, 1 - position))
        depth = n + 1
        features = np.stack(
            [
                mean[0],
                mean[1],
                mean[2],
                part[1].min(axis=1),
                np.quantile(part[1], 0.25, axis=1),
                (part[1] > 0.5).mean(axis=1),
                part[0].min(axis=1),
                np.minimum(log_std[:-1], log_std[1:]),
                np.maximum(log_std[:-1], log_std[1:]),
                corr,
                corr3,
                side_colour[0],
                side_colour[1],
                side_colour[2],
                side_texture[1],
                side_texture[2],
                within,
                smaller,
                np.full(n, np.log(width / depth)),
                np.full(n, np.log(depth / max(self.height, self.width))),
                mean[1] - mean[1].max(),
                mean[2] - mean[2].max(),
            ],
            axis=1,
        )
        return features.astype(np.float32)


# --- the network ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineNet:
    """Weights of the 1D network (numpy): standardisation, then dilated convolutions over lines."""

    mean: np.ndarray  # per feature
    scale: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (out x in x KERNEL weight, bias) per conv
    head: tuple[np.ndarray, np.ndarray]  # (1 x HIDDEN, 1)

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (features - self.mean) / self.scale  # n x F
        for (weight, bias), dilation in zip(self.layers, DILATIONS, strict=True):
            pad = dilation * (KERNEL // 2)
            padded = np.pad(x, ((pad, pad), (0, 0)))
            taps = np.concatenate(
                [padded[k * dilation : k * dilation + len(x)] for k in range(KERNEL)], axis=1
            )  # n x (KERNEL * in), tap-major
            flat = weight.transpose(2, 1, 0).reshape(-1, weight.shape[0])
            x = np.maximum(taps @ flat + bias, 0.0)
        return (x @ self.head[0].T + self.head[1])[:, 0]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0)
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(features), -40, 40)))


def build_torch_net(features: int = len(LINE_FEATURES)):
    """The same network in torch, for training (torch imported here only)."""
    from torch import nn

    layers: list[nn.Module] = []
    width = features
    for dilation in DILATIONS:
        layers += [
            nn.Conv1d(width, HIDDEN, KERNEL, padding=dilation * (KERNEL // 2), dilation=dilation),
            nn.ReLU(),
        ]
        width = HIDDEN
    layers.append(nn.Conv1d(HIDDEN, 1, 1))
    return nn.Sequential(*layers)


def net_tensors(net, mean: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """The torch network's weights as plain arrays, named as ``load_net`` reads them."""
    convs = [m for m in net if hasattr(m, "weight")]
    tensors = {"line.mean": mean.astype(np.float32), "line.scale": scale.astype(np.float32)}
    for index, conv in enumerate(convs):
        tensors[f"line.conv{index}.weight"] = conv.weight.detach().numpy().astype(np.float32)
        tensors[f"line.conv{index}.bias"] = conv.bias.detach().numpy().astype(np.float32)
    return tensors


def net_from_tensors(tensors: dict[str, np.ndarray]) -> LineNet:
    layers = tuple(
        (
            tensors[f"line.conv{i}.weight"].astype(np.float64),
            tensors[f"line.conv{i}.bias"].astype(np.float64),
        )
        for i in range(len(DILATIONS))
    )
    head_w = tensors[f"line.conv{len(DILATIONS)}.weight"][:, :, 0].astype(np.float64)
    head_b = tensors[f"line.conv{len(DILATIONS)}.bias"].astype(np.float64)
    return LineNet(
        tensors["line.mean"].astype(np.float64),
        tensors["line.scale"].astype(np.float64),
        layers,
        (head_w, head_b),
    )


@functools.cache
def load_weights(path: Path = WEIGHTS_FILE) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def load_net(path: Path = WEIGHTS_FILE) -> LineNet:
    return net_from_tensors(load_weights(path))


def resize_for_analysis(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
