"""spade4d: 4D panoptic scene graph generation."""

from spade4d.version import __version__

__all__ = ["__version__"]
