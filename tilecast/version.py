"""The installed tilecast version: what libraries record (manifests, server metadata) and `tilecast version`
prints. Its own module so that libraries need not import the command layer or the package's root."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tilecast")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
