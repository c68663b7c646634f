"""Benchmark: one photo added to a finished album vs the full run of that album.

    .venv/bin/python benchmarks/rerun.py [--work DIR] [--keep]

The demo album is materialized from scratch as ``make demo`` does it (the full run: every asset,
training and fidelity included). Then one new photo (a mirrored demo portrait) is added and the
pipeline follows it the way the running UI would: the album sensor's run of ``raw_photos``, then
the automation conditions tick after tick (in process, ``dg.evaluate_automation_conditions``),
each tick's requests launched before the next, until nothing is requested. Training is not
launched by it (``lora_checkpoint`` is left stale).

Prints, per asset, the seconds of its step in the full run and in the +1-photo re-run, and the
cache counters that say what was recomputed; then the wall-clock totals. Run on an idle machine;
the numbers are CPU seconds of the tiny demo model, not of a real one. In a running deployment
the +1-photo path also waits for the daemon's ticks: about one sensor interval (15 s by default,
``IDENTITY_PIPELINE_SENSOR_INTERVAL_SECONDS``) per step of the chain below, plus a run's start-up
(a new process, ~3-5 s) each.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import dagster as dg  # noqa: E402

from identity_pipeline.definitions import build_definitions  # noqa: E402
from identity_pipeline_tests.test_reruns import (  # noqa: E402
    DEMO,
    add_photo,
    latest_metadata,
    materialize_demo,
    prepare_demo_state,
    run_automation_until_quiet,
    run_request,
    tick_album_sensor,
)

# Every asset in graph order (the last two are the GPU ones a photo never launches).
ASSETS = [
    key.to_user_string() for key in build_definitions().resolve_asset_graph().toposorted_asset_keys
]
# The metadata that says what was recomputed and what came from a cache.
CACHE_COUNTERS = {
    "photo_tiles": ("photos_split", "photos_reused_from_cache"),
    "face_embeddings": ("cache_misses", "cache_hits"),
    "identity_masks": ("tiles_built", "tiles_reused_from_cache"),
}


def step_seconds(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, float]:
    """Seconds from STEP_START to STEP_SUCCESS of every asset step in the given runs."""
    seconds: dict[str, float] = defaultdict(float)
    for run_id in run_ids:
        started: dict[str, float] = {}
        for entry in instance.all_logs(
            run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
        ):
            step = entry.step_key or ""
            if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                started[step] = entry.timestamp
            elif step in started:
                seconds[step] += entry.timestamp - started.pop(step)
    return dict(seconds)


def counters(instance: dg.DagsterInstance, asset: str) -> str:
    if asset not in CACHE_COUNTERS:
        return ""
    computed, reused = CACHE_COUNTERS[asset]
    values = latest_metadata(instance, asset, DEMO)
    return f"{values[computed]} computed, {values[reused]} from cache"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="rerun-benchmark-"))
    if (work / "state").exists():
        shutil.rmtree(work / "state")
    try:
        state = prepare_demo_state(work / "state")
        full_runs: list[str] = []
        started = time.perf_counter()
        materialize_demo(state, on_run=lambda run: full_runs.append(run.run_id))
        full_wall = time.perf_counter() - started

        defs = build_definitions(str(state.data), training_cron=None)
        with state.instance() as instance:
            full_steps = step_seconds(instance, full_runs)
            first = {asset: counters(instance, asset) for asset in CACHE_COUNTERS}
            cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
            seen = tick_album_sensor(instance, state.data, None)

            add_photo(state)
            rerun_runs: list[str] = []
            run_seconds: list[float] = []
            started = time.perf_counter()
            changed = tick_album_sensor(instance, state.data, seen.cursor)
            sensor_run = run_request(defs, instance, changed.run_requests[0])
            rerun_runs.append(sensor_run.run_id)
            run_seconds.append(time.perf_counter() - started)
            before = {record.dagster_run.run_id for record in instance.get_run_records()}
            ticks, _ = run_automation_until_quiet(
                defs, instance, cursor, on_run=lambda _, seconds: run_seconds.append(seconds)
            )
            rerun_wall = time.perf_counter() - started
            rerun_runs += [
                r.dagster_run.run_id
                for r in instance.get_run_records()
                if r.dagster_run.run_id not in before
            ]
            rerun_steps = step_seconds(instance, rerun_runs)
            again = {asset: counters(instance, asset) for asset in CACHE_COUNTERS}

        print(f"demo album: {DEMO}, +1 photo; {len(ticks)} automation ticks after the sensor's run")
        print(
            f"{'asset':20} {'full run s':>10} {'+1 photo s':>10}  recomputed (full run | +1 photo)"
        )
        for asset in ASSETS:
            full = full_steps.get(asset)
            rerun = rerun_steps.get(asset)
            detail = f"{first[asset]} | {again[asset]}" if asset in CACHE_COUNTERS else ""
            if asset == "lora_checkpoint":
                detail = "not launched by a photo (stale until launched)"
            print(
                f"{asset:20} {full if full is not None else float('nan'):10.2f} "
                f"{rerun if rerun is not None else 0.0:10.2f}  {detail}"
            )
        training = sum(full_steps.get(asset, 0.0) for asset in ASSETS[-2:])
        print(
            f"{'sum of steps':20} {sum(full_steps.values()):10.2f} {sum(rerun_steps.values()):10.2f}"
        )
        print(
            f"{'wall clock':20} {full_wall:10.2f} {rerun_wall:10.2f}  "
            f"(+1 photo: {len(rerun_runs)} runs, {sum(run_seconds):.2f}s in runs, "
            f"{rerun_wall - sum(run_seconds):.2f}s evaluating automation conditions)"
        )
        print(
            f"{'wall w/o training':20} {full_wall - training:10.2f} {rerun_wall:10.2f}  "
            "(full run less lora_checkpoint + identity_fidelity steps)"
        )
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
