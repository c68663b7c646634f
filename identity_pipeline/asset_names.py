"""The names of the assets, written once.

They are Dagster asset keys and also folder names under ``<data root>/assets/``, so the stage
packages (which do not import dagster) read their neighbours' outputs by these names too.
"""

RAW_PHOTOS = "raw_photos"
PHOTO_TILES = "photo_tiles"
FACE_EMBEDDINGS = "face_embeddings"
FACE_CLUSTERS = "face_clusters"
LABELED_IDENTITIES = "labeled_identities"
IDENTITY_MASKS = "identity_masks"
TRAINING_SET = "training_set"
LORA_CHECKPOINT = "lora_checkpoint"
IDENTITY_FIDELITY = "identity_fidelity"

# In graph order.
ALL_ASSET_NAMES = (
    RAW_PHOTOS,
    PHOTO_TILES,
    FACE_EMBEDDINGS,
    FACE_CLUSTERS,
    LABELED_IDENTITIES,
    IDENTITY_MASKS,
    TRAINING_SET,
    LORA_CHECKPOINT,
    IDENTITY_FIDELITY,
)
