"""The tilecast client: tile huge images, stream them to a server, stitch the answers.

Python API: `Client` (connection), `convert_image` (one file through a model), `convert_many` (archives),
`LiveStream` and `AsyncClient` (tiles streamed as a microscope acquires them), `Security` (TLS, mutual TLS and
a bearer token, for any of them).
"""

from tilecast.client.archive import convert_many, plan_jobs
from tilecast.client.channels import Security
from tilecast.client.convert import ConvertResult, convert_image
from tilecast.client.live import AsyncClient, LiveStream
from tilecast.client.options import ConvertOptions
from tilecast.client.remote import Client, TileReply

__all__ = ["AsyncClient", "Client", "ConvertOptions", "ConvertResult", "LiveStream", "Security", "TileReply",
           "convert_image", "convert_many", "plan_jobs"]
