"""What the exports' consumers accept, written down from their source code.

Neither kohya sd-scripts nor musubi-tuner is installable from a package registry, so their
loaders cannot run here; these functions encode, independently of ``identity_pipeline``, the
checks those loaders make, and return the problems they would report (an empty list: loaded).
Read from:

* sd-scripts ``library/config_util.py`` @ 264167fa1636c79f106c63c3cdb67b6bee80aceb:
  ``ConfigSanitizer`` (voluptuous schemas; ``train_network.py`` builds it as
  ``ConfigSanitizer(True, True, args.masked_loss, True)``), ``BlueprintGenerator`` fallbacks.
* sd-scripts ``library/train_util.py`` @ 6edbe00547bac6c2efb2d6952eb910851662cdf2:
  ``glob_images`` (escaped), ``BaseDataset.adjust_min_max_bucket_reso_by_steps``,
  ``BucketManager.select_bucket`` (no-upscale branch), ``ControlNetDataset`` mask lookup.
* musubi-tuner ``src/musubi_tuner/dataset/config_utils.py`` @
  1a1f72461f9c381490200b0108278b28846e4ff8: ``ConfigSanitizer``, unique cache directories.
* musubi-tuner ``src/musubi_tuner/dataset/image_video_dataset.py`` @
  0061e6ef4addcdd6f9ad0ce9ff80a515f9868eb2: ``ImageDirectoryDatasource`` (captions),
  ``BucketSelector`` (16 px steps), cache file names, ``ImageDataset.prepare_for_training``
  (an *unescaped* glob of ``cache_directory``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

# Both projects' glob_images extension list (the JPEG-XL/AVIF plugins aside).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP")


def _int_or_pair(value: Any) -> bool:
    if isinstance(value, int):
        return True
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)


def _float_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float)


Check = type | Callable[[Any], bool]

# --- sd-scripts -------------------------------------------------------------------------------
SD_SUBSET_ASCENDABLE: dict[str, Check] = {
    "color_aug": bool,
    "face_crop_aug_range": _float_pair,
    "flip_aug": bool,
    "num_repeats": int,
    "random_crop": bool,
    "shuffle_caption": bool,
    "keep_tokens": int,
    "keep_tokens_separator": str,
    "secondary_separator": str,
    "caption_separator": str,
    "enable_wildcard": bool,
    "token_warmup_min": int,
    "token_warmup_step": _number,
    "caption_prefix": str,
    "caption_suffix": str,
    "custom_attributes": dict,
    # support_dropout is always True in train_network.py
    "caption_dropout_every_n_epochs": int,
    "caption_dropout_rate": _number,
    "caption_tag_dropout_rate": _number,
}
SD_DREAMBOOTH_ASCENDABLE: dict[str, Check] = {
    "caption_extension": str,
    "class_tokens": str,
    "cache_info": bool,
}
SD_CONTROLNET_ASCENDABLE: dict[str, Check] = {"caption_extension": str, "cache_info": bool}
SD_DATASET_ASCENDABLE: dict[str, Check] = {
    "batch_size": int,
    "bucket_no_upscale": bool,
    "bucket_reso_steps": int,
    "enable_bucket": bool,
    "max_bucket_reso": int,
    "min_bucket_reso": int,
    "validation_seed": int,
    "validation_split": float,
    "resolution": _int_or_pair,
    "network_multiplier": float,
}
SD_DREAMBOOTH_SUBSET = {
    **SD_SUBSET_ASCENDABLE,
    "image_dir": str,
    "is_reg": bool,
    "alpha_mask": bool,
    **SD_DREAMBOOTH_ASCENDABLE,
}
SD_CONTROLNET_SUBSET = {
    **SD_SUBSET_ASCENDABLE,
    "image_dir": str,
    "conditioning_data_dir": str,
    **SD_CONTROLNET_ASCENDABLE,
}
# Defaults of DreamBoothDatasetParams / ControlNetDatasetParams.
SD_BUCKET_DEFAULTS = {"min_bucket_reso": 256, "max_bucket_reso": 1024, "bucket_reso_steps": 64}


def _schema_problems(section: dict, schema: dict[str, Check], where: str) -> list[str]:
    problems = []
    for key, value in section.items():
        if key not in schema:
            problems.append(f"extra keys not allowed @ {where}['{key}']")
            continue
        check = schema[key]
        ok = isinstance(value, check) if isinstance(check, type) else check(value)
        if not ok:
            problems.append(f"wrong type for {where}['{key}']: {value!r}")
    return problems


def sd_scripts_config_problems(config: dict, masked_loss: bool) -> list[str]:
    """The voluptuous sanitizer: which keys sd-scripts accepts, of which types, with this flag."""
    general_schema = {
        **SD_DATASET_ASCENDABLE,
        **SD_SUBSET_ASCENDABLE,
        **SD_DREAMBOOTH_ASCENDABLE,
        **(SD_CONTROLNET_ASCENDABLE if masked_loss else {}),
    }
    problems = [
        f"extra keys not allowed @ data['{key}']"
        for key in config
        if key not in ("general", "datasets")
    ]
    problems += _schema_problems(config.get("general", {}), general_schema, "data['general']")
    for index, dataset in enumerate(config.get("datasets", [])):
        where = f"data['datasets'][{index}]"
        subsets = dataset.get("subsets", [])
        # validate_flex_dataset: the ControlNet schema only with --masked_loss, else DreamBooth
        controlnet = masked_loss and all("conditioning_data_dir" in s for s in subsets)
        subset_schema = SD_CONTROLNET_SUBSET if controlnet else SD_DREAMBOOTH_SUBSET
        required = ("image_dir", "conditioning_data_dir") if controlnet else ("image_dir",)
        dataset_schema = {
            **SD_DATASET_ASCENDABLE,
            **SD_SUBSET_ASCENDABLE,
            **(SD_CONTROLNET_ASCENDABLE if controlnet else SD_DREAMBOOTH_ASCENDABLE),
            "subsets": list,
        }
        problems += _schema_problems(dataset, dataset_schema, where)
        for number, subset in enumerate(subsets):
            subset_where = f"{where}['subsets'][{number}]"
            problems += _schema_problems(subset, subset_schema, subset_where)
            problems += [
                f"required key not provided @ {subset_where}['{key}']"
                for key in required
                if key not in subset
            ]
    return problems


def sd_scripts_bucket_problems(
    general: dict, dataset: dict, sizes: list[tuple[int, int]]
) -> list[str]:
    """DreamBoothDataset's bucket checks, then where each image of ``sizes`` lands."""

    def value(key: str, default: Any) -> Any:  # BlueprintGenerator: dataset > general > default
        for section in (dataset, general):
            if section.get(key) is not None:
                return section[key]
        return default

    resolution = value("resolution", None)
    if resolution is None:
        return ["resolution is required"]
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    if not value("enable_bucket", False):
        return [f"bucketing off: every image is resized to {width}x{height}"]
    steps = value("bucket_reso_steps", SD_BUCKET_DEFAULTS["bucket_reso_steps"])
    low = value("min_bucket_reso", SD_BUCKET_DEFAULTS["min_bucket_reso"])
    high = value("max_bucket_reso", SD_BUCKET_DEFAULTS["max_bucket_reso"])
    low -= low % steps  # adjust_min_max_bucket_reso_by_steps
    high += (steps - high % steps) % steps
    problems = []
    if min(width, height) < low:
        problems.append("min_bucket_reso must be equal or less than resolution")
    if max(width, height) > high:
        problems.append("max_bucket_reso must be equal or greater than resolution")
    if not value("bucket_no_upscale", False):
        return problems + ["bucket_no_upscale off: images go to sd-scripts' own bucket set"]
    for image_width, image_height in sizes:  # select_bucket, no-upscale branch
        if image_width * image_height > width * height:
            problems.append(f"{image_width}x{image_height} is resized down")
        bucket = (image_width - image_width % steps, image_height - image_height % steps)
        if bucket != (image_width, image_height):
            problems.append(f"{image_width}x{image_height} is cropped to {bucket}")
    return problems


