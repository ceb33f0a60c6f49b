"""The tilecast gRPC server: loads a model repository and runs tiles through engines with dynamic batching.

Entry points: `tilecast.server.app.TilecastServer`, `tilecast.server.app.ServerThread` and
`tilecast.server.settings.Settings`. This module stays light so that `tilecast --help` works
wherever only the client is installed.
"""
