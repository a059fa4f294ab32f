"""tests/conftest.py: an unmarked (unit) test that binds a port or starts a process fails."""

from __future__ import annotations

import socket
import subprocess

import pytest


def test_an_unmarked_test_cannot_bind_a_port() -> None:
    with (
        socket.socket() as s,
        pytest.raises(AssertionError, match="mark it @pytest.mark.integration"),
    ):
        s.bind(("127.0.0.1", 0))


def test_an_unmarked_test_cannot_start_a_process() -> None:
    with pytest.raises(AssertionError, match="starts a process"):
        subprocess.run(["true"], check=False)


@pytest.mark.integration
def test_a_marked_test_may_do_both() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert s.getsockname()[1] > 0
    assert subprocess.run(["true"], check=False).returncode == 0
