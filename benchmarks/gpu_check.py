"""The GPU check in one call: the shared baseline beside the trainer's presets, within a time budget.

    .venv/bin/python benchmarks/gpu_check.py                 # one H100: fits in --budget (480 s)
    .venv/bin/python benchmarks/gpu_check.py --tiny          # the same plan, tiny models, on CPU

For each configuration (Qwen-Image 1024^2 and 1328^2, Flux.1-dev 1024^2, SDXL 1024^2; real
architectures, random weights) it runs ``../shared/benchmarks/baseline_lora_step.py`` (plain
diffusers + peft) and the trainer's own step (``benchmarks/train_step.py``: the trainer's
``TrainingLoop.step``) with the presets ``plain`` and ``fast`` (fp8 matmuls + regional compile +
fused AdamW), each in its own process, and prints s/step and peak GiB side by side with the
ratios to the baseline. Every process gets what is left of the budget as its timeout, in
priority order (baselines and ``plain`` first, ``fast`` after), so the whole check ends within
``--budget`` seconds and says which rows it had no time for.

``--tiny``: the baseline script's tiny variants at ``--tiny-res`` on the CPU (no peak memory),
to verify the plan, the processes and the table without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import train_step  # noqa: E402

CONFIGS = (("qwen", 1024), ("flux", 1024), ("sdxl", 1024), ("qwen", 1328))
NAMES = {"qwen": "Qwen-Image", "flux": "Flux.1-dev", "sdxl": "SDXL"}
PRESETS = ("plain", "fast")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU")
    parser.add_argument("--tiny-res", type=int, default=64)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for everything")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compile)")
    parser.add_argument("--baseline", default=str(train_step.BASELINE))
    parser.add_argument("--json", help="also write every row to this JSON file")
    return parser.parse_args(argv)


def step_args(model: str, res: int, args: argparse.Namespace) -> argparse.Namespace:
    """train_step's own arguments for one configuration."""
    argv = [model, str(res), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    argv += ["--baseline", args.baseline]
    if args.tiny:
        argv.append("--tiny")
    return train_step.parse_args(argv)


def resolution(res: int, args: argparse.Namespace) -> int:
    """The side actually run: tiny mode scales 1024 to --tiny-res (multiples of 16)."""
    if not args.tiny:
        return res
    return max(16, round(res * args.tiny_res / 1024 / 16) * 16)


def plan(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """(model, nominal resolution, baseline | preset) in priority order."""
    first = [(m, r, kind) for m, r in CONFIGS for kind in ("baseline", "plain")]
    later = [(m, r, preset) for m, r in CONFIGS for preset in PRESETS if preset != "plain"]
    return first + later


def run(args: argparse.Namespace) -> dict[tuple[str, int], dict[str, dict]]:
    """{(model, nominal resolution): {baseline | preset: row}}."""
    deadline = time.monotonic() + args.budget
    results: dict[tuple[str, int], dict[str, dict]] = {}
    for model, nominal, kind in plan(args):
        res = resolution(nominal, args)
        left = deadline - time.monotonic()
        row_args = step_args(model, res, args)
        if left < 20:
            row = {"error": "skipped: no time left in the budget"}
        else:
            row_args.timeout = int(left)
            started = time.monotonic()
            if kind == "baseline":
                row = train_step.run_baseline(row_args)
            else:
                command = train_step.child_command(row_args, kind)
                row = train_step.run_process(command, row_args.timeout, train_step.RESULT_MARK)
            row["wall_s"] = round(time.monotonic() - started, 1)
        row["preset"] = kind
        results.setdefault((model, nominal), {})[kind] = row
        print(json.dumps({"model": model, "res": res, **row}), flush=True)
    return results


def report(results: dict[tuple[str, int], dict[str, dict]], args: argparse.Namespace) -> str:
    device = "CPU, tiny models" if args.tiny else "GPU"
    out = [f"GPU check ({device}): s/step and peak GiB, trainer presets vs the shared baseline"]
    for (model, nominal), rows in results.items():
        baseline = rows.get("baseline")
        trainer_rows = [rows[p] for p in PRESETS if p in rows]
        res = resolution(nominal, args)
        tiny = f" (tiny, run at {res}x{res})" if args.tiny else ""
        out.append(f"\n{NAMES[model]} {nominal}x{nominal}{tiny}")
        out.append(train_step.format_table(trainer_rows, baseline))
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    results = run(args)
    print("\n" + report(results, args))
    print(f"\ntotal {time.monotonic() - started:.0f}s (budget {args.budget:.0f}s)")
    if args.json:
        rows = [
            {"model": m, "res": r, **row}
            for (m, r), kinds in results.items()
            for row in kinds.values()
        ]
        Path(args.json).write_text(json.dumps(rows, indent=1))
    failed = [row for kinds in results.values() for row in kinds.values() if "error" in row]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
