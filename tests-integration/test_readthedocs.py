"""Read the Docs builds the site as CI does: .readthedocs.yaml agrees with hatch.toml.

CI builds the site with ``hatch run docs:build`` (``mkdocs build --strict`` in the
``docs`` environment of hatch.toml). Read the Docs reads ``.readthedocs.yaml``: the
same configuration file, warnings failing the build, the same dependencies
(``docs/requirements.txt``) and the same five packages, the core first.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
RTD: dict[str, Any] = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text(encoding="utf-8"))
HATCH: dict[str, Any] = tomllib.loads((ROOT / "hatch.toml").read_text(encoding="utf-8"))
DOCS_ENV: dict[str, Any] = HATCH["envs"]["docs"]


def _requirements(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def test_read_the_docs_runs_the_strict_mkdocs_build_of_ci() -> None:
    assert RTD["version"] == 2
    assert RTD["mkdocs"] == {"configuration": "mkdocs.yml", "fail_on_warning": True}
    assert DOCS_ENV["scripts"]["build"].startswith("mkdocs build --strict"), DOCS_ENV["scripts"]
    assert "sphinx" not in RTD, "one documentation tool: mkdocs"


def test_read_the_docs_installs_the_docs_environment() -> None:
    steps = RTD["python"]["install"]
    requirements = [step["requirements"] for step in steps if "requirements" in step]
    assert requirements == ["docs/requirements.txt"], steps
    assert _requirements(ROOT / requirements[0]) == DOCS_ENV["dependencies"], (
        "docs/requirements.txt must list exactly the dependencies of [envs.docs] in hatch.toml"
    )
    members = [m if isinstance(m, str) else m["path"] for m in DOCS_ENV["workspace"]["members"]]
    paths = [step["path"] for step in steps if step.get("method") == "pip"]
    assert paths == members, "install the [envs.docs] workspace members, in that order"
    assert paths[0] == "packages/traffik-core", "the core first: the siblings depend on it"


def test_read_the_docs_python_is_one_traffik_supports() -> None:
    matrix = HATCH["envs"]["hatch-test"]["matrix"][0]["python"]
    assert RTD["build"]["tools"]["python"] in matrix, (RTD["build"], matrix)
