"""The masked loss: learn the person inside the identity mask, not the rest of the photo.

Per sample, the squared error (mean over latent channels) is averaged separately over the mask
and over its complement, each normalised by its own area. A small face therefore weighs as much
as a large one, and the background term (``background_weight``) means the same whatever the face
size. Optional prior preservation pulls the prediction outside the mask towards the frozen base
model's prediction instead of the data, so the LoRA does not repaint the surroundings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from identity_pipeline.training.config import LossConfig


def mask_to_latent(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) pixel mask in [0, 1] -> (B, 1, h, w) by area averaging.

    Area averaging keeps the soft edge: a latent cell half covered by the face gets 0.5.
    """
    if mask.shape[-2:] == tuple(latent_size):
        return mask
    return F.adaptive_avg_pool2d(mask.float(), latent_size)


@dataclass(frozen=True)
class LossTerms:
    loss: torch.Tensor  # scalar, what is back-propagated
    per_sample: torch.Tensor  # (B,), detached


def masked_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    config: LossConfig,
    prior_prediction: torch.Tensor | None = None,
) -> LossTerms:
    """Area-normalised masked MSE. Tensors are (B, C, h, w); ``mask`` is (B, 1, h, w).

    With ``background_weight == 0`` and no prior term, pixels where the mask is 0 get exactly
    zero gradient.
    """
    prediction = prediction.float()
    mask = mask.float()
    background = 1.0 - mask
    cells = mask.shape[-1] * mask.shape[-2]
    floor = config.min_mask_fraction * cells

    error = (prediction - target.float()).pow(2).mean(dim=1, keepdim=True)
    per_sample = _region_mean(error, mask, floor)
    if config.background_weight > 0:
        per_sample = per_sample + config.background_weight * _region_mean(error, background, floor)
    if prior_prediction is not None and config.prior_preservation_weight > 0:
        prior_error = (prediction - prior_prediction.float()).pow(2).mean(dim=1, keepdim=True)
        per_sample = per_sample + config.prior_preservation_weight * _region_mean(
            prior_error, background, floor
        )
    return LossTerms(loss=per_sample.mean(), per_sample=per_sample.detach())


def _region_mean(error: torch.Tensor, weight: torch.Tensor, floor: float) -> torch.Tensor:
    area = weight.sum(dim=(1, 2, 3)).clamp_min(floor)
    return (error * weight).sum(dim=(1, 2, 3)) / area
