"""Issue 10's speed/memory switches: each one against the plain path on tiny models (CPU).

Tolerances (stated once, used below):

* exact switches (checkpointing plans and policies, no checkpointing, block offload, regional
  compilation traced with ``aot_eager``, the attention guard): loss within 1e-5 relative, LoRA
  gradients within 1e-4 relative L2 (float32 reduction order only);
* fp8 base weights ("weights" and "matmul"): loss within 1e-2 relative, LoRA gradients within
  0.10 relative L2 and cosine similarity >= 0.99 (e4m3 keeps 3 mantissa bits: each weight is
  within 2^-4 of itself; measured here: 4-6 % gradient error, < 0.1 % loss error);
* fused AdamW: LoRA weights after two full steps within 1e-6 relative L2 of foreach AdamW
  (measured: 5e-8, float32 summation order).

Inductor compilation is not run here (a C++ build per block takes about a minute on 2 cores);
``aot_eager`` runs the same dynamo capture and AOT autograd graphs, eagerly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from identity_pipeline.training.architectures import StepHarness, model_spec
from identity_pipeline.training.config import TrainingConfig
from identity_pipeline.training.fp8 import (
    FP8_MAX,
    Float8Linear,
    dequantize_weight,
    quantize_weight,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
EXACT_LOSS, EXACT_GRAD = 1e-5, 1e-4
FP8_LOSS, FP8_GRAD, FP8_COSINE = 1e-2, 0.10, 0.99
RESOLUTION = 64  # an 8x8 latent: 16 image tokens for the transformers


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine
    yield Accelerator(cpu=True, mixed_precision="no")
    torch.set_num_threads(threads)


def speed_config(speed: dict | None = None, **overrides) -> TrainingConfig:
    raw = {
        "data": {"manifest": "unused"},
        "mixed_precision": "no",
        "lora": {"rank": 4, "alpha": 4.0},
        "optimizer": {"warmup_steps": 0, "learning_rate": 1e-2},
        "speed": speed or {},
    }
    raw.update(overrides)
    return TrainingConfig.from_dict(raw)


def _nonzero_lora_b(parameters: dict[str, torch.nn.Parameter]) -> None:
    """LoRA B starts at zero; non-zero, every LoRA matrix gets a gradient."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in parameters.items():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def loss_and_grads(model: str, accelerator, speed=None, **overrides):
    harness = StepHarness.create(
        model_spec(model, tiny=True),
        speed_config(speed, **overrides),
        accelerator,
        RESOLUTION,
        lora_hook=_nonzero_lora_b,
    )
    loss, grads = harness.loss_and_grads()
    return harness, loss, grads


def compare(reference, candidate) -> tuple[float, float, float]:
    """(relative loss error, relative L2 gradient error, gradient cosine similarity)."""
    (loss_a, grads_a), (loss_b, grads_b) = reference, candidate
    assert grads_a.keys() == grads_b.keys()
    flat_a = torch.cat([grads_a[name].flatten() for name in grads_a])
    flat_b = torch.cat([grads_b[name].flatten() for name in grads_a])
    assert flat_a.norm() > 0, "the reference gradient is zero: the comparison would be vacuous"
    loss_error = float((loss_a - loss_b).abs() / loss_a.abs())
    grad_error = float((flat_a - flat_b).norm() / flat_a.norm())
    cosine = float(F.cosine_similarity(flat_a, flat_b, dim=0))
    return loss_error, grad_error, cosine


_PLAIN: dict[str, tuple] = {}


def plain(model: str, accelerator):
    if model not in _PLAIN:
        _, loss, grads = loss_and_grads(model, accelerator)
        _PLAIN[model] = (loss, grads)
    return _PLAIN[model]


# ----------------------------------------------------------------------------------------------
# fp8 weights


