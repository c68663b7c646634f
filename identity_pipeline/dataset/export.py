"""The training set in formats other trainers load as written: kohya sd-scripts and musubi-tuner
folders with ready dataset configs, and a Hugging Face imagefolder with ``metadata.jsonl``.

Layout of ``export_dir``::

    kohya/img/<repeats>_<folder>/<stem>.jpg + <stem>.txt   train images and captions
    kohya/mask/<repeats>_<folder>/<stem>.png               masks, same stems (sd-scripts masked loss)
    kohya/sd_scripts_dataset.toml          sd-scripts, whole-image loss: no extra flag
    kohya/sd_scripts_masked_dataset.toml   sd-scripts with the masks: needs --masked_loss
    kohya/musubi_dataset.toml              musubi-tuner (no loss mask there)
    kohya/mapping.json                     folder -> person, file stem -> sample
    imagefolder/metadata.jsonl + images/ + masks/          the train samples (datasets' imagefolder)
    imagefolder_holdout/...                                the held-out photos, same format
    README.txt

musubi-tuner's latent and text-encoder cache lives outside the export (``musubi_cache_dir``,
by default ``musubi_cache/`` beside ``export_dir``): an export is swapped in whole, and a cache
inside it would be thrown away, or removed from under a running musubi job, at every re-export.
musubi names its cache files after the image stems, and the stems here hash the sample with its
image, mask and caption: a cache entry is reused only for identical content, and entries of
images that changed or left are dropped by musubi's own caching scripts.

Folder names are safe for every consumer's file globbing (no ``* ? [ ]``, separators, control
characters); the person's real name stays in the captions and in ``mapping.json``.

Only train samples go to ``kohya/`` and ``imagefolder/``: a trainer pointed at either must never
see the holdout. (As a ``test`` split inside ``imagefolder/`` it leaked: diffusers' scripts glob
``--train_data_dir/**`` into one train split.) The export is built in a hidden folder
beside ``export_dir`` and swapped in by two renames, so a reader sees the old export or the new
one; a crash between the renames leaves the previous export under a ``.old`` name, which the next
export removes.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import time
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from identity_pipeline.dataset.build import resolve_data_path
from identity_pipeline.dataset.split import SPLIT_HOLDOUT, SPLIT_TRAIN
from identity_pipeline.storage import content_id

KOHYA_DIR = "kohya"
IMAGEFOLDER_DIR = "imagefolder"
HOLDOUT_IMAGEFOLDER_DIR = "imagefolder_holdout"
IMAGEFOLDER_DIRS = {SPLIT_TRAIN: IMAGEFOLDER_DIR, SPLIT_HOLDOUT: HOLDOUT_IMAGEFOLDER_DIR}
METADATA_FILE = "metadata.jsonl"
SD_SCRIPTS_CONFIG = "sd_scripts_dataset.toml"
SD_SCRIPTS_MASKED_CONFIG = "sd_scripts_masked_dataset.toml"
MUSUBI_CONFIG = "musubi_dataset.toml"
MAPPING_FILE = "mapping.json"
MUSUBI_CACHE_DIR = "musubi_cache"
CAPTION_EXTENSION = ".txt"
LEFTOVER_MIN_AGE_SECONDS = 3600.0

# musubi-tuner's BucketSelector rounds each side down to a multiple of 16 for every architecture
# (src/musubi_tuner/dataset/image_video_dataset.py): other sides lose a few cropped pixels there.
MUSUBI_RESO_STEPS = 16
# Long names are cut: a path component holds at most 255 bytes, and 4-byte characters exist.
MAX_FOLDER_NAME_CHARS = 60
STEM_HEX_CHARS = 24
# Separators and Windows-reserved characters break paths; ``* ? [ ]`` are glob patterns, and
# musubi looks its cache files up with an unescaped glob (a "[" silently matches nothing).
_UNSAFE_NAME_CHARACTERS = frozenset('/\\:*?"<>|[]')


@dataclass(frozen=True)
class BucketLimits:
    """Bucket settings that make a bucketing trainer keep every exported image as it is.

    ``resolution`` is the largest bucket (its area bounds every image's, so nothing is resized
    with ``bucket_no_upscale``), ``steps`` the largest step every side is a multiple of (so
    nothing is cropped), ``min_side``/``max_side`` the extreme sides.
    """

    resolution: tuple[int, int]  # (width, height)
    min_side: int
    max_side: int
    steps: int


@dataclass(frozen=True)
class ExportResult:
    export_dir: Path
    kohya_image_dir: Path
    kohya_mask_dir: Path
    imagefolder_dir: Path  # the train samples
    holdout_imagefolder_dir: Path  # the held-out photos
    kohya_folders: dict[str, str]  # identity -> "<repeats>_<folder>"
    train_samples: int
    holdout_samples: int
    sd_scripts_config: Path
    sd_scripts_masked_config: Path
    musubi_config: Path
    mapping_file: Path
    musubi_cache_dir: Path
    bucket_limits: BucketLimits | None  # None without train samples
    # Things a consumer will do wrong with this export (e.g. a glob character in a parent
    # folder the pipeline does not control), for the person to read; empty when all is well.
    warnings: tuple[str, ...]


def folder_safe_name(identity: str) -> str:
    """``identity`` usable as one path component that no consumer's glob misreads."""
    normalized = unicodedata.normalize("NFC", identity.strip())
    cleaned = "".join(
        "_" if ch in _UNSAFE_NAME_CHARACTERS or unicodedata.category(ch).startswith("C") else ch
        for ch in normalized
    )
    cleaned = cleaned[:MAX_FOLDER_NAME_CHARS].strip(". ")
    return cleaned or "unnamed"


