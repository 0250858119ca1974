"""Regenerate the gRPC Python code from ``taskqueue.proto``.

    python -m broker.api.gen_proto            # writes broker/api/taskqueue_pb2*.py
    python -m broker.api.gen_proto --out DIR  # somewhere else (the drift test does this)

Needs grpcio-tools of the same minor line as grpcio (pyproject's ``test`` extra pins it):
generated ``_pb2_grpc`` code refuses to load on an older grpcio. The generated ``_pb2_grpc``
module imports its messages with a top-level ``import taskqueue_pb2``; it is rewritten to a
package-relative import so the code works as ``broker.api.taskqueue_pb2_grpc``.

The generated files carry the generator's own version as the oldest runtime they accept
(``GRPC_GENERATED_VERSION``, ``ValidateProtobufRuntimeVersion``). Left alone, that stamp follows
whichever patch release of grpcio-tools happened to be installed: a checkout generated with
1.85.4 would refuse grpcio 1.85.1, which pyproject allows, and the drift test would fail the day
the registry gains a patch release. Both stamps are therefore written as the floors pyproject
declares (``GRPCIO_FLOOR``, ``PROTOBUF_FLOOR``; tests/test_grpc_api.py checks they agree), so
the output depends on the proto and the minor line only.
tests/test_grpc_api.py regenerates into a temporary directory and fails on any difference.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "taskqueue.proto"
OUTPUTS = ("taskqueue_pb2.py", "taskqueue_pb2.pyi", "taskqueue_pb2_grpc.py")
# The oldest runtimes the checked-in code accepts: pyproject's floors for grpcio and protobuf.
GRPCIO_FLOOR = "1.85.0"
PROTOBUF_FLOOR = (7, 35, 1)


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    code = protoc.main(["grpc_tools.protoc", f"-I{HERE}", f"-I{include}",
                        f"--python_out={out}", f"--pyi_out={out}",
                        f"--grpc_python_out={out}", str(HERE / PROTO)])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    grpc_module = out / "taskqueue_pb2_grpc.py"
    text = grpc_module.read_text()
    text = re.sub(r"^import taskqueue_pb2 as", "from . import taskqueue_pb2 as", text,
                  flags=re.MULTILINE)
    text = re.sub(r"^GRPC_GENERATED_VERSION = '[^']*'",
                  f"GRPC_GENERATED_VERSION = '{GRPCIO_FLOOR}'", text, flags=re.MULTILINE)
    grpc_module.write_text(text)
    _stamp_protobuf_floor(out / "taskqueue_pb2.py")
    return [out / name for name in OUTPUTS]


def _stamp_protobuf_floor(module: Path) -> None:
    """Write PROTOBUF_FLOOR as the oldest protobuf runtime the messages module accepts.

    Only within the floor's major line: a generator of another major is a real change the
    drift test must show, not a stamp to smooth over.
    """
    major, minor, patch = PROTOBUF_FLOOR
    text = module.read_text()
    validate = re.compile(r"(Domain\.PUBLIC,\n\s*)(\d+)(,\n\s*)(\d+)(,\n\s*)(\d+)(,)")
    found = validate.search(text)
    if found is None or int(found.group(2)) != major:
        return
    text = validate.sub(lambda m: f"{m[1]}{major}{m[3]}{minor}{m[5]}{patch}{m[7]}", text, count=1)
    text = re.sub(r"^# Protobuf Python Version: .*$",
                  f"# Protobuf Python Version: {major}.{minor}.{patch}", text, flags=re.MULTILINE)
    module.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