def glob_images(directory: str, base: str = "*") -> list[str]:
    """sd-scripts' and musubi's glob_images: the directory (or whole path) escaped."""
    found: set[str] = set()
    for extension in IMAGE_EXTENSIONS:
        if base == "*":
            found.update(glob.glob(os.path.join(glob.escape(directory), base + extension)))
        else:
            found.update(glob.glob(glob.escape(os.path.join(directory, base + extension))))
    return sorted(found)


def sd_scripts_items(config: dict, masked_loss: bool) -> list[dict[str, Any]]:
    """What sd-scripts trains on: (image, caption, repeats, mask) per image, after every check.

    Raises AssertionError with sd-scripts' own message where it would stop.
    """
    problems = sd_scripts_config_problems(config, masked_loss)
    assert not problems, problems
    general = config.get("general", {})
    items = []
    for dataset in config["datasets"]:
        subsets = dataset["subsets"]
        controlnet = masked_loss and all("conditioning_data_dir" in s for s in subsets)
        extension = dataset.get("caption_extension") or general.get("caption_extension")
        sizes = []
        for subset in subsets:
            caption_extension = subset.get("caption_extension") or extension or ".caption"
            for path in glob_images(subset["image_dir"]):
                caption_path = os.path.splitext(path)[0] + caption_extension
                assert os.path.isfile(caption_path), f"no caption: {caption_path}"
                with Image.open(path) as image:
                    size = image.size
                sizes.append(size)
                mask = None
                if controlnet:
                    stem = os.path.splitext(os.path.basename(path))[0]
                    masks = glob_images(subset["conditioning_data_dir"], stem)
                    assert masks, f"missing conditioning data for {stem}"
                    mask = masks[0]
                    with Image.open(mask) as opened:
                        assert opened.size == size, "size of conditioning image is not match"
                items.append(
                    {
                        "image": path,
                        "caption": Path(caption_path).read_text(encoding="utf-8").strip(),
                        "repeats": subset.get("num_repeats", 1),
                        "mask": mask,
                    }
                )
        problems = sd_scripts_bucket_problems(general, dataset, sizes)
        assert not problems, problems
    return items


