"""Benchmark the identity-mask backends: seconds per tile and what each one drew.

    .venv/bin/python benchmarks/masks.py [--groups DIR] [--out DIR] [--repeat N] [--sam MODEL]

Scenes: the license-clean composed ones (``identity_pipeline.masks.scenes``) and the group
photos in ``../shared/data/faces-dev/groups`` (third-party: read in place, benchmark only,
never copied anywhere but the overlays written under --out, default the temporary folder). Every detected face
of at least --min-named-px is named, so each person gets a mask; smaller ones are strangers.
Backends: GrabCut, the selfie model (when its file is found: masks/models/ or an
installed mediapipe 0.10.x), the default selector,
a tiny random-initialised SAM (plumbing cost only: its masks are noise and the selector must
reject them) and, with --sam, a real SAM checkpoint (local folder or hub id) on CPU or --device.

Per scene and backend it prints the median seconds per tile (segmentation + split + soft edges
+ blurring, i.e. ``build_identity_masks``), the backend the selector kept, each person's
mask/face area ratio and flags, and writes ``<scene>__<backend>.png`` (one overlay per person)
and ``contact_sheet.png`` (the default selector's samples, as the asset's metadata shows them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.shared_data import FACES_DEV, SCRATCH  # noqa: E402
from identity_pipeline.masks import (  # noqa: E402
    DEFAULT_MASK_CONFIG,
    FaceInTile,
    GrabCutSegmenter,
    IdentityMask,
    SamSegmenter,
    SelectingSegmenter,
    SelfieModelMissing,
    SelfieSegmenter,
    build_identity_masks,
    masks_contact_sheet,
    overlay_preview,
    select_segmenter,
)
from identity_pipeline.masks.records import Segmenter  # noqa: E402
from identity_pipeline.masks.sam import save_tiny_random_sam  # noqa: E402
from identity_pipeline.masks.scenes import (  # noqa: E402
    composed_scenes,
    detect_faces,
    offline_face_backend,
)

DEFAULT_GROUPS = FACES_DEV / "groups"
DEFAULT_OUT = SCRATCH / "identity_masks_bench"


def load_scenes(groups: Path) -> dict[str, np.ndarray]:
    scenes = dict(composed_scenes())
    for path in sorted(groups.glob("*.jpg")) if groups.is_dir() else []:
        scenes[path.stem] = np.asarray(Image.open(path).convert("RGB"))
    return scenes


def build_backends(sam_model: str | None, device: str, workdir: Path) -> dict[str, Segmenter]:
    backends: dict[str, Segmenter] = {"grabcut": GrabCutSegmenter()}
    try:
        backends["selfie"] = SelfieSegmenter()
    except SelfieModelMissing as error:
        print(f"selfie backend unavailable: {error}\n")
    tiny = SamSegmenter(save_tiny_random_sam(workdir / "tiny-sam"))
    backends["sam-tiny-random"] = tiny
    backends["selector(default)"] = select_segmenter(DEFAULT_MASK_CONFIG)
    # The selector given the broken SAM first: it must fall back (see the "kept" column).
    backends["selector(tiny-sam first)"] = SelectingSegmenter(
        [tiny, *select_segmenter(DEFAULT_MASK_CONFIG).candidates]
    )
    if sam_model:
        real = SamSegmenter(sam_model, device)
        backends["sam"] = real
        backends["selector(sam)"] = select_segmenter(DEFAULT_MASK_CONFIG, sam=real)
    return backends


def time_tile(
    image: np.ndarray, faces: Sequence[FaceInTile], segmenter: Segmenter, repeat: int
) -> tuple[float, list[IdentityMask]]:
    timings, masks = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        masks = build_identity_masks(image, faces, segmenter, DEFAULT_MASK_CONFIG)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), masks


def write_overlays(path: Path, image: np.ndarray, masks: Sequence[IdentityMask]) -> None:
    if not masks:
        return
    panels = [np.asarray(overlay_preview(image, mask, max_side=480)) for mask in masks]
    height = max(panel.shape[0] for panel in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in panels]
    Image.fromarray(np.concatenate(padded, axis=1)).save(path)


def name_faces(found: Sequence[FaceInTile], min_named_px: float) -> list[FaceInTile]:
    """Faces of at least ``min_named_px`` are named p0, p1...; smaller ones stay strangers.

    As in a real album, where background faces (and the detector's occasional false face on a
    hand) are never labelled: a stranger is still segmented and blurred, but not a target.
    """
    named = []
    for index, face in enumerate(found):
        identity = f"p{index}" if face.size >= min_named_px else None
        named.append(FaceInTile(face.face_id, face.box, face.landmarks, identity))
    return named


def describe(masks: Sequence[IdentityMask]) -> str:
    parts = []
    for mask in masks:
        flags = ",".join(mask.flags) or "ok"
        parts.append(f"{mask.identity}:{mask.area_ratio:.1f}x {flags}")
    return " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=Path, default=DEFAULT_GROUPS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sam", default=None, help="a SAM/SAM 2 checkpoint folder or hub id")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-named-px", type=float, default=40.0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    face_backend = offline_face_backend()
    scenes = load_scenes(args.groups)
    with tempfile.TemporaryDirectory() as workdir:
        backends = build_backends(args.sam, args.device, Path(workdir))
        header = f"{'scene':<22} {'size':>9} {'faces':>5} {'backend':<26} {'s/tile':>7} {'kept':<9} people"
        print(header)
        print("-" * len(header))
        reasons = []
        sheet_samples = []
        for scene, image in scenes.items():
            found = detect_faces(image, backend=face_backend)
            faces = name_faces(found, args.min_named_px)
            size = f"{image.shape[1]}x{image.shape[0]}"
            for name, segmenter in backends.items():
                seconds, masks = time_tile(image, faces, segmenter, args.repeat)
                kept = masks[0].backend if masks else "-"
                print(
                    f"{scene:<22} {size:>9} {len(faces):>5} {name:<26} {seconds:>7.2f} "
                    f"{kept:<9} {describe(masks)}"
                )
                safe = name.replace("(", "_").replace(")", "").replace(" ", "_")
                write_overlays(args.out / f"{scene}__{safe}.png", image, masks)
                if masks and name.startswith("selector"):
                    reasons.append(f"{scene} / {name}: {masks[0].selector_reason}")
                if name == "selector(default)":
                    sheet_samples.extend((image, mask) for mask in masks)
        print("\nselector reasons:")
        for reason in reasons:
            print(f"  {reason}")
        masks_contact_sheet(sheet_samples).save(args.out / "contact_sheet.png")
    print(f"\noverlays: {args.out} (contact_sheet.png: the default selector, as in metadata)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
