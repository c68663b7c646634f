"""Which images to generate: the progressive checkpoint choice on a GPU-time budget.

Scoring every checkpoint with every seed spends most images on checkpoints that are clearly not
the best. Here the checkpoints race (successive elimination) over *blocks* of images, added in a
fixed order: the preferred prompt (the solo close-up) with the first seed, the other prompts with
it, then every prompt with each further seed.

1. **screen**: the last and evenly spread checkpoints get the first block, one image per sampled
   identity (``fit_screen`` cuts identities, then checkpoints, until it costs at most half the
   budget);
2. **neighbours**: the leader's unscored neighbours in the candidate list join the race (they
   catch up on the blocks the others have), so the search walks towards the peak;
3. **more images**: the next block for every checkpoint still in the race; a checkpoint leaves it
   when it would still be behind the leader on the full grid: the mean of the paired per-image
   differences exceeds ``margin_z`` standard errors of the grid's difference (Student's t, with
   the finite-population factor: only the images not yet made are unknown); when the budget
   cannot give the next two blocks to every racer, the leader and the closest ones get them, the
   others leave;

until one checkpoint is left (the leader's margin is clear), every block is used, or the budget
is spent. The checkpoints still racing share the same images, and the configured rule
(``selection.choose_checkpoint``) picks among them on those, as the exhaustive grid would.

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
# Prompt kinds in the order they enter the race: the solo close-up first (the largest face, one
# image per person is the screen), then the training caption and the pair prompt (bleed).
PROMPT_PREFERENCE = ("solo", "caption", "pair")
BASE = -1  # the base model's "candidate index"


Cell = tuple[str, int]  # (prompt kind, seed): one image per planned identity
Block = tuple[Cell, ...]


class Oracle(Protocol):
    """Makes and scores images of one candidate checkpoint (``BASE``: the base model)."""

    def evaluate(self, checkpoint: int, cells: Sequence[Cell]) -> None:
        """Generate (or read back) the images of ``cells`` for every planned identity."""

    def pooled(self, checkpoint: int, cells: Sequence[Cell]) -> float:
        """The selection rule's score on the images of ``cells`` (NaN: undefined)."""

    def units(self, checkpoint: int, cells: Sequence[Cell]) -> Mapping[str, float]:
        """Per identity, the rule's score on that identity's images of ``cells``."""


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
    """What the race starts from, after the budget's cuts."""

    checkpoints: list[int]  # candidate indices the screen scores
    identities: list[str]  # the sampled ones kept, in sampling order
    kinds: list[str]  # prompt kinds, preferred first
    blocks: list[Block]  # in the order they are added
    block_images: list[int]  # images of one checkpoint for each block
    cuts: list[str]  # what the budget removed, in words
    over_budget: bool = False  # even the smallest screen costs more: it is run anyway

    @property
    def images(self) -> int:
        return len(self.checkpoints) * self.block_images[0]


def make_blocks(kinds: Sequence[str], seeds: Sequence[int]) -> list[Block]:
    """The preferred prompt with the first seed, the other prompts with it, then every prompt
    with each further seed."""
    blocks: list[Block] = [((kinds[0], seeds[0]),)]
    if len(kinds) > 1:
        blocks.append(tuple((kind, seeds[0]) for kind in kinds[1:]))
    blocks += [tuple((kind, seed) for kind in kinds) for seed in seeds[1:]]
    return blocks


def ordered_kinds(kinds_of: Mapping[str, Sequence[str]]) -> list[str]:
    present = {kind for kinds in kinds_of.values() for kind in kinds}
    return [k for k in PROMPT_PREFERENCE if k in present] + sorted(present - set(PROMPT_PREFERENCE))


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
) -> ScreenPlan:
    """The screen within ``SCREEN_SHARE`` of the budget: fewer identities (down to
    ``MIN_SCREEN_IDENTITIES``), then fewer checkpoints (down to 2), then two identities. What is
    still over is run anyway (the smallest useful plan) and said."""
    limit = math.inf if budget is None else SCREEN_SHARE * budget
    checkpoints = spread_indices(candidates, screen_checkpoints)
    people = list(identities)
    kinds = ordered_kinds(kinds_of)
    blocks = make_blocks(kinds, seeds)
    cuts: list[str] = []

    def images(names: Sequence[str], block: Block) -> int:
        return sum(1 for name in names for kind, _ in block if kind in kinds_of[name])

    def screen_cost(n_checkpoints: int, names: Sequence[str]) -> float:
        return cost.seconds(n_checkpoints * images(names, blocks[0]), n_checkpoints)

    def fits() -> bool:
        return screen_cost(len(checkpoints), people) <= limit

    floor = min(len(people), MIN_SCREEN_IDENTITIES)
    if not fits() and len(people) > floor:
        keep = max(
            [floor]
            + [
                n
                for n in range(floor, len(people) + 1)
                if screen_cost(len(checkpoints), people[:n]) <= limit
            ]
        )
        cuts.append(f"identities {len(people)} -> {keep}")
        people = people[:keep]
    while not fits() and len(checkpoints) > 2:
        fewer = spread_indices(candidates, len(checkpoints) - 1)
        cuts.append(f"screen checkpoints {len(checkpoints)} -> {len(fewer)}")
        checkpoints = fewer
    if not fits() and len(people) > 2:
        cuts.append(f"identities {len(people)} -> 2")
        people = people[:2]
    return ScreenPlan(
        checkpoints,
        people,
        kinds,
        blocks,
        [images(people, block) for block in blocks],
        cuts,
        not fits(),
    )


