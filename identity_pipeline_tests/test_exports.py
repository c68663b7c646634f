"""The exports as their consumers read them: kohya sd-scripts and musubi-tuner dataset configs
(their documented schemas, encoded in ``consumer_schemas``), datasets' imagefolder, and the
LoRA in both layouts loaded by diffusers with alpha != rank.

People's names here are the hard ones: glob characters, quotes, unicode, spaces, two names that
clean up to the same folder, and a person with only held-out photos.
"""

from __future__ import annotations

import glob
import json
import math
import os
import tomllib
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from identity_pipeline.dataset import (
    SPLIT_HOLDOUT,
    SPLIT_TRAIN,
    bucket_limits,
    export_training_set,
    folder_safe_name,
    make_buckets,
    unique_folder_names,
)
from identity_pipeline_tests.consumer_schemas import (
    musubi_items,
    sd_scripts_bucket_problems,
    sd_scripts_config_problems,
    sd_scripts_items,
)

HARD_NAMES = [
    "Anne [Marie]",
    "J*ne?",
    "Zoë Ångström",
    "Li Wei 李伟",
    'O\'Brien "Bob"',
    "A*B",
    "A?B",
    "Eve",
]
HOLDOUT_ONLY = "Only [Held] Out"
SIZES = [(128, 128), (192, 128), (128, 192)]


