"""Names, versions and control-stream entries from outside are checked in one place
(issue 18, items 2 and 3)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelgate.errors import InvalidInput
from modelgate.inference.repository import ModelRepository, check_name, check_version, discover
from modelgate.shared.control import Command, FleetControl


@pytest.mark.parametrize("version", ["²", "01", "2.0", "../x/1", "", "1 ", "1\n", "-1", "1" * 10])
def test_odd_versions_are_refused(version: str) -> None:
    with pytest.raises(InvalidInput):
        check_version(version)


@pytest.mark.parametrize("name", ["Churn", ".", "..", ".x", "a/b", "a\n", "", "x" * 65, "ｃhurn"])
def test_odd_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_name(name)


def test_good_names_and_versions_pass() -> None:
    assert check_version("0") == "0" and check_version(12) == "12"
    assert check_name("churn") == "churn" and check_name("resnet50.v2-int8") == "resnet50.v2-int8"


def test_discovery_skips_odd_directories_and_symlinks_out(model_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(model_copy / "iris", outside / "iris")
    (model_copy / "churn" / "02").mkdir()
    (model_copy / "Churn" / "1").mkdir(parents=True)
    (model_copy / "churn" / "5").symlink_to(outside / "iris" / "1")
    (model_copy / "evil").symlink_to(outside / "iris")
    assert discover(model_copy) == {"churn": ["1", "2"], "feed": ["1"], "iris": ["1"]}
    repo = ModelRepository(root=model_copy)
    repo.load_all()
    assert sorted(repo.models) == ["churn", "feed", "iris"] and not repo.failures


def entry(**over: Any) -> dict[bytes, bytes]:
    base = {"action": "load", "model": "churn", "version": "1", "origin": "o", "issued_at": "t"}
    return {b"command": json.dumps({**base, **over}).encode()}


@pytest.mark.parametrize(
    "fields",
    [
        entry(version=None),
        entry(model=["churn"]),
        entry(model=""),
        entry(version="../../../outside/iris/1"),
        entry(version="01"),
        entry(action="drop"),
        entry(origin=None),
        {b"command": b"\xff\xfe garbage"},
        {b"command": b"null"},
        {b"command": b"[]"},
        {**entry(), b"extra": b"1"},
        {b"other": b"1"},
    ],
)
def test_malformed_control_entries_are_refused(fields: dict[bytes, bytes]) -> None:
    with pytest.raises((ValueError, TypeError, KeyError)):
        Command.decode(fields)


def test_well_formed_entries_decode() -> None:
    assert Command.decode(entry()).version == "1"
    assert Command.decode(entry(action="unload", version=None)).version is None


def test_a_follower_that_fails_is_restarted_and_counted(demo_models: Path) -> None:
    control = FleetControl(ModelRepository(root=demo_models), "redis://unused", "t")
    calls: list[int] = []

    async def flaky(block_ms: int | None) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug nobody foresaw")
        await asyncio.sleep(0.01)

    control._read = flaky  # type: ignore[method-assign]

    async def run() -> None:
        control._tasks = [asyncio.create_task(control._follow())]
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        state = control.following()
        control._tasks[0].cancel()
        assert state["follower_restarts"] == 1 and state["following"] is True

    asyncio.run(run())
