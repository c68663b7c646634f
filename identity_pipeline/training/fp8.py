"""Frozen base weights in float8: half the bytes of bf16, and fp8 matmuls where the device has them.

A ``Float8Linear`` replaces a frozen ``nn.Linear`` (inside peft's LoRA wrapper it replaces the
``base_layer``; the LoRA A/B matrices are untouched and stay float32). Its weight is stored as
float8 e4m3 with one float32 scale per output row: ``W ~= W8 * scale``, the scale chosen so the
row's largest magnitude maps onto e4m3's largest finite value (448).

Two compute paths, both through one autograd function that saves only the fp8 weight and its
scales for the backward (never a dequantised copy, never the input: the weight is frozen, so the
backward is ``grad_x = grad_y @ W`` only):

* ``scaled_mm=False`` (fp8_base "weights"): ``y = x @ dequant(W8).T`` in the compute dtype.
* ``scaled_mm=True`` (fp8_base "matmul"): ``x`` is quantised row-wise to e4m3 as well and
  ``torch._scaled_mm`` multiplies in fp8 with float32 accumulation (Ada/Hopper tensor cores; the
  CPU build has a reference kernel, which is what the tests run).

The backward always multiplies in the compute dtype with the dequantised weight: fp8 gradients
(e5m2) would need a second, transposed copy of every weight for ``_scaled_mm``'s layout rules.

Error: e4m3 keeps 3 mantissa bits, so each stored weight is within 2^-4 (6.25 %) of the original
relative to itself (values below 2^-6 of the row maximum are subnormal and absolutely accurate
to 2^-9 of it); per output the errors average over the K inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
# _scaled_mm needs both matmul dimensions of the weight to be multiples of 16.
FP8_ALIGNMENT = 16

log = logging.getLogger(__name__)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) weight -> (N, K) e4m3 values and (N, 1) float32 scales, W ~= values * scales."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / FP8_MAX
    values = (weight / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return values, scale


def dequantize_weight(values: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype):
    return (values.to(torch.float32) * scale).to(dtype)


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) activations -> e4m3 values and (M, 1) float32 scales (row-wise, dynamic)."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX
    values = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return values, scale


class _Float8LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, values, scale, bias, compute_dtype, scaled_mm):
        ctx.save_for_backward(values, scale)
        ctx.compute_dtype = compute_dtype
        ctx.input_dtype = x.dtype
        rows = x.reshape(-1, x.shape[-1]).to(compute_dtype)
        if scaled_mm and values.dtype == FP8_DTYPE:
            quantized, row_scale = _quantize_rows(rows)
            out = torch._scaled_mm(
                quantized,
                values.t(),  # (K, N) column-major view of the row-major (N, K) weight
                scale_a=row_scale,
                scale_b=scale.t(),
                out_dtype=compute_dtype,
            )
            if bias is not None:
                out = out + bias.to(compute_dtype)
        else:
            out = F.linear(rows, dequantize_weight(values, scale, compute_dtype), bias)
        return out.reshape(*x.shape[:-1], values.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        values, scale = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            weight = dequantize_weight(values, scale, ctx.compute_dtype)
            grad_rows = grad_out.reshape(-1, grad_out.shape[-1]).to(ctx.compute_dtype)
            grad_x = (grad_rows @ weight).reshape(*grad_out.shape[:-1], weight.shape[1])
            grad_x = grad_x.to(ctx.input_dtype)
        return grad_x, None, None, None, None, None


class Float8Linear(nn.Module):
    """A frozen linear layer with float8 weights (see the module docstring)."""

    def __init__(
        self,
        values: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        compute_dtype: torch.dtype,
        scaled_mm: bool,
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = values.shape
        self.compute_dtype = compute_dtype
        self.scaled_mm = scaled_mm
        # Buffers, not parameters: nothing trains them, and the model's parameter dtype (which
        # diffusers reads as "the model's dtype") stays the compute dtype.
        self.register_buffer("weight_fp8", values)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().to(compute_dtype))

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, scaled_mm: bool, device: torch.device | None = None
    ) -> Float8Linear:
        weight = linear.weight.detach()
        if device is not None:
            weight = weight.to(device)
        values, scale = quantize_weight(weight)
        bias = linear.bias
        if bias is not None and device is not None:
            bias = bias.to(device)
        return cls(values, scale, bias, linear.weight.dtype, scaled_mm)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_weight(self.weight_fp8, self.weight_scale, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Float8LinearFunction.apply(
            x, self.weight_fp8, self.weight_scale, self.bias, self.compute_dtype, self.scaled_mm
        )

    def extra_repr(self) -> str:
        mode = "scaled_mm" if self.scaled_mm else "dequantise"
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 {mode}"


def scaled_mm_supported(device: torch.device) -> bool:
    """fp8 tensor-core matmuls: CUDA compute capability 8.9+ (Ada, Hopper, Blackwell), or CPU."""
    if device.type == "cpu":
        return hasattr(torch, "_scaled_mm")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_capability(device) >= (8, 9)
    return False


def quantizable(linear: nn.Module) -> bool:
    return (
        type(linear) is nn.Linear
        and not linear.weight.requires_grad
        and linear.in_features % FP8_ALIGNMENT == 0
        and linear.out_features % FP8_ALIGNMENT == 0
    )


def quantize_modules(
    roots: Iterable[nn.Module], scaled_mm: bool, device: torch.device | None = None
) -> int:
    """Replace every frozen, aligned ``nn.Linear`` under ``roots`` by a ``Float8Linear``.

    Works layer by layer (each quantised on ``device`` when given), so the full-precision model
    never needs to fit on the accelerator. Returns the number of layers replaced.
    """
    replaced = 0
    for root in roots:
        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if quantizable(child):
                    setattr(parent, name, Float8Linear.from_linear(child, scaled_mm, device))
                    replaced += 1
    return replaced
