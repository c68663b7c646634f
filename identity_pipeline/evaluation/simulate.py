"""Replay the budgeted choice on recorded score curves, beside the exhaustive one.

An evaluation run with ``exhaustive: true`` records every (checkpoint, identity, prompt, seed)
image's faces; ``RecordedOracle`` serves any subset of them as the sampler would have made them,
so the progressive plan (``plan.race``) can be replayed at any budget and its choice compared
with the full grid's. ``synthetic_curves`` makes score curves whose best checkpoint is known
(a rise, a peak, a decline, per-identity offsets and seed noise correlated across checkpoints).
Used by the tests and ``benchmarks/fidelity_budget.py``; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from identity_pipeline.evaluation.config import FidelityConfig
from identity_pipeline.evaluation.metrics import GeneratedImage
from identity_pipeline.evaluation.plan import (
    BASE,
    Cell,
    CostModel,
    Race,
    fit_screen,
    full_grid,
    race,
    sample_identities,
    spread_indices,
)
from identity_pipeline.evaluation.selection import ScoredImages


class TableOracle:
    """Scores given directly, one per image: ``scores[checkpoint, identity, kind, seed]``; a set
    of images scores their mean (the rule is a mean over people)."""

    def __init__(
        self,
        scores: np.ndarray,
        identities: Sequence[str],
        kinds: Sequence[str],
        seeds: Sequence[int],
    ) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)
        self.identities = list(identities)
        self.kinds = list(kinds)
        self.seeds = list(seeds)
        self.kept = list(range(len(self.identities)))
        self.calls: list[tuple[int, tuple[Cell, ...]]] = []

    def restrict(self, identities: Sequence[str]) -> TableOracle:
        view = TableOracle(self.scores, self.identities, self.kinds, self.seeds)
        view.kept = [self.identities.index(name) for name in identities]
        return view

    def evaluate(self, checkpoint: int, cells: Sequence[Cell]) -> None:
        self.calls.append((checkpoint, tuple(cells)))

    def _block(self, checkpoint: int, cells: Sequence[Cell]) -> np.ndarray:
        """(identities kept, cells) scores."""
        table = self.scores[checkpoint][self.kept]
        return np.stack(
            [table[:, self.kinds.index(kind), self.seeds.index(seed)] for kind, seed in cells],
            axis=1,
        )

    def pooled(self, checkpoint: int, cells: Sequence[Cell]) -> float:
        if checkpoint == BASE:
            return math.nan
        return float(self._block(checkpoint, cells).mean())

    def units(self, checkpoint: int, cells: Sequence[Cell]) -> dict[str, float]:
        means = self._block(checkpoint, cells).mean(axis=1)
        return {self.identities[i]: float(v) for i, v in zip(self.kept, means, strict=True)}


class RecordedOracle(ScoredImages):
    """Recorded faces of every (checkpoint, identity, prompt kind, seed) image, served as the
    sampler would make them: the rule's scores of any subset, as the real run computes them."""

    def evaluate(self, checkpoint: int, cells: Sequence[Cell]) -> None:
        recorded = {(image.prompt_kind, image.seed) for image in self.images.get(checkpoint, [])}
        missing = set(cells) - recorded
        if missing:
            raise KeyError(f"checkpoint {checkpoint} has no recorded images for {missing}")

    def restrict(self, identities: Sequence[str], kinds: Sequence[str]) -> RecordedOracle:
        """The images of these identities and prompt kinds only (views are kept, with their
        memoised scores, so replays at several budgets score each subset once)."""
        key = (tuple(sorted(identities)), tuple(sorted(kinds)))
        views = self.__dict__.setdefault("_views", {})
        if key not in views:
            people, wanted = set(identities), set(kinds)
            images = {
                checkpoint: [i for i in found if i.identity in people and i.prompt_kind in wanted]
                for checkpoint, found in self.images.items()
            }
            views[key] = RecordedOracle(self.reference, self.training, self.config, images)
        return views[key]


@dataclass(frozen=True)
class SyntheticCase:
    oracle: TableOracle
    best: int  # the true best: argmax of these identities' noise-free mean curve
    margin: float  # its lead over the runner-up, in standard errors of the full grid's estimate
    truth: np.ndarray  # the noise-free mean curve, one value per checkpoint

    def regret(self, chosen: int | None) -> float:
        """Likeness lost by choosing ``chosen`` instead of the true best (the rule's units)."""
        if chosen is None:
            return float(self.truth[self.best] - self.truth.min())
        return float(self.truth[self.best] - self.truth[chosen])


