"""tilecast: run trained image models on microscopy and pathology images of any size."""

from tilecast.version import __version__

__all__ = ["__version__"]
