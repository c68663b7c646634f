"""Overfit two photos, regenerate them with the stock pipeline: the training path end to end.

Two real photos, two captions; the trainer memorises them with a LoRA; then the family's stock
diffusers pipeline, with ``load_lora_weights`` on the exported file and nothing of this project
on the inference side, samples each caption from several seeds. In latent space (the trainer's
normalised latents of the photos are the targets) each caption's samples must land clearly closer
to their own photo than to the other one, and far closer than the pipeline without the LoRA.

Sensitive only because the tiny models' VAE keeps what a photo looks like (``tiny_vae``): with a
random VAE both photos encode to nearly the same latents and no caption can be told apart. The
denoiser is the tiny one made ``width`` times wider, so a LoRA has room to memorise.

``benchmarks/overfit.py`` runs every family with the correct trainer and with broken controls
(``consistency.BROKEN_CONVENTIONS``); the tests run a short version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from identity_pipeline.storage import content_id
from identity_pipeline.training.consistency import CAPTIONS, reference_photos

IDENTITIES = ("alice", "bob")
SDXL_CONV_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
    "proj_in",
    "proj_out",
    "conv1",
    "conv2",
    "conv_shortcut",
    "conv_in",
    "conv_out",
    "conv",
    "time_emb_proj",
)


@dataclass(frozen=True)
class OverfitSetup:
    family: str
    steps: int = 300
    width: int = 8  # the tiny denoiser's attention heads (UNet channels) multiplier
    rank: int = 32
    # None: 3e-3, and 1e-3 for SDXL, whose LoRA also adapts every convolution.
    learning_rate: float | None = None
    # 32 x 32 photos: 8 x 8 latents, 16 tokens; two photos still far apart in latent space.
    image_width: int = 32
    image_height: int = 32
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    inference_steps: int = 20
    seed: int = 42  # training

    @property
    def target_modules(self) -> list[str] | None:
        """The family's LoRA targets, except SDXL: a random tiny UNet is no denoiser at all
        (its attention is a small part of it), so its LoRA also adapts the convolutions and
        projections, as LoCon-style SDXL LoRAs do; a pretrained UNet needs only attention."""
        return list(SDXL_CONV_TARGETS) if self.family == "sdxl" else None

    @property
    def max_text_tokens(self) -> int | None:
        """T5 captions padded to 32 tokens, not 512: same meaning, 10x less attention. The
        pipeline is called with the same ``max_sequence_length``, as it must be."""
        return 32 if self.family in ("flux", "sd3") else None


@dataclass
class OverfitScores:
    own: float  # mean squared latent distance of each caption's samples to its own photo
    other: float  # ... to the other caption's photo
    per_caption: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """own / other: below 1 the samples look like their own photo; 0 is a perfect copy."""
        return self.own / self.other if self.other > 0 else float("inf")

    def separates(self, ratio: float = 0.5) -> bool:
        """Every caption's samples are closer to its own photo than ``ratio`` x the other."""
        return all(own < ratio * other for own, other in self.per_caption.values())


@dataclass
class OverfitResult:
    family: str
    control: str | None
    steps: int
    final_loss: float | None
    train_seconds: float
    lora: OverfitScores
    base: OverfitScores
    target_distance: float  # mean squared distance between the two photos' latents

    def row(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "trainer": self.control or "correct",
            "steps": self.steps,
            "final_loss": self.final_loss,
            "own": self.lora.own,
            "other": self.lora.other,
            "own/other": self.lora.ratio,
            "base_own": self.base.own,
            "photos_apart": self.target_distance,
            "separates": self.lora.separates(),
            "train_s": self.train_seconds,
        }


