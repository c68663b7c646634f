"""Rectified-flow noising: which noise level to train on, the noisy input and the target.

Convention (Qwen-Image, Flux, SD3 in diffusers): t = sigma in [0, 1], 0 clean, 1 pure noise,

    x_t = (1 - t) * x0 + t * noise        target (velocity) = noise - x0

which is what ``FlowMatchEulerDiscreteScheduler.step`` integrates at inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from identity_pipeline.training.config import TimestepConfig


@dataclass(frozen=True)
class ShiftSchedule:
    """How t is pushed towards noise, matching the model's inference scheduler.

    ``resolution``: the shift grows with the number of image tokens (Flux/Qwen-Image
    ``use_dynamic_shifting``): mu = linear interpolation of (base_shift, max_shift) over
    (base_seq_len, max_seq_len). ``fixed``: SD3's t' = s t / (1 + (s - 1) t).
    """

    kind: Literal["none", "fixed", "resolution"] = "none"
    fixed_shift: float = 1.0
    base_seq_len: int = 256
    max_seq_len: int = 4096
    base_shift: float = 0.5
    max_shift: float = 1.15
    time_shift_type: Literal["exponential", "linear"] = "exponential"

    @classmethod
    def from_scheduler_config(cls, scheduler_config: dict, config: TimestepConfig) -> ShiftSchedule:
        """The schedule for ``config.shift``; "auto" reads it off the model's scheduler config."""
        kind = config.shift
        if kind == "auto":
            if scheduler_config.get("use_dynamic_shifting"):
                kind = "resolution"
            elif float(scheduler_config.get("shift", 1.0)) != 1.0:
                kind = "fixed"
            else:
                kind = "none"
        fixed = (
            config.fixed_shift if config.shift == "fixed" else scheduler_config.get("shift", 1.0)
        )
        return cls(
            kind=kind,
            fixed_shift=float(fixed),
            base_seq_len=int(scheduler_config.get("base_image_seq_len", 256)),
            max_seq_len=int(scheduler_config.get("max_image_seq_len", 4096)),
            base_shift=float(scheduler_config.get("base_shift", 0.5)),
            max_shift=float(scheduler_config.get("max_shift", 1.15)),
            time_shift_type=scheduler_config.get("time_shift_type", "exponential"),
        )

    def mu(self, image_seq_len: int) -> float:
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return self.base_shift + slope * (image_seq_len - self.base_seq_len)

    def apply(self, t: torch.Tensor, image_seq_len: int) -> torch.Tensor:
        if self.kind == "none":
            return t
        if self.kind == "fixed":
            s = self.fixed_shift
            return s * t / (1 + (s - 1) * t)
        mu = self.mu(image_seq_len)
        # Same formulas as FlowMatchEulerDiscreteScheduler.time_shift (sigma = 1 keeps 1).
        odds = 1 / t.clamp_min(1e-12) - 1
        if self.time_shift_type == "exponential":
            return math.exp(mu) / (math.exp(mu) + odds)
        return mu / (mu + odds)


def sample_timesteps(
    batch_size: int,
    config: TimestepConfig,
    shift: ShiftSchedule,
    image_seq_len: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """t in [t_min, t_max], float32, shape (batch,), drawn on ``device`` from ``generator``."""
    if config.distribution == "logit_normal":
        normal = torch.randn(batch_size, generator=generator, device=device, dtype=torch.float32)
        t = torch.sigmoid(normal * config.logit_std + config.logit_mean)
    else:
        t = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float32)
    t = shift.apply(t, image_seq_len)
    # An affine map, not a clamp: the range is covered with the same shape, no pile-up at ends.
    return config.t_min + (config.t_max - config.t_min) * t


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


@dataclass(frozen=True)
class NoisedBatch:
    noisy: torch.Tensor  # the denoiser's input
    target: torch.Tensor  # what it should predict
    model_t: torch.Tensor  # the timestep in the unit the family's adapter expects


class FlowObjective:
    """Rectified flow (Qwen-Image, Flux, SD3): velocity target, t in [0, 1]."""

    def __init__(self, config: TimestepConfig, shift: ShiftSchedule) -> None:
        self.config = config
        self.shift = shift

    def noise(
        self,
        x0: torch.Tensor,
        image_seq_len: int,
        generator: torch.Generator,
    ) -> NoisedBatch:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t = sample_timesteps(
            x0.shape[0], self.config, self.shift, image_seq_len, generator, x0.device
        )
        return self.at(x0, noise, t)

    def at(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> NoisedBatch:
        """The point at noise level t (sigma, per sample) between x0 and noise, and its target."""
        return NoisedBatch(add_noise(x0, noise, t), velocity_target(x0, noise), t)


class DdpmObjective:
    """SDXL's own objective: DDPM noising, epsilon or v target from its scheduler config.

    t is drawn uniformly over [t_min, t_max] of the scheduler's training timesteps; the
    logit-normal and shift settings are flow-matching notions and do not apply.
    """

    def __init__(self, config: TimestepConfig, scheduler_config: dict) -> None:
        from diffusers import DDPMScheduler

        self.config = config
        self.scheduler = DDPMScheduler.from_config(scheduler_config)
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        self.train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self._alphas_cumprod: torch.Tensor | None = None

    def noise(
        self,
        x0: torch.Tensor,
        image_seq_len: int,
        generator: torch.Generator,
    ) -> NoisedBatch:
        del image_seq_len  # no resolution shift for DDPM
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        low = int(self.config.t_min * (self.train_timesteps - 1))
        high = int(self.config.t_max * (self.train_timesteps - 1))
        timesteps = torch.randint(
            low, high + 1, (x0.shape[0],), generator=generator, device=x0.device
        )
        return self.at(x0, noise, timesteps)

    def at(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> NoisedBatch:
        """The noised point at integer training timesteps (per sample), and its target."""
        if self._alphas_cumprod is None or self._alphas_cumprod.device != x0.device:
            self._alphas_cumprod = self.scheduler.alphas_cumprod.to(x0.device, torch.float32)
        alpha_bar = self._alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        signal, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        noisy = signal * x0 + sigma * noise
        if self.prediction_type == "v_prediction":
            target = signal * noise - sigma * x0
        elif self.prediction_type == "epsilon":
            target = noise
        else:
            raise ValueError(f"unsupported SDXL prediction_type {self.prediction_type!r}")
        return NoisedBatch(noisy, target, timesteps)
