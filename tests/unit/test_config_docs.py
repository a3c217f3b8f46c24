"""The README's configuration table is held to the settings classes: every variable it
lists is a field of ``Settings`` or ``ProcessSettings``, and every default it shows as a
literal is that field's default (each default is written once, in the class)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from modelgate.settings import ProcessSettings, Settings
from modelgate.stack.config import StackConfig
from tests.conftest import ROOT

_CELL = re.compile(r"`([^`]*)`")


def table_rows() -> list[tuple[str, str | None]]:
    """(variable, documented default) for each variable of the Configuration table; the
    default is None where the README describes it in words ("all", "host name")."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: list[tuple[str, str | None]] = []
    for line in section.splitlines():
        if not line.startswith("| `MODELGATE_"):
            continue
        names_cell, defaults_cell = (c.strip() for c in line.strip("|").split("|")[:2])
        names = _CELL.findall(names_cell)
        # "`MODELGATE_GROUP__A` / `__B`": the second in the first one's group.
        full = [names[0]] + [
            names[0].rsplit("__", 1)[0] + n if n.startswith("__") else n for n in names[1:]
        ]
        parts = [p.strip() for p in defaults_cell.split(" / ")]
        if len(parts) != len(full):
            parts = [defaults_cell] * len(full)
        for name, part in zip(full, parts, strict=True):
            literal = _CELL.fullmatch(part)
            rows.append((name, literal.group(1) if literal else None))
    return rows


def field_default(variable: str) -> Any:
    key = variable.removeprefix("MODELGATE_").lower()
    group, _, name = key.rpartition("__")
    if group:
        annotation = Settings.model_fields[group].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel), variable
        fields = annotation.model_fields
    else:
        fields = {**ProcessSettings.model_fields, **Settings.model_fields}
    assert name in fields, f"{variable}: no such setting"
    return fields[name].get_default(call_default_factory=True)


def same(documented: str, default: Any) -> bool:
    if isinstance(default, bool):
        return documented == str(default).lower()
    if isinstance(default, (int, float)):
        return float(documented) == default
    if isinstance(default, (list, dict)):
        return bool(json.loads(documented) == default)
    return documented == str(default)


def test_every_documented_variable_is_a_setting_with_the_documented_default() -> None:
    rows = table_rows()
    assert len(rows) >= 30  # the table was found and read
    for variable, documented in rows:
        default = field_default(variable)
        if documented is not None:
            assert same(documented, default), (variable, documented, default)


def test_the_process_settings_are_documented() -> None:
    documented = {variable for variable, _ in table_rows()}
    for name in ProcessSettings.model_fields:
        assert f"MODELGATE_{name.upper()}" in documented, name


def test_the_native_stack_table_is_its_settings_class() -> None:
    """Every `MODELGATE_STACK_*` the README names is a field of ``StackConfig`` and every
    field is named; each process's documented port is that field's default."""
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`MODELGATE_STACK_([A-Z_]+)`", text))
    fields = {name.upper() for name in StackConfig.model_fields}
    fields.add("MODEL_REPOSITORY")  # read as MODELGATE_MODEL_REPOSITORY, like a replica
    assert named <= fields, named - fields
    assert fields - {"MODEL_REPOSITORY"} <= named, fields - named
    table = text.split("then starts and waits on each process in turn:", 1)[1].split("\n\n")[1]
    checked = 0
    for line in table.splitlines()[2:]:
        address, overrides = (c.strip() for c in line.strip("|").split("|")[1:3])
        port = re.search(r"127\.0\.0\.1:(\d+)", address)
        first = re.search(r"`MODELGATE_STACK_([A-Z_]+)`", overrides)
        assert port and first, line
        default = StackConfig.model_fields[first.group(1).lower()].get_default(
            call_default_factory=True
        )
        assert int(port.group(1)) == (default[0] if isinstance(default, list) else default)
        checked += 1
    assert checked >= 7
