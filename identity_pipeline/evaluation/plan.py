"""Which images to generate: the progressive checkpoint choice on a GPU-time budget.

Scoring every checkpoint with every seed spends most images on checkpoints that are clearly not
the best. Here the checkpoints race (successive elimination):

1. **screen**: the last and a few evenly spread checkpoints, the first seed(s) of every sampled
   identity's prompts (``fit_screen`` cuts identities, then checkpoints, then prompts until it
   costs at most half the budget);
2. **neighbours**: the leader's unscored neighbours in the candidate list join the race (they
   catch up with the seeds the others have), so the search walks towards the peak;
3. **seeds**: one more seed for every checkpoint still in the race; a checkpoint leaves it when
   it is clearly behind the leader: the mean of the paired per-(identity, seed) differences
   exceeds ``margin_z`` standard errors;

until one checkpoint is left (the leader's margin is clear), every seed is used, or the next step
does not fit the budget. The checkpoints still racing share the same images, and the configured
rule (``selection.choose_checkpoint``) picks among them on those, as the exhaustive grid would.

Pure decisions, no torch: an ``Oracle`` makes and scores what is asked (``run.py``: the sampler;
tests and ``benchmarks/fidelity_budget.py``: recorded or synthetic scores). The budget is spent
on a *nominal* cost (images x measured seconds per image + one LoRA switch per batch), cached
images included, so a re-run plans the same images and finds them all in the cache.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# The screen may take at most this share of the budget: the rest is for the race, where the
# decision is made.
SCREEN_SHARE = 0.5
# Fewest identities the screen is cut to before it loses checkpoints: fewer people make the
# per-identity differences, and so the margin, meaningless.
MIN_SCREEN_IDENTITIES = 3
# Prompt kinds in the order they are kept when the screen must drop prompts: the solo close-up
# shows the largest face; the pair prompt is what measures bleed.
PROMPT_PREFERENCE = ("solo", "caption", "pair")
BASE = -1  # the base model's "candidate index"


class Oracle(Protocol):
    """Makes and scores images of one candidate checkpoint (``BASE``: the base model)."""

    def evaluate(self, checkpoint: int, seeds: Sequence[int]) -> None:
        """Generate (or read back) the images of ``seeds`` for every planned prompt."""

    def pooled(self, checkpoint: int, seeds: Sequence[int]) -> float:
        """The selection rule's score on the images of ``seeds`` (NaN: undefined)."""

    def units(self, checkpoint: int, seed: int) -> Mapping[str, float]:
        """Per identity, the rule's score on that identity's images of ``seed``."""


@dataclass(frozen=True)
class CostModel:
    """Nominal seconds of the plan's pieces on this device (from a one-image probe)."""

    seconds_per_image: float
    seconds_per_switch: float = 0.0  # loading one checkpoint's LoRA
    steps: int = 1  # inference steps per image the probe used

    @property
    def seconds_per_step(self) -> float:
        return self.seconds_per_image / max(1, self.steps)

    def seconds(self, images: int, switches: int = 0) -> float:
        return images * self.seconds_per_image + switches * self.seconds_per_switch


@dataclass(frozen=True)
class ScreenPlan:
    """What the screen scores, after the budget's cuts."""

    checkpoints: list[int]  # candidate indices
    identities: list[str]  # the sampled ones kept, in sampling order
    kinds: list[str]  # prompt kinds kept
    seeds: list[int]
    images_per_seed: int  # images of one checkpoint and one seed
    cuts: list[str]  # what the budget removed, in words
    over_budget: bool = False  # even the smallest screen costs more: it is run anyway