def test_fp8_weight_error_is_within_e4m3_rounding() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 96) * torch.logspace(-3, 1, 64).view(-1, 1)  # rows of any scale
    values, scale = quantize_weight(weight)
    assert values.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    restored = dequantize_weight(values, scale, torch.float32)
    row_max = weight.abs().amax(dim=1, keepdim=True)
    normal = weight.abs() >= row_max * 2**-6  # e4m3's normal range below the row maximum
    relative = (restored - weight).abs() / weight.abs()
    assert relative[normal].max() <= 2**-4 + 1e-6
    # Subnormals: absolutely accurate to half e4m3's smallest step, 2^-10 of the 448 range.
    assert ((restored - weight).abs()[~normal] <= row_max.expand_as(weight)[~normal] * 2**-10).all()
    # The row maximum maps onto 448 exactly (up to the float32 rounding of the scale).
    assert torch.allclose(restored.abs().amax(dim=1, keepdim=True), row_max, rtol=1e-6)
    assert float(values.float().abs().max()) == FP8_MAX


def test_fp8_linear_forward_backward_and_what_it_saves() -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 48).requires_grad_(False)
    x = torch.randn(2, 5, 64, requires_grad=True)
    grad_out = torch.randn(2, 5, 48)

    dequantising = Float8Linear.from_linear(linear, scaled_mm=False)
    reference_weight = dequantising.dequantized_weight()
    y = dequantising(x)
    (grad_x,) = torch.autograd.grad(y, x, grad_out)
    x_ref = x.detach().requires_grad_()
    y_ref = F.linear(x_ref, reference_weight, linear.bias)
    (grad_ref,) = torch.autograd.grad(y_ref, x_ref, grad_out)
    assert torch.allclose(y, y_ref, atol=1e-6) and torch.allclose(grad_x, grad_ref, atol=1e-6)

    # fp8 matmul (torch._scaled_mm): the same as quantising x per row and multiplying exactly.
    fp8_mm = Float8Linear.from_linear(linear, scaled_mm=True)
    y_mm = fp8_mm(x)
    rows = x.detach().reshape(-1, 64)
    row_scale = rows.abs().amax(dim=1, keepdim=True) / FP8_MAX
    rows_q = (rows / row_scale).to(torch.float8_e4m3fn).float() * row_scale
    emulated = F.linear(rows_q, reference_weight, linear.bias).reshape(2, 5, 48)
    assert torch.allclose(y_mm, emulated, rtol=1e-5, atol=1e-5)
    assert float((y_mm - y_ref).detach().norm() / y_ref.detach().norm()) < 0.05
    (grad_mm,) = torch.autograd.grad(y_mm, x, grad_out)
    assert torch.allclose(grad_mm, grad_ref, atol=1e-6)  # the backward is the dequantised one

    # Only the fp8 weight and its scales are kept for the backward: no input, no bf16 copy.
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fp8_mm(x)
    assert {t.dtype for t in saved} == {torch.float8_e4m3fn, torch.float32}
    assert sum(t.numel() for t in saved) == 48 * 64 + 48


# ----------------------------------------------------------------------------------------------
# Each switch against the plain path, per family

EXACT_SWITCHES = {
    "save_attention": {"checkpoint_policy": "save_attention"},
    "save_matmuls": {"checkpoint_policy": "save_matmuls"},
    "half_checkpointed": {"checkpoint_fraction": 0.5},
    "offload_one_block": {"offload_blocks": 1},
    "attention_guard": {"contiguous_attention_grad": "on", "attention_backend": "math"},
}


@pytest.mark.parametrize("model", ["qwen", "flux", "sdxl"])
def test_exact_switches_match_the_plain_path(model: str, accelerator) -> None:
    reference = plain(model, accelerator)
    for name, speed in EXACT_SWITCHES.items():
        harness, loss, grads = loss_and_grads(model, accelerator, speed)
        loss_error, grad_error, _ = compare(reference, (loss, grads))
        assert loss_error <= EXACT_LOSS and grad_error <= EXACT_GRAD, (name, loss_error, grad_error)
    _, loss, grads = loss_and_grads(model, accelerator, gradient_checkpointing=False)
    loss_error, grad_error, _ = compare(reference, (loss, grads))
    assert loss_error <= EXACT_LOSS and grad_error <= EXACT_GRAD, ("no checkpointing", grad_error)


