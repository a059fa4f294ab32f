"""Reading YAML the one way: safe, fast (libyaml when present), errors with their line.

Plans, mesh specs, thresholds and Istio manifests are all read here, so a syntax error reads
the same everywhere: `plan.yaml: line 4: mapping values are not allowed here; fix the YAML
syntax` (YamlError, a ConfigError).
"""

from __future__ import annotations

from typing import Any

import yaml

from meshcore.errors import YamlError

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str, source: str) -> Any:
    """The one document of `text` (None when empty); YamlError when it does not parse."""
    try:
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise _error(exc, source) from None


def load_yaml_documents(text: str, source: str) -> list[Any]:
    """Every document of a multi-document `text` (`---` separated), in order."""
    try:
        return list(yaml.load_all(text, Loader=_LOADER))  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise _error(exc, source) from None


def _error(exc: yaml.YAMLError, source: str) -> YamlError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark is not None else "YAML"
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    return YamlError(source, where, str(problem))
