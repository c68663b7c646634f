"""Thin Dagster shells, one module per stage; the logic lives in the stage packages."""

from identity_pipeline.assets.photos import raw_photos

ALL_ASSETS = [raw_photos]

__all__ = ["ALL_ASSETS", "raw_photos"]
