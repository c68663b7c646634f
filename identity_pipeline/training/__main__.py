"""``python -m identity_pipeline.training --config cfg.yaml`` (also under ``accelerate launch``).

Exit status 0 with ``<output_dir>/result.json`` written; a killed run is continued by running the
same command again (it resumes from the last checkpoint). Exit status 2, with one sentence and no
trace: nothing to train on, a missing base model, or another trainer in the same output folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m identity_pipeline.training",
        description="Train a masked identity LoRA from a training-set manifest.",
    )
    parser.add_argument("--config", required=True, help="training config (YAML or JSON)")
    parser.add_argument("--max-steps", type=int, help="override max_steps (e.g. a quick smoke run)")
    args = parser.parse_args(argv)

    # Stop when the step that launched this trainer is gone (no-op when started by hand).
    from identity_pipeline.training.supervision import watch_step

    watch_step()
    # Imported late: `--help` stays instant, torch/diffusers load only for a real run.
    from identity_pipeline.training.config import TrainingConfig
    from identity_pipeline.training.pipes import open_reporter
    from identity_pipeline.training.runs import RunFolderBusy, TrainingInputError
    from identity_pipeline.training.trainer import train

    config = TrainingConfig.load(args.config)
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    with open_reporter(is_main_process=_is_main_process()) as reporter:
        try:
            result = train(config, reporter)
        except (TrainingInputError, RunFolderBusy) as error:
            reporter.log(f"error: {error}")  # a problem with the inputs: the sentence, no trace
            return 2
        reporter.log(f"done: {result.steps} steps, LoRA at {result.lora_path}")
    return 0


def _is_main_process() -> bool:
    """Rank 0 under accelerate/torchrun (RANK is set by the launcher), else True."""
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
