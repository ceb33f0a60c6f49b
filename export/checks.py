"""The checks an export's settings pass before any network is loaded: one message per setting, naming
its `tilecast export onnx` flag, the bad value and what is valid."""

from __future__ import annotations

from typing import Any

from tilecast.proto.errors import InvalidOption
from tilecast.proto.manifest import MODEL_NAME

INPUT_DTYPES = ("uint8", "uint16", "float32")
OUTPUT_DTYPES = ("uint8", "uint16")
MIN_OPSET, MAX_OPSET = 17, 23  # what the exporters here produce and ONNX Runtime runs


def check_export_config(config: Any) -> None:
    """Raise InvalidOption for the first setting of an ExportConfig that cannot give a model."""
    if not MODEL_NAME.match(config.name):
        raise InvalidOption("--name", config.name, "a model name names a folder: give 1-128 letters, digits, "
                                                   "'_', '.' or '-', starting with a letter or digit")
    if config.version < 0:
        raise InvalidOption("--version", config.version, "give a version number, or 0 for the next free one")
    if config.tile_size < 1:  # a classifier's tile is its patch (e.g. 299); other kinds are checked at export
        raise InvalidOption("--tile-size", config.tile_size, "give the preferred tile edge in pixels, 1 or more")
    if config.max_size < config.tile_size:
        raise InvalidOption("--max-size", config.max_size, f"give at least the tile size {config.tile_size}")
    if config.max_batch_size < 1:
        raise InvalidOption("max_batch_size", config.max_batch_size, "give 1 or more")
    if not MIN_OPSET <= config.opset <= MAX_OPSET:
        raise InvalidOption("--opset", config.opset, f"give an ONNX opset from {MIN_OPSET} to {MAX_OPSET}")
    if config.input_dtype not in INPUT_DTYPES:
        raise InvalidOption("--input-dtype", config.input_dtype, f"use one of {', '.join(INPUT_DTYPES)}")
    if config.output_dtype not in OUTPUT_DTYPES:
        raise InvalidOption("--output-dtype", config.output_dtype, f"use one of {', '.join(OUTPUT_DTYPES)}")
    names = list(config.class_names)
    if "" in names or len(set(names)) < len(names):
        raise InvalidOption("--classes", ",".join(names), "give distinct, non-empty class names")