def sample_identities(identities: Sequence[str], limit: int | None) -> list[str]:
    """A stable sample: ordered by a hash of the name, the first ``limit`` kept.

    Adding a person moves at most one person out of the sample.
    """
    ordered = sorted(identities, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    return ordered if limit is None else ordered[:limit]


def spread_indices(count: int, limit: int) -> list[int]:
    """At most ``limit`` of ``range(count)``, evenly spaced, the last always kept."""
    if count <= limit:
        return list(range(count))
    if limit == 1:
        return [count - 1]
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def fit_screen(
    candidates: int,
    identities: Sequence[str],
    kinds_of: Mapping[str, Sequence[str]],
    seeds: Sequence[int],
    cost: CostModel,
    budget: float | None,
    screen_checkpoints: int,
    screen_seeds: int,
) -> ScreenPlan:
    """The screen within ``SCREEN_SHARE`` of the budget: fewer seeds, then identities (down to
    ``MIN_SCREEN_IDENTITIES``), then checkpoints (down to 2), then one prompt per identity, then
    two identities. What is still over is run anyway (the smallest useful plan) and said."""
    limit = math.inf if budget is None else SCREEN_SHARE * budget
    checkpoints = spread_indices(candidates, screen_checkpoints)
    people = list(identities)
    kinds = [kind for kind in PROMPT_PREFERENCE if any(kind in k for k in kinds_of.values())]
    kinds += sorted({kind for k in kinds_of.values() for kind in k} - set(kinds))
    used_seeds = list(seeds[:screen_seeds])
    cuts: list[str] = []

    def per_seed(names: Sequence[str], kept: Sequence[str]) -> int:
        return sum(sum(1 for kind in kinds_of[name] if kind in kept) for name in names)

    def screen_cost(n_checkpoints: int, names: Sequence[str], kept: Sequence[str], n_seeds: int):
        return cost.seconds(n_checkpoints * n_seeds * per_seed(names, kept), n_checkpoints)

    def fits() -> bool:
        return screen_cost(len(checkpoints), people, kinds, len(used_seeds)) <= limit

    if not fits() and len(used_seeds) > 1:
        cuts.append(f"screen seeds {len(used_seeds)} -> 1")
        used_seeds = used_seeds[:1]
    floor = min(len(people), MIN_SCREEN_IDENTITIES)
    if not fits() and len(people) > floor:
        keep = max(
            [floor]
            + [
                n
                for n in range(floor, len(people) + 1)
                if screen_cost(len(checkpoints), people[:n], kinds, 1) <= limit
            ]
        )
        cuts.append(f"identities {len(people)} -> {keep}")
        people = people[:keep]
    while not fits() and len(checkpoints) > 2:
        fewer = spread_indices(candidates, len(checkpoints) - 1)
        cuts.append(f"screen checkpoints {len(checkpoints)} -> {len(fewer)}")
        checkpoints = fewer
    if not fits() and len(kinds) > 1:
        cuts.append(f"prompts {'+'.join(kinds)} -> {kinds[0]}")
        kinds = kinds[:1]
    if not fits() and len(people) > 2:
        cuts.append(f"identities {len(people)} -> 2")
        people = people[:2]
    people = [name for name in people if any(kind in kinds for kind in kinds_of[name])]
    return ScreenPlan(
        checkpoints, people, kinds, used_seeds, per_seed(people, kinds), cuts, not fits()
    )


@dataclass
class Step:
    """One batch of the plan: done, or left out (and why)."""

    stage: str  # screen | neighbour | seed | base
    checkpoints: list[int]
    seeds: list[int]
    images: int
    seconds: float  # nominal
    done: bool = True
    why: str = ""

    def to_json(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        shown = [_name(c, names) for c in self.checkpoints]
        return {
            "stage": self.stage,
            "checkpoints": shown,
            "seeds": self.seeds,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            **({} if self.done else {"skipped": self.why}),
        }


@dataclass
class Race:
    """What the progressive choice did, and why it stopped."""

    steps: list[Step] = field(default_factory=list)
    seeds_of: dict[int, list[int]] = field(default_factory=dict)  # per candidate index scored
    survivors: list[int] = field(default_factory=list)
    eliminated: dict[int, str] = field(default_factory=dict)
    leader: int | None = None
    level: int = 0  # seeds the survivors share
    stop: str = ""
    budget: float | None = None

    @property
    def spent(self) -> float:
        return sum(step.seconds for step in self.steps if step.done)

    @property
    def images(self) -> int:
        return sum(step.images for step in self.steps if step.done)

    @property
    def skipped(self) -> list[Step]:
        return [step for step in self.steps if not step.done]

    def to_json(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        return {
            "stop": self.stop,
            "leader": _name(self.leader, names) if self.leader is not None else None,
            "survivors": [_name(c, names) for c in self.survivors],
            "eliminated": {_name(c, names): why for c, why in self.eliminated.items()},
            "seeds_shared": self.level,
            "images": self.images,
            "seconds_estimate": round(self.spent, 3),
            "steps": [step.to_json(names) for step in self.steps],
        }


def _name(index: int, names: Sequence[str] | None) -> Any:
    if names is None:
        return index
    return "base" if index == BASE else names[index]


def race(
    oracle: Oracle,
    candidates: int,
    screen: ScreenPlan,
    seeds: Sequence[int],
    cost: CostModel,
    budget: float | None,
    margin_z: float,
    include_base: bool = False,
) -> Race:
    """Run the progressive choice; ``budget`` None: no limit but the seeds."""
    state = Race(budget=budget)
    seeds = list(seeds)
    per_seed = screen.images_per_seed

    def remaining() -> float:
        return math.inf if budget is None else budget - state.spent

    def evaluate(stage: str, checkpoint: int, wanted: Sequence[int], force: bool = False) -> bool:
        missing = [s for s in wanted if s not in state.seeds_of.get(checkpoint, [])]
        if not missing:
            return True
        step = Step(
            stage,
            [checkpoint],
            missing,
            per_seed * len(missing),
            cost.seconds(per_seed * len(missing), 1),
        )
        if not force and step.seconds > remaining():
            step.done, step.why = False, "budget"
            state.steps.append(step)
            return False
        oracle.evaluate(checkpoint, missing)
        state.seeds_of.setdefault(checkpoint, []).extend(missing)
        state.steps.append(step)
        return True

    level = len(screen.seeds)
    active = list(screen.checkpoints)
    for checkpoint in active:  # the screen was fitted to the budget: always run
        evaluate("screen", checkpoint, seeds[:level], force=True)

    while True:
        shared = seeds[:level]
        scores = {c: oracle.pooled(c, shared) for c in active}
        leader = _best(scores)
        if leader is None:
            state.stop = "the rule is undefined for every checkpoint (no faces): nothing to race"
            break
        for other in list(active):
            if other == leader:
                continue
            behind, mean, se = clearly_behind(oracle, leader, other, shared, margin_z)
            if not math.isfinite(scores[other]) or behind:
                active.remove(other)
                state.eliminated[other] = (
                    "rule undefined (no faces)"
                    if not math.isfinite(scores[other])
                    else f"behind by {mean:.4f} (SE {se:.4f}) at {len(shared)} seed(s)"
                )
        neighbours = [
            n for n in (leader - 1, leader + 1) if 0 <= n < candidates and n not in state.seeds_of
        ]
        if neighbours:
            joined = [n for n in neighbours if evaluate("neighbour", n, shared)]
            active.extend(joined)
            active.sort()
            if len(joined) < len(neighbours):
                state.stop = "budget spent (neighbours of the leader left out)"
                break
            continue
        if len(active) == 1:
            state.stop = "the leader's margin is clear"
            break
        if level >= len(seeds):
            state.stop = "every seed used: the rule picks among the checkpoints still racing"
            break
        wanted = seeds[: level + 1]
        affordable = max(
            (k for k in range(len(active) + 1) if cost.seconds(per_seed * k, k) <= remaining()),
            default=0,
        )
        if affordable < len(active):
            # Not every racer gets the next seed: the leader and the closest ones do (a decision
            # between two on more seeds beats a wider race on fewer), the rest leave the race.
            ranked = sorted(active, key=lambda c: (-_finite(scores[c]), c))
            dropped = ranked[affordable:] if affordable >= 2 else ranked
            images = per_seed * len(dropped)
            state.steps.append(
                Step(
                    "seed",
                    sorted(dropped),
                    [seeds[level]],
                    images,
                    cost.seconds(images, len(dropped)),
                    False,
                    "budget",
                )
            )
            if affordable < 2:
                state.stop = f"budget spent ({len(active)} checkpoints still racing)"
                break
            for checkpoint in dropped:
                active.remove(checkpoint)
                state.eliminated[checkpoint] = (
                    f"left out for the budget, behind the leader at {len(shared)} seed(s)"
                )
        for checkpoint in active:
            evaluate("seed", checkpoint, wanted, force=True)
        level += 1

    state.level = level
    state.survivors = sorted(active)
    state.leader = _best({c: oracle.pooled(c, seeds[:level]) for c in state.survivors})
    if include_base:  # the "before" point of the curves: it decides nothing, so comes last
        evaluate("base", BASE, seeds[: len(screen.seeds)])
    return state


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _best(scores: Mapping[int, float]) -> int | None:
    """The highest finite score; ties go to the earlier checkpoint (less training)."""
    finite = [c for c, score in scores.items() if math.isfinite(score)]
    return max(finite, key=lambda c: (scores[c], -c)) if finite else None


def full_grid(
    oracle: Oracle,
    candidates: int,
    images_per_seed: int,
    seeds: Sequence[int],
    cost: CostModel,
    include_base: bool = False,
) -> Race:
    """Every candidate with every seed (the exhaustive choice, no budget)."""
    state = Race()
    order = ([BASE] if include_base else []) + list(range(candidates))
    for checkpoint in order:
        oracle.evaluate(checkpoint, list(seeds))
        state.seeds_of[checkpoint] = list(seeds)
        images = images_per_seed * len(seeds)
        state.steps.append(Step("grid", [checkpoint], list(seeds), images, cost.seconds(images, 1)))
    state.level = len(seeds)
    state.survivors = list(range(candidates))
    state.leader = _best({c: oracle.pooled(c, list(seeds)) for c in state.survivors})
    state.stop = "exhaustive: every checkpoint with every seed"
    return state


def clearly_behind(
    oracle: Oracle, leader: int, other: int, seeds: Sequence[int], z: float
) -> tuple[bool, float, float]:
    """Is ``other`` more than ``z`` standard errors behind ``leader``? Paired over the (identity,
    seed) units both have a finite score for; fewer than two pairs decide nothing."""
    differences = []
    for seed in seeds:
        mine, theirs = oracle.units(leader, seed), oracle.units(other, seed)
        for identity in sorted(mine.keys() & theirs.keys()):
            a, b = mine[identity], theirs[identity]
            if math.isfinite(a) and math.isfinite(b):
                differences.append(a - b)
    if len(differences) < 2:
        return False, math.nan, math.nan
    values = np.asarray(differences)
    mean = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(len(values)))
    return bool(mean > 0 and mean > critical_value(z, len(values) - 1) * se), mean, se


def critical_value(z: float, dof: int) -> float:
    """Student's t at the one-sided level of ``z`` standard normal deviations: with a handful of
    pairs the standard error is itself uncertain, and z alone would eliminate too eagerly."""
    from scipy import stats  # scikit-learn's own dependency

    return float(stats.t.ppf(stats.norm.cdf(z), dof))


def exhaustive_images(candidates: int, images_per_seed: int, seeds: int, base: bool) -> int:
    """Images of the full grid: every candidate (and the base model) x every seed."""
    return (candidates + int(base)) * images_per_seed * seeds
