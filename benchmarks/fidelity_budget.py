"""Benchmark: identity_fidelity on a GPU-time budget: what it costs, and whether it decides the same.

    .venv/bin/python benchmarks/fidelity_budget.py agreement [--cases 400] [--recorded FILE]
    .venv/bin/python benchmarks/fidelity_budget.py cost [--curves 200] [--device cuda]
    .venv/bin/python benchmarks/fidelity_budget.py record [--out FILE] [--runs 4]

``agreement``: the budgeted (progressive) choice against the exhaustive grid's, on the same
recorded scores, at several budgets, beside the plain baseline (the grid cut evenly to the same
number of images: every checkpoint with fewer seeds, or fewer checkpoints) and beside the
exhaustive grid re-run with other seeds (how much the grid's own choice is noise), and on the
synthetic curves the regret of each choice (the true likeness lost against the true best, x1000;
the curves rise by 150-400 over training). Cases: synthetic curves with a known best
(``evaluation.simulate.synthetic_curves``; seeds 0..299 were used to choose ``margin_z`` and
``screen_checkpoints``, the table reports seeds 10000..), and the recorded CPU runs (``record``).

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
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from identity_pipeline.evaluation.config import FidelityConfig  # noqa: E402
from identity_pipeline.evaluation.plan import (  # noqa: E402
    BASE,
    CostModel,
    fit_screen,
    race,
)
from identity_pipeline.evaluation.report import text_table  # noqa: E402
from identity_pipeline.evaluation.simulate import (  # noqa: E402
    RecordedOracle,
    exhaustive,
    load_recorded,
    plain_cut,
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


def recorded_cases(oracle: RecordedOracle, count: int, rng: np.random.Generator):
    """Cases of one recorded run: which 4 of its recorded seeds, in which order, play the grid."""
    seeds = sorted({image.seed for image in oracle.images[0]})
    orders = list(itertools.permutations(seeds, len(SEEDS)))
    picks = rng.choice(len(orders), size=min(count, len(orders)), replace=False)
    return [list(orders[i]) for i in picks]


# ----------------------------------------------------------------------------------------------
# agreement


def agreement_rows(cases, budgets, config: FidelityConfig, label: str) -> list[dict]:
    """``cases``: (oracle, identities, kinds_of, grid seeds, other seeds or None, the
    ``SyntheticCase`` with the true curve or None)."""
    cost = CostModel(1.0)  # budgets in images
    rows = []
    for budget in budgets:
        ours, plain, rerun, images, truth_ours, truth_grid = [], [], [], [], [], []
        regret: dict[str, list[float]] = {"ours": [], "grid": [], "plain": []}
        for oracle, identities, kinds_of, seeds, other_seeds, synthetic in cases:
            best = None if synthetic is None else synthetic.best
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
                for name, chosen in (("ours", result.budgeted), ("grid", grid), ("plain", cut)):
                    regret[name].append(synthetic.regret(chosen))
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
                # Likeness lost against the true best, x1000 (mean): what a wrong choice costs.
                "regret ours / grid / plain": (
                    " / ".join(f"{1000 * np.mean(v):.1f}" for v in regret.values())
                    if regret["ours"]
                    else "-"
                ),
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
        cases.append((case.oracle, names, kinds, SEEDS, [4, 5, 6, 7], case))
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
# cost


def seed_run_kinds() -> dict[str, list[str]]:
    return {f"person{i}": list(KINDS) for i in range(SEED_RUN["identities"])}


def simulate_plans(
    seconds_per_image: float, seconds_per_switch: float, budget: float | None, curves: int
) -> dict[str, float]:
    """The seed-sized race on synthetic curves at these prices: images and estimate (mean, max),
    base model included (it comes last, when the budget allows)."""
    config = FidelityConfig()
    cost = CostModel(seconds_per_image, seconds_per_switch)
    kinds = seed_run_kinds()
    names = sorted(kinds)
    images, seconds = [], []
    for index in range(curves):
        case = synthetic_curves(np.random.default_rng(10_000 + index), 8, len(names), 4)
        screen = fit_screen(8, names, kinds, SEEDS, cost, budget, config.screen_checkpoints)
        result = race(case.oracle, 8, screen, cost, budget, config.margin_z, include_base=True)
        images.append(result.images)
        seconds.append(result.spent)
    return {
        "images": float(np.mean(images)),
        "images_max": float(np.max(images)),
        "seconds": float(np.mean(seconds)),
        "seconds_max": float(np.max(seconds)),
    }


def tiny_cpu_prices(scratch: Path) -> dict[str, float]:
    """This CPU, the tiny Qwen-Image: the trainer's own s/step at 1024², and the asset's own
    one-image probe at the scoring settings (512², 20 steps, true CFG) and at the training
    settings (1024², the trainer's 20 sample steps)."""
    import torch

    from identity_pipeline.evaluation.budget import cost_key
    from identity_pipeline.evaluation.generate import load_training_config
    from identity_pipeline.evaluation.images import ImageMaker, ImageStore, PromptSpec
    from identity_pipeline.faces import FaceConfig, get_backend
    from identity_pipeline.training.config import TrainingConfig
    from identity_pipeline.training.tiny_models import save_tiny_model
    from identity_pipeline.training.trainer import train
    from identity_pipeline_tests.training_fixtures import write_manifest, write_training_set

    torch.set_num_threads(1)
    model = save_tiny_model("qwen-image", scratch / "tiny-qwen-image")
    frame = write_training_set(scratch / "set", count=4, size=1024, holdout=1)
    manifest = write_manifest(frame, scratch / "set" / "table.parquet")
    run_dir = scratch / "run"
    steps = 6
    result = train(
        TrainingConfig.from_dict(
            {
                "output_dir": str(run_dir),
                "max_steps": steps,
                "mixed_precision": "no",
                "cpu_threads": 1,
                "log_every_steps": steps,
                "model": {"family": "qwen-image", "source": str(model)},
                "data": {"manifest": str(manifest), "max_text_tokens": 32},
                "checkpoint": {"every_steps": steps},
                "samples": {"enabled": False},
            }
        )
    )
    prices = {"train_step": result.train_seconds / steps}
    training_config = load_training_config(run_dir)
    backend = get_backend("offline")
    spec = PromptSpec("Alice", "solo", "A close-up photo of Alice, looking at the camera")
    from identity_pipeline.evaluation.generate import default_device, list_checkpoints

    ref = list_checkpoints(run_dir)[-1]
    for name, size, guidance in (("scoring", 512, 4.0), ("training", 1024, 4.0)):
        settings = {
            "model": str(model),
            "family": "qwen-image",
            "revision": None,
            "prompts": [],
            "seeds": [0],
            "num_inference_steps": 20,
            "guidance_scale": guidance,
            "negative_prompt": "",
            "width": size,
            "height": size,
        }
        out = scratch / f"probe-{name}"
        store = ImageStore(out, settings, backend, FaceConfig(), save_images=False)
        maker = ImageMaker(
            store, training_config, [spec], settings, FaceConfig(), default_device(), print
        )
        try:
            record, _ = maker.cost(ref, spec, 0)
        finally:
            maker.close()
        assert record.key == cost_key(settings, maker.device_name())
        prices[f"{name}_image"] = record.seconds_per_image
        prices[f"{name}_switch"] = record.seconds_per_switch
    return prices


def qwen_flop_prices() -> dict[str, float]:
    """The real Qwen-Image (20B) by FLOPs, counted on the meta device (no weights): one denoiser
    pass at 512² and 1024², one training step at 1024² (forward, backward to the inputs: the
    base weights are frozen, plus the forward again for gradient checkpointing), in units of
    that training step."""
    import diffusers
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from identity_pipeline.training.architectures import model_spec

    spec = model_spec("qwen")
    with torch.device("meta"):
        model = diffusers.QwenImageTransformer2DModel(**spec.config).to(torch.bfloat16)
    model.requires_grad_(False)

    def flops(resolution: int, backward: bool, text_tokens: int = 64) -> float:
        side = resolution // 16  # VAE /8, then 2x2 patches
        meta = {"device": "meta", "dtype": torch.bfloat16}
        hidden = torch.randn(1, side * side, 64, requires_grad=backward, **meta)
        text = torch.randn(1, text_tokens, spec.text_dim, **meta)
        mask = torch.ones(1, text_tokens, dtype=torch.long, device="meta")
        with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(backward):
            out = model(
                hidden_states=hidden,
                timestep=torch.ones(1, device="meta"),
                encoder_hidden_states=text,
                encoder_hidden_states_mask=mask,
                img_shapes=[[(1, side, side)]],
                return_dict=False,
            )[0]
            if backward:
                out.float().pow(2).mean().backward()
        return float(counter.get_total_flops())

    forward_512, forward_1024 = flops(512, False), flops(1024, False)
    train_step = flops(1024, True) + forward_1024  # + the checkpointing recompute
    return {
        "train_step": 1.0,
        "scoring_image": 20 * 2 * forward_512 / train_step,  # 20 steps, true CFG: 2 passes
        "training_image": 20 * 2 * forward_1024 / train_step,
        "scoring_switch": 0.0,
        "training_switch": 0.0,
        "tflop_train_step": train_step / 1e12,
        "tflop_pass_512": forward_512 / 1e12,
    }


def gpu_prices(device: str) -> dict[str, float]:
    """The real-size Qwen-Image architecture (random weights) on ``device``: the trainer's step
    at 1024² (bf16, gradient checkpointing) and one denoiser pass at 512² and 1024² (eval, no
    grad, the LoRA attached), x 2 passes (true CFG) x 20 steps per image. VAE decode and face
    detection are left out (they are the probe's, in the asset)."""
    import torch
    from accelerate import Accelerator

    from identity_pipeline.training.architectures import StepHarness, model_spec, synthetic_text
    from identity_pipeline.training.config import TrainingConfig

    cuda = device.startswith("cuda")
    config = TrainingConfig.from_dict(
        {
            "data": {"manifest": "synthetic"},
            "mixed_precision": "bf16" if cuda else "no",
            "gradient_checkpointing": True,
            "optimizer": {"warmup_steps": 0},
        }
    )
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not cuda)
    spec = model_spec("qwen", tiny=not cuda)
    harness = StepHarness.create(spec, config, accelerator, 1024, num_samples=2)

    def timed(function, repeats: int) -> float:
        function()
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            function()
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / repeats

    train_step = timed(harness.step, 5)
    denoiser = harness.denoiser.eval()
    adapter = harness.loop.adapter
    generator = torch.Generator().manual_seed(0)
    text = {k: v.to(accelerator.device) for k, v in synthetic_text(spec, generator).items()}
    batch = adapter.collate_text([text], accelerator.device)
    prices = {"train_step": train_step, "scoring_switch": 0.0, "training_switch": 0.0}
    for name, resolution in (("scoring", 512), ("training", 1024)):
        latent = resolution // 8
        noisy = torch.randn(1, spec.latent_channels, latent, latent, device=accelerator.device)
        weight = next(denoiser.parameters()).dtype
        noisy = noisy.to(weight)
        batch = {
            k: (v.to(weight) if v is not None and v.is_floating_point() else v)
            for k, v in batch.items()
        }
        t = torch.full((1,), 0.5, device=accelerator.device, dtype=weight)

        def one_pass(noisy=noisy, t=t, resolution=resolution, batch=batch) -> None:
            with torch.no_grad():
                adapter.predict(denoiser, noisy, t, batch, None, (resolution, resolution))

        prices[f"{name}_image"] = 20 * 2 * timed(one_pass, 3)
    return prices


