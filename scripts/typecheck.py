"""Run mypy over the package as it is imported (`tilecast.server`, not `server`).

The top-level folders are mapped onto `tilecast.*` by setuptools' package-dir, which mypy cannot see
through an editable install. A tree of symbolic links under build/typecheck gives it that layout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("proto", "server", "client", "export", "training")


def link_tree() -> Path:
    root = REPO / "build" / "typecheck"
    shutil.rmtree(root, ignore_errors=True)
    package = root / "tilecast"
    package.mkdir(parents=True)
    for item in (REPO / "tilecast").iterdir():
        if item.suffix in (".py", ".typed"):
            (package / item.name).symlink_to(item)
    for name in SUBPACKAGES:
        (package / name).symlink_to(REPO / name, target_is_directory=True)
    return root


def main() -> int:
    root = link_tree()
    command = [sys.executable, "-m", "mypy", str(root / "tilecast"), str(REPO / "tests"),
               str(REPO / "scripts"), *sys.argv[1:]]
    return subprocess.call(command, cwd=REPO, env={**os.environ, "MYPYPATH": str(root)})


if __name__ == "__main__":
    sys.exit(main())
