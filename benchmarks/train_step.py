"""Time the trainer's own LoRA training step; optionally beside the shared diffusers+peft baseline.

    .venv/bin/python benchmarks/train_step.py MODEL RES [switches] [--compare] [--sweep]
    .venv/bin/python benchmarks/train_step.py qwen 1024 --preset fast --compare      # on a GPU
    .venv/bin/python benchmarks/train_step.py flux 64 --tiny --sweep                 # CPU, CI

MODEL is qwen (Qwen-Image 20B), flux (Flux.1-dev) or sdxl (SDXL base UNet), RES the square
image side in pixels. The denoiser is the real architecture with random weights
(``identity_pipeline.training.architectures``; ``--tiny``: the baseline script's tiny variants),
and the step is the trainer's: ``TrainingLoop.step`` with the family adapter, flow/DDPM objective,
masked loss, LoRA r16 on the attention projections (the baseline's targets), gradient clipping,
AdamW and the LR schedule, on synthetic latents/masks/text embeddings of the real shapes.

It times ``--steps`` steps after ``--warmup`` (compilation happens there), with no host sync
inside the timed steps, and prints s/step, peak GiB (``torch.cuda.max_memory_allocated`` after
warm-up, as the baseline does; CPU: none) and the options. Each configuration runs in its own
process (clean peak memory; a CUDA crash ends only its row). ``--compare`` also runs
``../shared/benchmarks/baseline_lora_step.py`` on the same machine and prints the ratios;
``--sweep`` runs the presets one after another.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.shared_data import BASELINE_LORA_STEP  # noqa: E402

BASELINE = BASELINE_LORA_STEP
RESULT_MARK = "TRAIN_STEP_RESULT "

# Switch sets worth timing. "fast" is the proposed default for a Hopper GPU.
PRESETS: dict[str, dict[str, object]] = {
    "plain": {},
    "fp8": {"fp8_base": "matmul"},
    "compile": {"compile": "blocks"},
    "fast": {"fp8_base": "matmul", "compile": "blocks", "fused_optimizer": True},
    # Flux and SDXL have memory to spare under fp8 (meta estimates: 20.4 / 5.4 GiB).
    "fast+ckpt75": {
        "fp8_base": "matmul",
        "compile": "blocks",
        "fused_optimizer": True,
        "checkpoint_fraction": 0.75,
    },
    "fast+save_attention": {
        "fp8_base": "matmul",
        "compile": "blocks",
        "fused_optimizer": True,
        "checkpoint_policy": "save_attention",
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=("qwen", "flux", "sdxl"))
    parser.add_argument("res", type=int, help="image side in pixels (a multiple of 16)")
    parser.add_argument("--tiny", action="store_true", help="tiny architectures (CPU, CI)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (12; tiny: 3)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bs", type=int, default=1)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="plain")
    parser.add_argument("--fp8", choices=("off", "weights", "matmul"))
    parser.add_argument("--compile", choices=("off", "blocks"))
    parser.add_argument("--compile-backend")
    parser.add_argument("--checkpoint-policy", choices=("full", "save_attention", "save_matmuls"))
    parser.add_argument("--checkpoint-fraction", type=float)
    parser.add_argument("--no-gc", action="store_true", help="no gradient checkpointing")
    parser.add_argument("--offload-blocks", type=int)
    parser.add_argument("--fused-optimizer", action="store_true", default=None)
    parser.add_argument(
        "--attention-backend", choices=("auto", "flash", "efficient", "cudnn", "math")
    )
    parser.add_argument("--contiguous-attention-grad", choices=("auto", "on", "off"))
    parser.add_argument(
        "--sync-debug", action="store_true", help="CUDA: raise on any host sync inside a step"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default 1)")
    parser.add_argument("--compare", action="store_true", help="also run the shared baseline")
    parser.add_argument("--baseline", default=str(BASELINE), help="baseline script path")
    parser.add_argument("--sweep", action="store_true", help="run every preset")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    return parser.parse_args(argv)


def speed_options(args: argparse.Namespace, preset: str) -> dict[str, object]:
    options = dict(PRESETS[preset])
    explicit = {
        "fp8_base": args.fp8,
        "compile": args.compile,
        "compile_backend": args.compile_backend,
        "checkpoint_policy": args.checkpoint_policy,
        "checkpoint_fraction": args.checkpoint_fraction,
        "offload_blocks": args.offload_blocks,
        "fused_optimizer": args.fused_optimizer,
        "attention_backend": args.attention_backend,
        "contiguous_attention_grad": args.contiguous_attention_grad,
    }
    options.update({key: value for key, value in explicit.items() if value is not None})
    return options


# ----------------------------------------------------------------------------------------------
# One configuration, in this process


def run_child(args: argparse.Namespace) -> dict[str, object]:
    import torch
    from accelerate import Accelerator

    from identity_pipeline.training.architectures import StepHarness, model_spec
    from identity_pipeline.training.config import TrainingConfig
    from identity_pipeline.training.speed import sync_free_check

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(args.threads or 1)
    speed = speed_options(args, args.preset)
    if not cuda and speed.get("compile") == "blocks" and "compile_backend" not in speed:
        speed["compile_backend"] = "aot_eager"  # inductor's C++ build takes minutes on 2 cores
    config = TrainingConfig.from_dict(
        {
            "data": {"manifest": "synthetic"},
            "batch_size": args.bs,
            "mixed_precision": "bf16" if cuda else "no",
            "gradient_checkpointing": not args.no_gc,
            "lora": {"rank": args.rank, "alpha": float(args.rank)},
            "optimizer": {"warmup_steps": 0},
            "speed": speed,
        }
    )
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not cuda)
    spec = model_spec(args.model, tiny=args.tiny)
    started = time.perf_counter()
    harness = StepHarness.create(spec, config, accelerator, args.res, num_samples=4)
    build_s = time.perf_counter() - started

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    losses = []
    warm_started = time.perf_counter()
    for _ in range(args.warmup):
        losses.append(harness.step())
    synchronize()
    warmup_s = time.perf_counter() - warm_started
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    steps = args.steps or (3 if args.tiny else 12)
    started = time.perf_counter()
    for _ in range(steps):
        if args.sync_debug:
            losses.append(sync_free_check(harness.step))
        else:
            losses.append(harness.step())
    synchronize()
    seconds = (time.perf_counter() - started) / steps
    final = [float(loss) for loss in losses]  # the one host readout, after timing
    return {
        "model": args.model,
        "res": args.res,
        "tiny": args.tiny,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "options": {"gc": not args.no_gc, **speed},
        "summary": harness.summary,
        "s_per_step": round(seconds, 4),
        "peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "build_s": round(build_s, 1),
        "warmup_s": round(warmup_s, 1),
        "loss_finite": all(math.isfinite(value) for value in final),
        "last_loss": round(final[-1], 4),
    }


# ----------------------------------------------------------------------------------------------
# Parent: one subprocess per configuration, then the table


def child_command(args: argparse.Namespace, preset: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), args.model, str(args.res)]
    command += ["--child", "--preset", preset, "--warmup", str(args.warmup)]
    command += ["--bs", str(args.bs), "--rank", str(args.rank)]
    pairs = {
        "--steps": args.steps,
        "--fp8": args.fp8,
        "--compile": args.compile,
        "--compile-backend": args.compile_backend,
        "--checkpoint-policy": args.checkpoint_policy,
        "--checkpoint-fraction": args.checkpoint_fraction,
        "--offload-blocks": args.offload_blocks,
        "--attention-backend": args.attention_backend,
        "--contiguous-attention-grad": args.contiguous_attention_grad,
        "--threads": args.threads,
    }
    for flag, value in pairs.items():
        if value is not None:
            command += [flag, str(value)]
    for flag, on in (
        ("--tiny", args.tiny),
        ("--no-gc", args.no_gc),
        ("--fused-optimizer", args.fused_optimizer),
        ("--sync-debug", args.sync_debug),
    ):
        if on:
            command.append(flag)
    return command


def run_process(command: list[str], timeout: int, marker: str | None) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    for line in reversed(done.stdout.splitlines()):
        if marker is None and line.startswith("{"):
            return json.loads(line)
        if marker is not None and line.startswith(marker):
            return json.loads(line[len(marker) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {done.returncode}: " + " | ".join(tail)[-400:]}


def run_baseline(args: argparse.Namespace) -> dict[str, object]:
    baseline = Path(args.baseline)
    if not baseline.is_file():
        return {"error": f"{baseline} not found"}
    command = [sys.executable, str(baseline), args.model, str(args.res)]
    command += ["--steps", str(args.steps or (3 if args.tiny else 12))]
    command += ["--rank", str(args.rank), "--bs", str(args.bs)]
    if args.tiny:
        command.append("--tiny")
    if args.no_gc:
        command.append("--no-gc")
    if args.model == "sdxl":
        command.append("--lora-bf16")  # as the anchor figure was measured
    return run_process(command, args.timeout, marker=None)


def format_table(rows: list[dict[str, object]], baseline: dict[str, object] | None) -> str:
    header = ["config", "device", "s/step", "peak GiB", "vs baseline s", "vs baseline GiB", "notes"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]

    def cell(value) -> str:
        return "-" if value is None else str(value)

    if baseline is not None:
        lines.append(
            " | ".join(
                [
                    "baseline (diffusers+peft)",
                    "same machine",
                    cell(baseline.get("s_per_step")),
                    cell(baseline.get("peak_GiB")),
                    "1.00",
                    "1.00",
                    cell(baseline.get("error", "")),
                ]
            )
        )
    for row in rows:
        ratio_s = ratio_mem = None
        if baseline and row.get("s_per_step") and baseline.get("s_per_step"):
            ratio_s = f"{float(row['s_per_step']) / float(baseline['s_per_step']):.2f}"
        if baseline and row.get("peak_GiB") and baseline.get("peak_GiB"):
            ratio_mem = f"{float(row['peak_GiB']) / float(baseline['peak_GiB']):.2f}"
        notes = row.get("error") or json.dumps(row.get("options"), separators=(",", ":"))
        lines.append(
            " | ".join(
                [
                    cell(row.get("preset")),
                    cell(row.get("device")),
                    cell(row.get("s_per_step")),
                    cell(row.get("peak_GiB")),
                    cell(ratio_s),
                    cell(ratio_mem),
                    str(notes),
                ]
            )
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        result = run_child(args)
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0
    presets = list(PRESETS) if args.sweep else [args.preset]
    rows = []
    for preset in presets:
        row = run_process(child_command(args, preset), args.timeout, RESULT_MARK)
        row["preset"] = preset
        rows.append(row)
        print(json.dumps(row), flush=True)
    baseline = run_baseline(args) if args.compare else None
    if baseline is not None:
        print(json.dumps({"baseline": baseline}), flush=True)
    title = f"{args.model} {args.res}{' (tiny)' if args.tiny else ''}, bs {args.bs}, r{args.rank}"
    print(f"\n{title}\n" + format_table(rows, baseline))
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
