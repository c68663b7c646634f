"""The training set in formats other trainers read: a kohya/musubi folder and a Hugging Face
imagefolder with ``metadata.jsonl``.

Layout of ``export_dir``::

    kohya/img/<repeats>_<name>/<sample_id>.jpg + <sample_id>.txt    train samples and captions
    kohya/mask/<repeats>_<name>/<sample_id>.png                     masks, same names (masked loss)
    kohya/sd_scripts_dataset.toml, kohya/musubi_dataset.toml        ready dataset configs
    imagefolder/train/metadata.jsonl + images/ + masks/             datasets' "train" split
    imagefolder/test/...                                            the holdout photos
    README.txt

Only train samples go to the kohya folder (a trainer pointed at it must never see the holdout);
the imagefolder keeps the holdout as its ``test`` split. The export is built in a hidden folder
beside ``export_dir`` and swapped in by two renames, so a reader sees the old export or the new
one; a crash between the renames leaves the previous export under a ``.old`` name, which the next
export removes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from identity_pipeline.dataset.build import resolve_data_path
from identity_pipeline.dataset.split import SPLIT_HOLDOUT, SPLIT_TRAIN

KOHYA_DIR = "kohya"
IMAGEFOLDER_DIR = "imagefolder"
IMAGEFOLDER_SPLITS = {SPLIT_TRAIN: "train", SPLIT_HOLDOUT: "test"}
METADATA_FILE = "metadata.jsonl"
LEFTOVER_MIN_AGE_SECONDS = 3600.0

_UNSAFE_NAME_CHARACTERS = frozenset('/\\:*?"<>|')


@dataclass(frozen=True)
class ExportResult:
    export_dir: Path
    kohya_image_dir: Path
    kohya_mask_dir: Path
    imagefolder_dir: Path
    kohya_folders: dict[str, str]  # identity -> "<repeats>_<name>"
    train_samples: int
    holdout_samples: int


def folder_safe_name(identity: str) -> str:
    """``identity`` usable as one path component: separators and control characters replaced."""
    cleaned = "".join(
        "_" if ch in _UNSAFE_NAME_CHARACTERS or unicodedata.category(ch).startswith("C") else ch
        for ch in identity.strip()
    )
    cleaned = cleaned.strip(". ")
    return cleaned or "unnamed"


def kohya_folder_names(repeats_by_identity: dict[str, int]) -> dict[str, str]:
    """identity -> ``<repeats>_<name>``, unique even when two names clean up to the same one."""
    folders: dict[str, str] = {}
    used: set[str] = set()
    for identity in sorted(repeats_by_identity):
        base = f"{repeats_by_identity[identity]}_{folder_safe_name(identity)}"
        name, suffix = base, 2
        while name.lower() in used:  # case-insensitive file systems
            name, suffix = f"{base}_{suffix}", suffix + 1
        used.add(name.lower())
        folders[identity] = name
    return folders


def export_training_set(
    manifest: pd.DataFrame, data_root: Path, export_dir: Path, hardlink: bool = False
) -> ExportResult:
    """Write the export for ``manifest`` (paths relative to ``data_root``) and swap it in.

    ``hardlink`` links the images instead of copying them: no extra disk, but a user who edits
    an exported image in place would edit the pipeline's own file too, so copies are the default.
    """
    data_root = Path(data_root).resolve()
    export_dir = Path(export_dir).resolve()
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(export_dir)
    staging = export_dir.parent / f".{export_dir.name}.{uuid.uuid4().hex[:12]}.building"
    try:
        result = _write_export(manifest, data_root, staging, export_dir, hardlink)
        _swap_in(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _write_export(
    manifest: pd.DataFrame, data_root: Path, staging: Path, final: Path, hardlink: bool
) -> ExportResult:
    ordered = manifest.sort_values("sample_id", kind="stable")
    train = ordered[ordered["split"] == SPLIT_TRAIN]
    repeats = {
        str(identity): int(group["repeats"].max()) for identity, group in train.groupby("identity")
    }
    folders = kohya_folder_names(repeats)
    image_root, mask_root = staging / KOHYA_DIR / "img", staging / KOHYA_DIR / "mask"
    for row in train.itertuples(index=False):
        folder = folders[str(row.identity)]
        image_source = resolve_data_path(data_root, row.image_path)
        stem = str(row.sample_id)
        _place(image_source, image_root / folder / f"{stem}{image_source.suffix}", hardlink)
        _place(
            resolve_data_path(data_root, row.mask_path),
            mask_root / folder / f"{stem}.png",
            hardlink,
        )
        (image_root / folder / f"{stem}.txt").write_text(str(row.caption), encoding="utf-8")
    for folder in folders.values():  # an identity with only holdout samples has no folder
        (mask_root / folder).mkdir(parents=True, exist_ok=True)
    _write_kohya_configs(staging / KOHYA_DIR, final / KOHYA_DIR, folders, repeats, ordered)

    counts = {}
    for split, split_dir in IMAGEFOLDER_SPLITS.items():
        rows = ordered[ordered["split"] == split]
        counts[split] = len(rows)
        if not rows.empty:
            _write_imagefolder_split(
                rows, data_root, staging / IMAGEFOLDER_DIR / split_dir, hardlink
            )
    (staging / "README.txt").write_text(_readme(), encoding="utf-8")
    return ExportResult(
        export_dir=final,
        kohya_image_dir=final / KOHYA_DIR / "img",
        kohya_mask_dir=final / KOHYA_DIR / "mask",
        imagefolder_dir=final / IMAGEFOLDER_DIR,
        kohya_folders=folders,
        train_samples=counts[SPLIT_TRAIN],
        holdout_samples=counts[SPLIT_HOLDOUT],
    )


def _write_imagefolder_split(
    rows: pd.DataFrame, data_root: Path, split_dir: Path, hardlink: bool
) -> None:
    lines = []
    for row in rows.itertuples(index=False):
        image_source = resolve_data_path(data_root, row.image_path)
        image_name = f"images/{row.sample_id}{image_source.suffix}"
        mask_name = f"masks/{row.sample_id}.png"
        _place(image_source, split_dir / image_name, hardlink)
        _place(resolve_data_path(data_root, row.mask_path), split_dir / mask_name, hardlink)
        record = {
            "file_name": image_name,
            # datasets' imagefolder turns a "<column>_file_name" key into an image column "mask".
            "mask_file_name": mask_name,
            "text": str(row.caption),
            "identity": str(row.identity),
            "repeats": int(row.repeats),
            "sample_id": str(row.sample_id),
            "bucket_width": int(row.bucket_width),
            "bucket_height": int(row.bucket_height),
        }
        lines.append(json.dumps(record, ensure_ascii=False, sort_keys=False))
    (split_dir / METADATA_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_kohya_configs(
    staging_kohya: Path,
    final_kohya: Path,
    folders: dict[str, str],
    repeats: dict[str, int],
    manifest: pd.DataFrame,
) -> None:
    """Dataset TOMLs for sd-scripts and musubi-tuner, with absolute paths of the final export.

    Both trainers bucket on their own; the resolution given is the largest bucket's square-ish
    equivalent, so their buckets land near ours (our crops already fit exactly).
    """
    train = manifest[manifest["split"] == SPLIT_TRAIN]
    side = (
        int(round((train["bucket_width"] * train["bucket_height"]).max() ** 0.5))
        if len(train)
        else 1024
    )
    sd_scripts = [
        "# kohya sd-scripts: --dataset_config this file; add --masked_loss to train on the masks.",
        "[general]",
        "enable_bucket = true",
        'caption_extension = ".txt"',
        "",
        "[[datasets]]",
        f"resolution = {side}",
    ]
    musubi = [
        "# musubi-tuner: --dataset_config this file (masks are not used by musubi).",
        "[general]",
        f"resolution = [{side}, {side}]",
        'caption_extension = ".txt"',
        "enable_bucket = true",
        "batch_size = 1",
    ]
    for identity, folder in sorted(folders.items(), key=lambda item: item[1]):
        image_dir = _toml_string((final_kohya / "img" / folder).as_posix())
        mask_dir = _toml_string((final_kohya / "mask" / folder).as_posix())
        cache_dir = _toml_string((final_kohya / "cache" / folder).as_posix())
        sd_scripts += [
            "",
            "  [[datasets.subsets]]",
            f"  image_dir = {image_dir}",
            f"  conditioning_data_dir = {mask_dir}",
            f"  num_repeats = {repeats[identity]}",
        ]
        musubi += [
            "",
            "[[datasets]]",
            f"image_directory = {image_dir}",
            f"cache_directory = {cache_dir}",
            f"num_repeats = {repeats[identity]}",
        ]
    staging_kohya.mkdir(parents=True, exist_ok=True)
    (staging_kohya / "sd_scripts_dataset.toml").write_text(
        "\n".join(sd_scripts) + "\n", encoding="utf-8"
    )
    (staging_kohya / "musubi_dataset.toml").write_text("\n".join(musubi) + "\n", encoding="utf-8")


def _toml_string(value: str) -> str:
    # A JSON string is a valid TOML basic string for everything a path can hold.
    return json.dumps(value, ensure_ascii=False)


def _place(source: Path, destination: Path, hardlink: bool) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if hardlink:
        try:
            os.link(source, destination)
            return
        except OSError:  # another file system, or links not supported: copy instead
            pass
    shutil.copyfile(source, destination)


def _swap_in(staging: Path, export_dir: Path) -> None:
    if not export_dir.exists():
        os.rename(staging, export_dir)
        return
    old = export_dir.parent / f".{export_dir.name}.{uuid.uuid4().hex[:12]}.old"
    os.rename(export_dir, old)
    try:
        os.rename(staging, export_dir)
    except BaseException:
        os.rename(old, export_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(export_dir: Path) -> None:
    """Staging and replaced folders of earlier exports that crashed (old enough to be dead)."""
    cutoff = time.time() - LEFTOVER_MIN_AGE_SECONDS
    prefix = f".{export_dir.name}."
    for entry in export_dir.parent.iterdir():
        if not entry.name.startswith(prefix) or not entry.name.endswith((".building", ".old")):
            continue
        try:
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            continue


def _readme() -> str:
    return """\
Training set export (identity-pipeline)

kohya/img/<repeats>_<name>/   train images (already cropped to their bucket) and .txt captions
kohya/mask/<repeats>_<name>/  masks with the same file names (255 = the person to learn)
kohya/*.toml                  dataset configs for kohya sd-scripts and musubi-tuner; their paths
                              are absolute, so re-export rather than move this folder
imagefolder/                  datasets.load_dataset("imagefolder", data_dir="imagefolder"):
                              columns image, mask, text, identity, repeats, ...; split "train"
                              is the training set, split "test" the held-out photos
                              (never train on "test": it is for the fidelity evaluation)

The holdout photos are not in kohya/ at all. "repeats" balances identities: a trainer that
ignores it sees rare identities less often.
"""