# --- musubi-tuner -----------------------------------------------------------------------------
MUSUBI_DATASET_ASCENDABLE: dict[str, Check] = {
    "caption_extension": str,
    "batch_size": int,
    "num_repeats": int,
    "resolution": _int_or_pair,
    "enable_bucket": bool,
    "bucket_no_upscale": bool,
    "skip_corrupted_cache": bool,
}
MUSUBI_IMAGE_DATASET: dict[str, Check] = {
    **MUSUBI_DATASET_ASCENDABLE,
    "image_directory": str,
    "image_jsonl_file": str,
    "cache_directory": str,
    "control_directory": str,
    "multiple_target": bool,
    "fp_latent_window_size": int,
    "fp_1f_clean_indices": list,
    "fp_1f_target_index": int,
    "fp_1f_no_post": bool,
    "no_resize_control": bool,
    "control_resolution": _int_or_pair,
}
MUSUBI_RESO_STEPS = 16  # BucketSelector: every architecture
QWEN_IMAGE = "qi"  # ARCHITECTURE_QWEN_IMAGE, the suffix of its cache file names


def musubi_config_problems(config: dict) -> list[str]:
    problems = [
        f"extra keys not allowed @ data['{key}']"
        for key in config
        if key not in ("general", "datasets")
    ]
    problems += _schema_problems(
        config.get("general", {}), MUSUBI_DATASET_ASCENDABLE, "data['general']"
    )
    for index, dataset in enumerate(config.get("datasets", [])):
        problems += _schema_problems(dataset, MUSUBI_IMAGE_DATASET, f"data['datasets'][{index}]")
    return problems


def musubi_items(config: dict, architecture: str = QWEN_IMAGE) -> list[dict[str, Any]]:
    """What musubi's cache scripts encode and its trainer then finds again, per dataset.

    Writes empty stand-ins for the cache files under musubi's names (the cache scripts' job),
    then looks them up as ``prepare_for_training`` does: an unescaped glob of the cache folder.
    """
    problems = musubi_config_problems(config)
    assert not problems, problems
    general = config.get("general", {})
    items = []
    cache_dirs = []
    for dataset in config["datasets"]:

        def value(key: str, default: Any, dataset: dict = dataset) -> Any:
            for section in (dataset, general):
                if section.get(key) is not None:
                    return section[key]
            return default

        assert "image_directory" in dataset, "image_directory or image_jsonl_file must be specified"
        caption_extension = value("caption_extension", None)
        # get_caption opens splitext(path)[0] + caption_extension, or "" without one.
        assert caption_extension, "no caption_extension: musubi opens '' and fails"
        cache_dir = value("cache_directory", None) or dataset["image_directory"]
        cache_dirs.append(cache_dir)
        resolution = value("resolution", [960, 544])
        width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
        no_upscale = value("enable_bucket", False) and value("bucket_no_upscale", False)
        images = glob_images(dataset["image_directory"])
        for path in images:
            caption = Path(os.path.splitext(path)[0] + caption_extension).read_text("utf-8")
            with Image.open(path) as image:
                size = image.size
            assert no_upscale and size[0] * size[1] <= width * height, f"{path} is resized"
            bucket = tuple(side - side % MUSUBI_RESO_STEPS for side in size)
            assert bucket == size, f"{path} is cropped to {bucket}"
            stem = os.path.splitext(os.path.basename(path))[0]
            os.makedirs(cache_dir, exist_ok=True)
            Path(
                cache_dir, f"{stem}_{size[0]:04d}x{size[1]:04d}_{architecture}.safetensors"
            ).touch()
            Path(cache_dir, f"{stem}_{architecture}_te.safetensors").touch()
            items.append({"image": path, "caption": caption.strip(), "cache_dir": cache_dir})
        found = glob.glob(os.path.join(cache_dir, f"*_{architecture}.safetensors"))
        keys = {"_".join(os.path.basename(file).split("_")[:-2]) for file in found}
        trained = [
            key
            for key in keys
            if os.path.exists(os.path.join(cache_dir, f"{key}_{architecture}_te.safetensors"))
        ]
        assert len(trained) == len(images), (
            f"{dataset['image_directory']}: {len(images)} images, {len(trained)} training items"
        )
    assert len(set(cache_dirs)) == len(cache_dirs), "cache directory should be unique"
    return items
