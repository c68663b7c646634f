"""SAM / SAM 2 through transformers, prompted per person with a body box and face points.

For real use on a GPU (e.g. ``facebook/sam-vit-base`` or ``facebook/sam2.1-hiera-small``); on
this project's CPU machines it is tested on a tiny random-initialised config for plumbing only.
The image is embedded once per tile; every person is one prompt of the same batch: their body
box, a positive point on the face and one on the chest, and negative points on every other face
(so SAM does not return the pair of people as one object). Of SAM's three candidate masks, the
largest one that still covers the face and no other face is kept: SAM's smaller candidates are
usually the face or the shirt alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from identity_pipeline.masks.config import BACKEND_SAM, MaskConfig
from identity_pipeline.masks.geometry import clip_box, face_core
from identity_pipeline.masks.records import FaceInTile, Segmentation

# transformers' prompt encoder ignores points labelled with this (padding to a common count).
PAD_LABEL = -10


class SamSegmenter:
    name = BACKEND_SAM

    def __init__(self, model_path_or_id: str | os.PathLike[str], device: str = "cpu") -> None:
        # Imported here: transformers and torch take seconds to import and only SAM needs them.
        import torch
        from transformers import AutoConfig

        self._torch = torch
        self.model_path_or_id = str(model_path_or_id)
        self.device = device
        model_type = AutoConfig.from_pretrained(self.model_path_or_id).model_type
        self.is_sam2 = model_type.startswith("sam2")
        if self.is_sam2:
            from transformers import Sam2Model, Sam2Processor

            self.model = Sam2Model.from_pretrained(self.model_path_or_id)
            self.processor = Sam2Processor.from_pretrained(self.model_path_or_id)
        else:
            from transformers import SamModel, SamProcessor

            self.model = SamModel.from_pretrained(self.model_path_or_id)
            self.processor = SamProcessor.from_pretrained(self.model_path_or_id)
        self.model.to(device).eval()

    def segment(
        self, image_rgb: np.ndarray, faces: Sequence[FaceInTile], config: MaskConfig
    ) -> Segmentation:
        height, width = image_rgb.shape[:2]
        if not faces:
            return Segmentation(np.zeros((0, height, width), np.float32), self.name)
        boxes, points, labels = sam_prompts(faces, config, (height, width))
        inputs = self.processor(
            images=image_rgb,
            input_boxes=[boxes],
            input_points=[points],
            input_labels=[labels],
            return_tensors="pt",
        )
        model_inputs = {
            key: value.to(self.device)
            for key, value in inputs.items()
            if key not in ("original_sizes", "reshaped_input_sizes")
        }
        with self._torch.no_grad():
            outputs = self.model(**model_inputs, multimask_output=True)
        candidates = self._candidate_probabilities(outputs.pred_masks.cpu(), inputs)
        scores = outputs.iou_scores.cpu().float().numpy()[0]  # (faces, candidates)
        probabilities = np.stack(
            [
                choose_candidate(candidates[i], scores[i], faces, i, config)
                for i in range(len(faces))
            ]
        )
        return Segmentation(probabilities.astype(np.float32), self.name, "SAM box+point prompts")

    def _candidate_probabilities(self, pred_masks: Any, inputs: Any) -> np.ndarray:
        """(faces, candidates, H, W) probabilities at the image's resolution."""
        if self.is_sam2:
            masks = self.processor.post_process_masks(
                pred_masks, inputs["original_sizes"], binarize=False
            )
        else:
            masks = self.processor.image_processor.post_process_masks(
                pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
            )
        logits = masks[0].float()
        return self._torch.sigmoid(logits).numpy()


def sam_prompts(
    faces: Sequence[FaceInTile], config: MaskConfig, shape: tuple[int, int]
) -> tuple[list[list[float]], list[list[list[float]]], list[list[int]]]:
    """Per face: a body box, and points (face +, chest +, other faces -) padded to one count."""
    height, width = shape
    boxes, points, labels = [], [], []
    for index, face in enumerate(faces):
        cx, cy = face.centre
        half = config.sam_box_half_width * face.width
        box = clip_box(
            (
                cx - half,
                face.box[1] - config.hair_up * face.height,
                cx + half,
                face.box[3] + config.sam_box_below * face.height,
            ),
            width,
            height,
        )
        boxes.append([float(v) for v in box])
        face_points = [[cx, cy]]
        face_labels = [1]
        chest_y = face.box[3] + 0.8 * face.height
        if chest_y < height - 1:
            face_points.append([cx, chest_y])
            face_labels.append(1)
        for other_index, other in enumerate(faces):
            if other_index != index:
                face_points.append(list(other.centre))
                face_labels.append(0)
        points.append(face_points)
        labels.append(face_labels)
    longest = max(len(p) for p in points)
    for face_points, face_labels in zip(points, labels, strict=True):
        while len(face_points) < longest:
            face_points.append([0.0, 0.0])
            face_labels.append(PAD_LABEL)
    return boxes, [[[float(x), float(y)] for x, y in p] for p in points], labels


def choose_candidate(
    candidates: np.ndarray,
    iou_scores: np.ndarray,
    faces: Sequence[FaceInTile],
    index: int,
    config: MaskConfig,
) -> np.ndarray:
    """The largest candidate covering this face and no other; else SAM's best-scored one."""
    shape = candidates.shape[1:]
    own = face_core(shape, faces[index])
    others = [face_core(shape, f) for i, f in enumerate(faces) if i != index]
    best: tuple[float, int] | None = None
    for k, candidate in enumerate(candidates):
        region = candidate > 0.5
        if own.any() and region[own].mean() < config.min_face_coverage:
            continue
        if any(o.any() and region[o].mean() > config.max_other_face_claim for o in others):
            continue
        area = float(region.sum())
        if best is None or area > best[0]:
            best = (area, k)
    chosen = best[1] if best is not None else int(np.argmax(iou_scores))
    return candidates[chosen]


def save_tiny_random_sam(folder: str | os.PathLike[str], seed: int = 0) -> str:
    """A randomly initialised SAM small enough for CPU tests, saved with its processor.

    Its masks are noise: it exercises loading, prompting and post-processing, and gives the
    selector an implausible backend to fall back from. Returns the folder, for SamSegmenter.
    """
    import torch
    from transformers import (
        SamConfig,
        SamImageProcessorPil,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    image_size, mask_size = 128, 32
    vision = SamVisionConfig(
        hidden_size=32,
        output_channels=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=16,
        window_size=4,
        global_attn_indexes=(1,),
        num_pos_feats=8,
        mlp_dim=64,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=16, image_size=image_size, patch_size=16, mask_input_channels=4
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=16,
        mlp_dim=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        iou_head_hidden_dim=16,
    )
    config = SamConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config=prompt.to_dict(),
        mask_decoder_config=decoder.to_dict(),
    )
    torch.manual_seed(seed)
    SamModel(config).save_pretrained(folder)
    image_processor = SamImageProcessorPil(
        size={"longest_edge": image_size},
        pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": mask_size},
        mask_pad_size={"height": mask_size, "width": mask_size},
    )
    SamProcessor(image_processor=image_processor).save_pretrained(folder)
    return str(folder)