@dataclass
class Step:
    """One batch of the plan: done, or left out (and why)."""

    stage: str  # screen | neighbour | more | base | grid
    checkpoints: list[int]
    cells: list[Cell]
    images: int
    seconds: float  # nominal
    done: bool = True
    why: str = ""

    def to_json(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "checkpoints": [_name(c, names) for c in self.checkpoints],
            "prompts": sorted({kind for kind, _ in self.cells}),
            "seeds": sorted({seed for _, seed in self.cells}),
            "images": self.images,
            "seconds": round(self.seconds, 3),
            **({} if self.done else {"skipped": self.why}),
        }


@dataclass
class Race:
    """What the progressive choice did, and why it stopped."""

    steps: list[Step] = field(default_factory=list)
    cells_of: dict[int, list[Cell]] = field(default_factory=dict)  # per candidate index scored
    survivors: list[int] = field(default_factory=list)
    eliminated: dict[int, str] = field(default_factory=dict)
    leader: int | None = None
    shared: list[Cell] = field(default_factory=list)  # the cells every survivor has
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
            "shared_prompts": sorted({kind for kind, _ in self.shared}),
            "shared_seeds": sorted({seed for _, seed in self.shared}),
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
    cost: CostModel,
    budget: float | None,
    margin_z: float,
    include_base: bool = False,
) -> Race:
    """Run the progressive choice; ``budget`` None: no limit but the blocks."""
    state = Race(budget=budget)
    blocks, sizes = screen.blocks, screen.block_images
    done: dict[int, set[int]] = {}  # blocks each checkpoint has

    def remaining() -> float:
        return math.inf if budget is None else budget - state.spent

    def evaluate(stage: str, checkpoint: int, level: int, force: bool = False) -> bool:
        missing = [b for b in range(level) if b not in done.get(checkpoint, set())]
        if not missing:
            return True
        cells = [cell for b in missing for cell in blocks[b]]
        images = sum(sizes[b] for b in missing)
        step = Step(stage, [checkpoint], cells, images, cost.seconds(images, 1))
        if not force and step.seconds > remaining():
            step.done, step.why = False, "budget"
            state.steps.append(step)
            return False
        oracle.evaluate(checkpoint, cells)
        done.setdefault(checkpoint, set()).update(missing)
        state.cells_of.setdefault(checkpoint, []).extend(cells)
        state.steps.append(step)
        return True

    def upto(level: int) -> list[Cell]:
        return [cell for block in blocks[:level] for cell in block]

    level = 1
    grid_cells = len(upto(len(blocks)))  # a checkpoint's cells in the full grid
    active = list(screen.checkpoints)
    for checkpoint in active:  # fitted to the budget by fit_screen: always run
        evaluate("screen", checkpoint, level, force=True)

    while True:
        scores = {c: oracle.pooled(c, upto(level)) for c in active}
        leader = _best(scores)
        if leader is None:
            state.stop = "the rule is undefined for every checkpoint (no faces): nothing to race"
            break
        for other in list(active):
            if other == leader:
                continue
            behind, mean, se = clearly_behind(
                oracle, leader, other, upto(level), margin_z, grid_cells
            )
            if not math.isfinite(scores[other]) or behind:
                active.remove(other)
                state.eliminated[other] = (
                    "rule undefined (no faces)"
                    if not math.isfinite(scores[other])
                    else f"behind by {mean:.4f} (SE {se:.4f}) on {len(upto(level))} image(s) "
                    "per identity"
                )
        neighbours = [n for n in (leader - 1, leader + 1) if 0 <= n < candidates and n not in done]
        if neighbours:
            joined = [n for n in neighbours if evaluate("neighbour", n, level)]
            active = sorted(active + joined)
            if len(joined) < len(neighbours):
                state.stop = "budget spent (neighbours of the leader left out)"
                break
            continue
        if len(active) == 1:
            state.stop = "the leader's margin is clear"
            break
        if level >= len(blocks):
            state.stop = "every image used: the rule picks among the checkpoints still racing"
            break
        each = cost.seconds(sizes[level], 1)
        affordable = len(active)
        if budget is not None:
            affordable = min(affordable, int(remaining() // max(each, 1e-12)))
            # Look one block further: keep only as many racers as can get the next two blocks,
            # when at least two can (a decision between the closest few on more images beats a
            # wider race on fewer; chosen on the synthetic tuning curves).
            ahead = each + (cost.seconds(sizes[level + 1], 1) if level + 1 < len(blocks) else 0)
            deeper = int(remaining() // max(ahead, 1e-12))
            if 2 <= deeper < affordable:
                affordable = deeper
        if affordable < len(active):
            # Not every racer gets the next block: the leader and the closest ones do.
            ranked = sorted(active, key=lambda c: (-_finite(scores[c]), c))
            dropped = ranked[affordable:] if affordable >= 2 else ranked
            state.steps.append(
                Step(
                    "more",
                    sorted(dropped),
                    list(blocks[level]),
                    sizes[level] * len(dropped),
                    each * len(dropped),
                    False,
                    "budget",
                )
            )
            if affordable < 2:
                state.stop = f"budget spent ({len(active)} checkpoints still racing)"
                break
            for checkpoint in dropped:
                active.remove(checkpoint)
                state.eliminated[checkpoint] = "left out for the budget, behind the leader"
        for checkpoint in active:
            evaluate("more", checkpoint, level + 1, force=True)
        level += 1

    state.survivors = sorted(active)
    state.shared = upto(level)
    state.leader = _best({c: oracle.pooled(c, state.shared) for c in state.survivors})
    if include_base:  # the "before" point of the curves: it decides nothing, so comes last
        evaluate("base", BASE, min(2, len(blocks)))
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
    screen: ScreenPlan,
    cost: CostModel,
    include_base: bool = False,
) -> Race:
    """Every candidate with every block (the exhaustive choice, no budget)."""
    state = Race()
    cells = [cell for block in screen.blocks for cell in block]
    images = sum(screen.block_images)
    for checkpoint in ([BASE] if include_base else []) + list(range(candidates)):
        oracle.evaluate(checkpoint, cells)
        state.cells_of[checkpoint] = list(cells)
        state.steps.append(Step("grid", [checkpoint], cells, images, cost.seconds(images, 1)))
    state.survivors = list(range(candidates))
    state.shared = cells
    state.leader = _best({c: oracle.pooled(c, cells) for c in state.survivors})
    state.stop = "exhaustive: every checkpoint with every image"
    return state


def clearly_behind(
    oracle: Oracle,
    leader: int,
    other: int,
    cells: Sequence[Cell],
    z: float,
    total_cells: int | None = None,
) -> tuple[bool, float, float]:
    """Would ``other`` still be behind ``leader`` on the full grid, at ``z`` standard errors?

    Paired per image (same identity, prompt and seed: the seed's noise is largely shared), the
    mean difference so far predicts the grid's; what is unknown is only the images not yet made,
    so the standard error carries the finite-population factor sqrt(1 - seen / all): the grid is
    a finite set of images, and once every one is seen the grid's choice is known exactly
    (``total_cells`` None: an infinite grid, the plain standard error). Fewer than two pairs
    decide nothing."""
    differences = []
    for cell in cells:
        mine, theirs = oracle.units(leader, [cell]), oracle.units(other, [cell])
        differences += [
            mine[name] - theirs[name]
            for name in sorted(mine.keys() & theirs.keys())
            if math.isfinite(mine[name]) and math.isfinite(theirs[name])
        ]
    if len(differences) < 2:
        return False, math.nan, math.nan
    values = np.asarray(differences)
    mean = float(values.mean())
    unseen = 1.0 if total_cells is None else max(0.0, 1 - len(cells) / total_cells)
    se = float(values.std(ddof=1) / math.sqrt(len(values)) * math.sqrt(unseen))
    return bool(mean > 0 and mean > critical_value(z, len(values) - 1) * se), mean, se


def critical_value(z: float, dof: int) -> float:
    """Student's t at the one-sided level of ``z`` standard normal deviations: with a handful of
    pairs the standard error is itself uncertain, and z alone would eliminate too eagerly."""
    from scipy import stats  # scikit-learn's own dependency

    return float(stats.t.ppf(stats.norm.cdf(z), dof))


def exhaustive_images(candidates: int, images_per_seed: int, seeds: int, base: bool) -> int:
    """Images of the full grid: every candidate (and the base model) x every prompt and seed."""
    return (candidates + int(base)) * images_per_seed * seeds
