"""Regenerate the gRPC Python code from ``taskqueue.proto``.

    python -m broker.api.gen_proto            # writes broker/api/taskqueue_pb2*.py
    python -m broker.api.gen_proto --out DIR  # somewhere else (the drift test does this)

Needs grpcio-tools of the same minor line as grpcio (pyproject's ``test`` extra pins it):
generated ``_pb2_grpc`` code refuses to load on an older grpcio. The generated ``_pb2_grpc``
module imports its messages with a top-level ``import taskqueue_pb2``; it is rewritten to a
package-relative import so the code works as ``broker.api.taskqueue_pb2_grpc``.
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
    grpc_module.write_text(text)
    return [out / name for name in OUTPUTS]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
