"""Tiny VAEs that keep what a photo looks like: weights set by hand, not drawn at random.

A random-initialised tiny VAE squashes every photo to nearly the same latents (two different
photos differ by a mean squared 0.001 against a latent variance of 0.056), so nothing trained or
sampled in its latent space can tell two photos apart. These are the same diffusers classes with
weights written so that the encoder computes a known linear map and the decoder inverts it:

    latent channel 0, 1, 2   the mean red, green, blue of each 4 x 4 pixel block
    latent channel 3         its luma detail: top half minus bottom half

scaled so the trainer's normalised latents are ``LATENT_GAIN`` times those values (unit-scale
for photos), whatever ``scaling_factor`` / ``shift_factor`` / ``latents_mean`` / ``latents_std``
the config declares. The decoder paints each block its mean colour, so decode(encode(x)) is x
averaged over 4 x 4 blocks (to ~1e-4), and the latent normalisation of every family is tested
against a decoder that actually depends on its input.

Every layer off the main path is switched off (residual branches and attention outputs zeroed).
The normalisations on the main path are made near-linear: GroupNorm sees each signal channel
beside its negative and a large constant pair (``[x, -x, C, -C]``: mean exactly 0, spread ~C),
the Qwen-Image VAE's per-position RMS norm sees each signal on a constant
(``[C + x, C - x]``: norm 2C^2 + 2x^2), and SiLU runs far in its linear range (offset ``BIAS``).
"""

from __future__ import annotations

import math

import torch

LATENT_GAIN = 2.0  # normalised latent = gain x (block colour in [-1, 1]): about unit variance
CONSTANT = 100.0  # C: normalisations see signals of size ~1 beside it, so they barely bend them
BIAS = 20.0  # SiLU(BIAS + x) = BIAS + x to 1e-8 relative
LANES = 4  # R, G, B, luma detail
LUMA = (1 / 3, 1 / 3, 1 / 3)
# Scale of the luma-detail channel (top half minus bottom half of a block's mean luma).
DETAIL_GAIN = 2.0


def _zero(*tensors: torch.Tensor | None) -> None:
    for tensor in tensors:
        if tensor is not None:
            tensor.zero_()


# ----------------------------------------------------------------------------------------------
# diffusers.AutoencoderKL (Flux, SD3, SDXL)


def autoencoder_kl_config(shift_factor: float | None, scaling_factor: float) -> dict:
    """Three blocks of 16 channels (a 4x stride), 4 latent channels, GroupNorm in groups of 4."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 3,
        "up_block_types": ("UpDecoderBlock2D",) * 3,
        "block_out_channels": (16, 16, 16),
        "layers_per_block": 1,
        "latent_channels": LANES,
        "norm_num_groups": 4,
        "sample_size": 64,
        "shift_factor": shift_factor,
        "scaling_factor": scaling_factor,
    }


def build_autoencoder_kl(shift_factor: float | None, scaling_factor: float):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**autoencoder_kl_config(shift_factor, scaling_factor))
    with torch.no_grad():
        _wire_autoencoder_kl(vae, shift_factor or 0.0, scaling_factor)
    return vae


def _group_lanes(conv: torch.nn.Conv2d, signals: torch.Tensor, bias: torch.Tensor | None = None):
    """Channels 4k..4k+3 of ``conv``'s output = [x_k, -x_k, C, -C], x_k = signals[k] (a 3x3
    kernel on the input channels, centre-aligned) + bias[k]."""
    _zero(conv.weight, conv.bias)
    for lane in range(LANES):
        conv.weight[4 * lane] = signals[lane]
        conv.weight[4 * lane + 1] = -signals[lane]
        if bias is not None:
            conv.bias[4 * lane] = bias[lane]
            conv.bias[4 * lane + 1] = -bias[lane]
        conv.bias[4 * lane + 2] = CONSTANT
        conv.bias[4 * lane + 3] = -CONSTANT


def _linear_group_norm(norm: torch.nn.GroupNorm) -> None:
    """GroupNorm over [x, -x, C, -C] groups: x -> BIAS + x, the other three -> 0 (SiLU(0) = 0)."""
    norm.weight.zero_()
    norm.bias.zero_()
    for lane in range(LANES):
        norm.weight[4 * lane] = CONSTANT / math.sqrt(2)  # the group's spread is ~C / sqrt(2)
        norm.bias[4 * lane] = BIAS


def _identity_residuals(module: torch.nn.Module) -> None:
    """Resnets add nothing (conv2 zeroed), attention adds nothing (its output projection zeroed);
    a resnet's 1x1 shortcut, where channels change, copies the channels it keeps."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    for child in module.modules():
        if isinstance(child, ResnetBlock2D):
            _zero(child.conv2.weight, child.conv2.bias)
            if child.conv_shortcut is not None:
                _copy_channels(child.conv_shortcut)
        elif isinstance(child, Attention):
            _zero(child.to_out[0].weight, child.to_out[0].bias)


