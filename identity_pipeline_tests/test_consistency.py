"""The trainer feeds each family's denoiser what the stock diffusers pipeline feeds it (issue 30).

Tiny models, CPU, a few seconds per family: see ``identity_pipeline.training.consistency``.
"""

from __future__ import annotations

import pytest
import torch

from identity_pipeline.training.consistency import (
    BROKEN_CONVENTIONS,
    check_family,
    controls_for,
    reference_photos,
)
from identity_pipeline.training.families import get_adapter
from identity_pipeline.training.tiny_models import FAMILIES, build_tiny_pipeline

CASES = [(family, None) for family in FAMILIES] + [
    (family, control.name) for family in FAMILIES for control in controls_for(family)
]


@pytest.fixture(scope="module")
def pipelines() -> dict:
    torch.set_num_threads(1)
    return {family: build_tiny_pipeline(family) for family in FAMILIES}


@pytest.mark.parametrize(
    ("family", "control"), CASES, ids=[f"{f}-{c or 'trainer'}" for f, c in CASES]
)
def test_trainer_and_pipeline_feed_the_denoiser_the_same(family, control, pipelines) -> None:
    broken = next((c for c in BROKEN_CONVENTIONS if c.name == control), None)
    report = check_family(family, pipelines[family], broken)
    if broken is None:
        assert report.ok, [f for f in report.failures()][:5]
        names = {comparison.name for comparison in report.comparisons}
        # Every input the family's denoiser takes was compared, at every step of the loop.
        assert {"timestep", "encoder_hidden_states", "decode_is_vae_round_trip"} <= names
        assert len(report.sigmas) == 4 and report.sigmas[0] > report.sigmas[-1]
    else:
        assert not report.ok, f"{control} was not caught"
        assert report.failed_names() & broken.caught_by, report.failed_names()


def test_every_family_has_its_conventions_broken_somewhere() -> None:
    for family in FAMILIES:
        names = {control.name for control in controls_for(family)}
        assert {"timesteps_x1000", "latents_unscaled"} <= names


def test_tiny_vae_keeps_what_a_photo_looks_like(pipelines) -> None:
    """The hand-built tiny VAEs: decode(encode(x)) is x averaged over 4 x 4 blocks, and two
    photos are as far apart in latent space as the latents vary (a random VAE: 2% of it)."""
    pixels = reference_photos(64, 48)
    blocks = torch.nn.functional.avg_pool2d(pixels, 4).repeat_interleave(4, 2)
    blocks = blocks.repeat_interleave(4, 3)
    for family in ("qwen-image", "flux"):  # the two VAE classes
        vae = pipelines[family].vae
        with torch.no_grad():
            latents = get_adapter(family).encode_images(vae, pixels)
            if family == "qwen-image":
                raw = vae.encode(pixels[:, :, None]).latent_dist.mode()
                decoded = vae.decode(raw).sample[:, :, 0]
            else:
                decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
        assert (decoded - blocks).abs().max() < 1e-3
        apart = ((latents[0] - latents[1]) ** 2).mean()
        assert apart > 0.5 * latents.var()


def test_overfit_two_photos_regenerated_by_the_stock_pipeline(tmp_path) -> None:
    """Qwen-Image, 200 steps: each caption's samples (stock pipeline + load_lora_weights, two
    seeds) land near their own photo, without the LoRA near neither. Every family, and the
    trainer with conventions broken on purpose: benchmarks/train_consistency.py."""
    from identity_pipeline.training.overfit import OverfitSetup, run_overfit

    setup = OverfitSetup("qwen-image", steps=200, seeds=(0, 1), inference_steps=10)
    result = run_overfit(setup, tmp_path)
    assert result.lora.separates(), result.lora.per_caption
    assert not result.base.separates()
    assert result.lora.own < 0.25 * result.base.own
