"""A fast reader of Prometheus' text exposition format (version 0.0.4) into sample columns.

prometheus_client's parser walks label text a character at a time: measured here, one scrape
round of the embedded mesh (Envoy's used stats and 13 workloads, ~1,000 samples) cost 280 ms
of CPU with it, a quarter of a core at one scrape per second. This reader splits each line
once and keeps the JSON of every label set it has seen, so a round costs a few milliseconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_ESCAPE = re.compile(r"\\[\\\"n]")
_MAX_CACHED = 200_000


def parse_labels(text: str) -> dict[str, str]:
    """`a="x",b="y\\"z"` -> {"a": "x", "b": 'y"z'}; raises ValueError on malformed text."""
    out: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None:
            raise ValueError(f"malformed labels: {text!r}")
        value = m.group(2)
        if "\\" in value:
            value = _ESCAPE.sub(lambda e: _ESCAPES[e.group(0)], value)
        out[m.group(1)] = value
        pos = m.end()
    return out


class ExpositionReader:
    """Reads expositions of one target; `extra` labels (job, instance, pod...) join each
    sample's own, as Prometheus adds target labels."""

    def __init__(self, extra: Mapping[str, str]) -> None:
        self.extra = dict(extra)
        self._json: dict[str, str] = {}

    def label_json(self, label_text: str) -> str:
        cached = self._json.get(label_text)
        if cached is None:
            labels = {**self.extra, **parse_labels(label_text)}
            cached = json.dumps(dict(sorted(labels.items())), separators=(",", ":"))
            if len(self._json) >= _MAX_CACHED:
                self._json.clear()
            self._json[label_text] = cached
        return cached

    def read(self, text: str) -> tuple[list[str], list[str], list[float]]:
        """Sample names, label JSON strings and values (sample timestamps are ignored: the
        scrape time stamps every sample, as Prometheus does by default)."""
        names: list[str] = []
        labels: list[str] = []
        values: list[float] = []
        label_json = self.label_json
        for line in text.splitlines():
            if not line or line[0] == "#":
                continue
            brace = line.find("{")
            if brace >= 0:
                close = line.rfind("}")
                if close < brace:
                    raise ValueError(f"malformed sample line: {line!r}")
                name, label_text, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
            else:
                name, _, rest = line.partition(" ")
                label_text = ""
            fields = rest.split()
            if not fields:
                raise ValueError(f"sample without a value: {line!r}")
            names.append(name.strip())
            labels.append(label_json(label_text))
            values.append(float(fields[0]))
        return names, labels, values
