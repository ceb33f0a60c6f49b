"""Generate the Python stubs for proto/v1 (the only way they are made; never edit them by hand).

The .proto files import each other by their installed module path (tilecast/proto/v1/...), so the
generated code imports `tilecast.proto.v1.*`. A staging folder maps that path onto proto/.

    python scripts/generate_protos.py            # rewrite proto/v1/*_pb2*.py(i)
    python scripts/generate_protos.py --out DIR  # write them to DIR instead (used by the staleness test)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "proto" / "v1"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) over proto/v1 and copy the stubs into out_dir."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "include" / "tilecast" / "proto"
        staging.parent.mkdir(parents=True)
        shutil.copytree(SOURCES, staging / "v1", ignore=shutil.ignore_patterns("*.py*", "__pycache__"))
        generated = Path(tmp) / "out"
        generated.mkdir()
        protos = sorted(f"tilecast/proto/v1/{p.name}" for p in SOURCES.glob("*.proto"))
        include = str(Path(tmp) / "include")
        grpc_include = str(Path(protoc.__file__).parent / "_proto")
        args = [
            "protoc", f"-I{include}", f"-I{grpc_include}",
            f"--python_out={generated}", f"--pyi_out={generated}",
            f"--grpc_python_out={generated}", *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed; see the messages above")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for path in sorted((generated / "tilecast" / "proto" / "v1").iterdir()):
            if path.name.endswith("_pb2_grpc.py") and "class " not in path.read_text():
                continue  # a .proto without services gets an empty grpc module; leave it out
            target = out_dir / path.name
            shutil.copyfile(path, target)
            written.append(target)
        return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SOURCES, help="where to write the stubs")
    for path in generate(parser.parse_args().out):
        sys.stdout.write(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}\n")


if __name__ == "__main__":
    main()
