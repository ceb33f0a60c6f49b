"""tilecast: run trained image models on microscopy and pathology images of any size."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tilecast")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
