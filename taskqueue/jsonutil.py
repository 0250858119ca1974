"""JSON encode/decode: orjson when installed (the broker always has it), else the stdlib."""

from __future__ import annotations

try:
    import orjson as _orjson

    def dumps(value) -> bytes:
        return _orjson.dumps(value)

    loads = _orjson.loads
    JSONDecodeError = _orjson.JSONDecodeError
except ImportError:  # a light worker host
    import json as _json

    def dumps(value) -> bytes:
        return _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(data):
        return _json.loads(data)

    JSONDecodeError = ValueError
