"""Every hint that names a meshload command names one that exists: the messages of the
production packages, the README and docs/ are walked for `` `meshload COMMAND [VERB]`` and
each is parsed by the real command line (`meshload COMMAND [VERB] --help` must not fail)."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import pytest

from meshload.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("meshcore", "meshload", "loadgen", "meshsim", "analysis", "scenarios")
NAMED = re.compile(r"`(?:python -m )?meshload ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)")


def named_commands() -> dict[str, str]:
    """{"mesh up": "meshsim/mesh.py", ...}: each command phrase and one place naming it."""
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    files += [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found: dict[str, str] = {}
    for path in files:
        for m in NAMED.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(m.group(1), str(path.relative_to(REPO)))
    return found


def exists(phrase: str) -> bool:
    """`meshload PHRASE --help` parses: a command (and verb) the command line has. The second
    word of a command without verbs is its argument (`meshload report DIR`)."""
    words = phrase.split()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    command = commands.choices.get(words[0])
    if command is None:
        return False
    has_verbs = any(isinstance(a, argparse._SubParsersAction) for a in command._actions)
    asked = words if has_verbs else words[:1]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args([*asked, "--help"])
        except SystemExit as exit_:
            return exit_.code == 0
    return False


def test_the_walk_finds_the_commands_people_are_told_to_run() -> None:
    found = named_commands()
    assert {"mesh up", "report", "preflight", "port-forward"} <= {
        p.split()[0] if p.split()[0] != "mesh" else p for p in found
    }, found  # noqa: E501
    assert not exists("run") and not exists("mesh down")  # the check can fail


@pytest.mark.parametrize("phrase", sorted(named_commands()))
def test_each_named_command_exists(phrase: str) -> None:
    assert exists(phrase), f"`meshload {phrase}` is named in {named_commands()[phrase]}"
