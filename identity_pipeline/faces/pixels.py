"""A tile's pixels at the size each step needs, so a 48 MP photo is never held whole for nothing.

Detection looks at a working copy whose size follows from the smallest face worth finding, and
each face is embedded from a copy where it is about the recognizer's input size. A JPEG file is
decoded straight at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling: several times faster, and
the full-size pixels never exist); other files and in-memory arrays are shrunk after decoding.
Coordinates everywhere outside this module are full-size tile pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from identity_pipeline.faces.backend import file_sha256, rgb_uint8
from identity_pipeline.photos.inspect import (
    DCT_REDUCTIONS,
    PhotoLimits,
    load_photo,
    reduced_size,
    upright_size,
)


def reduction_for(scale: float) -> int:
    """The largest DCT reduction whose copy is still at least ``scale`` times the full size."""
    fitting = [r for r in DCT_REDUCTIONS if 1.0 / r >= scale - 1e-9]
    return max(fitting) if fitting else 1


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size`` (width, height)."""
    height, width = image.shape[:2]
    if (width, height) == size:
        return image
    # INTER_AREA avoids aliasing when shrinking a lot; for mild scales it is slower, not better.
    a_lot = size[0] < width / 2 and size[1] < height / 2
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if a_lot else cv2.INTER_LINEAR)


class TilePixels(ABC):
    """One tile's RGB pixels, decoded lazily and at reduced sizes; keeps one decoded copy."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size  # (width, height), full size
        self._held: tuple[int, np.ndarray] | None = None  # (reduction, pixels)

    @property
    def long_side(self) -> int:
        return max(self.size)

    @abstractmethod
    def _decode(self, reduction: int) -> np.ndarray:
        """The whole tile at ``reduced_size(self.size, reduction)``, (H, W, 3) uint8 RGB."""

    @abstractmethod
    def content_hash(self) -> str:
        """A stable digest of the tile's content (keys the face cache)."""

    def reduced(self, reduction: int) -> np.ndarray:
        """The whole tile ``reduction`` times smaller per side (rounded up); the last copy asked
        for is kept, an earlier one is let go (at most one decoded copy at a time)."""
        if self._held is None or self._held[0] != reduction:
            self._held = None  # free the previous copy before decoding the next
            pixels = rgb_uint8(self._decode(reduction))
            expected = reduced_size(self.size, reduction)
            if (pixels.shape[1], pixels.shape[0]) != expected:
                raise ValueError(
                    f"decoded {pixels.shape[1]}x{pixels.shape[0]} at 1/{reduction}, expected "
                    f"{expected[0]}x{expected[1]} (the file changed while it was read?)"
                )
            self._held = (reduction, pixels)
        return self._held[1]

    def scaled(self, scale: float) -> np.ndarray:
        """The whole tile resized by ``scale``, from the smallest copy that still has the detail."""
        target = (max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale)))
        return resize_to(self.reduced(reduction_for(scale)), target)

    def release(self) -> None:
        self._held = None


class ArrayPixels(TilePixels):
    """Pixels already in memory (or a function that decodes them on first use)."""

    def __init__(
        self,
        image_rgb: np.ndarray | Callable[[], np.ndarray],
        size: tuple[int, int] | None = None,
    ) -> None:
        self._image = image_rgb if isinstance(image_rgb, np.ndarray) else None
        self._load = None if isinstance(image_rgb, np.ndarray) else image_rgb
        if size is None:
            full = self.full()
            size = (full.shape[1], full.shape[0])
        super().__init__(size)

    def full(self) -> np.ndarray:
        if self._image is None:
            self._image = rgb_uint8(self._load())  # type: ignore[misc]
        return self._image

    def _decode(self, reduction: int) -> np.ndarray:
        if reduction == 1:
            return self.full()
        return resize_to(self.full(), reduced_size(self.size, reduction))

    def content_hash(self) -> str:
        from identity_pipeline.faces.cache import pixels_sha256

        return pixels_sha256(self.full())


class FilePixels(TilePixels):
    """An image file, decoded through ``load_photo`` (EXIF orientation applied) at each size."""

    def __init__(self, path: Path, max_pixels: int = PhotoLimits.max_pixels) -> None:
        self.path = Path(path)
        self.max_pixels = max_pixels
        super().__init__(upright_size(self.path))

    def _decode(self, reduction: int) -> np.ndarray:
        return np.asarray(load_photo(self.path, self.max_pixels, reduce=reduction))

    def content_hash(self) -> str:
        return file_sha256(self.path)


def as_tile_pixels(source: TilePixels | np.ndarray | Callable[[], np.ndarray]) -> TilePixels:
    return source if isinstance(source, TilePixels) else ArrayPixels(source)
