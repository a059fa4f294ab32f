"""A test that binds a port or starts a process must be marked `integration`; `make unit` (the
tests without that mark) then starts nothing. Checked here: in an unmarked test, binding a
socket or starting a process fails the test with the fix."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _unit_tests_start_nothing(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("integration") is not None:
        return

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"{request.node.nodeid} {what}: mark it @pytest.mark.integration")

        return refused

    monkeypatch.setattr(socket.socket, "bind", refuse("binds a port"))
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("starts a process"))
    monkeypatch.setattr(os, "fork", refuse("forks a process"))
    monkeypatch.setattr(os, "posix_spawn", refuse("starts a process"))
