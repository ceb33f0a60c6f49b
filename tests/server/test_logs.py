from __future__ import annotations

import json
import logging

from tilecast.server.logs import JsonFormatter


def test_json_log_lines_parse() -> None:
    record = logging.LogRecord("tilecast.server", logging.WARNING, __file__, 1, "model %s failed", ("x",), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "WARNING" and entry["message"] == "model x failed" and entry["logger"] == "tilecast.server"
    assert entry["time"].endswith("+00:00")
