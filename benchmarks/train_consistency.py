"""Does what the trainer optimizes match what the stock pipeline samples? Per family, on CPU.

    .venv/bin/python benchmarks/train_consistency.py                    # both parts, all families
    .venv/bin/python benchmarks/train_consistency.py --part inputs      # part 1 only (~1 min)
    .venv/bin/python benchmarks/train_consistency.py --part overfit --families qwen-image --steps 800

Part 1, inputs (``identity_pipeline.training.consistency``): the trainer's denoiser arguments vs
the stock pipeline's at each step of its sampling loop (an oracle denoiser answers with the
trainer's target), the loop's landing point vs the trainer's x0, the pipeline's decode vs the VAE
round trip; then every broken convention, which must be caught. Printed: the largest difference
per argument, and per control which comparisons caught it.

Part 2, overfit and regenerate (``identity_pipeline.training.overfit``): two photos, two
captions, a LoRA trained to memorise them, sampled by the stock pipeline with
``load_lora_weights`` (seeds 0-3). Printed per family: steps, final loss (mean of the last 10),
the mean squared latent distance of each caption's samples to its own photo and to the other
photo, the same without the LoRA (the baseline), and the same for the trainer with a convention
broken on purpose (``--controls``: timestep 1000x too large, velocity sign flipped, 2x2 patches
transposed). Separates: every caption closer to its own photo than half its distance to the other.

Timings are wall-clock on whatever CPU runs it (the team's machine is shared: noisy).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

FAMILIES = ("qwen-image", "flux", "sd3", "sdxl")
# Steps each family's tiny model needs to memorise the two photos (measured on this CPU).
STEPS = {"qwen-image": 300, "flux": 500, "sd3": 700, "sdxl": 2400}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("inputs", "overfit", "both"), default="both")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument(
        "--steps", type=int, default=None, help="overfit training steps (default: per family)"
    )
    parser.add_argument(
        "--controls",
        nargs="*",
        default=["timesteps_x1000", "velocity_flipped", "patches_transposed"],
        help="broken conventions to train with (consistency.BROKEN_CONVENTIONS names)",
    )
    parser.add_argument("--workdir", default=None, help="tiny models and runs (default: temp)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def _cell(value) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.2e}" if value and abs(value) < 1e-3 else f"{value:.3f}"
    return str(value)


def table(rows: list[dict], columns: list[str]) -> str:
    lines = [" | ".join(columns), " | ".join("---" for _ in columns)]
    lines += [" | ".join(_cell(row.get(column, "")) for column in columns) for row in rows]
    return "\n".join(lines)


def inputs_part(families) -> str:
    from identity_pipeline.training.consistency import check_family, controls_for
    from identity_pipeline.training.tiny_models import build_tiny_pipeline

    correct_rows, control_rows = [], []
    for family in families:
        pipe = build_tiny_pipeline(family)
        started = time.perf_counter()
        report = check_family(family, pipe)
        worst = report.worst()
        correct_rows.append(
            {
                "family": family,
                "ok": report.ok,
                "sigmas": " ".join(f"{s:.3g}" for s in report.sigmas),
                "compared": len(report.comparisons),
                **{name: worst[name] for name in sorted(worst)},
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        for control in controls_for(family):
            broken = check_family(family, pipe, control)
            caught = sorted(broken.failed_names())
            control_rows.append(
                {
                    "family": family,
                    "broken convention": control.mistake,
                    "caught": "yes" if caught else "NO",
                    "caught by": ", ".join(caught) or "-",
                    "largest difference": max(
                        (c.difference for c in broken.failures()), default=0.0
                    ),
                }
            )
    names = sorted({key for row in correct_rows for key in row} - {"family", "ok", "sigmas"})
    names = [n for n in names if n not in ("compared", "seconds")]
    out = ["## Part 1: same inputs, trainer vs stock pipeline (largest |difference| per input)"]
    for row in correct_rows:
        present = [n for n in names if n in row]
        out.append(
            f"\n{row['family']}: ok={row['ok']}, sigmas {row['sigmas']}, "
            f"{row['compared']} comparisons, {row['seconds']}s"
        )
        out.append(table([row], present))
    out.append("\n## Part 1: negative controls (each must be caught)\n")
    out.append(
        table(
            control_rows,
            ["family", "broken convention", "caught", "caught by", "largest difference"],
        )
    )
    return "\n".join(out)


def overfit_part(families, steps: int | None, controls: list[str], workdir: Path) -> str:
    from identity_pipeline.training.consistency import controls_for
    from identity_pipeline.training.overfit import OverfitSetup, run_overfit

    rows = []
    for family in families:
        setup = OverfitSetup(family, steps=steps or STEPS[family])
        correct = run_overfit(setup, workdir / family)
        rows.append({**correct.row(), "trainer": "correct"})
        rows.append(
            {
                "family": family,
                "trainer": "no LoRA (baseline)",
                "own": correct.base.own,
                "other": correct.base.other,
                "own/other": correct.base.ratio,
                "separates": correct.base.separates(),
            }
        )
        for name in controls:
            if name not in {c.name for c in controls_for(family)}:
                continue
            broken = run_overfit(setup, workdir / family, name, base=correct.base)
            rows.append({**broken.row(), "trainer": f"broken: {name}"})
        print(table([row for row in rows if row["family"] == family], COLUMNS), flush=True)
    return "## Part 2: overfit two photos, regenerate with the stock pipeline\n\n" + table(
        rows, COLUMNS
    )


COLUMNS = [
    "family",
    "trainer",
    "steps",
    "final_loss",
    "own",
    "other",
    "own/other",
    "separates",
    "photos_apart",
    "train_s",
]


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    outputs = []
    if args.part in ("inputs", "both"):
        outputs.append(inputs_part(args.families))
        print(outputs[-1], flush=True)
    if args.part in ("overfit", "both"):
        if args.workdir:
            workdir = Path(args.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            outputs.append(overfit_part(args.families, args.steps, args.controls, workdir))
        else:
            with tempfile.TemporaryDirectory(prefix="train-consistency-") as scratch:
                outputs.append(
                    overfit_part(args.families, args.steps, args.controls, Path(scratch))
                )
        print("\n" + outputs[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
