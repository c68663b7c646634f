"""Meta-device ESTIMATES of a LoRA training step's peak memory, per model and speed mode.

    .venv/bin/python benchmarks/memory_estimate.py                 # the four issue-10 cases
    .venv/bin/python benchmarks/memory_estimate.py --models qwen:1024 --modes baseline fp8
    .venv/bin/python benchmarks/memory_estimate.py --tiny          # CI plumbing check

No GPU and no weights: the real architectures are built on ``torch.device("meta")`` and the bytes
of weights, LoRA state, saved activations and the backward working set are counted (see
``identity_pipeline.training.memory``). These are estimates, not measurements; the "baseline"
mode is the shared baseline script's setup, printed beside its measured H100 figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from identity_pipeline.training.memory import MODES, estimate  # noqa: E402

CASES = ("qwen:1024", "qwen:1328", "flux:1024", "sdxl:1024")
TINY_CASES = ("qwen:128", "flux:128", "sdxl:128")
# Measured by the anchor run (H100, diffusers + peft, torch.cuda.max_memory_allocated).
MEASURED_BASELINE_GIB = {"qwen:1024": 41.0, "qwen:1328": 42.5, "sdxl:1024": 5.6}
TARGET_GIB = {"qwen:1024": 24, "qwen:1328": 26, "flux:1024": 24, "sdxl:1024": 6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", help="MODEL:RES items (default: the four cases)")
    parser.add_argument("--modes", nargs="+", help=f"any of: {', '.join(m.name for m in MODES)}")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args(argv)
    cases = args.models or (TINY_CASES if args.tiny else CASES)
    modes = [mode for mode in MODES if not args.modes or mode.name in args.modes]
    unit = "MiB" if args.tiny else "GiB"
    scale = 1024 if args.tiny else 1
    print(
        f"ESTIMATES (meta device, not measured), {unit}: peak = weights + LoRA state "
        "(params, grads, AdamW) + saved activations + backward working set"
    )
    header = ["model", "res", "tokens", "mode", "ckpt units", "weights", "LoRA state"]
    header += ["saved", "working", "est. peak", "measured baseline", "target"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for case in cases:
        model, res = case.split(":")
        for mode in modes:
            started = time.perf_counter()
            row = estimate(model, int(res), mode, tiny=args.tiny)
            if args.json:
                print(json.dumps({**row.row(), "seconds": round(time.perf_counter() - started, 1)}))
                continue
            measured = MEASURED_BASELINE_GIB.get(case) if mode.name == "baseline" else None
            cells = [
                model,
                res,
                str(row.tokens),
                mode.name,
                row.checkpointed,
                *(
                    f"{value * scale:.2f}"
                    for value in (
                        row.weights_gib,
                        row.lora_state_gib,
                        row.saved_gib,
                        row.working_gib,
                        row.peak_gib,
                    )
                ),
                "-" if measured is None or args.tiny else f"{measured}",
                "-" if args.tiny else str(TARGET_GIB.get(case, "-")),
            ]
            print(" | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
