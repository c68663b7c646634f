"""Thin Dagster shells, one module per stage; the logic lives in the stage packages."""

from identity_pipeline.assets.clusters import face_clusters, labeled_identities
from identity_pipeline.assets.faces import face_embeddings
from identity_pipeline.assets.fidelity import identity_fidelity
from identity_pipeline.assets.lora import lora_checkpoint
from identity_pipeline.assets.masks import identity_masks
from identity_pipeline.assets.photos import raw_photos
from identity_pipeline.assets.tiles import photo_tiles
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
