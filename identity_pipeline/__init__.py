"""identity-pipeline: a photo album in, a LoRA that learned the faces of its people out.

The Dagster wiring lives in ``identity_pipeline.definitions`` and ``identity_pipeline.assets``;
every stage's logic lives in a plain-Python package that does not import dagster.
"""

__version__ = "0.1.0"