def _manifest(data_root: Path, names: list[str] = HARD_NAMES) -> pd.DataFrame:
    """Three samples per person (two train, one holdout) at assorted bucket sizes."""
    rows = []
    files = data_root / "files"
    files.mkdir(parents=True, exist_ok=True)
    people = [(name, 2) for name in names] + [(HOLDOUT_ONLY, 0)]
    for person, (name, train_count) in enumerate(people):
        for index in range(3):
            number = len(rows)
            width, height = SIZES[(person + index) % len(SIZES)]
            image = Image.new("RGB", (width, height), (30 * person % 256, 80 * index, 120))
            image.save(files / f"i{number}.jpg")
            mask = np.zeros((height, width), np.uint8)
            mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
            Image.fromarray(mask).save(files / f"m{number}.png")
            rows.append(
                {
                    "sample_id": f"s{number:03d}",
                    "image_path": f"files/i{number}.jpg",
                    "mask_path": f"files/m{number}.png",
                    "caption": f"A photo of {name}",
                    "identity": name,
                    "repeats": 1 + person % 3,
                    "bucket_width": width,
                    "bucket_height": height,
                    "split": SPLIT_TRAIN if index < train_count else SPLIT_HOLDOUT,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def exported(tmp_path: Path):
    manifest = _manifest(tmp_path)
    return manifest, export_training_set(manifest, tmp_path, tmp_path / "out" / "export")


def _toml(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------
# sd-scripts


def test_sd_scripts_plain_config_loads_without_any_flag(exported) -> None:
    manifest, result = exported
    train = manifest[manifest["split"] == SPLIT_TRAIN]
    items = sd_scripts_items(_toml(result.sd_scripts_config), masked_loss=False)
    assert sorted(item["caption"] for item in items) == sorted(train["caption"])
    assert {item["mask"] for item in items} == {None}
    assert "conditioning_data_dir" not in result.sd_scripts_config.read_text(encoding="utf-8")


def test_sd_scripts_masked_config_needs_masked_loss_and_says_so_first(exported) -> None:
    manifest, result = exported
    text = result.sd_scripts_masked_config.read_text(encoding="utf-8")
    assert text.startswith("#") and "--masked_loss" in text.splitlines()[0]
    config = _toml(result.sd_scripts_masked_config)
    without_flag = sd_scripts_config_problems(config, masked_loss=False)
    assert without_flag and all("conditioning_data_dir" in problem for problem in without_flag)

    items = sd_scripts_items(config, masked_loss=True)
    train = manifest[manifest["split"] == SPLIT_TRAIN]
    assert len(items) == len(train)
    for item in items:  # white where the person is, the image's own size
        with Image.open(item["mask"]) as mask, Image.open(item["image"]) as image:
            assert mask.size == image.size
            assert np.asarray(mask.convert("RGB"))[..., 0].max() == 255


def test_real_names_stay_in_captions_and_the_mapping(exported) -> None:
    manifest, result = exported
    mapping = json.loads(result.mapping_file.read_text(encoding="utf-8"))
    train = manifest[manifest["split"] == SPLIT_TRAIN]
    assert {entry["identity"] for entry in mapping["identities"]} == set(HARD_NAMES)
    assert HOLDOUT_ONLY not in result.kohya_folders, "no folder for a person with no train photo"
    for entry in mapping["identities"]:
        folder = result.kohya_image_dir / entry["folder"]
        captions = {path.read_text(encoding="utf-8") for path in folder.glob("*.txt")}
        assert captions == {f"A photo of {entry['identity']}"}
        assert entry["repeats"] == int(entry["folder"].split("_")[0])
        assert entry["train_images"] == len(list(folder.glob("*.jpg")))
    by_file = {entry["file"]: entry for entry in mapping["files"]}
    assert sorted(entry["sample_id"] for entry in by_file.values()) == sorted(train["sample_id"])
    for name, entry in by_file.items():
        assert (result.kohya_image_dir / name).is_file()
        assert name.split("/")[0] == result.kohya_folders[entry["identity"]]


@pytest.mark.parametrize(
    "sizes",
    [
        [(128, 128)],  # the demo: sd-scripts' defaults (256..1024) refuse it
        [(bucket.width, bucket.height) for bucket in make_buckets(1024 * 1024, 64, 0.5, 2.0)],
        [(1472, 704), (704, 1472), (1024, 1024)],  # sides above sd-scripts' default 1024
        [(144, 96), (96, 144), (112, 112)],  # a divisor of 16
        [(1344, 768), (1024, 1024)],  # equal areas are not required
    ],
    ids=["demo-128", "1mp-all-buckets", "over-1024", "divisor-16", "mixed"],
)
def test_bucket_limits_keep_every_image_as_it_is_in_sd_scripts(sizes) -> None:
    limits = bucket_limits(sizes)
    assert limits is not None
    general = {
        "resolution": list(limits.resolution),
        "enable_bucket": True,
        "bucket_no_upscale": True,
        "min_bucket_reso": limits.min_side,
        "max_bucket_reso": limits.max_side,
        "bucket_reso_steps": limits.steps,
    }
    assert sd_scripts_bucket_problems(general, {}, sizes) == []
    # What the old config (resolution only) got: the demo's 128 px fails sd-scripts' check.
    if max(max(size) for size in sizes) > 1024 or min(min(size) for size in sizes) < 256:
        assert sd_scripts_bucket_problems({"resolution": 1024, "enable_bucket": True}, {}, sizes)


# ----------------------------------------------------------------------------------------------
# musubi-tuner


def test_musubi_finds_every_image_caption_and_cache_entry(exported) -> None:
    manifest, result = exported
    config = _toml(result.musubi_config)
    items = musubi_items(config)
    train = manifest[manifest["split"] == SPLIT_TRAIN]
    assert sorted(item["caption"] for item in items) == sorted(train["caption"])
    assert "no loss mask" in result.musubi_config.read_text(encoding="utf-8").splitlines()[0]
    for dataset in config["datasets"]:
        cache = Path(dataset["cache_directory"])
        assert cache.parent == result.musubi_cache_dir
        assert not cache.is_relative_to(result.export_dir), "the cache outlives the export"
    assert result.warnings == ()


def test_musubi_cache_is_kept_across_re_exports_and_keyed_by_content(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, names=["Anne [Marie]", "Eve"])
    target = tmp_path / "out" / "export"
    first = export_training_set(manifest, tmp_path, target)
    cached = musubi_items(_toml(first.musubi_config))  # the cache scripts fill the cache
    cache_files = sorted(first.musubi_cache_dir.rglob("*.safetensors"))
    assert len(cache_files) == 2 * len(cached)

    changed = manifest.copy()
    anne = changed.index[(changed["identity"] == "Anne [Marie]") & (changed["split"] == "train")]
    changed.loc[anne[0], "caption"] = "A group photo of Anne [Marie] and other people"
    changed.loc[changed["identity"] == "Eve", "repeats"] = 5  # Eve's folder is renamed
    second = export_training_set(changed, tmp_path, target)

    assert sorted(second.musubi_cache_dir.rglob("*.safetensors")) == cache_files, "kept"
    stems = {Path(item["image"]).stem for item in cached}
    new_stems = {path.stem for path in second.kohya_image_dir.rglob("*.jpg")}
    assert len(stems - new_stems) == len(new_stems - stems) == 1, "only the changed caption"
    caches = [Path(d["cache_directory"]) for d in _toml(second.musubi_config)["datasets"]]
    assert {path.name for path in caches} == {"Anne _Marie_", "Eve"}, "no repeats in the key"
    # musubi's skip_existing reuses an entry only when image and caption are the same.
    reusable = {p.name.split("_")[0] for p in second.musubi_cache_dir.rglob("*.safetensors")}
    assert new_stems - reusable == new_stems - stems


# ----------------------------------------------------------------------------------------------
# Folder names, paths, warnings


@pytest.mark.parametrize(
    "name",
    [*HARD_NAMES, "a/b\\c", "..", "", "  ", "tab\tname", "x" * 300, "Zoe\u0308", "-dash"],
)
def test_folder_names_are_safe_for_every_glob(name: str, tmp_path: Path) -> None:
    safe = folder_safe_name(name)
    assert safe and not glob.has_magic(safe) and "/" not in safe and "\\" not in safe
    assert safe not in (".", "..") and len(safe.encode("utf-8")) <= 255
    assert all(not unicodedata.category(ch).startswith("C") for ch in safe)
    folder = tmp_path / f"3_{safe}"
    folder.mkdir()
    (folder / "x_qi.safetensors").touch()
    # Found by an unescaped glob (musubi's cache lookup) as well as by an escaped one.
    assert glob.glob(os.path.join(str(folder), "*_qi.safetensors"))


def test_unique_folder_names_never_collide() -> None:
    names = unique_folder_names(["A*B", "A?B", "a[b", "Zoë", "Zoe\u0308", "Eve", "eve"])
    assert len({name.casefold() for name in names.values()}) == len(names)
    assert names["A*B"] == "A_B" and names["A?B"] == "A_B_2"


def test_a_glob_character_in_a_parent_folder_is_reported(tmp_path: Path) -> None:
    parent = tmp_path / "photos [2024]"
    manifest = _manifest(tmp_path, names=["Eve"])
    result = export_training_set(manifest, tmp_path, parent / "export")
    assert any("musubi" in warning for warning in result.warnings)
    assert any("imagefolder" in warning for warning in result.warnings)
    assert "WARNING" in result.musubi_config.read_text(encoding="utf-8")
    assert "WARNINGS" in (result.export_dir / "README.txt").read_text(encoding="utf-8")
    with pytest.raises(AssertionError, match="0 training items"):
        musubi_items(_toml(result.musubi_config))  # what musubi would silently do
    elsewhere = export_training_set(
        manifest, tmp_path, parent / "export", musubi_cache_dir=tmp_path / "cache"
    )
    assert not any("musubi" in warning for warning in elsewhere.warnings)
    assert len(musubi_items(_toml(elsewhere.musubi_config))) == 2


def test_configs_quote_any_path_they_hold(tmp_path: Path) -> None:
    parent = tmp_path / 'quote " backslash \\ tab\t del\x7f zoë'
    manifest = _manifest(tmp_path, names=["Eve"])
    result = export_training_set(manifest, tmp_path, parent / "export")
    for config in (result.sd_scripts_masked_config, result.musubi_config):
        paths = [
            value
            for dataset in _toml(config)["datasets"]
            for section in [dataset, *dataset.get("subsets", [])]
            for key, value in section.items()
            if key.endswith(("_dir", "_directory"))
        ]
        assert paths and all(Path(path).is_relative_to(parent) for path in paths)
        assert all(Path(path).is_dir() for path in paths)
    assert len(sd_scripts_items(_toml(result.sd_scripts_masked_config), masked_loss=True)) == 2


def test_the_cache_cannot_live_inside_the_export(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, names=["Eve"])
    with pytest.raises(ValueError, match="outside the export"):
        export_training_set(
            manifest, tmp_path, tmp_path / "export", musubi_cache_dir=tmp_path / "export" / "c"
        )


def test_imagefolder_with_hard_names_loads_in_datasets(
    exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    manifest, result = exported
    loaded = datasets.load_dataset(str(result.imagefolder_dir), cache_dir=str(tmp_path / "hf"))
    train = manifest[manifest["split"] == SPLIT_TRAIN]
    assert sorted(loaded["train"]["identity"]) == sorted(train["identity"])
    assert sorted(loaded["train"]["text"]) == sorted(train["caption"])


# ----------------------------------------------------------------------------------------------
# The LoRA: alpha != rank, both layouts


RANK, ALPHA = 4, 2.0  # scale 0.5: a loader that ignores alpha / rank is off by 2x


def _lora_pipeline(family: str):
    from identity_pipeline.training.tiny_models import build_tiny_pipeline

    pipe = build_tiny_pipeline(family, seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _denoiser(pipe) -> torch.nn.Module:
    return pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet


@pytest.fixture(scope="module")
def exported_loras(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LoRA per family with random A and B (B is zero after init), exported both ways."""
    from identity_pipeline.training.config import TrainingConfig
    from identity_pipeline.training.export import export_lora
    from identity_pipeline.training.families import ADAPTERS, get_adapter
    from identity_pipeline.training.trainer import add_lora

    folders = {}
    for family in ADAPTERS:
        adapter = get_adapter(family)
        denoiser = _denoiser(_lora_pipeline(family))
        config = TrainingConfig.from_dict(
            {
                "data": {"manifest": "unused"},
                "model": {"family": family},
                "lora": {"rank": RANK, "alpha": ALPHA},
            }
        )
        generator = torch.Generator().manual_seed(1)
        for parameter in add_lora(denoiser, adapter, config).values():
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.1
        folder = tmp_path_factory.mktemp(family)
        export_lora(adapter, denoiser, folder, torch.float32)
        folders[family] = folder
    return folders


def _expected_updates(folder: Path) -> dict[str, torch.Tensor]:
    """module -> alpha / rank * B @ A, from the diffusers-layout file's own tensors."""
    state = load_file(str(folder / "pytorch_lora_weights.safetensors"))
    updates = {}
    for key, down in state.items():
        if key.endswith(".lora_A.weight"):
            module = key.split(".", 1)[1].removesuffix(".lora_A.weight")
            updates[module] = ALPHA / RANK * state[key.replace("lora_A", "lora_B")] @ down
    return updates


# diffusers reads the kohya layout of every family but SD3 (whose kohya keys only ComfyUI maps).
LAYOUTS = [
    (family, weight)
    for family in ("qwen-image", "flux", "sd3", "sdxl")
    for weight in ("pytorch_lora_weights.safetensors", "lora_comfyui.safetensors")
]


@pytest.mark.parametrize(("family", "weight_name"), LAYOUTS)
def test_effective_update_after_load_lora_weights_is_alpha_over_rank_b_a(
    exported_loras, family: str, weight_name: str
) -> None:
    folder = exported_loras[family]
    expected = _expected_updates(folder)
    assert expected and ALPHA != RANK
    pipe = _lora_pipeline(family)
    denoiser = _denoiser(pipe)
    before = {key: value.clone() for key, value in denoiser.state_dict().items()}
    pipe.load_lora_weights(str(folder), weight_name=weight_name)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    after = denoiser.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    if family == "sd3" and weight_name == "lora_comfyui.safetensors":
        assert not changed, "diffusers learned SD3's kohya keys: say so in the README"
        return
    assert changed == {f"{module}.weight" for module in expected}
    for module, update in expected.items():
        key = f"{module}.weight"
        torch.testing.assert_close(after[key] - before[key], update, rtol=1e-5, atol=1e-6)


def test_kohya_file_scales_like_kohya_loaders_and_names_the_trainer(exported_loras) -> None:
    from identity_pipeline.training.export import NETWORK_MODULE_BY_FAMILY
    from identity_pipeline.training.families import ADAPTERS, get_adapter

    assert set(NETWORK_MODULE_BY_FAMILY) == set(ADAPTERS)
    expected_modules = {
        "qwen-image": "networks.lora_qwen_image",  # musubi-tuner
        "flux": "networks.lora_flux",  # sd-scripts
        "sd3": "networks.lora_sd3",
        "sdxl": "networks.lora",
    }
    for family, folder in exported_loras.items():
        path = folder / "lora_comfyui.safetensors"
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
        assert metadata["ss_network_module"] == expected_modules[family]
        assert (metadata["ss_network_dim"], float(metadata["ss_network_alpha"])) == (
            str(RANK),
            ALPHA,
        )
        kohya = load_file(str(path))
        prefix = get_adapter(family).kohya_prefix
        expected = {
            f"{prefix}_{module.replace('.', '_')}": update
            for module, update in _expected_updates(folder).items()
        }
        bases = {key.rsplit(".", 2)[0] for key in kohya if key.endswith(".lora_down.weight")}
        assert bases == set(expected)
        for base in bases:
            down = kohya[f"{base}.lora_down.weight"]
            # ComfyUI / sd-scripts: scale = alpha / rank, rank = rows of lora_down.
            scale = float(kohya[f"{base}.alpha"]) / down.shape[0]
            assert math.isclose(scale, ALPHA / RANK)
            torch.testing.assert_close(
                scale * kohya[f"{base}.lora_up.weight"] @ down, expected[base]
            )