def synthetic_curves(
    rng: np.random.Generator,
    candidates: int = 8,
    identities: int = 5,
    seeds: int = 4,
    kinds: Sequence[str] = ("caption", "solo", "pair"),
    noise: tuple[float, float] = (0.035, 0.1),
) -> SyntheticCase:
    """One score per (checkpoint, identity, prompt, seed) image along training, with a known best.

    The rule's curve rises (likeness learned) and falls late (memorisation, bleed), its peak
    anywhere from a quarter of the run to past its end, jagged by each checkpoint's own training
    noise; each identity is offset and peaks a little earlier or later, each prompt kind is
    offset; each image's noise is shared in part by the
    same prompt and seed at the adjacent checkpoint (the same starting noise through slightly
    different weights). ``margin`` says how clearly the full grid can tell the best from the
    runner-up (a flat top: near 0). ``noise``: the range of one image's noise (standard
    deviation); the default's lower end is where the full grid, re-run with other seeds, makes
    the same choice about 90 % of the time, its upper end about 40 %.
    """
    t = np.linspace(1 / candidates, 1.0, candidates)
    peak = rng.uniform(0.25, 1.1)
    rise = rng.uniform(0.08, 0.3)
    fall = rng.uniform(0.2, 1.5)
    height = rng.uniform(0.15, 0.4)

    def curve(centre: float) -> np.ndarray:
        return height * (1 - np.exp(-t / rise)) - fall * np.clip(t - centre, 0, None) ** 2

    means = np.stack([curve(peak + rng.normal(0, 0.08)) for _ in range(identities)])
    means += rng.normal(0, 0.06, size=(identities, 1))  # per-identity offsets
    # Each checkpoint's weights carry their own SGD noise: a jagged curve no seed averages out.
    means += rng.normal(0, rng.uniform(0, 0.03), size=(1, candidates))
    kind_offsets = rng.normal(0, 0.03, size=len(kinds))
    noise_sd = rng.uniform(*noise)  # one image's score
    carry = rng.uniform(0.3, 0.7)  # one image's noise shared with the adjacent checkpoint
    shape = (identities, len(kinds), seeds)
    scores = np.empty((candidates, *shape))
    noise = rng.normal(0, noise_sd, size=shape)
    for c in range(candidates):
        if c:
            noise = carry * noise + math.sqrt(1 - carry**2) * rng.normal(0, noise_sd, shape)
        scores[c] = means[:, c, None, None] + kind_offsets[None, :, None] + noise
    truth = means.mean(axis=0)
    best = int(np.argmax(truth))
    images = identities * len(kinds) * seeds
    gaps = [
        (truth[best] - truth[other])
        / (noise_sd * math.sqrt(2 * (1 - carry ** abs(other - best)) / images))
        for other in range(candidates)
        if other != best
    ]
    names = [f"person{i:02d}" for i in range(identities)]
    oracle = TableOracle(scores, names, list(kinds), list(range(seeds)))
    return SyntheticCase(oracle, best, float(min(gaps)) if gaps else math.inf, truth)


@dataclass(frozen=True)
class Replay:
    budgeted: int | None
    exhaustive: int | None
    images: int
    exhaustive_images: int
    race: Race

    @property
    def agrees(self) -> bool:
        return self.budgeted == self.exhaustive

    @property
    def distance(self) -> int:
        if self.budgeted is None or self.exhaustive is None:
            return 0 if self.budgeted == self.exhaustive else 10**6
        return abs(self.budgeted - self.exhaustive)


def replay(
    oracle,
    candidates: int,
    identities: Sequence[str],
    kinds_of: Mapping[str, Sequence[str]],
    seeds: Sequence[int],
    config: FidelityConfig,
    cost: CostModel,
    budget: float | None,
) -> Replay:
    """The budgeted plan's choice and the exhaustive grid's, on the same recorded scores."""
    sampled = sample_identities(identities, config.sample_identities)
    screen = fit_screen(
        candidates, sampled, kinds_of, seeds, cost, budget, config.screen_checkpoints
    )
    view = _restrict(oracle, screen.identities, screen.kinds)
    budgeted = race(view, candidates, screen, cost, budget, config.margin_z)
    everyone = fit_screen(candidates, list(identities), kinds_of, seeds, cost, None, candidates)
    grid = full_grid(
        _restrict(oracle, list(identities), everyone.kinds), candidates, everyone, cost
    )
    return Replay(budgeted.leader, grid.leader, budgeted.images, grid.images, budgeted)


def _restrict(oracle, identities: Sequence[str], kinds: Sequence[str]):
    if isinstance(oracle, RecordedOracle):
        return oracle.restrict(identities, kinds)
    return oracle.restrict(identities)


def load_recorded(path: Path, config: FidelityConfig) -> dict[str, RecordedOracle]:
    """One oracle per recorded run (``benchmarks/fidelity_budget.py record``): every image's
    faces (``role`` generated), the real photos' embeddings (reference, training)."""
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
        dim = len(next(iter(reference.values()))[0])
        images: dict[int, list[GeneratedImage]] = {}
        for row in rows[rows["role"] == "generated"].itertuples(index=False):
            faces = [np.asarray(face, np.float32) for face in row.faces]
            matrix = np.stack(faces) if faces else np.zeros((0, dim), np.float32)
            images.setdefault(int(row.checkpoint), []).append(
                GeneratedImage(str(row.identity), matrix, str(row.prompt_kind), int(row.seed))
            )
        oracles[str(run)] = RecordedOracle(reference, training, config, images)
    return oracles


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
