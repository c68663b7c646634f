"""Identity fidelity of a trained LoRA (no dagster here; the asset shell lives in ``assets``).

Does the LoRA draw the people it learned, without copying their training photos and without
putting their face on everyone else? Modules:

* ``metrics``   likeness, copy-paste, bleed (confusion matrices), faces per image, on plain
                embedding arrays (``score_identities``), so any images' faces can be scored;
* ``selection`` the best checkpoint under a configurable rule (``choose_checkpoint``);
* ``embedding`` faces of real photos (manifest + masks, or folders) and of generated images;
* ``generate``  checkpoints of a training run -> diffusers LoRA -> images (torch, diffusers);
* ``budget``    the GPU-time budget (a share of the training's own time) and the probe's prices;
* ``plan``      the progressive checkpoint choice within the budget (pure decisions);
* ``images``    images cached per (checkpoint, prompt, seed, settings), the one-image probe;
* ``simulate``  the plan replayed on recorded or synthetic score curves, beside the full grid;
* ``run``       ``evaluate_run``: all of the above, files and pictures;
* ``report``    tables, JSON, the confusion-matrix and curve pictures;
* ``cli``       ``identity-pipeline fidelity --reference DIR --generated DIR``.

Only the light modules are imported here; ``generate`` and ``run`` pull in torch.
"""

from identity_pipeline.evaluation.config import (
    BEST_RULES,
    DEFAULT_FIDELITY_CONFIG,
    PROMPT_KINDS,
    FidelityConfig,
    fill_name,
)
from identity_pipeline.evaluation.metrics import (
    TABLE_COLUMNS,
    FidelityScores,
    GeneratedImage,
    diagonal_dominance,
    real_baseline,
    real_confusion_matrix,
    score_identities,
)
from identity_pipeline.evaluation.selection import Choice, choose_checkpoint, selection_score

__all__ = [
    "BEST_RULES",
    "DEFAULT_FIDELITY_CONFIG",
    "PROMPT_KINDS",
    "TABLE_COLUMNS",
    "Choice",
    "FidelityConfig",
    "FidelityScores",
    "GeneratedImage",
    "choose_checkpoint",
    "diagonal_dominance",
    "fill_name",
    "real_baseline",
    "real_confusion_matrix",
    "score_identities",
    "selection_score",
]
