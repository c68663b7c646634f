"""The training set: manifest rows -> samples, and the deterministic order they are trained in.

The order is a pure function of (seed, epoch): resuming at step N needs no sampler state, only N.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from identity_pipeline.training.config import DataConfig
from identity_pipeline.training.runs import check_training_set

REQUIRED_COLUMNS = (
    "sample_id",
    "image_path",
    "mask_path",
    "caption",
    "identity",
    "repeats",
    "bucket_width",
    "bucket_height",
    "split",
)


@dataclass(frozen=True)
class Sample:
    sample_id: str
    image_path: Path
    mask_path: Path
    caption: str
    identity: str
    repeats: int
    width: int
    height: int

    @property
    def bucket(self) -> tuple[int, int]:
        return (self.width, self.height)


def load_samples(config: DataConfig, pixel_multiple: int = 1) -> list[Sample]:
    """The rows of ``config.split``, paths resolved, sorted by sample_id (a stable order)."""
    manifest = Path(config.manifest)
    frame = pd.read_parquet(manifest)
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{manifest} lacks column(s): {', '.join(missing)}")
    check_training_set(frame, split=config.split)
    frame = frame[frame["split"] == config.split]
    if frame["sample_id"].duplicated().any():
        raise ValueError(f"{manifest} repeats sample_id values")
    root = Path(config.data_root) if config.data_root else manifest.parent
    samples = [
        Sample(
            sample_id=str(row.sample_id),
            image_path=_resolve(root, row.image_path),
            mask_path=_resolve(root, row.mask_path),
            caption=str(row.caption),
            identity=str(row.identity),
            repeats=int(row.repeats),
            width=int(row.bucket_width),
            height=int(row.bucket_height),
        )
        for row in frame.itertuples(index=False)
    ]
    for sample in samples:
        _check(sample, pixel_multiple)
    return sorted(samples, key=lambda sample: sample.sample_id)


def _resolve(root: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def _check(sample: Sample, pixel_multiple: int) -> None:
    if sample.repeats < 1:
        raise ValueError(f"{sample.sample_id}: repeats must be >= 1")
    if sample.width % pixel_multiple or sample.height % pixel_multiple:
        raise ValueError(
            f"{sample.sample_id}: bucket {sample.width}x{sample.height} is not a multiple of "
            f"{pixel_multiple} px, which this model needs"
        )


def load_pixels(sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) image in [-1, 1] and (1, H, W) mask in [0, 1], checked against the bucket."""
    with Image.open(sample.image_path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    with Image.open(sample.mask_path) as mask_image:
        mask = np.asarray(mask_image.convert("L"), dtype=np.float32)
    expected = (sample.height, sample.width)
    if rgb.shape[:2] != expected or mask.shape != expected:
        raise ValueError(
            f"{sample.sample_id}: image {rgb.shape[1]}x{rgb.shape[0]} / mask "
            f"{mask.shape[1]}x{mask.shape[0]} do not match bucket {sample.width}x{sample.height}"
        )
    pixels = torch.from_numpy(rgb).permute(2, 0, 1) / 127.5 - 1.0
    return pixels, torch.from_numpy(mask)[None] / 255.0


def most_common_bucket(samples: list[Sample]) -> tuple[int, int]:
    return Counter(sample.bucket for sample in samples).most_common(1)[0][0]


class BatchSchedule:
    """Which samples form micro-batch k, for any k, without iterating up to it.

    An epoch shows every sample ``repeats`` times. Within an epoch, samples of one bucket are
    shuffled and cut into batches (a batch never mixes sizes), then all batches are shuffled.
    Each process takes every ``num_processes``-th batch of that stream.
    """

    def __init__(
        self,
        samples: list[Sample],
        batch_size: int,
        seed: int,
        num_processes: int = 1,
        process_index: int = 0,
    ) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.num_processes = num_processes
        self.process_index = process_index
        buckets: dict[tuple[int, int], list[int]] = {}
        for index, sample in enumerate(samples):
            buckets.setdefault(sample.bucket, []).extend([index] * sample.repeats)
        self.buckets = [buckets[key] for key in sorted(buckets)]
        self.batches_per_epoch = sum(-(-len(items) // batch_size) for items in self.buckets)
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._epoch_cache and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        batches: list[list[int]] = []
        for items in self.buckets:
            order = torch.randperm(len(items), generator=generator).tolist()
            shuffled = [items[position] for position in order]
            batches.extend(
                shuffled[start : start + self.batch_size]
                for start in range(0, len(shuffled), self.batch_size)
            )
        order = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[position] for position in order]
        self._epoch_cache = (epoch, batches)
        return batches

    def batch(self, micro_step: int) -> list[int]:
        global_index = micro_step * self.num_processes + self.process_index
        epoch, position = divmod(global_index, self.batches_per_epoch)
        return self.epoch_batches(epoch)[position]
