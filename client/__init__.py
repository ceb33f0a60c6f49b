"""The tilecast client: tile huge images, stream them to a server, stitch the answers.

Python API: `Client` (connection), `convert_image` (one file through a model).
"""

from tilecast.client.convert import ConvertOptions, ConvertResult, convert_image
from tilecast.client.remote import Client

__all__ = ["Client", "ConvertOptions", "ConvertResult", "convert_image"]