@pytest.mark.parametrize("model", ["qwen", "flux", "sdxl"])
@pytest.mark.parametrize("mode", ["weights", "matmul"])
def test_fp8_base_matches_the_plain_path_within_tolerance(model, mode, accelerator) -> None:
    reference = plain(model, accelerator)
    harness, loss, grads = loss_and_grads(model, accelerator, {"fp8_base": mode})
    assert harness.summary["fp8_layers"] > 0
    assert harness.summary["fp8_scaled_mm"] is (mode == "matmul")
    loss_error, grad_error, cosine = compare(reference, (loss, grads))
    assert loss_error <= FP8_LOSS, loss_error
    assert grad_error <= FP8_GRAD and cosine >= FP8_COSINE, (grad_error, cosine)
    assert grad_error > 0  # the weights really are fp8
    fp8_layers = [m for m in harness.denoiser.modules() if isinstance(m, Float8Linear)]
    assert all(m.weight_fp8.dtype == torch.float8_e4m3fn for m in fp8_layers)
    lora = [p for n, p in harness.denoiser.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora)


def test_regional_compilation_matches_the_plain_path(accelerator) -> None:
    model = "flux"  # both kinds of repeated block (double- and single-stream)
    reference = plain(model, accelerator)
    speed = {"compile": "blocks", "compile_backend": "aot_eager"}
    harness, loss, grads = loss_and_grads(model, accelerator, speed)
    compiled = [m for m in harness.denoiser.modules() if getattr(m, "_compiled_call_impl", None)]
    assert compiled, "no block was compiled"
    loss_error, grad_error, _ = compare(reference, (loss, grads))
    assert loss_error <= EXACT_LOSS and grad_error <= EXACT_GRAD, (loss_error, grad_error)


def test_offloaded_blocks_hold_host_copies_between_uses(accelerator) -> None:
    harness, _, _ = loss_and_grads("qwen", accelerator, {"offload_blocks": 1})
    first = harness.denoiser.transformer_blocks[0]
    frozen = [p for p in first.parameters() if not p.requires_grad]
    assert frozen and all(p.device.type == "cpu" for p in frozen)
    assert first._forward_pre_hooks and first._forward_hooks
    assert not harness.denoiser.transformer_blocks[1]._forward_pre_hooks


def test_fused_optimizer_matches_foreach_adamw(accelerator) -> None:
    weights = []
    for fused in (False, True):
        harness = StepHarness.create(
            model_spec("qwen", tiny=True),
            speed_config({"fused_optimizer": fused}),
            accelerator,
            RESOLUTION,
            lora_hook=_nonzero_lora_b,
        )
        initial = torch.cat([p.detach().flatten() for p in harness.lora_parameters.values()])
        harness.step()
        harness.step()
        weights.append({n: p.detach().clone() for n, p in harness.lora_parameters.items()})
    flat = [torch.cat([w[name].flatten() for name in weights[0]]) for w in weights]
    assert float((flat[0] - flat[1]).norm() / flat[0].norm()) <= 1e-6
    assert not torch.equal(flat[1], initial)  # the steps did update the LoRA


def test_flux_attention_gets_a_contiguous_output_gradient(accelerator, monkeypatch) -> None:
    """The Flux crash's precondition: a strided gradient reaching the attention kernel."""
    layouts: list[bool] = []
    original = F.scaled_dot_product_attention

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        if out.requires_grad:
            # diffusers passes (B, H, S, D) views of (B, S, H, D) tensors and permutes back.
            out.register_hook(lambda g: layouts.append(g.transpose(1, 2).is_contiguous()))
        return out

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    loss_and_grads("flux", accelerator, {"contiguous_attention_grad": "off"})
    assert False in layouts, "expected the single-stream block's strided gradient"
    layouts.clear()
    loss_and_grads("flux", accelerator)  # "auto": on for Flux
    assert layouts and all(layouts)


