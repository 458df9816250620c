"""Reading docker-compose.yml as compose does, and PromQL as the dashboard and alerts write it."""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

import pytest

_DEFAULTED = re.compile(r"\$\{(?P<name>\w+):?-(?P<default>[^}]*)\}")


def interpolate(value: str) -> str:
    """What compose makes of `value` when the host sets no variable: `${X:-d}` -> `d`."""
    result = _DEFAULTED.sub(lambda m: m["default"], value)
    assert "$" not in result.replace("$$", ""), f"{value!r} needs a variable with no default"
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of compose's two spellings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A service's `depends_on` as {service: options}, in either of compose's two spellings."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: options or {} for name, options in deps.items()}


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each mount, short (`src:dst[:mode]`) or long syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry.get("source", ""), entry["target"]
        mounts.append((source, target))
    return mounts


# --- PromQL, as far as the dashboard and the alerts use it -------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()")
_SELECTOR = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
_KEYWORDS |= {"inf", "nan", "Inf", "NaN"}


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by what they stand for."""
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$type", ".*")


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects (not functions, keywords or label names)."""
    text = _STRING.sub('""', grafana_to_promql(expr))
    text = _GROUPING.sub("", re.sub(r"\{[^}]*\}", "", re.sub(r"\[[^\]]*\]", "", text)))
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}


def label_names(expr: str) -> dict[str, set[str]]:
    """{metric: label names its matchers use} and {"": label names of by/without/on clauses}."""
    text = _STRING.sub('""', grafana_to_promql(expr))
    found: dict[str, set[str]] = {}
    for metric, matchers in _SELECTOR.findall(text):
        found.setdefault(metric, set()).update(_MATCHER.findall(matchers))
    found[""] = {label.strip() for group in _GROUPING.findall(text) for label in group.split(",") if label.strip()}
    return found


def prometheus_tool(name: str) -> str:
    """`promtool` or `prometheus` from Debian's `prometheus` package: a missing one fails the test,
    unless TASKSVC_ALLOW_NO_PROMTOOL=1 (then it is skipped)."""
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("TASKSVC_ALLOW_NO_PROMTOOL") == "1":
        pytest.skip(f"{name} is not on PATH and TASKSVC_ALLOW_NO_PROMTOOL=1")
    pytest.fail(
        f"{name} is not on PATH: install it (Debian: `apt-get install --no-install-recommends prometheus`) "
        "or set TASKSVC_ALLOW_NO_PROMTOOL=1 to skip the Prometheus checks",
        pytrace=False,
    )