def cost(args) -> int:
    sources: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fidelity-cost-") as scratch:
        sources["tiny Qwen-Image, this CPU (measured)"] = tiny_cpu_prices(Path(scratch))
    flops = qwen_flop_prices()
    sources["Qwen-Image 20B, by FLOPs (per training step)"] = flops
    if args.device:
        sources[f"Qwen-Image 20B arch, {args.device} (measured)"] = gpu_prices(args.device)
    if args.arch_check:
        sources["tiny Qwen-Image arch, this CPU (code check)"] = gpu_prices("cpu")
    print(
        f"Qwen-Image 20B: one training step at 1024^2 = {flops['tflop_train_step']:.0f} TFLOP "
        f"(gradient checkpointing), one denoiser pass at 512^2 = {flops['tflop_pass_512']:.1f} "
        "TFLOP"
    )
    run = SEED_RUN
    per_seed = run["identities"] * run["prompts"]
    grid = (run["checkpoints"] + 1) * per_seed * run["seeds"]
    rows = []
    for source, prices in sources.items():
        training = run["steps"] * prices["train_step"]
        budget = 0.25 * training
        before = (
            grid * prices["training_image"] + (run["checkpoints"] + 1) * prices["training_switch"]
        )
        at_scoring = (
            grid * prices["scoring_image"] + (run["checkpoints"] + 1) * prices["scoring_switch"]
        )
        plan = simulate_plans(
            prices["scoring_image"], prices["scoring_switch"], budget, args.curves
        )
        unlimited = simulate_plans(
            prices["scoring_image"], prices["scoring_switch"], None, args.curves // 2
        )
        for name, images, size, seconds in (
            ("before: full grid, 1024^2, 20 steps", grid, 1024, before),
            ("full grid at 512^2, 20 steps", grid, 512, at_scoring),
            ("race, no budget (mean)", unlimited["images"], 512, unlimited["seconds"]),
            ("after: race, 25 % budget (mean)", plan["images"], 512, plan["seconds"]),
            ("after: race, 25 % budget (max)", plan["images_max"], 512, plan["seconds_max"]),
        ):
            per_image = prices["training_image" if size == 1024 else "scoring_image"]
            rows.append(
                {
                    "prices": source,
                    "plan": name,
                    "images": f"{images:.0f}",
                    "s/step": f"{per_image / 20:.4g}",
                    "s/image": f"{per_image:.4g}",
                    "estimate": f"{seconds:.4g}",
                    "training (1500 steps)": f"{training:.4g}",
                    "% of training": f"{100 * seconds / training:.1f} %",
                }
            )
    print(
        "seed-sized run: 5 identities x 3 prompts x 4 seeds, 8 checkpoints + the base model; "
        "s/step = one sampling step with true CFG (2 denoiser passes); 20 steps per image"
    )
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
        settings = [(lr, seed) for seed in (0, 1) for lr in args.learning_rates][: args.runs]
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
    rec.add_argument("--every", type=int, default=10, help="training steps between checkpoints")
    rec.add_argument("--learning-rates", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    price = commands.add_parser("cost")
    price.add_argument("--curves", type=int, default=200)
    price.add_argument("--device", help="also time the real-size architecture here, e.g. cuda")
    price.add_argument(
        "--arch-check", action="store_true", help="run the --device code on the tiny arch, CPU"
    )
    args = parser.parse_args(argv)
    return {"agreement": agreement, "record": record, "cost": cost}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
