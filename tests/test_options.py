"""loadgen.options: every setting a flag and a variable, typed and checked; the results dir."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import configargparse
import pytest

from loadgen.options import OPTIONS, Settings, add_arguments
from loadgen.target import check_writable
from meshcore.errors import ConfigError


class WebUiParser(configargparse.ArgumentParser):
    """Locust's parser takes `include_in_web_ui`; importing Locust here would monkey-patch."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("include_in_web_ui", None)
        return super().add_argument(*args, **kwargs)


def parser() -> configargparse.ArgumentParser:
    p = WebUiParser()
    add_arguments(p)
    return p


def test_every_option_is_a_flag_and_an_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESHLOAD_TRACE_SAMPLING", "0.5")
    monkeypatch.setenv("MESHLOAD_RESULTS_DIR", "/tmp/r")
    parsed = parser().parse_args(["--mesh", "kubernetes", "--plan", "p.yaml"])
    s = Settings.from_options(parsed)
    assert (s.mesh, s.plan, s.trace_sampling, s.results_dir) == (
        "kubernetes", "p.yaml", 0.5, "/tmp/r",
    )  # fmt: skip
    assert {o.env for o in OPTIONS} >= {"MESHLOAD_PLAN", "MESHLOAD_MESH", "MESHLOAD_ARRIVAL_RATE"}
    flags = {o.flag for o in OPTIONS}
    for flag in ("--mesh", "--plan", "--kubeconfig", "--kube-context", "--namespace",
                 "--virtual-service", "--jaeger-url", "--prometheus-url", "--results-dir",
                 "--trace-sampling", "--arrival-rate", "--version-header"):  # fmt: skip
        assert flag in flags


def test_defaults_when_nothing_is_given() -> None:
    s = Settings.from_options(SimpleNamespace())
    assert s == Settings()
    assert s.mesh_mode(None) == "embedded" and s.mesh_mode("http://h") == "kubernetes"


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("trace_sampling", 1.5, "--trace-sampling"),
        ("arrival_rate", -1.0, "--arrival-rate"),
        ("gate_p99_ms", -2.0, "--gate-p99-ms"),
        ("gate_window_s", 0.0, "--gate-window-s"),
        ("version_header", " ", "--version-header"),
        ("mesh", "istio", "--mesh"),
    ],
)
def test_bad_settings_name_their_flag(field: str, value: object, flag: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(flag)):
        Settings.from_options(SimpleNamespace(**{field: value}))


def test_web_ui_strings_are_converted_and_bad_ones_named() -> None:
    s = Settings.from_options(SimpleNamespace(trace_sampling="0.25", arrival_rate="12"))
    assert (s.trace_sampling, s.arrival_rate) == (0.25, 12.0)
    with pytest.raises(ConfigError, match="--trace-sampling 'lots': not a float"):
        Settings.from_options(SimpleNamespace(trace_sampling="lots"))


def test_an_unwritable_results_dir_is_refused_before_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="--results-dir"):
        check_writable(blocker / "results")
    check_writable(tmp_path / "new" / "results")
    assert (tmp_path / "new" / "results").is_dir()
    assert not list((tmp_path / "new" / "results").iterdir())
