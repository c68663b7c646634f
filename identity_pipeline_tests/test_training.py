"""The LoRA trainer on tiny random models (CPU): losses, checkpoints, resume, export, families."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from identity_pipeline.training import checkpoint as ckpt
from identity_pipeline.training.config import LossConfig, TimestepConfig, TrainingConfig
from identity_pipeline.training.data import BatchSchedule, load_samples
from identity_pipeline.training.export import to_kohya
from identity_pipeline.training.flow_matching import (
    ShiftSchedule,
    add_noise,
    sample_timesteps,
)
from identity_pipeline.training.losses import mask_to_latent, masked_loss
from identity_pipeline.training.tiny_models import (
    QWEN_PROMPT_TEMPLATE,
    QWEN_TEMPLATE_PREFIX_TOKENS,
    build_qwen_tokenizer,
    save_tiny_model,
)
from identity_pipeline_tests.training_fixtures import write_manifest, write_training_set

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# Fixtures: one tiny model and one training set per module, shared by the slow tests.


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model("qwen-image", tmp_path_factory.mktemp("models") / "tiny-qwen-image")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("training_set")
    return write_manifest(write_training_set(root, count=6), root / "table.parquet")


def tiny_config(model_dir: Path, manifest: Path, output_dir: Path, **overrides) -> TrainingConfig:
    raw = {
        "output_dir": str(output_dir),
        "max_steps": 8,
        "mixed_precision": "no",
        "log_every_steps": 2,
        "export_dtype": "float32",
        "cpu_threads": 1,
        "model": {"family": "qwen-image", "source": str(model_dir)},
        "data": {"manifest": str(manifest), "max_text_tokens": 32},
        "lora": {"rank": 4, "alpha": 8},
        # A large step so 8 steps visibly change the model's output.
        "optimizer": {"learning_rate": 1e-2, "warmup_steps": 2},
        "checkpoint": {"every_steps": 4},
        "samples": {"seeds": [0, 1], "num_inference_steps": 2, "guidance_scale": 1.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return TrainingConfig.from_dict(raw)


# ----------------------------------------------------------------------------------------------
# Fast unit tests


def test_config_rejects_typos_and_round_trips(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown key"):
        TrainingConfig.from_dict({"data": {"manifest": "m.parquet"}, "lora": {"rnak": 4}})
    with pytest.raises(ValueError, match="t_min"):
        TrainingConfig.from_dict(
            {"data": {"manifest": "m"}, "timesteps": {"t_min": 0.9, "t_max": 0.1}}
        )
    path = tmp_path / "cfg.yaml"
    # PyYAML reads 1e-4 as a string; the loader must still take it as a number.
    path.write_text("data:\n  manifest: m.parquet\noptimizer:\n  learning_rate: 1e-4\n")
    config = TrainingConfig.load(path)
    assert config.optimizer.learning_rate == pytest.approx(1e-4)
    config.save(tmp_path / "again.yaml")
    assert TrainingConfig.load(tmp_path / "again.yaml") == config
    changed = TrainingConfig.load(path)
    changed.samples.seeds = [7]
    assert changed.fingerprint() == config.fingerprint()  # sampling does not change training
    changed.lora.rank = 8
    assert changed.fingerprint() != config.fingerprint()


def test_tiny_qwen_tokenizer_matches_the_pipeline_template() -> None:
    """The pipeline drops a fixed number of template tokens; the tiny tokenizer must agree."""
    from diffusers import QwenImagePipeline

    pipeline = QwenImagePipeline(
        scheduler=None, vae=None, text_encoder=None, tokenizer=None, transformer=None
    )
    assert pipeline.prompt_template_encode == QWEN_PROMPT_TEMPLATE
    assert pipeline.prompt_template_encode_start_idx == QWEN_TEMPLATE_PREFIX_TOKENS
    tokenizer = build_qwen_tokenizer()
    prefix = QWEN_PROMPT_TEMPLATE.split("{}")[0]
    assert len(tokenizer(prefix).input_ids) == QWEN_TEMPLATE_PREFIX_TOKENS


def test_resolution_shift_matches_the_inference_scheduler() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, max_image_seq_len=8192
    )
    schedule = ShiftSchedule.from_scheduler_config(dict(scheduler.config), TimestepConfig())
    assert schedule.kind == "resolution"
    t = torch.linspace(0.05, 0.95, 7)
    mu = schedule.mu(4096)
    expected = scheduler.time_shift(mu, 1.0, t)
    assert torch.allclose(schedule.apply(t, 4096), expected, atol=1e-6)
    # Larger images are pushed towards noise.
    assert (schedule.apply(t, 4096) > schedule.apply(t, 256)).all()


def test_timesteps_respect_range_and_noise_endpoints() -> None:
    config = TimestepConfig(t_min=0.2, t_max=0.7)
    generator = torch.Generator().manual_seed(0)
    t = sample_timesteps(
        4096, config, ShiftSchedule("fixed", 3.0), 64, generator, torch.device("cpu")
    )
    assert t.min() >= 0.2 and t.max() <= 0.7
    assert t.std() > 0.05  # a distribution, not a constant
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert torch.equal(add_noise(x0, noise, torch.zeros(2)), x0)
    assert torch.equal(add_noise(x0, noise, torch.ones(2)), noise)


def test_masked_loss_gives_zero_gradient_outside_the_mask() -> None:
    torch.manual_seed(0)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 3:6] = 1.0
    prediction = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randn(2, 4, 8, 8)
    loss = masked_loss(prediction, target, mask, LossConfig(background_weight=0.0)).loss
    (gradient,) = torch.autograd.grad(loss, prediction)
    outside = (mask == 0).expand_as(gradient)
    assert torch.count_nonzero(gradient[outside]) == 0
    assert torch.count_nonzero(gradient[~outside]) == gradient[~outside].numel()

    # Changing the target outside the mask changes nothing.
    other_target = torch.where(outside, torch.randn_like(target) * 100, target)
    again = masked_loss(prediction, other_target, mask, LossConfig(background_weight=0.0)).loss
    assert torch.equal(loss, again)

    # A background weight brings the outside back in, and prior preservation too.
    with_background = masked_loss(prediction, target, mask, LossConfig(background_weight=0.5))
    (gradient,) = torch.autograd.grad(with_background.loss, prediction)
    assert torch.count_nonzero(gradient[outside]) > 0
    prior = masked_loss(
        prediction,
        target,
        mask,
        LossConfig(background_weight=0.0, prior_preservation_weight=1.0),
        prior_prediction=torch.zeros_like(prediction),
    )
    (gradient,) = torch.autograd.grad(prior.loss, prediction)
    assert torch.count_nonzero(gradient[outside]) > 0


def test_masked_loss_normalises_by_mask_area() -> None:
    """A small face weighs as much as a large one: same per-pixel error, same loss."""
    error = torch.ones(2, 4, 16, 16)
    small, large = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    small[..., 7:9, 7:9] = 1
    large[..., 2:14, 2:14] = 1
    config = LossConfig(background_weight=0.0)
    terms = masked_loss(error, torch.zeros_like(error), torch.cat([small, large]), config)
    assert torch.allclose(terms.per_sample, torch.ones(2))


def test_mask_downsampling_keeps_zero_outside_and_soft_edges() -> None:
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:34, 16:34] = 1.0
    latent = mask_to_latent(mask, (16, 16))
    assert latent.shape == (1, 1, 16, 16)
    assert latent[..., :4, :].sum() == 0 and latent[..., 9:, :].sum() == 0
    assert latent[..., 5, 5] == 1.0
    assert 0 < latent[..., 8, 6] < 1  # the cell half covered by the mask edge


def test_batch_schedule_is_a_pure_function_of_the_step(manifest: Path) -> None:
    config = TrainingConfig.from_dict({"data": {"manifest": str(manifest)}})
    samples = load_samples(config.data)
    assert len(samples) == 6 and all(sample.bucket == (64, 64) for sample in samples)
    schedule = BatchSchedule(samples, batch_size=2, seed=3)
    sequence = [schedule.batch(k) for k in range(12)]
    fresh = BatchSchedule(samples, batch_size=2, seed=3)
    assert [fresh.batch(k) for k in reversed(range(12))] == list(reversed(sequence))
    epoch = [index for batch in schedule.epoch_batches(0) for index in batch]
    expected = [i for i, sample in enumerate(samples) for _ in range(sample.repeats)]
    assert sorted(epoch) == sorted(expected)  # every sample, `repeats` times


def test_checkpoint_round_trip_and_pointer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
    named = dict(model.named_parameters())
    state = ckpt.TrainerState(step=3, fingerprint="abc", losses=[1.0, 0.5, 0.25])
    path = ckpt.save_checkpoint(tmp_path, state, named, optimizer, scheduler, keep_last=1)
    (tmp_path / ".step-0000009.dead.tmp").mkdir()  # a killed run's staging folder
    ckpt.save_checkpoint(tmp_path, ckpt.TrainerState(step=4), named, optimizer, scheduler, 1)
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000004"
    assert not path.exists() and not (tmp_path / ".step-0000009.dead.tmp").exists()
    assert not list(tmp_path.glob("**/*.pt")) and not list(tmp_path.glob("**/*.bin"))

    clone = torch.nn.Linear(4, 3)
    clone_optimizer = torch.optim.AdamW(clone.parameters(), lr=0.1)
    clone_scheduler = torch.optim.lr_scheduler.LambdaLR(clone_optimizer, lambda s: 1 / (1 + s))
    restored = ckpt.load_checkpoint(
        ckpt.latest_checkpoint(tmp_path),
        dict(clone.named_parameters()),
        clone_optimizer,
        clone_scheduler,
    )
    assert restored.step == 4
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters(), strict=True)
    )
    assert clone_scheduler.state_dict() == scheduler.state_dict()
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(clone_optimizer.state_dict()["state"][0][key], value)


def test_trainer_never_imports_dagster() -> None:
    """The trainer runs standalone; only the optional, dependency-free dagster_pipes is allowed."""
    code = (
        "import sys, identity_pipeline.training.__main__, identity_pipeline.training.trainer;"
        "bad = [m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_kohya_keys() -> None:
    state = {
        "transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 8),
        "transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(8, 4),
    }
    converted = to_kohya(state, "lora_unet", alpha=8.0)
    assert set(converted) == {
        "lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight",
        "lora_unet_transformer_blocks_0_attn_to_q.lora_up.weight",
        "lora_unet_transformer_blocks_0_attn_to_q.alpha",
    }
    assert float(converted["lora_unet_transformer_blocks_0_attn_to_q.alpha"]) == 8.0


# ----------------------------------------------------------------------------------------------
# The loss through the real model: pixels outside the mask do not reach the LoRA's gradient.


def test_lora_gradient_ignores_targets_outside_the_mask(tiny_qwen: Path) -> None:
    from identity_pipeline.training.families import LoadOptions, get_adapter
    from identity_pipeline.training.trainer import add_lora

    adapter = get_adapter("qwen-image")
    options = LoadOptions(str(tiny_qwen))
    adapter.read_configs(options)
    denoiser = adapter.load_denoiser(options, torch.float32)
    config = TrainingConfig.from_dict({"data": {"manifest": "unused"}, "lora": {"rank": 2}})
    lora = add_lora(denoiser, adapter, config)
    _randomize_lora_b(lora)  # B starts at zero; non-zero, every LoRA weight gets a gradient
    torch.manual_seed(0)
    noisy = torch.randn(1, 4, 8, 8)
    text = {"prompt_embeds": torch.randn(1, 5, 32), "prompt_embeds_mask": None}
    pixel_mask = torch.zeros(1, 1, 32, 32)
    pixel_mask[..., 8:20, 4:16] = 1.0
    mask = mask_to_latent(pixel_mask, (8, 8))
    target = torch.randn(1, 4, 8, 8)

    def lora_gradients(target_tensor: torch.Tensor) -> list[torch.Tensor]:
        denoiser.zero_grad(set_to_none=True)
        prediction = adapter.predict(denoiser, noisy, torch.tensor([0.5]), text, 1.0, (32, 32))
        masked_loss(
            prediction, target_tensor, mask, LossConfig(background_weight=0.0)
        ).loss.backward()
        # The last block's text-stream output feeds nothing: its LoRA gets no gradient at all.
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in lora.values()]

    reference = lora_gradients(target)
    scrambled = torch.where(mask.expand_as(target) == 0, torch.randn_like(target) * 50, target)
    assert any(gradient.abs().sum() > 0 for gradient in reference)
    for expected, actual in zip(reference, lora_gradients(scrambled), strict=True):
        assert torch.allclose(expected, actual, atol=1e-6)
    # Control: the same change inside the mask does move the gradient.
    inside = torch.where(mask.expand_as(target) > 0, torch.randn_like(target) * 50, target)
    moved = lora_gradients(inside)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(reference, moved, strict=True))


def _randomize_lora_b(parameters: dict[str, torch.nn.Parameter]) -> None:
    with torch.no_grad():
        for name, parameter in parameters.items():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.1)


def test_prior_target_is_the_base_model_without_the_lora(tiny_qwen: Path) -> None:
    """Prior preservation's target: with adapters disabled, the model is the base model again."""
    from identity_pipeline.training.families import LoadOptions, get_adapter
    from identity_pipeline.training.trainer import add_lora

    adapter = get_adapter("qwen-image")
    options = LoadOptions(str(tiny_qwen))
    adapter.read_configs(options)
    denoiser = adapter.load_denoiser(options, torch.float32)
    torch.manual_seed(1)
    inputs = (torch.randn(1, 4, 8, 8), torch.tensor([0.3]))
    text = {"prompt_embeds": torch.randn(1, 5, 32), "prompt_embeds_mask": None}
    with torch.no_grad():
        base = adapter.predict(denoiser, *inputs, text, 1.0, (32, 32))
        config = TrainingConfig.from_dict({"data": {"manifest": "unused"}, "lora": {"rank": 2}})
        _randomize_lora_b(add_lora(denoiser, adapter, config))
        adapted = adapter.predict(denoiser, *inputs, text, 1.0, (32, 32))
        denoiser.disable_adapters()
        disabled = adapter.predict(denoiser, *inputs, text, 1.0, (32, 32))
        denoiser.enable_adapters()
    assert not torch.allclose(adapted, base, atol=1e-4)
    assert torch.allclose(disabled, base, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def trained(tiny_qwen: Path, manifest: Path, tmp_path_factory: pytest.TempPathFactory):
    from identity_pipeline.training.trainer import train

    output = tmp_path_factory.mktemp("run") / "out"
    config = tiny_config(tiny_qwen, manifest, output)
    return config, train(config)


@pytest.mark.slow
def test_training_run_writes_everything(trained, tiny_qwen: Path, manifest: Path) -> None:
    config, result = trained
    output = Path(config.output_dir)
    assert result.steps == 8 and result.resumed_from_step == 0
    assert (
        len(
            ckpt.TrainerState(
                **json.loads((output / "checkpoints" / "step-0000008" / "state.json").read_text())
            ).losses
        )
        == 8
    )
    assert result.final_loss is not None and np.isfinite(result.final_loss)
    assert Path(result.lora_path).is_file() and Path(result.comfyui_lora_path).is_file()
    saved_config = TrainingConfig.load(result.config_path)
    assert saved_config == config
    with Image.open(result.loss_curve_path) as curve:
        assert curve.size == (640, 320)
    assert set(result.samples) == {"A photo of Alice", "A photo of Bob"}
    assert all(
        len(paths) == 2 and all(Path(p).is_file() for p in paths)
        for paths in result.samples.values()
    )
    assert json.loads((output / "result.json").read_text())["steps"] == 8
    cached = list((output / "cache").glob("*/latents/64x64/*.safetensors"))
    assert len(cached) == 6  # train split only; the holdout row is not cached
    peft_keys = set(load_file(result.lora_path))
    assert peft_keys and all(key.startswith("transformer.") for key in peft_keys)
    assert not any(
        "attn.to_q" in key and "lora_A" not in key and "lora_B" not in key for key in peft_keys
    )


@pytest.mark.slow
def test_rerun_at_max_steps_resumes_instead_of_retraining(trained, capfd) -> None:
    from identity_pipeline.training.trainer import train

    config, first = trained
    again = train(config)
    err = capfd.readouterr().err
    assert again.resumed_from_step == 8 and again.steps == 8
    assert "cached" not in err  # latents and text embeddings come from the cache
    assert load_file(again.lora_path).keys() == load_file(first.lora_path).keys()
    for key, value in load_file(first.lora_path).items():
        assert torch.equal(load_file(again.lora_path)[key], value)


@pytest.mark.slow
def test_exported_lora_loads_into_a_pipeline_and_changes_its_output(trained, tiny_qwen) -> None:
    from diffusers import QwenImagePipeline

    config, result = trained
    pipe = QwenImagePipeline.from_pretrained(tiny_qwen)
    pipe.set_progress_bar_config(disable=True)

    def render() -> np.ndarray:
        image = pipe(
            prompt="A photo of Alice",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
        ).images[0]
        return image

    base = render()
    pipe.load_lora_weights(
        str(Path(result.lora_path).parent), weight_name=Path(result.lora_path).name
    )
    with_lora = render()
    assert np.abs(with_lora - base).mean() > 1e-3, "the LoRA does not change the output"

    # The exported LoRA is the trained one: it reproduces the sample rendered during training.
    with Image.open(result.samples["A photo of Alice"][0]) as sample:
        trained_sample = np.asarray(sample, dtype=np.float32) / 255.0
    assert np.abs(with_lora - trained_sample).max() <= 2 / 255

    # The ComfyUI/kohya copy holds the same adapter: loaded by diffusers, same pixels.
    pipe.unload_lora_weights()
    assert np.allclose(render(), base, atol=1e-6)
    pipe.load_lora_weights(
        str(Path(result.comfyui_lora_path).parent), weight_name=Path(result.comfyui_lora_path).name
    )
    assert np.allclose(render(), with_lora, atol=1e-5)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(
    tiny_qwen: Path, manifest: Path, tmp_path: Path
) -> None:
    from identity_pipeline.training.trainer import train

    common = {
        "max_steps": 16,
        "log_every_steps": 4,
        "checkpoint": {"every_steps": 2, "keep_last": 2},
        "samples": {"enabled": False},
        "data": {"cache_dir": str(tmp_path / "cache")},
        "lora": {"dropout": 0.1},  # exercises the per-step reseeding of the global RNG
    }
    reference = train(tiny_config(tiny_qwen, manifest, tmp_path / "reference", **common))

    killed_config = tiny_config(tiny_qwen, manifest, tmp_path / "killed", **common)
    config_path = killed_config.save(tmp_path / "killed.yaml")
    command = [sys.executable, "-m", "identity_pipeline.training", "--config", str(config_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            latest = ckpt.latest_checkpoint(checkpoints)
            if latest is not None and ckpt.read_state(latest).step >= 4:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the trainer finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    interrupted_at = ckpt.read_state(ckpt.latest_checkpoint(checkpoints)).step
    assert 4 <= interrupted_at < 16
    assert not (tmp_path / "killed" / "result.json").exists()

    resumed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert result["resumed_from_step"] >= interrupted_at
    expected = load_file(
        str(Path(reference.output_dir) / "checkpoints" / "step-0000016" / "lora.safetensors")
    )
    actual = load_file(str(checkpoints / "step-0000016" / "lora.safetensors"))
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.allclose(expected[key], actual[key], rtol=1e-5, atol=1e-7), key
    moments_expected = load_file(
        str(Path(reference.output_dir) / "checkpoints" / "step-0000016" / "optimizer.safetensors")
    )
    moments_actual = load_file(str(checkpoints / "step-0000016" / "optimizer.safetensors"))
    for key in moments_expected:
        assert torch.allclose(moments_expected[key], moments_actual[key], rtol=1e-5, atol=1e-8), key
    reference_losses = ckpt.read_state(
        Path(reference.output_dir) / "checkpoints" / "step-0000016"
    ).losses
    resumed_losses = ckpt.read_state(checkpoints / "step-0000016").losses
    assert np.allclose(reference_losses, resumed_losses, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux", "sd3", "sdxl"])
def test_other_families_train_and_export(family: str, manifest: Path, tmp_path: Path) -> None:
    """Two steps per family; the exported LoRA loads into the family's pipeline and changes it."""
    import diffusers

    from identity_pipeline.training.trainer import train

    model = save_tiny_model(family, tmp_path / f"tiny-{family}")
    config = tiny_config(
        model,
        manifest,
        tmp_path / "out",
        max_steps=2,
        model={"family": family},
        samples={"enabled": False},
        optimizer={"learning_rate": 5e-2, "warmup_steps": 0},
        # Exercises the frozen-base forward (adapters switched off) on every denoiser type.
        loss={"prior_preservation_weight": 0.5},
    )
    result = train(config)
    assert result.steps == 2 and np.isfinite(result.final_loss)
    pipe = diffusers.DiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {
        "prompt": "A photo of Alice",
        "num_inference_steps": 2,
        "height": 64,
        "width": 64,
        "output_type": "np",
    }
    base = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0)).images[0]
    pipe.load_lora_weights(
        str(Path(result.lora_path).parent), weight_name=Path(result.lora_path).name
    )
    with_lora = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert np.abs(with_lora - base).mean() > 1e-4
    kohya = load_file(result.comfyui_lora_path)
    assert any(key.endswith(".alpha") for key in kohya)
    assert all(key.startswith(get_prefix(family)) for key in kohya)


def get_prefix(family: str) -> str:
    from identity_pipeline.training.families import get_adapter

    return get_adapter(family).kohya_prefix + "_"