def unique_folder_names(identities: Iterable[str]) -> dict[str, str]:
    """identity -> safe name, unique even when two names clean up to the same one.

    Unique case-insensitively (macOS and Windows file systems), and without the repeats prefix,
    so a person's musubi cache folder stays theirs when their repeats change.
    """
    names: dict[str, str] = {}
    used: set[str] = set()
    for identity in sorted(set(identities)):
        base = folder_safe_name(identity)
        name, suffix = base, 2
        while name.casefold() in used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        used.add(name.casefold())
        names[identity] = name
    return names


def kohya_folder_names(repeats_by_identity: dict[str, int]) -> dict[str, str]:
    """identity -> ``<repeats>_<name>``, the kohya convention for a repeated image folder."""
    names = unique_folder_names(repeats_by_identity)
    return {identity: f"{repeats_by_identity[identity]}_{names[identity]}" for identity in names}


def bucket_limits(sizes: Iterable[tuple[int, int]]) -> BucketLimits | None:
    """The bucket settings that keep images of these (width, height) sizes untouched."""
    unique = sorted(set(sizes))
    if not unique:
        return None
    sides = [side for size in unique for side in size]
    # The largest area; among equal areas the squarest, so min/max checks stay loosest.
    largest = max(unique, key=lambda size: (size[0] * size[1], -abs(math.log(size[0] / size[1]))))
    return BucketLimits(
        resolution=largest, min_side=min(sides), max_side=max(sides), steps=math.gcd(*sides)
    )


def export_stem(sample_id: str, image_path: str, mask_path: str, caption: str) -> str:
    """A file stem unique to the sample that changes whenever its image, mask or caption does.

    The training set's file names are already content hashes of the rendered image and mask
    (``build.py``), so hashing them with the caption keys the sample by content. Hex only: no
    ``_`` (musubi splits its cache file names on it) and nothing a glob reads as a pattern.
    """
    return content_id(
        sample_id, Path(image_path).name, Path(mask_path).name, caption, length=STEM_HEX_CHARS
    )


