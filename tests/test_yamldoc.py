"""meshcore.yamldoc: one reading of YAML, one line for a syntax error."""

from __future__ import annotations

import pytest

from meshcore.errors import ConfigError, YamlError
from meshcore.yamldoc import load_yaml, load_yaml_documents


def test_documents_and_errors_with_their_line() -> None:
    assert load_yaml("a: 1\n", "x.yaml") == {"a": 1}
    assert load_yaml("", "x.yaml") is None
    assert load_yaml_documents("a: 1\n---\nb: 2\n", "x.yaml") == [{"a": 1}, {"b": 2}]
    with pytest.raises(YamlError) as err:
        load_yaml("a: 1\nb: [\n", "plan.yaml")
    assert isinstance(err.value, ConfigError) and err.value.where == "line 3"
    assert str(err.value).startswith("plan.yaml: line 3: ") and "\n" not in str(err.value)
    assert str(err.value).endswith("; fix the YAML syntax")


def test_only_safe_yaml_is_read() -> None:
    with pytest.raises(YamlError):
        load_yaml("!!python/object/apply:os.system ['true']\n", "evil.yaml")
