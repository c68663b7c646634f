"""The LoRA trainer (issue 9): plain Python, runs standalone, never imports dagster.

    python -m identity_pipeline.training --config cfg.yaml
    accelerate launch -m identity_pipeline.training --config cfg.yaml

Modules: ``config`` (every knob), ``families`` (Qwen-Image, Flux, SD3, SDXL adapters),
``tiny_models`` (offline random-init models for tests and the demo), ``flow_matching``,
``losses``, ``data``, ``cache``, ``checkpoint``, ``trainer``, ``export``, ``samples``, ``pipes``;
issue 10's speed/memory switches: ``speed`` (applies ``TrainingConfig.speed``), ``fp8``,
``architectures`` (real/tiny denoiser configs, a trainer step on synthetic data), ``memory``
(meta-device memory estimates).
Heavy libraries are imported by the submodules, not here.
"""
