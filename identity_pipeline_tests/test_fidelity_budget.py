"""identity_fidelity on a budget: the screen cut to fit, the race, its agreement with the
exhaustive grid on synthetic and recorded score curves, and where the budget comes from. Pure
decisions on given scores: no model, no dagster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from identity_pipeline.evaluation import FidelityConfig
from identity_pipeline_tests.conftest import REPO_ROOT

KINDS = ["caption", "solo", "pair"]
RECORDED = REPO_ROOT / "identity_pipeline_tests" / "data" / "fidelity_curves.parquet"


def _kinds_of(names) -> dict[str, list[str]]:
    return {name: list(KINDS) for name in names}


def test_screen_is_cut_to_fit_the_budget() -> None:
    from identity_pipeline.evaluation.plan import CostModel, fit_screen

    names = [f"person{i}" for i in range(8)]
    cost = CostModel(seconds_per_image=2.0, seconds_per_switch=1.0)
    plan = fit_screen(8, names, _kinds_of(names), [0, 1, 2, 3], cost, None, 3)
    # The first, middle and last checkpoint; one solo image per person first, then the other
    # prompts of the first seed, then every prompt of each further seed.
    assert plan.checkpoints == [0, 4, 7] and not plan.cuts and not plan.over_budget
    assert plan.blocks[0] == (("solo", 0),)
    assert plan.blocks[1] == (("caption", 0), ("pair", 0))
    assert plan.blocks[2] == tuple((kind, 1) for kind in ("solo", "caption", "pair"))
    assert plan.block_images == [8, 16, 24, 24, 24] and plan.images == 24
    # Half of 40 s for the screen: people down to 3 (3 x (3 x 2 s) + 3 x 1 s = 21 s is still
    # over), then two checkpoints.
    plan = fit_screen(8, names, _kinds_of(names), [0, 1, 2, 3], cost, 40.0, 3)
    assert plan.identities == names[:3] and plan.checkpoints == [0, 7]
    assert plan.cuts == ["identities 8 -> 3", "screen checkpoints 3 -> 2"]
    assert not plan.over_budget
    # Nothing fits: the smallest screen (2 people, first and last checkpoint), flagged.
    plan = fit_screen(8, names, _kinds_of(names), [0, 1, 2, 3], cost, 1.0, 3)
    assert plan.identities == names[:2] and plan.checkpoints == [0, 7] and plan.over_budget


def _table(curve, identities: int = 5, seeds: int = 4, noise: float = 0.0, seed: int = 0):
    from identity_pipeline.evaluation.simulate import TableOracle

    rng = np.random.default_rng(seed)
    curve = np.asarray(curve, dtype=float)
    shape = (len(curve), identities, len(KINDS), seeds)
    scores = curve[:, None, None, None] + rng.normal(0, noise, size=shape) if noise else None
    if scores is None:
        scores = np.broadcast_to(curve[:, None, None, None], shape).copy()
    names = [f"person{i}" for i in range(identities)]
    return TableOracle(scores, names, KINDS, list(range(seeds))), names


@pytest.mark.parametrize(
    ("curve", "budget", "chosen", "stop", "most_images"),
    [
        # A clear peak: found, the rest eliminated long before every image is made.
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.5, 0.4], None, 5, "margin is clear", 200),
        # The last checkpoint is the best: the walk goes there from the screen's leader.
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.8], None, 7, "margin is clear", 200),
        # Nothing to tell apart: every image of the racers, ties to the earliest.
        ([0.5] * 8, None, 0, "every image used", 480),
        # No face anywhere: the screen, then nothing to race.
        ([float("nan")] * 8, None, None, "undefined", 15),
        # A budget of 60 images: the race stops when the next images do not fit.
        ([0.5] * 8, 60.0, 0, "budget spent", 60),
    ],
)
def test_race(curve, budget, chosen, stop, most_images) -> None:
    from identity_pipeline.evaluation.plan import CostModel, fit_screen, race

    oracle, names = _table(curve, noise=0.0 if np.isnan(curve[0]) or curve[1] == curve[0] else 0.02)
    if np.isnan(curve[0]):
        oracle.scores[:] = np.nan
    cost = CostModel(1.0)  # seconds = images
    screen = fit_screen(8, names, _kinds_of(names), [0, 1, 2, 3], cost, budget, 3)
    result = race(oracle, 8, screen, cost, budget, margin_z=2.5)
    assert result.leader == chosen, result.to_json()
    assert stop in result.stop and result.images <= most_images
    if budget is not None:
        assert result.spent <= budget
        assert result.skipped and all(step.why == "budget" for step in result.skipped)
    # What was made is what the oracle was asked for, once per (checkpoint, cell).
    asked = [(c, cell) for c, cells in oracle.calls for cell in cells]
    assert len(asked) == len(set(asked))
    assert sum(len(cells) for _, cells in oracle.calls) * len(names) == result.images


def _agreement(cases, config, budget):
    """Shares of cases: budgeted = grid, budgeted within one interval, plain cut = grid, plain
    within one, budgeted = true best, grid = true best; and the mean images."""
    from identity_pipeline.evaluation.plan import CostModel
    from identity_pipeline.evaluation.simulate import plain_cut, replay

    rows = []
    for case in cases:
        names = case.oracle.identities
        kinds = _kinds_of(names)
        result = replay(case.oracle, 8, names, kinds, [0, 1, 2, 3], config, CostModel(1.0), budget)
        cut = plain_cut(case.oracle, 8, KINDS, len(names) * 3, [0, 1, 2, 3], budget)
        grid = result.exhaustive
        rows.append(
            (
                result.budgeted == grid,
                abs(result.budgeted - grid) <= 1,
                cut == grid,
                abs(cut - grid) <= 1,
                result.budgeted == case.best,
                grid == case.best,
                result.images,
            )
        )
    return np.asarray(rows, dtype=float).mean(axis=0)


@pytest.fixture(scope="module")
def synthetic_cases():
    from identity_pipeline.evaluation.simulate import synthetic_curves

    # Seeds 10000..: the reported set (margin_z, screen_checkpoints and the look-ahead were
    # chosen on seeds 0..299).
    return [synthetic_curves(np.random.default_rng(10_000 + i), 8, 5, 4) for i in range(150)]


@pytest.mark.parametrize("budget", [None, 240, 120])
def test_budgeted_choice_on_synthetic_curves(synthetic_cases, budget) -> None:
    """The progressive choice against the exhaustive grid (8 checkpoints x 5 people x 3 prompts
    x 4 seeds = 480 images) on curves with a known best, beside the grid cut evenly to the same
    number of images."""
    same, near, cut_same, cut_near, ours_true, grid_true, images = _agreement(
        synthetic_cases, FidelityConfig(), budget
    )
    if budget is None:  # the race alone: the grid's choice, on about half the images
        assert same >= 0.98 and near >= 0.99 and images <= 0.6 * 480
        # ... and the true best as often as the full grid finds it.
        assert ours_true >= grid_true - 0.03
    elif budget == 240:  # half the grid: the race beats the grid cut evenly to 240 images
        assert same >= 0.9 and same >= cut_same + 0.05 and near >= cut_near
    else:  # a quarter (the seed-sized run's 25 %): the two are on a par
        assert same >= 0.7 and same >= cut_same and near >= cut_near - 0.02
    if budget is not None:
        assert images <= budget


def test_budgeted_choice_on_recorded_cpu_runs() -> None:
    """Recorded CPU runs (tiny Qwen-Image, every image of 8 checkpoints x 5 people x 3 prompts x
    6 seeds): the budgeted choice replayed against the exhaustive one."""
    from identity_pipeline.evaluation.plan import CostModel
    from identity_pipeline.evaluation.simulate import load_recorded, replay

    if not RECORDED.is_file():
        pytest.skip(f"no recorded runs at {RECORDED}")
    config = FidelityConfig()
    rows = []
    for oracle in load_recorded(RECORDED, config).values():
        names = sorted(oracle.reference)
        kinds = {name: KINDS for name in names}
        for budget in (None, 120):
            result = replay(oracle, 8, names, kinds, [0, 1, 2, 3], config, CostModel(1.0), budget)
            rows.append((budget, result.agrees, result.distance, result.images))
    frame = pd.DataFrame(rows, columns=["budget", "same", "distance", "images"])
    assert len(frame) == 12
    assert frame["same"].mean() >= 0.9 and (frame["distance"] <= 1).all()
    assert (frame["images"] <= frame["budget"].fillna(480)).all()


def test_budget_comes_from_the_training_run(tmp_path: Path) -> None:
    from identity_pipeline.evaluation.budget import resolve_budget

    run = tmp_path / "run"
    state = run / "checkpoints" / "step-0000002"
    state.mkdir(parents=True)
    assert resolve_budget(FidelityConfig(), run).seconds is None  # nothing recorded yet
    (state / "state.json").write_text(json.dumps({"step": 2, "train_seconds": 40.0}))
    assert resolve_budget(FidelityConfig(), run).seconds == 10.0  # 0.25 x the checkpoint's
    # The trainer's whole run (loading, caching, export: the device was held), or its loop time
    # over resumes when that is larger.
    (run / "result.json").write_text(json.dumps({"train_seconds": 90.0, "total_seconds": 100.0}))
    budget = resolve_budget(FidelityConfig(), run)
    assert budget.seconds == 25.0 and budget.training_seconds == 100.0
    (run / "result.json").write_text(json.dumps({"train_seconds": 400.0, "total_seconds": 100.0}))
    assert resolve_budget(FidelityConfig(), run).seconds == 100.0
    assert "0.25 x" in budget.source
    assert resolve_budget(FidelityConfig(budget_seconds=7.5), run).seconds == 7.5
    assert resolve_budget(FidelityConfig(budget_fraction=None), run).seconds is None
    with pytest.raises(ValueError, match="budget_fraction"):
        FidelityConfig(budget_fraction=0)


@pytest.mark.parametrize(
    ("budget", "fixed", "left"),
    [(25.0, 0.0, 25.0), (25.0, 7.5, 17.5), (25.0, 40.0, 0.0), (None, 7.5, None)],
)
def test_the_images_get_what_the_fixed_cost_leaves(budget, fixed, left) -> None:
    from identity_pipeline.evaluation.budget import Budget, CostRecord, images_budget

    cost = CostRecord("key", 1.0, 0.1, 20, "cpu", model_load_seconds=5.0, fixed_seconds=fixed)
    assert images_budget(Budget(budget, 100.0, "test"), cost) == left


def test_what_keys_the_images() -> None:
    base = FidelityConfig()
    # Images depend on the sampler and size settings, not on the budget or the race.
    for change in ({"max_side": 384}, {"max_inference_steps": 12}, {"seeds": (0, 1)}):
        assert FidelityConfig(**change).generation_hash() != base.generation_hash()
    for change in ({"budget_fraction": 0.5}, {"margin_z": 2.0}, {"screen_checkpoints": 5}):
        assert FidelityConfig(**change).generation_hash() == base.generation_hash()
        assert FidelityConfig(**change).hash() != base.hash()