def write_two_photo_set(root: Path, setup: OverfitSetup) -> Path:
    """The two photos (full masks: every pixel counts) and their manifest, under ``root``."""
    files = Path(root) / "files"
    files.mkdir(parents=True, exist_ok=True)
    pixels = reference_photos(setup.image_width, setup.image_height)
    rows = []
    for index, (caption, identity) in enumerate(zip(CAPTIONS, IDENTITIES, strict=True)):
        array = ((pixels[index].permute(1, 2, 0).numpy() + 1) * 127.5).round()
        Image.fromarray(array.clip(0, 255).astype(np.uint8)).save(files / f"{identity}.png")
        size = (setup.image_width, setup.image_height)
        Image.new("L", size, 255).save(files / f"{identity}_mask.png")
        rows.append(
            {
                "sample_id": f"s{index}",
                "image_path": f"files/{identity}.png",
                "mask_path": f"files/{identity}_mask.png",
                "caption": caption,
                "identity": identity,
                "repeats": 1,
                "bucket_width": setup.image_width,
                "bucket_height": setup.image_height,
                "split": "train",
            }
        )
    manifest = Path(root) / "table.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def training_config(setup: OverfitSetup, model_dir: Path, manifest: Path, output_dir: Path):
    from identity_pipeline.training.config import TrainingConfig

    return TrainingConfig.from_dict(
        {
            "output_dir": str(output_dir),
            "seed": setup.seed,
            "max_steps": setup.steps,
            "batch_size": 2,
            "mixed_precision": "no",
            "gradient_checkpointing": False,
            "log_every_steps": max(1, setup.steps // 4),
            "export_dtype": "float32",
            "cpu_threads": 1,
            "model": {"family": setup.family, "source": str(model_dir)},
            "data": {"manifest": str(manifest), "max_text_tokens": setup.max_text_tokens},
            "lora": {
                "rank": setup.rank,
                "alpha": float(setup.rank),
                "include_mlp": True,
                "target_modules": setup.target_modules,
            },
            "optimizer": {
                "learning_rate": setup.learning_rate or (1e-3 if setup.family == "sdxl" else 3e-3),
                "lr_scheduler": "constant",
                "warmup_steps": 0,
            },
            "checkpoint": {"every_steps": setup.steps},
            "samples": {"enabled": False},
        }
    )


# ----------------------------------------------------------------------------------------------
# The inference side: the stock pipeline and its own methods only


def load_pipeline(model_dir: Path):
    import diffusers

    pipe = diffusers.DiffusionPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_latents(pipe, family: str, setup: OverfitSetup) -> torch.Tensor:
    """(seeds, captions, C, h, w): the pipeline's final latents (before its decode), unpacked
    by the pipeline's own ``_unpack_latents``. One call: every (seed, caption) is an image of
    the batch with its own generator, as if sampled alone."""
    prompts = [caption for _ in setup.seeds for caption in CAPTIONS]
    generators = [torch.Generator().manual_seed(seed) for seed in setup.seeds for _ in CAPTIONS]
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "generator": generators,
        "height": setup.image_height,
        "width": setup.image_width,
        "num_inference_steps": setup.inference_steps,
        "output_type": "latent",
    }
    if family == "qwen-image":
        kwargs["true_cfg_scale"] = 1.0
    else:
        kwargs["guidance_scale"] = 1.0  # Flux: the guidance input it was trained with
    if setup.max_text_tokens is not None:
        kwargs["max_sequence_length"] = setup.max_text_tokens
    with torch.no_grad():
        latents = pipe(**kwargs).images
    if family == "qwen-image":
        latents = pipe._unpack_latents(
            latents, setup.image_height, setup.image_width, pipe.vae_scale_factor
        )[:, :, 0]
    elif family == "flux":
        latents = pipe._unpack_latents(
            latents, setup.image_height, setup.image_width, pipe.vae_scale_factor
        )
    return latents.float().unflatten(0, (len(setup.seeds), len(CAPTIONS)))


def target_latents(pipe, family: str, setup: OverfitSetup) -> torch.Tensor:
    """(captions, C, h, w): the trainer's normalised latents of the two photos."""
    from identity_pipeline.training.families import get_adapter

    pixels = reference_photos(setup.image_width, setup.image_height)
    with torch.no_grad():
        return get_adapter(family).encode_images(pipe.vae, pixels).float()


def scores(samples: torch.Tensor, targets: torch.Tensor) -> OverfitScores:
    per_caption = {}
    for index, caption in enumerate(CAPTIONS):
        own = float(((samples[:, index] - targets[index]) ** 2).mean())
        other = float(((samples[:, index] - targets[1 - index]) ** 2).mean())
        per_caption[caption] = (own, other)
    own = float(np.mean([pair[0] for pair in per_caption.values()]))
    other = float(np.mean([pair[1] for pair in per_caption.values()]))
    return OverfitScores(own, other, per_caption)


# ----------------------------------------------------------------------------------------------
# One run


def run_overfit(
    setup: OverfitSetup,
    workdir: Path,
    control: str | None = None,
    base: OverfitScores | None = None,
) -> OverfitResult:
    """Build the tiny model (once per workdir), train, regenerate and score; ``control`` names
    a broken convention to train with (``consistency.BROKEN_CONVENTIONS``)."""
    from identity_pipeline.training.consistency import control_named
    from identity_pipeline.training.pipes import SilentReporter
    from identity_pipeline.training.tiny_models import save_tiny_model
    from identity_pipeline.training.trainer import train

    workdir = Path(workdir)
    model_dir = save_tiny_model(
        setup.family, workdir / f"tiny-{setup.family}-w{setup.width}", width=setup.width
    )
    manifest = write_two_photo_set(workdir / "photos", setup)
    # One folder per setup and control: a second call resumes at the end (re-samples only).
    key = content_id(json.dumps(asdict(setup), sort_keys=True), control, length=12)
    output_dir = workdir / "runs" / f"{setup.family}-{control or 'correct'}-{key}"
    adapter = control_named(control).adapter(setup.family) if control else None
    result = train(
        training_config(setup, model_dir, manifest, output_dir), SilentReporter(), adapter
    )

    pipe = load_pipeline(model_dir)
    targets = target_latents(pipe, setup.family, setup)
    if base is None:
        base = scores(sample_latents(pipe, setup.family, setup), targets)
    lora_path = Path(result.lora_path)
    pipe.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name)
    lora = scores(sample_latents(pipe, setup.family, setup), targets)
    return OverfitResult(
        family=setup.family,
        control=control,
        steps=result.steps,
        final_loss=result.mean_loss_last_10,
        train_seconds=result.train_seconds,
        lora=lora,
        base=base,
        target_distance=float(((targets[0] - targets[1]) ** 2).mean()),
    )
