"""Content fingerprint of everything a demo run wrote under a storage root's ``assets/`` folder.

A refactor that claims "no behaviour change" runs ``make clean-outputs && make demo`` before and
after and compares the two fingerprints:

    python tools/demo_fingerprint.py data/assets > before.json
    ... change the code, re-run the demo ...
    python tools/demo_fingerprint.py data/assets --compare before.json

Per Parquet table: the hash of its rows (columns in order, values as written) with the columns
that hold wall-clock timings left out, and per column the hash of its values, so a difference
names the column. Per safetensors file: its tensors. Per other file: its SHA-256, except for
files whose bytes embed timings (JSON reports, training logs, previews of curves), which are
listed by name only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

# Columns whose values are measured durations: they differ between any two runs.
TIMING_COLUMNS = {"segment_seconds", "seconds", "detect_seconds", "split_seconds"}
# Files whose bytes hold timings or timestamps (listed by name, not hashed).
TIMED_SUFFIXES = {".json", ".jsonl", ".log", ".yaml"}
TIMED_NAMES = {"fidelity_curves.png", "loss_curve.png"}


def table_fingerprint(path: Path) -> dict[str, object]:
    table = pq.read_table(path)
    columns: dict[str, str] = {}
    for name in table.column_names:
        if name in TIMING_COLUMNS:
            columns[name] = "timing (not compared)"
            continue
        values = table.column(name).to_pylist()
        payload = json.dumps(values, sort_keys=True, default=repr).encode("utf-8")
        columns[name] = hashlib.sha256(payload).hexdigest()[:16]
    return {"rows": table.num_rows, "columns": columns}


def file_fingerprint(path: Path) -> str:
    if path.suffix in TIMED_SUFFIXES or path.name in TIMED_NAMES:
        return "present"
    if path.suffix == ".safetensors":
        return tensors_fingerprint(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def tensors_fingerprint(path: Path) -> str:
    """The tensors only: PEFT's metadata lists target modules in set order, which varies."""
    raw = path.read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_length])
    header.pop("__metadata__", None)
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode("utf-8"))
    digest.update(raw[8 + header_length :])
    return digest.hexdigest()[:16]


def fingerprint(root: Path) -> dict[str, object]:
    result: dict[str, object] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = str(path.relative_to(root))
        result[key] = (
            table_fingerprint(path) if path.suffix == ".parquet" else file_fingerprint(path)
        )
    return result


def differences(before: dict[str, object], after: dict[str, object]) -> list[str]:
    lines = [f"only before: {key}" for key in sorted(set(before) - set(after))]
    lines += [f"only after: {key}" for key in sorted(set(after) - set(before))]
    for key in sorted(set(before) & set(after)):
        old, new = before[key], after[key]
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            if old["rows"] != new["rows"]:
                lines.append(f"{key}: rows {old['rows']} -> {new['rows']}")
            old_cols, new_cols = old["columns"], new["columns"]
            for column in sorted(set(old_cols) | set(new_cols)):
                if old_cols.get(column) != new_cols.get(column):
                    lines.append(f"{key}: column {column} differs")
        else:
            lines.append(f"{key}: content differs")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assets", type=Path, help="the storage root's assets/ folder")
    parser.add_argument("--compare", type=Path, help="a fingerprint JSON written before")
    args = parser.parse_args(argv)
    current = fingerprint(args.assets)
    if args.compare is None:
        json.dump(current, sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    found = differences(json.loads(args.compare.read_text(encoding="utf-8")), current)
    for line in found:
        print(line)
    print(f"{len(current)} files compared, {len(found)} differences")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
