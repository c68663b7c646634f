"""Captions from templates: the identity's name in a sentence about the photo."""

from __future__ import annotations

from identity_pipeline.dataset.config import NAME_PLACEHOLDER, DatasetConfig


def caption_for(identity: str, faces_in_tile: int, config: DatasetConfig) -> str:
    """The solo template for a tile with one detected face (when set), else the group one.

    Plain substitution, not ``str.format``: a template or a name with other braces in it is
    taken literally instead of raising.
    """
    solo = faces_in_tile <= 1 and config.solo_caption_template is not None
    template = config.solo_caption_template if solo else config.group_caption_template
    return str(template).replace(NAME_PLACEHOLDER, identity.strip())
