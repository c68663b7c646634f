"""Benchmark: identity_fidelity against every other asset, on a 35-person album on the CPU.

    .venv/bin/python benchmarks/fidelity_album.py [--data DIR] [--min-photos 3] [--work DIR]

The album is built for the run only, in a temporary storage root: every single-person photo of
the people of ``../shared/data/faces-dev`` with at least ``--min-photos`` of them (35 people at 3),
named the way ``make demo`` names the demo album's people (``demo_people.csv``). Benchmark use
only: nothing is kept, nothing trained here is shipped. The whole graph is materialized with the
CPU demo's settings (``data/pipeline.yaml``: the tiny Qwen-Image), as ``make demo`` does it; then
``identity_fidelity`` again, from an empty evaluation folder, with ``exhaustive: true``: the
previous version's plan (every checkpoint and the base model x every identity x 3 prompts x every
seed), the baseline.

Prints the seconds of each asset's step, all other assets together, identity_fidelity with the
budget and the exhaustive baseline, and the images each made. Timings on a shared machine are
noisy: run it on an idle one, and read the ratios.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import dagster as dg  # noqa: E402

from benchmarks.rerun import step_seconds  # noqa: E402
from benchmarks.shared_data import FACES_DEV  # noqa: E402
from identity_pipeline.asset_names import IDENTITY_FIDELITY  # noqa: E402
from identity_pipeline.definitions import build_definitions  # noqa: E402
from identity_pipeline_tests.test_reruns import (  # noqa: E402
    DEMO,
    DemoState,
    latest_metadata,
    materialize_demo,
    use_demo_settings,
)


def build_album(state: DemoState, data: Path, min_photos: int) -> dict[str, int]:
    """Copy the single-person photos of people with enough of them into the album ``demo``."""
    people: dict[str, list[str]] = defaultdict(list)
    with open(data / "labels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["person"] and int(row["n_faces"]) == 1:
                people[row["person"]].append(row["path"])
    people = {name: paths for name, paths in people.items() if len(paths) >= min_photos}
    album = state.layout.album_dir(DEMO)
    album.mkdir(parents=True)
    rows = []
    for name, paths in sorted(people.items()):
        for index, source in enumerate(sorted(paths)):
            target = f"{index:02d} {name}{Path(source).suffix.lower()}"
            shutil.copyfile(data / source, album / target)
            rows.append({"path": target, "person": name})
    with open(state.data / "demo_people.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "person"])
        writer.writeheader()
        writer.writerows(rows)
    return {name: len(paths) for name, paths in people.items()}


def prepare(root: Path, data: Path, min_photos: int) -> tuple[DemoState, dict[str, int]]:
    state = DemoState(root)
    counts = build_album(state, data, min_photos)
    use_demo_settings(state)
    return state, counts


def exhaustive_fidelity(state: DemoState) -> tuple[float, dict[str, object]]:
    """identity_fidelity again from an empty evaluation folder, with the full grid."""
    shutil.rmtree(state.layout.asset_dir(IDENTITY_FIDELITY) / "runs", ignore_errors=True)
    defs = build_definitions(str(state.data), training_cron=None)
    job = defs.resolve_implicit_global_asset_job_def()
    with state.instance() as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(IDENTITY_FIDELITY)],
            run_config={"ops": {IDENTITY_FIDELITY: {"config": {"exhaustive": True}}}},
        )
        seconds = step_seconds(instance, [result.run_id])
        return seconds.get(IDENTITY_FIDELITY, 0.0), latest_metadata(instance, IDENTITY_FIDELITY)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=FACES_DEV)
    parser.add_argument("--min-photos", type=int, default=3)
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the exhaustive grid (the slow part)"
    )
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fidelity-album-"))
    try:
        state, counts = prepare(work / "state", args.data, args.min_photos)
        print(f"album: {len(counts)} people, {sum(counts.values())} photos ({args.data})")
        runs: list[str] = []
        started = time.perf_counter()
        materialize_demo(state, on_run=lambda run: runs.append(run.run_id))
        wall = time.perf_counter() - started
        with state.instance() as instance:
            seconds = step_seconds(instance, runs)
            budgeted = latest_metadata(instance, IDENTITY_FIDELITY)
            trained = latest_metadata(instance, "lora_checkpoint")
        per_asset: dict[str, float] = defaultdict(float)
        for step, value in seconds.items():
            per_asset[step.split("[")[0]] += value
        fidelity = per_asset.pop(IDENTITY_FIDELITY, 0.0)
        others = sum(per_asset.values())

        print(f"\nfull run: {wall:.0f} s wall clock")
        print(f"{'asset step':28} {'seconds':>9}")
        for name, value in sorted(per_asset.items(), key=lambda item: -item[1]):
            print(f"{name:28} {value:9.1f}")
        print(f"{'all other assets':28} {others:9.1f}")
        print(
            f"\ntraining: {trained['train_seconds']:.1f} s in the loop, {trained['steps']} steps; "
            f"identities trained: {len(str(trained['identities']).split(', '))}"
        )
        print(
            f"{'identity_fidelity':28} {'seconds':>9} {'x others':>9} {'images':>7} "
            f"{'people':>7} {'checkpoint':>14}"
        )

        def row(label: str, value: float, metadata: dict) -> None:
            print(
                f"{label:28} {value:9.1f} {value / others:9.2f} "
                f"{metadata['images_generated']:7} {metadata['identities']:7} "
                f"{metadata['chosen_checkpoint']:>14}",
                flush=True,
            )

        row("budgeted (this version)", fidelity, budgeted)
        print(
            f"\nbudgeted plan: budget {budgeted['budget_seconds']} s ({budgeted['budget_source']}), "
            f"estimate {budgeted['estimate_seconds']} s ({budgeted['fixed_seconds']} s of it fixed: "
            f"the real photos' faces and loading the pipeline), {budgeted['images_planned']} of "
            f"{budgeted['full_grid_images']} images; stopped: {budgeted['stopped_because']}"
        )
        print(f"skipped for the budget: {budgeted['skipped_for_budget']}")
        print(f"identities not sampled: {len(budgeted['identities_not_sampled'])}")
        if not args.no_baseline:  # the exhaustive grid is the slow part: printed last
            row("exhaustive (baseline)", *exhaustive_fidelity(state))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
