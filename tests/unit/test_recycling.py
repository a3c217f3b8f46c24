"""A worker past its max_requests leaves only while all its siblings serve, one at a time."""

from __future__ import annotations

from pathlib import Path

from modelgate.edge.recycling import Siblings


def test_a_worker_leaves_only_when_every_sibling_serves(tmp_path: Path) -> None:
    siblings = Siblings.of_replica(str(tmp_path), workers=2)
    siblings.ready(101)
    assert not siblings.may_leave(101)  # 102 is still booting
    siblings.ready(102)
    assert siblings.may_leave(101)  # both serve: 101 goes, and no longer counts
    assert not siblings.may_leave(102)  # until 101's replacement serves
    siblings.gone(101)  # the master reaps it (idempotent: 101 already left the count)
    siblings.ready(103)
    assert siblings.may_leave(102)


def test_a_crashed_worker_is_not_counted(tmp_path: Path) -> None:
    siblings = Siblings.of_replica(str(tmp_path), workers=2)
    siblings.ready(201)
    siblings.ready(202)
    siblings.gone(202)  # child_exit after a crash
    assert not siblings.may_leave(201)