def test_defaults_keep_the_plain_path_and_the_fingerprint(accelerator) -> None:
    config = speed_config()
    raw = config.to_dict()
    raw.pop("speed")
    assert TrainingConfig.from_dict(raw).fingerprint() == config.fingerprint()
    assert speed_config({"compile": "blocks"}).fingerprint() == config.fingerprint()
    assert speed_config({"fp8_base": "weights"}).fingerprint() != config.fingerprint()
    with pytest.raises(ValueError, match="checkpoint_fraction"):
        speed_config({"checkpoint_fraction": 1.5})
    harness, _, _ = loss_and_grads("flux", accelerator)
    from identity_pipeline.training.speed import CheckpointPlan

    functions = {
        type(module._gradient_checkpointing_func)
        for module in harness.denoiser.modules()
        if getattr(module, "gradient_checkpointing", False)
    }
    assert functions and CheckpointPlan not in functions  # diffusers' own function


def test_memory_estimate_orders_the_modes() -> None:
    from identity_pipeline.training.memory import MODES, estimate

    modes = {mode.name: mode for mode in MODES}
    rows = {name: estimate("qwen", 128, modes[name], tiny=True) for name in modes}
    base = rows["baseline"]
    assert 0.4 < rows["fp8"].weights_gib / base.weights_gib < 0.75
    assert rows["bf16 no-ckpt"].saved_gib > base.saved_gib
    assert rows["fp8+save_matmuls"].saved_gib > rows["fp8+save_attention"].saved_gib
    assert rows["fp8+save_attention"].saved_gib > rows["fp8"].saved_gib
    assert rows["fp8+offload8"].weights_gib <= rows["fp8"].weights_gib
    assert all(row.peak_gib > 0 for row in rows.values())


# ----------------------------------------------------------------------------------------------
# The benchmark scripts


def test_benchmark_tiny_mode_prints_a_table() -> None:
    command = [
        sys.executable,
        "benchmarks/train_step.py",
        "flux",
        "64",
        "--tiny",
        "--preset",
        "fp8",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--compare",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout.split("flux 64 (tiny)")[-1]
    assert "config | device | s/step | peak GiB" in table
    assert "baseline (diffusers+peft)" in table
    fast = next(line for line in table.splitlines() if line.startswith("fp8 |"))
    assert '"fp8_base":"matmul"' in fast and float(fast.split(" | ")[2]) > 0


def test_memory_estimate_script_runs_tiny() -> None:
    command = [
        sys.executable,
        "benchmarks/memory_estimate.py",
        "--tiny",
        "--models",
        "sdxl:64",
        "--modes",
        "fp8",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ESTIMATES" in done.stdout
    assert len([line for line in done.stdout.splitlines() if line.startswith("sdxl |")]) == 1


# ----------------------------------------------------------------------------------------------
# The trainer itself with the switches on


def test_trainer_runs_with_speed_switches(tmp_path: Path) -> None:
    """``train()`` end to end: fp8 base, partial checkpointing, offload, fused AdamW, samples."""
    import numpy as np
    from safetensors.torch import load_file

    from identity_pipeline.training.tiny_models import save_tiny_model
    from identity_pipeline.training.trainer import train
    from identity_pipeline_tests.training_fixtures import write_manifest, write_training_set

    model = save_tiny_model("qwen-image", tmp_path / "tiny-qwen-image")
    root = tmp_path / "set"
    manifest = write_manifest(write_training_set(root, count=3), root / "table.parquet")
    config = TrainingConfig.from_dict(
        {
            "output_dir": str(tmp_path / "out"),
            "max_steps": 2,
            "mixed_precision": "no",
            "log_every_steps": 1,
            "cpu_threads": 1,
            "model": {"family": "qwen-image", "source": str(model)},
            "data": {"manifest": str(manifest), "max_text_tokens": 32},
            "lora": {"rank": 4, "alpha": 4.0},
            "samples": {"seeds": [0], "num_inference_steps": 2, "guidance_scale": 1.0},
            "speed": {
                "fp8_base": "matmul",
                "checkpoint_fraction": 0.5,
                "checkpoint_policy": "save_attention",
                "offload_blocks": 1,
                "fused_optimizer": True,
            },
        }
    )
    result = train(config)
    assert result.steps == 2 and np.isfinite(result.final_loss)
    assert all(Path(p).is_file() for paths in result.samples.values() for p in paths)
    exported = load_file(result.lora_path)
    assert exported and all("lora_A" in key or "lora_B" in key for key in exported)
