"""What a person looks at after training: sample images per identity and the loss curve.

Samples use fixed seeds and a prompt template, so two runs (or a run and its resume) can be
compared image by image. The loss curve is drawn with Pillow (no plotting dependency).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from identity_pipeline.previews import encode_image
from identity_pipeline.storage import atomic_write_bytes
from identity_pipeline.training.config import SampleConfig
from identity_pipeline.training.families import FamilyAdapter, TextEmbeds


def sample_prompt(template: str, identity: str) -> str:
    return template.format(identity=identity)


def generate_samples(
    adapter: FamilyAdapter,
    pipeline,
    prompts: dict[str, TextEmbeds],
    negative: TextEmbeds | None,
    config: SampleConfig,
    size: tuple[int, int],
    device: torch.device,
) -> dict[str, list[Image.Image]]:
    """{prompt: [one image per seed]}; the generator for each seed lives on the CPU.

    CPU generators make a seed give the same starting noise on any device.
    """
    width, height = size
    images: dict[str, list[Image.Image]] = {}
    dtype = pipeline.vae.dtype
    for prompt, embeds in prompts.items():
        images[prompt] = []
        for seed in config.seeds:
            kwargs = adapter.sample_kwargs(
                _to(embeds, device, dtype),
                _to(negative, device, dtype) if negative is not None else None,
                config.guidance_scale,
            )
            with torch.no_grad():
                result = pipeline(
                    **kwargs,
                    height=height,
                    width=width,
                    num_inference_steps=config.num_inference_steps,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    output_type="pil",
                )
            images[prompt].append(result.images[0])
    return images


def _to(embeds: TextEmbeds, device: torch.device, dtype: torch.dtype) -> TextEmbeds:
    return {key: value.to(device, dtype) for key, value in embeds.items()}


def save_samples(
    images: dict[str, list[Image.Image]], seeds: Sequence[int], folder: Path
) -> dict[str, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[Path]] = {}
    for index, (prompt, pictures) in enumerate(images.items()):
        paths[prompt] = []
        for seed, picture in zip(seeds, pictures, strict=True):
            path = folder / f"{index:02d}_{_slug(prompt)}_seed{seed}.png"
            atomic_write_bytes(path, encode_image(picture, "PNG"))
            paths[prompt].append(path)
    return paths


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "prompt"


def loss_curve_image(
    losses: Sequence[float], width: int = 640, height: int = 320, smoothing: float = 0.9
) -> Image.Image:
    """Raw per-step loss (light) and its exponential moving average (bold), log-free axes."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 56, 12, 24, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    draw.rectangle((left, top, left + plot_w, top + plot_h), outline=(160, 160, 160))
    values = [value for value in losses if math.isfinite(value)]
    draw.text((left, 4), f"training loss ({len(losses)} steps)", fill=(0, 0, 0), font=font)
    if not values:
        draw.text((left + 8, top + 8), "(no finite loss yet)", fill=(120, 0, 0), font=font)
        return image
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5

    def point(index: int, value: float) -> tuple[float, float]:
        x = left + plot_w * (index / max(1, len(losses) - 1))
        y = top + plot_h * (1 - (value - low) / (high - low))
        return x, y

    raw = [point(i, v) for i, v in enumerate(losses) if math.isfinite(v)]
    smoothed, average = [], None
    for index, value in enumerate(losses):
        if not math.isfinite(value):
            continue
        average = value if average is None else smoothing * average + (1 - smoothing) * value
        smoothed.append(point(index, average))
    if len(raw) > 1:
        draw.line(raw, fill=(170, 200, 235), width=1)
        draw.line(smoothed, fill=(20, 80, 170), width=2)
    else:
        x, y = raw[0]
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(20, 80, 170))
    for fraction in (0.0, 0.5, 1.0):
        value = high - fraction * (high - low)
        y = top + plot_h * fraction
        draw.text((4, y - 6), f"{value:.4g}", fill=(60, 60, 60), font=font)
    draw.text((left, height - bottom + 8), "step 1", fill=(60, 60, 60), font=font)
    draw.text(
        (left + plot_w - 60, height - bottom + 8),
        f"step {len(losses)}",
        fill=(60, 60, 60),
        font=font,
    )
    return image
