"""The ``fidelity`` settings: every knob of the fidelity evaluation, with its defaults.

``generation_hash()`` covers what the generated images depend on (prompts, seeds, sampler and
size settings): changing one of those makes new images; the budget, the race and the ranking
rule only decide which stored images are used and how they are scored (``hash()`` covers all).
Images are stored per (checkpoint, prompt, seed, resolved settings): ``evaluation.images``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from identity_pipeline.settings import build_config, config_dict, stable_hash

# The dataset's caption placeholder (identity_pipeline.dataset.config.NAME_PLACEHOLDER): prompts
# here use the same one, so a caption template can be pasted in as is.
NAME_PLACEHOLDER = "{name}"

# Bump when code changes alter generated images or their faces for the same config.
EVALUATION_VERSION = 2  # 2: images cached per (checkpoint, prompt, seed, settings)

BestRule = Literal["likeness_minus_bleed", "likeness", "identification"]
BEST_RULES: tuple[str, ...] = ("likeness_minus_bleed", "likeness", "identification")

# Prompt kinds, in the order they are generated and shown.
DEFAULT_COPY_THRESHOLD = 0.85

KIND_CAPTION = "caption"
KIND_SOLO = "solo"
KIND_PAIR = "pair"
PROMPT_KINDS = (KIND_CAPTION, KIND_SOLO, KIND_PAIR)


# Which training run is evaluated, not how: left out of ``FidelityConfig.hash``.
RUN_CHOICE_FIELDS = ("run_dir",)


@dataclass(frozen=True)
class FidelityConfig:
    # The training run folder to evaluate; unset: the run of the latest lora_checkpoint
    # materialization.
    run_dir: str | None = None
    # Prompts, ``{name}`` replaced by the identity. "caption": the identity's most frequent
    # training caption (what the LoRA was trained on); "solo": one person; "pair": the identity
    # and someone else, whose face shows whether the identity leaks onto other people. An empty
    # or null prompt is skipped.
    use_training_caption: bool = True
    solo_prompt: str | None = "A close-up photo of {name}, looking at the camera"
    pair_prompt: str | None = "A photo of {name} standing next to another person"
    # One image per seed and prompt: K = len(seeds) images per (checkpoint, identity, prompt).
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    # Sampler settings; None: the training run's sample settings (samples.* in its config).
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    # Image size; None: the most frequent training bucket (both rounded down to what the model
    # accepts).
    width: int | None = None
    height: int | None = None
    # Without an explicit size, images are scaled down to this longer side: a face detector and
    # embedder need ~512 px, not the training resolution (1024² costs 4x the tokens). None: the
    # training size.
    max_side: int | None = 512
    # ... and on a CPU (tiny test/demo models only: a real model would take hours) to this one.
    cpu_max_side: int | None = 256
    # Without an explicit num_inference_steps, the run's sample steps are capped at this: a
    # flow-matching model draws a recognisable face in 20 steps. None: no cap.
    max_inference_steps: int | None = 20
    # Identities evaluated (alphabetical order); None: all of the training set.
    max_identities: int | None = None
    # With more identities than this, a fixed sample of them (stable: by a hash of the name, so a
    # new person changes little) is evaluated; the mean over people is what ranks checkpoints.
    # None: all.
    sample_identities: int | None = 12
    # Checkpoints that can be chosen: evenly spaced over the saved ones, the last always included.
    max_checkpoints: int = 8
    # Also score the base model without any LoRA (step 0): the "before" point of the curves
    # (after the choice, with the first seeds, when the budget allows: it decides nothing).
    include_base_model: bool = True

    # GPU-time budget: at most this share of the training run's own measured time (its
    # result.json: the trainer's whole run, or its loop time over resumes if larger);
    # budget_seconds, when set, is used instead. The plan is cut to fit (a one-image probe
    # measures this model's seconds per image on this device first). Both None: no budget (the
    # progressive choice still stops once its leader is clear).
    budget_fraction: float | None = 0.25
    budget_seconds: float | None = None
    # Progressive choice: first the last and evenly spread checkpoints (all of them by default:
    # curves can be jagged), one image per identity (the solo prompt, first seed); then the
    # leader's neighbours and more prompts and seeds for the checkpoints still racing, until the
    # leader's margin over every other is clear (margin_z standard errors of the full grid's
    # paired difference, per image) or images and budget run out. Both chosen on synthetic
    # curves (benchmarks/fidelity_budget.py, seeds 0-299), not on the curves it reports.
    screen_checkpoints: int = 8
    margin_z: float = 3.0
    # Score every candidate checkpoint with every seed and identity (the full grid), ignoring the
    # budget: what the progressive choice is measured against.
    exhaustive: bool = False

    # Scores. A generated face whose nearest training photo is at least this similar counts as
    # a copy. faces-dev with SFace (benchmarks/fidelity.py): two photos of one person median
    # 0.67, p99 0.83; one photo mirrored and re-encoded p5 0.91, median 0.95.
    copy_threshold: float = DEFAULT_COPY_THRESHOLD
    # A real photo's face must lie this much inside the identity's mask to be that identity's.
    min_mask_coverage: float = 0.3
    # Identities without held-out photos (too few photos for a holdout) have no likeness; with
    # this set their training photos stand in as the reference (flagged "training" in the
    # report; their copy-paste scores are then undefined, and likeness is inflated by
    # memorisation).
    fallback_to_training_photos: bool = False

    # Checkpoint choice. "likeness_minus_bleed": likeness - bleed_weight * bleed -
    # no_face_weight * (share of images without a face); "likeness": likeness -
    # no_face_weight * no-face share; "identification": share of images whose face is
    # recognised as the prompted identity - no_face_weight * no-face share. Ties go to the
    # earlier step (less training, less memorisation).
    best_rule: BestRule = "likeness_minus_bleed"
    bleed_weight: float = 1.0
    no_face_weight: float = 0.25

    # Report: generated images kept on disk (JPEG) and how many go into the inline sheet.
    save_images: bool = True
    max_sample_images: int = 24

    # Keys of earlier versions, and where they live now.
    RENAMED: ClassVar[dict[str, str]] = {"sample_size": "width and height"}

    def __post_init__(self) -> None:
        for name in ("solo_prompt", "pair_prompt"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        problems: list[str] = []
        if not self.seeds:
            problems.append("seeds must not be empty")
        if self.max_checkpoints < 1:
            problems.append("max_checkpoints must be >= 1")
        if self.best_rule not in BEST_RULES:
            problems.append(f"best_rule must be one of {BEST_RULES}, got {self.best_rule!r}")
        for name in ("solo_prompt", "pair_prompt"):
            value = getattr(self, name)
            if value is not None and NAME_PLACEHOLDER not in value:
                problems.append(f"{name} must contain {NAME_PLACEHOLDER}")
        if not (self.use_training_caption or self.solo_prompt or self.pair_prompt):
            problems.append("no prompt left: enable the caption, a solo or a pair prompt")
        for name in ("num_inference_steps", "max_inference_steps", "max_side", "cpu_max_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1")
        if self.sample_identities is not None and self.sample_identities < 2:
            problems.append("sample_identities must be >= 2 (bleed compares people)")
        if self.budget_fraction is not None and self.budget_fraction <= 0:
            problems.append("budget_fraction must be > 0 (null: no budget)")
        if self.budget_seconds is not None and self.budget_seconds <= 0:
            problems.append("budget_seconds must be > 0 (null: budget_fraction decides)")
        if self.screen_checkpoints < 1:
            problems.append("screen_checkpoints must be >= 1")
        if self.margin_z < 0:
            problems.append("margin_z must be >= 0")
        if not -1.0 <= self.copy_threshold <= 1.0:
            problems.append("copy_threshold is a cosine, within [-1, 1]")
        if problems:
            raise ValueError("invalid FidelityConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FidelityConfig:
        return build_config(cls, raw, ("fidelity",))

    def to_dict(self) -> dict[str, Any]:
        return config_dict(self)

    def generation_hash(self) -> str:
        """What the generated images depend on (not how they are scored or ranked)."""
        keys = (
            "use_training_caption",
            "solo_prompt",
            "pair_prompt",
            "seeds",
            "num_inference_steps",
            "guidance_scale",
            "negative_prompt",
            "width",
            "height",
            "max_side",
            "cpu_max_side",
            "max_inference_steps",
        )
        values = {key: self.to_dict()[key] for key in keys}
        return stable_hash({"version": EVALUATION_VERSION, **values})

    def hash(self) -> str:
        values = {k: v for k, v in self.to_dict().items() if k not in RUN_CHOICE_FIELDS}
        return stable_hash({"version": EVALUATION_VERSION, **values})


def fill_name(template: str, identity: str) -> str:
    """Plain substitution (like the dataset's captions): other braces are taken literally."""
    return template.replace(NAME_PLACEHOLDER, identity.strip())


DEFAULT_FIDELITY_CONFIG = FidelityConfig()