def _copy_channels(conv: torch.nn.Conv2d) -> None:
    _zero(conv.weight, conv.bias)
    kh, kw = conv.weight.shape[-2:]
    for channel in range(min(conv.in_channels, conv.out_channels)):
        conv.weight[channel, channel, kh // 2, kw // 2] = 1.0


def _centre(in_channels: int, weights: dict[int, float]) -> torch.Tensor:
    kernel = torch.zeros(in_channels, 3, 3)
    for channel, weight in weights.items():
        kernel[channel, 1, 1] = weight
    return kernel


def _pool_kernel(conv: torch.nn.Conv2d, detail_lane: int | None) -> None:
    """A stride-2 3x3 conv (input padded right/bottom) as 2x2 mean pooling of every channel; the
    detail lane, when given, becomes top-row minus bottom-row of its pair's signal."""
    _zero(conv.weight, conv.bias)
    for channel in range(conv.out_channels):
        conv.weight[channel, channel, :2, :2] = 0.25
    if detail_lane is not None:
        for sign, channel in ((1.0, 4 * detail_lane), (-1.0, 4 * detail_lane + 1)):
            conv.weight[channel, channel] = 0.0
            conv.weight[channel, channel, 0, :2] = sign * DETAIL_GAIN / 4
            conv.weight[channel, channel, 1, :2] = -sign * DETAIL_GAIN / 4


def _wire_autoencoder_kl(vae, shift: float, scaling: float) -> None:
    encoder, decoder = vae.encoder, vae.decoder
    # conv_in: [R, G, B, luma] into the four lanes (the detail lane starts as plain luma).
    colours = [_centre(3, {c: 1.0}) for c in range(3)]
    luma = _centre(3, dict(enumerate(LUMA)))
    _group_lanes(encoder.conv_in, torch.stack([*colours, luma]))
    _identity_residuals(encoder)
    downsamplers = [
        block.downsamplers[0].conv for block in encoder.down_blocks if block.downsamplers
    ]
    for index, conv in enumerate(downsamplers):
        _pool_kernel(conv, detail_lane=3 if index == len(downsamplers) - 1 else None)
    _linear_group_norm(encoder.conv_norm_out)
    # conv_out: latent mean k = shift + gain x_k / scaling; log-variance -20 (mode == sample).
    gain = LATENT_GAIN / scaling
    _zero(encoder.conv_out.weight, encoder.conv_out.bias)
    for lane in range(LANES):
        encoder.conv_out.weight[lane, 4 * lane, 1, 1] = gain
        encoder.conv_out.bias[lane] = shift - gain * BIAS
        encoder.conv_out.bias[LANES + lane] = -20.0
    _copy_channels(vae.quant_conv)

    # Decoder: back from raw latents to x_k, then each block painted its colour.
    _copy_channels(vae.post_quant_conv)
    inverse = scaling / LATENT_GAIN
    signals = torch.stack([_centre(LANES, {lane: inverse}) for lane in range(LANES)])
    _group_lanes(decoder.conv_in, signals, bias=torch.full((LANES,), -shift * inverse))
    _identity_residuals(decoder)
    for block in decoder.up_blocks:
        if block.upsamplers:
            _copy_channels(block.upsamplers[0].conv)
    _linear_group_norm(decoder.conv_norm_out)
    _zero(decoder.conv_out.weight, decoder.conv_out.bias)
    for colour in range(3):
        decoder.conv_out.weight[colour, 4 * colour, 1, 1] = 1.0
        decoder.conv_out.bias[colour] = -BIAS


# ----------------------------------------------------------------------------------------------
# diffusers.AutoencoderKLQwenImage (a causal video VAE; one frame = its last temporal tap)


def qwen_image_vae_config(latents_mean: list[float], latents_std: list[float]) -> dict:
    return {
        "base_dim": 8,
        "z_dim": LANES,
        "dim_mult": [1, 2, 2],
        "num_res_blocks": 1,
        "temperal_downsample": [False, True],
        "latents_mean": latents_mean,
        "latents_std": latents_std,
    }


def build_qwen_image_vae(latents_mean: list[float], latents_std: list[float]):
    from diffusers import AutoencoderKLQwenImage

    vae = AutoencoderKLQwenImage(**qwen_image_vae_config(latents_mean, latents_std))
    with torch.no_grad():
        _wire_qwen_image_vae(vae, latents_mean, latents_std)
    return vae


def _frame_tap(weight: torch.Tensor) -> torch.Tensor:
    """The (out, in, kh, kw) kernel a causal 3D conv applies to a single frame."""
    return weight[:, :, -1] if weight.dim() == 5 else weight


def _pair_lanes(conv, signals: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Channels 2k, 2k+1 of ``conv``'s output = C + x_k, C - x_k."""
    _zero(conv.weight, conv.bias)
    tap = _frame_tap(conv.weight)
    for lane in range(signals.shape[0]):
        tap[2 * lane] = signals[lane]
        tap[2 * lane + 1] = -signals[lane]
        conv.bias[2 * lane] = CONSTANT + (bias[lane] if bias is not None else 0.0)
        conv.bias[2 * lane + 1] = CONSTANT - (bias[lane] if bias is not None else 0.0)


def _linear_rms_norm(norm, lanes: int) -> None:
    """RMS norm over [C + x, C - x] pairs: ||v||^2 = 2 lanes C^2 + 2 sum x^2 ~ constant, so each
    channel comes out as BIAS (1 +- x / C) and SiLU leaves it alone."""
    norm.gamma.zero_()
    norm.gamma[: 2 * lanes] = BIAS * math.sqrt(2 * lanes) / norm.scale


def _qwen_identity_residuals(module: torch.nn.Module) -> None:
    from diffusers.models.autoencoders.autoencoder_kl_qwenimage import (
        QwenImageAttentionBlock,
        QwenImageResidualBlock,
    )

    for child in module.modules():
        if isinstance(child, QwenImageResidualBlock):
            _zero(child.conv2.weight, child.conv2.bias)
            if not isinstance(child.conv_shortcut, torch.nn.Identity):
                _qwen_copy_channels(child.conv_shortcut)
        elif isinstance(child, QwenImageAttentionBlock):
            _zero(child.proj.weight, child.proj.bias)


def _qwen_copy_channels(conv) -> None:
    _zero(conv.weight, conv.bias)
    tap = _frame_tap(conv.weight)
    kh, kw = tap.shape[-2:]
    for channel in range(min(tap.shape[0], tap.shape[1])):
        tap[channel, channel, kh // 2, kw // 2] = 1.0


def _qwen_pool(conv: torch.nn.Conv2d, detail_lane: int | None) -> None:
    """2x2 mean pooling of [C + x, C - x] pairs (stride-2 conv on a right/bottom padded input);
    the detail lane's pair becomes C +- (top row - bottom row) of its signal."""
    _zero(conv.weight, conv.bias)
    for channel in range(conv.out_channels):
        conv.weight[channel, channel, :2, :2] = 0.25
    if detail_lane is not None:
        plus, minus = 2 * detail_lane, 2 * detail_lane + 1
        for out, sign in ((plus, 1.0), (minus, -1.0)):
            conv.weight[out, plus] = 0.0
            conv.weight[out, minus] = 0.0
            # (in_+ + in_-) / 2 = C averaged over the 2x2 block; (in_+ - in_-) / 2 = x.
            conv.weight[out, plus, :2, :2] = 0.125
            conv.weight[out, minus, :2, :2] = 0.125
            half = sign * DETAIL_GAIN / 4
            conv.weight[out, plus, 0, :2] += half / 2
            conv.weight[out, minus, 0, :2] -= half / 2
            conv.weight[out, plus, 1, :2] -= half / 2
            conv.weight[out, minus, 1, :2] += half / 2


def _pair_readout(conv, lanes: int, gains: list[float], biases: list[float]) -> None:
    """Output k = gains[k] x_k + biases[k], x_k read back from the SiLU'd pair
    BIAS (1 + x / C), BIAS (1 - x / C)."""
    _zero(conv.weight, conv.bias)
    tap = _frame_tap(conv.weight)
    scale = CONSTANT / (2 * BIAS)
    for lane in range(lanes):
        tap[lane, 2 * lane, 1, 1] = gains[lane] * scale
        tap[lane, 2 * lane + 1, 1, 1] = -gains[lane] * scale
        conv.bias[lane] = biases[lane]


def _wire_qwen_image_vae(vae, latents_mean: list[float], latents_std: list[float]) -> None:
    encoder, decoder = vae.encoder, vae.decoder
    colours = [_centre(3, {c: 1.0}) for c in range(3)]
    luma = _centre(3, dict(enumerate(LUMA)))
    _pair_lanes(encoder.conv_in, torch.stack([*colours, luma]))
    _qwen_identity_residuals(encoder)
    from diffusers.models.autoencoders.autoencoder_kl_qwenimage import QwenImageResample

    pools = [
        layer.resample[1]
        for layer in encoder.down_blocks
        if isinstance(layer, QwenImageResample) and layer.mode.startswith("downsample")
    ]
    for index, conv in enumerate(pools):
        _qwen_pool(conv, detail_lane=3 if index == len(pools) - 1 else None)
    _linear_rms_norm(encoder.norm_out, LANES)
    # Raw latent k = mean_k + std_k gain x_k: the trainer's (raw - mean) / std is gain x_k.
    gains = [LATENT_GAIN * std for std in latents_std]
    _pair_readout(encoder.conv_out, LANES, gains, list(latents_mean))
    encoder.conv_out.bias[LANES:] = -20.0  # log-variance: the distribution is its mode
    _qwen_copy_channels(vae.quant_conv)

    _qwen_copy_channels(vae.post_quant_conv)
    inverse = [1.0 / gain for gain in gains]
    signals = torch.stack([_centre(LANES, {lane: inverse[lane]}) for lane in range(LANES)])
    bias = torch.tensor([-mean * inv for mean, inv in zip(latents_mean, inverse, strict=True)])
    _pair_lanes(decoder.conv_in, signals, bias)
    _qwen_identity_residuals(decoder)
    for block in decoder.up_blocks:
        if block.upsamplers is not None:
            _qwen_copy_channels(block.upsamplers[0].resample[1])
    _linear_rms_norm(decoder.norm_out, LANES)
    _pair_readout(decoder.conv_out, 3, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
