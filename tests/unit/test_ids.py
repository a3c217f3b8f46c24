"""Request and prediction ids: 32 lowercase hex characters, like uuid4().hex."""

from __future__ import annotations

import re

import pytest

from modelgate.edge import ids


def test_ids_are_32_hex_characters_and_distinct() -> None:
    made = [ids.new_id() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made)
    assert len(set(made)) == len(made)


def test_small_numbers_keep_their_leading_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids.random, "getrandbits", lambda bits: 0xAB)
    assert ids.new_id() == "0" * 30 + "ab"
