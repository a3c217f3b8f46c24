"""``modelgate features load``'s file reading: what it accepts, what it refuses and where,
and versions that name the content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelgate.ranking import keys
from modelgate.ranking.keys import Entity
from modelgate.ranking.load import LoadError, read_table

GOOD = "user_id,ctr,days_active\n7,0.25,30\n3,0.5,1e3\n"


def write(tmp_path: Path, text: str, name: str = "users.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_file(tmp_path: Path) -> None:
    t = read_table(write(tmp_path, GOOD), Entity.USER)
    assert t.columns == ("ctr", "days_active")
    assert t.ids.tolist() == [7, 3]
    assert t.values.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(t.values, np.array([[0.25, 30], [0.5, 1000]], np.float32))
    assert keys.VERSION.fullmatch(t.version)


def test_the_version_names_the_content(tmp_path: Path) -> None:
    a = read_table(write(tmp_path, GOOD), Entity.USER).version
    assert read_table(write(tmp_path, GOOD, "again.csv"), Entity.USER).version == a
    changed = GOOD.replace("0.25", "0.26")
    assert read_table(write(tmp_path, changed, "b.csv"), Entity.USER).version != a
    renamed = GOOD.replace("ctr", "clicks")
    assert read_table(write(tmp_path, renamed, "c.csv"), Entity.USER).version != a


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("item_id,ctr\n1,0.5\n", ":1:", "first column must be user_id"),
        ("user_id\n1\n", ":1:", "no feature columns"),
        ("user_id,ctr,ctr\n1,0.5,0.5\n", ":1:", "must be unique"),
        ("user_id,Bad-Name\n1,0.5\n", ":1:", "must be unique and match"),
        ("user_id,ctr\n", "", "no rows"),
        ("user_id,ctr\n1,0.5\n1,0.6\n", ":3:", "user_id 1 repeats line 2"),
        ("user_id,ctr\n-1,0.5\n", ":2:", "not a non-negative int64"),
        ("user_id,ctr\nx,0.5\n", ":2:", "'x' is not an integer"),
        ("user_id,ctr\n1,abc\n", ":2:", "ctr 'abc' is not a finite number"),
        ("user_id,ctr\n1,nan\n", ":2:", "ctr 'nan' is not a finite number"),
        ("user_id,ctr\n1,0.5,9\n", ":2:", "3 values, expected 2"),
    ],
)
def test_bad_files_are_refused_naming_the_line(
    tmp_path: Path, text: str, where: str, reason: str
) -> None:
    with pytest.raises(LoadError) as info:
        read_table(write(tmp_path, text), Entity.USER)
    assert where in str(info.value) and reason in str(info.value)


def write_parquet(tmp_path: Path, columns: dict[str, Any], name: str = "users.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_reads_as_the_same_table_as_csv(tmp_path: Path) -> None:
    csv_table = read_table(write(tmp_path, GOOD), Entity.USER)
    parquet = write_parquet(
        tmp_path,
        {
            "user_id": pa.array([7, 3], pa.int32()),
            "ctr": pa.array([0.25, 0.5], pa.float64()),
            "days_active": pa.array([30, 1000], pa.int64()),
        },
    )
    t = read_table(parquet, Entity.USER)
    assert t.columns == csv_table.columns
    assert t.ids.tolist() == csv_table.ids.tolist()
    np.testing.assert_array_equal(t.values, csv_table.values)
    assert t.values.dtype == np.dtype("<f4")
    # The version names the content, not the file format: loading either is the same.
    assert t.version == csv_table.version


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ({"item_id": [1], "ctr": [0.5]}, "first column must be user_id"),
        ({"user_id": [1]}, "no feature columns"),
        ({"user_id": pa.array([], pa.int64()), "ctr": pa.array([], pa.float64())}, "no rows"),
        ({"user_id": [1.0], "ctr": [0.5]}, "user_id is a column of double, not of an integer"),
        ({"user_id": ["7"], "ctr": [0.5]}, "user_id is a column of string"),
        ({"user_id": [1, None], "ctr": [0.5, 0.6]}, "row 2: user_id is empty (null)"),
        ({"user_id": [1, -4], "ctr": [0.5, 0.6]}, "row 2: user_id -4 is not a non-negative"),
        (
            {"user_id": pa.array([1, 2**64 - 1], pa.uint64()), "ctr": [0.5, 0.6]},
            f"row 2: user_id {2**64 - 1} is not a non-negative int64",
        ),
        ({"user_id": [5, 1, 2, 1, 5], "ctr": [0.1] * 5}, "row 4: user_id 1 repeats row 2"),
        ({"user_id": [1, 2], "device": ["mobile", "web"]}, "device is a column of string"),
        ({"user_id": [1, 2], "ctr": [0.5, None]}, "row 2: ctr is empty (null)"),
        ({"user_id": [1, 2], "ctr": [0.5, float("inf")]}, "row 2: ctr inf is not a finite"),
        ({"user_id": [1, 2], "ctr": [0.5, 1e39]}, "row 2: ctr 1e+39 is not a finite float32"),
        ({"user_id": [1], "ctr": [0.5], "__index_level_0__": [0]}, "index=False"),
        ({"user_id": [1], "ctr": [0.5], "flag": [True]}, "flag is a column of bool"),
    ],
)
def test_bad_parquet_files_are_refused_naming_the_row(
    tmp_path: Path, columns: dict[str, Any], reason: str
) -> None:
    with pytest.raises(LoadError) as info:
        read_table(write_parquet(tmp_path, columns), Entity.USER)
    assert reason in str(info.value)


def test_a_feature_named_like_the_id_column_is_refused(tmp_path: Path) -> None:
    """A LoadError naming it, never a KeyError (pyarrow itself refuses such a Parquet file;
    a CSV reaches our own check)."""
    path = tmp_path / "users.parquet"
    table = pa.Table.from_arrays([pa.array([1]), pa.array([0.5])], names=["user_id", "user_id"])
    pq.write_table(table, path)
    with pytest.raises(LoadError, match="user_id"):
        read_table(path, Entity.USER)
    with pytest.raises(LoadError, match="other than user_id: 'user_id'"):
        read_table(write(tmp_path, "user_id,ctr,user_id\n1,0.5,2\n"), Entity.USER)


def test_errors_name_the_row_across_row_groups(tmp_path: Path) -> None:
    """A file of many row groups (pyarrow reads it as chunks): rows count from the file's
    first row, not the chunk's."""
    path = tmp_path / "users.parquet"
    ctr = [0.5] * 10
    ctr[7] = float("nan")
    pq.write_table(pa.table({"user_id": list(range(10)), "ctr": ctr}), path, row_group_size=3)
    with pytest.raises(LoadError, match="row 8: ctr nan"):
        read_table(path, Entity.USER)
    ids = list(range(10))
    ids[8] = 2
    pq.write_table(pa.table({"user_id": ids, "ctr": [0.5] * 10}), path, row_group_size=3)
    with pytest.raises(LoadError, match="row 9: user_id 2 repeats row 3"):
        read_table(path, Entity.USER)


def test_a_value_beyond_float32_is_refused_in_csv_too(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=":2: ctr '1e39' is beyond float32's range"):
        read_table(write(tmp_path, "user_id,ctr\n1,1e39\n"), Entity.USER)


def test_a_file_that_is_not_parquet_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="not a readable Parquet file"):
        read_table(write(tmp_path, GOOD, "users.parquet"), Entity.USER)
    with pytest.raises(LoadError, match=r"expected a \.csv or \.parquet file"):
        read_table(write(tmp_path, GOOD, "users.tsv"), Entity.USER)


def test_keys_refuse_names_that_are_not_feature_sets() -> None:
    assert keys.pointer("feed_demo", Entity.ITEM) == "mgfeat:{feed_demo}:item:current"
    for bad in ("Feed", "feed}x", "a:b", "", "x" * 41):
        with pytest.raises(ValueError, match="feature set"):
            keys.pointer(bad, Entity.USER)
    with pytest.raises(ValueError, match="version"):
        keys.table("feed", Entity.USER, "../../etc")