def export_training_set(
    manifest: pd.DataFrame,
    data_root: Path,
    export_dir: Path,
    hardlink: bool = False,
    musubi_cache_dir: Path | None = None,
) -> ExportResult:
    """Write the export for ``manifest`` (paths relative to ``data_root``) and swap it in.

    ``hardlink`` links the images instead of copying them: no extra disk, but a user who edits
    an exported image in place would edit the pipeline's own file too, so copies are the default.
    ``musubi_cache_dir`` (default ``<export_dir>/../musubi_cache``) is where the musubi config
    points its caches; one folder per person is created there, nothing is ever deleted.
    """
    data_root = Path(data_root).resolve()
    export_dir = Path(export_dir).resolve()
    cache_dir = Path(musubi_cache_dir or export_dir.parent / MUSUBI_CACHE_DIR).resolve()
    if cache_dir == export_dir or cache_dir.is_relative_to(export_dir):
        raise ValueError(f"musubi cache {cache_dir} must lie outside the export {export_dir}")
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(export_dir)
    staging = export_dir.parent / f".{export_dir.name}.{uuid.uuid4().hex[:12]}.building"
    try:
        result = _write_export(manifest, data_root, staging, export_dir, cache_dir, hardlink)
        _swap_in(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _write_export(
    manifest: pd.DataFrame,
    data_root: Path,
    staging: Path,
    final: Path,
    cache_dir: Path,
    hardlink: bool,
) -> ExportResult:
    ordered = manifest.sort_values("sample_id", kind="stable")
    train = ordered[ordered["split"] == SPLIT_TRAIN]
    repeats = {
        str(identity): int(group["repeats"].max()) for identity, group in train.groupby("identity")
    }
    names = unique_folder_names(repeats)
    folders = {identity: f"{repeats[identity]}_{names[identity]}" for identity in names}
    files = _write_kohya_files(train, data_root, staging / KOHYA_DIR, folders, hardlink)

    limits = bucket_limits(
        zip(train["bucket_width"].astype(int), train["bucket_height"].astype(int), strict=True)
    )
    warnings = _consumer_warnings(final, cache_dir, limits)
    people = sorted(folders, key=folders.__getitem__)
    subsets = [
        TrainerSubset(
            image_dir=final / KOHYA_DIR / "img" / folders[identity],
            mask_dir=final / KOHYA_DIR / "mask" / folders[identity],
            cache_dir=cache_dir / names[identity],  # no repeats: it outlives a change of them
            repeats=repeats[identity],
        )
        for identity in people
    ]
    configs = {
        SD_SCRIPTS_CONFIG: sd_scripts_config(subsets, limits, masked=False),
        SD_SCRIPTS_MASKED_CONFIG: sd_scripts_config(subsets, limits, masked=True),
        MUSUBI_CONFIG: musubi_config(subsets, limits, cache_dir, warnings),
    }
    for name, text in configs.items():
        (staging / KOHYA_DIR / name).write_text(text, encoding="utf-8")
    mapping = {
        "identities": [
            {
                "identity": identity,
                "folder": folders[identity],
                "repeats": repeats[identity],
                "train_images": int((train["identity"] == identity).sum()),
                "musubi_cache_dir": subset.cache_dir.as_posix(),
            }
            for identity, subset in zip(people, subsets, strict=True)
        ],
        "files": files,
    }
    (staging / KOHYA_DIR / MAPPING_FILE).write_text(
        json.dumps(mapping, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    for subset in subsets:  # outside the export: created now, kept by every later export
        subset.cache_dir.mkdir(parents=True, exist_ok=True)

    counts = {}
    for split, folder_name in IMAGEFOLDER_DIRS.items():
        rows = ordered[ordered["split"] == split]
        counts[split] = len(rows)
        if not rows.empty:
            _write_imagefolder(rows, data_root, staging / folder_name, hardlink)
    (staging / "README.txt").write_text(_readme(cache_dir, warnings), encoding="utf-8")
    return ExportResult(
        export_dir=final,
        kohya_image_dir=final / KOHYA_DIR / "img",
        kohya_mask_dir=final / KOHYA_DIR / "mask",
        imagefolder_dir=final / IMAGEFOLDER_DIR,
        holdout_imagefolder_dir=final / HOLDOUT_IMAGEFOLDER_DIR,
        kohya_folders=folders,
        train_samples=counts[SPLIT_TRAIN],
        holdout_samples=counts[SPLIT_HOLDOUT],
        sd_scripts_config=final / KOHYA_DIR / SD_SCRIPTS_CONFIG,
        sd_scripts_masked_config=final / KOHYA_DIR / SD_SCRIPTS_MASKED_CONFIG,
        musubi_config=final / KOHYA_DIR / MUSUBI_CONFIG,
        mapping_file=final / KOHYA_DIR / MAPPING_FILE,
        musubi_cache_dir=cache_dir,
        bucket_limits=limits,
        warnings=warnings,
    )


def _write_kohya_files(
    train: pd.DataFrame, data_root: Path, kohya: Path, folders: dict[str, str], hardlink: bool
) -> list[dict[str, str]]:
    """Images, captions and masks under ``kohya/``; returns the file -> sample mapping."""
    image_root, mask_root = kohya / "img", kohya / "mask"
    files = []
    for row in train.itertuples(index=False):
        folder = folders[str(row.identity)]
        image_source = resolve_data_path(data_root, row.image_path)
        stem = export_stem(
            str(row.sample_id), str(row.image_path), str(row.mask_path), str(row.caption)
        )
        image_name = f"{folder}/{stem}{image_source.suffix}"
        _place(image_source, image_root / image_name, hardlink)
        mask_source = resolve_data_path(data_root, row.mask_path)
        _place(mask_source, mask_root / folder / f"{stem}.png", hardlink)
        (image_root / folder / f"{stem}{CAPTION_EXTENSION}").write_text(
            str(row.caption), encoding="utf-8"
        )
        files.append(
            {"file": image_name, "sample_id": str(row.sample_id), "identity": str(row.identity)}
        )
    kohya.mkdir(parents=True, exist_ok=True)
    return files


def _consumer_warnings(
    export_dir: Path, cache_dir: Path, limits: BucketLimits | None
) -> tuple[str, ...]:
    """What a consumer will get wrong because of paths or sizes this export cannot change."""
    warnings = []
    if glob.has_magic(cache_dir.as_posix()):
        warnings.append(
            f"musubi-tuner finds no cached items: it globs its cache folder unescaped, and "
            f"{cache_dir} contains one of * ? [ ]; pass another musubi_cache_dir."
        )
    if glob.has_magic((export_dir / IMAGEFOLDER_DIR).as_posix()):
        warnings.append(
            f"datasets' imagefolder (diffusers' training scripts) finds no data files: it globs "
            f"the folder unescaped, and {export_dir} contains one of * ? [ ]."
        )
    if limits is not None and limits.steps % MUSUBI_RESO_STEPS:
        warnings.append(
            f"bucket sides are multiples of {limits.steps}, not of {MUSUBI_RESO_STEPS}: "
            f"musubi-tuner crops each image to the next multiple of {MUSUBI_RESO_STEPS} below."
        )
    return tuple(warnings)


# ----------------------------------------------------------------------------------------------
# Dataset configs


@dataclass(frozen=True)
class TrainerSubset:
    """One person's folders as a trainer config lists them (absolute paths)."""

    image_dir: Path
    mask_dir: Path
    cache_dir: Path
    repeats: int


def sd_scripts_config(
    subsets: list[TrainerSubset], limits: BucketLimits | None, masked: bool
) -> str:
    """kohya sd-scripts' dataset TOML: one DreamBooth-style dataset, one subset per person.

    sd-scripts' config sanitizer (library/config_util.py) only accepts ``conditioning_data_dir``
    when the script runs with ``--masked_loss``, and rejects it as an extra key otherwise: hence
    two files, the masked one saying so in its first line.
    """
    if masked:
        lines = [
            "# NEEDS --masked_loss (kohya sd-scripts: --dataset_config this file --masked_loss);"
            ' without the flag sd-scripts stops with "extra keys not allowed @ ...'
            "['conditioning_data_dir']\".",
            "# Each mask has its image's file name: white = the person (full loss weight), "
            "black = ignored, grey in between.",
        ]
    else:
        lines = [
            "# kohya sd-scripts: --dataset_config this file (no extra flag). Whole-image loss;"
            f" for the loss masked to each person use {SD_SCRIPTS_MASKED_CONFIG} with"
            " --masked_loss.",
        ]
    lines += ["[general]", f"caption_extension = {_toml_string(CAPTION_EXTENSION)}"]
    lines += _bucket_lines(limits, sd_scripts=True)
    lines += ["", "[[datasets]]"]
    for subset in subsets:
        lines += ["", "  [[datasets.subsets]]", f"  image_dir = {_toml_path(subset.image_dir)}"]
        if masked:
            lines.append(f"  conditioning_data_dir = {_toml_path(subset.mask_dir)}")
        lines.append(f"  num_repeats = {subset.repeats}")
    return "\n".join(lines) + "\n"


def musubi_config(
    subsets: list[TrainerSubset],
    limits: BucketLimits | None,
    cache_dir: Path,
    warnings: tuple[str, ...] = (),
) -> str:
    """musubi-tuner's dataset TOML: one image dataset per person (repeats are per dataset)."""
    lines = [
        "# musubi-tuner: --dataset_config this file for the cache scripts and the trainer. "
        "musubi has no loss mask: it trains on whole images.",
        _comment(
            f"Cache: {cache_dir.as_posix()} (outside the export; file stems are content hashes,"
            " so --skip_existing reuses only identical image + caption)."
        ),
        *[_comment(f"WARNING: {warning}") for warning in warnings if "musubi" in warning],
        "[general]",
    ]
    lines += _bucket_lines(limits, sd_scripts=False)
    lines += [f"caption_extension = {_toml_string(CAPTION_EXTENSION)}", "batch_size = 1"]
    for subset in subsets:
        lines += [
            "",
            "[[datasets]]",
            f"image_directory = {_toml_path(subset.image_dir)}",
            f"cache_directory = {_toml_path(subset.cache_dir)}",
            f"num_repeats = {subset.repeats}",
        ]
    return "\n".join(lines) + "\n"


def _bucket_lines(limits: BucketLimits | None, sd_scripts: bool) -> list[str]:
    """Bucketing on, no upscaling, a resolution whose area bounds every image's: each image
    stays in its own bucket at its own size (our crops already fit their buckets exactly)."""
    if limits is None:
        return ["enable_bucket = true", "bucket_no_upscale = true"]
    width, height = limits.resolution
    lines = [
        f"resolution = [{width}, {height}]",
        "enable_bucket = true",
        "bucket_no_upscale = true",
    ]
    if sd_scripts:  # musubi's schema has no such keys (its steps are fixed per architecture)
        lines += [
            f"min_bucket_reso = {limits.min_side}",
            f"max_bucket_reso = {limits.max_side}",
            f"bucket_reso_steps = {limits.steps}",
        ]
    return lines


def _comment(text: str) -> str:
    """A TOML comment line; control characters (a newline in a path) would end it early."""
    return "# " + "".join("?" if unicodedata.category(ch).startswith("C") else ch for ch in text)


def _toml_path(path: Path) -> str:
    return _toml_string(path.as_posix())


def _toml_string(value: str) -> str:
    """A TOML basic string: quote and backslash escaped, control characters as \\uXXXX."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# ----------------------------------------------------------------------------------------------
# Imagefolder


def _write_imagefolder(rows: pd.DataFrame, data_root: Path, folder: Path, hardlink: bool) -> None:
    lines = []
    for row in rows.itertuples(index=False):
        image_source = resolve_data_path(data_root, row.image_path)
        image_name = f"images/{row.sample_id}{image_source.suffix}"
        mask_name = f"masks/{row.sample_id}.png"
        _place(image_source, folder / image_name, hardlink)
        _place(resolve_data_path(data_root, row.mask_path), folder / mask_name, hardlink)
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
    (folder / METADATA_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# Files and the swap


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


def _readme(cache_dir: Path, warnings: tuple[str, ...]) -> str:
    rows = [
        ("kohya/img/<repeats>_<name>/", "train images (cropped to their bucket) + .txt captions"),
        ("kohya/mask/<repeats>_<name>/", "masks, same file names (white = the person)"),
        (f"kohya/{SD_SCRIPTS_CONFIG}", "kohya sd-scripts, whole-image loss, no extra flag"),
        (f"kohya/{SD_SCRIPTS_MASKED_CONFIG}", "kohya sd-scripts with the masks: --masked_loss"),
        (f"kohya/{MUSUBI_CONFIG}", "musubi-tuner (no loss mask: whole images)"),
        (f"kohya/{MAPPING_FILE}", "folder -> person's name and repeats; file -> sample_id"),
        (f"{IMAGEFOLDER_DIR}/", "the train samples as a datasets imagefolder (metadata.jsonl:"),
        ("", "image, mask, text, identity, repeats, ...); diffusers' scripts:"),
        ("", f"--dataset_name {IMAGEFOLDER_DIR} or --train_data_dir {IMAGEFOLDER_DIR}"),
        (f"{HOLDOUT_IMAGEFOLDER_DIR}/", "the held-out photos, same format: never train on them,"),
        ("", "they are for the fidelity evaluation"),
    ]
    width = max(len(path) for path, _ in rows) + 2
    listing = "".join(f"{path:<{width}}{what}\n" for path, what in rows)
    text = f"""\
Training set export (identity-pipeline)

{listing}
Folder names are the people's names made safe for file globs; the captions keep the real
names. The configs hold absolute paths: re-export rather than move this folder.
musubi-tuner's cache: {cache_dir.as_posix()}
(outside this folder, kept across re-exports; delete it any time to free space)

The held-out photos are in neither kohya/ nor {IMAGEFOLDER_DIR}/. "repeats" balances people:
a trainer that ignores it sees rare people less often.
"""
    if warnings:
        text += "\nWARNINGS\n" + "".join(f"- {warning}\n" for warning in warnings)
    return text
