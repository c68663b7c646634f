"""Benchmark: identity_fidelity on a GPU-time budget: what it costs, and whether it decides the same.

    .venv/bin/python benchmarks/fidelity_budget.py agreement [--cases 400] [--recorded FILE]
    .venv/bin/python benchmarks/fidelity_budget.py cost [--curves 200] [--device cuda]
    .venv/bin/python benchmarks/fidelity_budget.py record [--out FILE] [--runs 4]

``agreement``: the budgeted (progressive) choice against the exhaustive grid's, on the same
recorded scores, at several budgets, beside the plain baseline (the grid cut evenly to the same
number of images: every checkpoint with fewer seeds, or fewer checkpoints) and beside the
exhaustive grid re-run with other seeds (how much the grid's own choice is noise). Cases:
synthetic curves with a known best (``evaluation.simulate.synthetic_curves``; seeds 0..N-1 were
used to choose ``margin_z`` and ``screen_checkpoints``, the table reports seeds 10000..), and the
recorded CPU runs (``record``).

``cost``: the seed-sized run (5 identities, 8 checkpoints + the base model, 3 prompts, 4 seeds,
Qwen-Image, 1,500 training steps) before and after, by the estimate: images x steps x seconds per
step. Per-step costs are measured, not assumed: on this machine with the tiny Qwen-Image (the
asset's own one-image probe at the scoring settings and at the training settings, and the
trainer's own step at 1024²); for the real 20B Qwen-Image by counting the FLOPs of one denoiser
pass (meta device, no weights) against one training step; with ``--device cuda`` by timing the
real-size architecture (random weights) on the GPU. The race is simulated on synthetic curves
with those prices and the budget of 25 % of the training time.

``record``: trains the tiny Qwen-Image on the synthetic disc set (5 identities, 8 checkpoints,
several learning rates) on this CPU and evaluates every checkpoint exhaustively (6 seeds); the
faces of every image (stand-in colour-patch embedder: the tiny model draws no real face) are
written to a Parquet file, replayed by ``agreement`` and the tests.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from identity_pipeline.evaluation.config import FidelityConfig  # noqa: E402
from identity_pipeline.evaluation.metrics import GeneratedImage  # noqa: E402
from identity_pipeline.evaluation.plan import (  # noqa: E402
    BASE,
    CostModel,
    spread_indices,
)
from identity_pipeline.evaluation.report import text_table  # noqa: E402
from identity_pipeline.evaluation.simulate import (  # noqa: E402
    RecordedOracle,
    replay,
    synthetic_curves,
)

RECORDED = REPO_ROOT / "identity_pipeline_tests" / "data" / "fidelity_curves.parquet"
KINDS = ["caption", "solo", "pair"]
SEEDS = [0, 1, 2, 3]
# The seed-sized run of the issue: 5 identities, 8 checkpoints of a 1,500-step run.
SEED_RUN = {"identities": 5, "checkpoints": 8, "seeds": 4, "prompts": 3, "steps": 1500}


# ----------------------------------------------------------------------------------------------
# Recorded runs


def load_recorded(path: Path, config: FidelityConfig) -> dict[str, RecordedOracle]:
    """One oracle per recorded run: every image's faces, the real photos' embeddings."""
    table = pd.read_parquet(path)
    oracles = {}
    for run, rows in table.groupby("run", sort=True):
        real = rows[rows["role"] != "generated"]
        reference = {
            str(name): np.stack([np.asarray(f[0], np.float32) for f in group["faces"]])
            for name, group in real[real["role"] == "reference"].groupby("identity")
        }
        training = {
            str(name): np.stack([np.asarray(f[0], np.float32) for f in group["faces"]])
            for name, group in real[real["role"] == "training"].groupby("identity")
        }
        images: dict[int, list[GeneratedImage]] = {}
        for row in rows[rows["role"] == "generated"].itertuples(index=False):
            faces = [np.asarray(face, np.float32) for face in row.faces]
            matrix = (
                np.stack(faces)
                if faces
                else np.zeros((0, len(next(iter(reference.values()))[0])), np.float32)
            )
            images.setdefault(int(row.checkpoint), []).append(
                GeneratedImage(str(row.identity), matrix, str(row.prompt_kind), int(row.seed))
            )
        oracles[str(run)] = RecordedOracle(reference, training, config, images)
    return oracles


def recorded_cases(oracle: RecordedOracle, count: int, rng: np.random.Generator):
    """Cases of one recorded run: which 4 of its recorded seeds, in which order, play the grid."""
    seeds = sorted({image.seed for image in oracle.images[0]})
    orders = list(itertools.permutations(seeds, len(SEEDS)))
    picks = rng.choice(len(orders), size=min(count, len(orders)), replace=False)
    return [list(orders[i]) for i in picks]


# ----------------------------------------------------------------------------------------------
# Baselines


def plain_cut(oracle, candidates: int, kinds, per_seed: int, seeds, images: int | None):
    """The grid cut evenly to ``images``: every checkpoint with as many seeds as fit, else
    evenly spread checkpoints with one seed; the rule picks the best of those."""
    if images is None:
        chosen, used = list(range(candidates)), list(seeds)
    elif images >= candidates * per_seed:
        chosen = list(range(candidates))
        used = list(seeds[: min(len(seeds), images // (candidates * per_seed))])
    else:
        chosen, used = spread_indices(candidates, max(1, images // per_seed)), list(seeds[:1])
    return best_of(oracle, chosen, [(kind, seed) for seed in used for kind in kinds])


def exhaustive(oracle, candidates: int, kinds, seeds) -> int | None:
    return best_of(oracle, range(candidates), [(kind, seed) for seed in seeds for kind in kinds])


def best_of(oracle, checkpoints, cells) -> int | None:
    scores = {c: oracle.pooled(c, cells) for c in checkpoints}
    finite = [c for c in scores if math.isfinite(scores[c])]
    return max(finite, key=lambda c: (scores[c], -c)) if finite else None


# ----------------------------------------------------------------------------------------------
# agreement


def agreement_rows(cases, budgets, config: FidelityConfig, label: str) -> list[dict]:
    """``cases``: (oracle, identities, kinds_of, grid seeds, other seeds or None, true best)."""
    cost = CostModel(1.0)  # budgets in images
    rows = []
    for budget in budgets:
        ours, plain, rerun, images, truth_ours, truth_grid = [], [], [], [], [], []
        for oracle, identities, kinds_of, seeds, other_seeds, best in cases:
            candidates = len([c for c in oracle_checkpoints(oracle) if c != BASE])
            result = replay(oracle, candidates, identities, kinds_of, seeds, config, cost, budget)
            grid = result.exhaustive
            per_seed = sum(len(k) for k in kinds_of.values())
            kinds = sorted({k for v in kinds_of.values() for k in v})
            everyone = _everyone(oracle, identities, kinds_of)
            limit = None if budget is None else int(budget)
            cut = plain_cut(everyone, candidates, kinds, per_seed, seeds, limit)
            ours.append((result.budgeted == grid, _distance(result.budgeted, grid)))
            plain.append((cut == grid, _distance(cut, grid)))
            images.append(result.images)
            if other_seeds is not None:
                again = exhaustive(everyone, candidates, kinds, other_seeds)
                rerun.append((again == grid, _distance(again, grid)))
            if best is not None:
                truth_ours.append(result.budgeted == best)
                truth_grid.append(grid == best)
        full = result.exhaustive_images
        rows.append(
            {
                "curves": label,
                "cases": len(cases),
                "budget (images)": "none" if budget is None else f"{int(budget)}",
                "images (mean)": f"{np.mean(images):.0f} / {full}",
                "ours = grid": _share(o[0] for o in ours),
                "ours <= 1 away": _share(o[1] <= 1 for o in ours),
                "plain cut = grid": _share(p[0] for p in plain),
                "plain <= 1 away": _share(p[1] <= 1 for p in plain),
                "grid re-run = grid": _share(r[0] for r in rerun) if rerun else "-",
                "ours = true best": _share(truth_ours) if truth_ours else "-",
                "grid = true best": _share(truth_grid) if truth_grid else "-",
            }
        )
    return rows


def oracle_checkpoints(oracle) -> list[int]:
    if isinstance(oracle, RecordedOracle):
        return sorted(oracle.images)
    return list(range(oracle.scores.shape[0]))


def _everyone(oracle, identities, kinds_of):
    if isinstance(oracle, RecordedOracle):
        return oracle.restrict(identities, sorted({k for v in kinds_of.values() for k in v}))
    return oracle.restrict(identities)


def _distance(a: int | None, b: int | None) -> int:
    if a is None or b is None:
        return 0 if a == b else 10**6
    return abs(a - b)


def _share(values) -> str:
    values = list(values)
    return f"{100 * np.mean(values):.1f} %" if values else "-"


def synthetic_cases(count: int, start: int, identities: int = 5, noise=(0.035, 0.1)):
    cases = []
    for index in range(count):
        rng = np.random.default_rng(start + index)
        case = synthetic_curves(rng, SEED_RUN["checkpoints"], identities, 8, noise=noise)
        names = case.oracle.identities
        kinds = {name: list(KINDS) for name in names}
        cases.append((case.oracle, names, kinds, SEEDS, [4, 5, 6, 7], case.best))
    return cases


def agreement(args) -> int:
    config = FidelityConfig()
    per_seed = SEED_RUN["identities"] * SEED_RUN["prompts"]
    grid = SEED_RUN["checkpoints"] * per_seed * SEED_RUN["seeds"]
    budgets = [None, grid // 2, grid // 3, grid // 4, grid // 5]
    print(
        f"defaults: margin_z={config.margin_z}, screen_checkpoints={config.screen_checkpoints}, "
        f"sample_identities={config.sample_identities}; "
        f"full grid {grid} images (8 checkpoints x 5 identities x 3 prompts x 4 seeds)"
    )
    started = time.perf_counter()
    rows = agreement_rows(
        synthetic_cases(args.cases, 10_000), budgets, config, "synthetic, 5 people"
    )
    rows += agreement_rows(
        synthetic_cases(args.cases // 4, 20_000, identities=35),
        [None, 160, 120],
        config,
        "synthetic, 35 people",
    )
    if args.recorded.is_file():
        oracles = load_recorded(args.recorded, config)
        rng = np.random.default_rng(0)
        cases = []
        for oracle in oracles.values():
            names = sorted(oracle.reference)
            kinds = {
                n: sorted({i.prompt_kind for i in oracle.images[0] if i.identity == n})
                for n in names
            }
            for order in recorded_cases(oracle, args.orders, rng):
                cases.append((oracle, names, kinds, order, None, None))
        rows += agreement_rows(cases, budgets, config, f"recorded CPU runs ({len(oracles)})")
    else:
        print(f"no recorded runs at {args.recorded}: run `record` first")
    print(text_table(pd.DataFrame(rows)))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


# ----------------------------------------------------------------------------------------------
# record


def record(args) -> int:
    import torch

    from identity_pipeline.evaluation.run import evaluate_run
    from identity_pipeline.training.config import TrainingConfig
    from identity_pipeline.training.tiny_models import save_tiny_model
    from identity_pipeline.training.trainer import train
    from identity_pipeline_tests.training_fixtures import (
        CentreBackend,
        write_manifest,
        write_training_set,
    )

    torch.set_num_threads(1)
    people = ("Alice", "Bob", "Carol", "Dave", "Eve")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fidelity-record-") as scratch:
        root = Path(scratch)
        model = save_tiny_model("qwen-image", root / "tiny-qwen-image")
        frame = write_training_set(
            root / "set", count=20, size=64, identities=people, holdout=2 * len(people)
        )
        manifest = write_manifest(frame, root / "set" / "table.parquet")
        settings = [(lr, seed) for lr in (3e-3, 1e-2, 3e-2) for seed in (0, 1)][: args.runs]
        for index, (learning_rate, seed) in enumerate(settings):
            started = time.perf_counter()
            run_dir = root / f"run{index}"
            config = TrainingConfig.from_dict(
                {
                    "output_dir": str(run_dir),
                    "max_steps": 8 * args.every,
                    "seed": seed,
                    "mixed_precision": "no",
                    "log_every_steps": args.every,
                    "export_dtype": "float32",
                    "cpu_threads": 1,
                    "model": {"family": "qwen-image", "source": str(model)},
                    "data": {"manifest": str(manifest), "max_text_tokens": 32},
                    "lora": {"rank": 8, "alpha": 8},
                    "optimizer": {"learning_rate": learning_rate},
                    "checkpoint": {"every_steps": args.every, "keep_last": 8},
                    "samples": {"enabled": False, "num_inference_steps": 4, "guidance_scale": 1.0},
                }
            )
            train(config)
            fidelity = FidelityConfig(
                seeds=tuple(range(6)), exhaustive=True, num_inference_steps=4, save_images=False
            )
            run = evaluate_run(run_dir, root / f"eval{index}", CentreBackend(), fidelity)
            name = f"lr{learning_rate:g}-seed{seed}"
            for position, evaluation in enumerate(run.evaluations):
                checkpoint = BASE if evaluation.ref.kind == "base" else position - 1
                for image in evaluation.images:
                    rows.append(
                        {
                            "run": name,
                            "role": "generated",
                            "checkpoint": checkpoint,
                            "step": evaluation.ref.step,
                            "identity": image.identity,
                            "prompt_kind": image.kind,
                            "seed": image.seed,
                            "faces": [list(map(float, v)) for v in image.embeddings],
                        }
                    )
            for role, sets in (("reference", run.real.reference), ("training", run.real.training)):
                for identity, vectors in sets.items():
                    for vector in vectors:
                        rows.append(
                            {
                                "run": name,
                                "role": role,
                                "checkpoint": None,
                                "step": None,
                                "identity": identity,
                                "prompt_kind": None,
                                "seed": None,
                                "faces": [list(map(float, vector))],
                            }
                        )
            print(
                f"{name}: {len(run.evaluations)} checkpoints, {time.perf_counter() - started:.0f} s"
            )
    frame = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out, index=False)
    print(f"wrote {len(frame)} rows to {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    agree = commands.add_parser("agreement")
    agree.add_argument("--cases", type=int, default=400)
    agree.add_argument("--orders", type=int, default=40, help="seed orders per recorded run")
    agree.add_argument("--recorded", type=Path, default=RECORDED)
    rec = commands.add_parser("record")
    rec.add_argument("--out", type=Path, default=RECORDED)
    rec.add_argument("--runs", type=int, default=4)
    rec.add_argument("--every", type=int, default=5, help="training steps between checkpoints")
    args = parser.parse_args(argv)
    return {"agreement": agreement, "record": record}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
