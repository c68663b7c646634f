"""Thin Dagster shells, one module per asset (named after it); the logic lives in the stage
packages."""

from identity_pipeline.assets.face_clusters import face_clusters
from identity_pipeline.assets.face_embeddings import face_embeddings
from identity_pipeline.assets.identity_fidelity import identity_fidelity
from identity_pipeline.assets.identity_masks import identity_masks
from identity_pipeline.assets.labeled_identities import labeled_identities
from identity_pipeline.assets.lora_checkpoint import lora_checkpoint
from identity_pipeline.assets.photo_tiles import photo_tiles
from identity_pipeline.assets.raw_photos import raw_photos
from identity_pipeline.assets.training_set import training_set

ALL_ASSETS = [
    raw_photos,
    photo_tiles,
    face_embeddings,
    face_clusters,
    labeled_identities,
    identity_masks,
    training_set,
    lora_checkpoint,
    identity_fidelity,
]

__all__ = ["ALL_ASSETS"]
