"""meshcore.files: a file appears whole, with its mode, or not at all."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from meshcore.files import replacing, write_atomic, write_json


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("old")
    write_atomic(target, "new text")
    assert target.read_text() == "new text"
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_the_mode_is_the_one_asked_for_even_over_an_open_file(tmp_path: Path) -> None:
    target = tmp_path / "kubeconfig"
    target.write_text("x")
    target.chmod(0o644)
    write_atomic(target, b"secret", mode=0o600, durable=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"secret"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.parquet"
    target.write_text("complete")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.parquet"]
