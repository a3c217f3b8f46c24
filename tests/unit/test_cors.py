"""CORS settings and the layer's place: refused configurations, and no layer when off."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modelgate.app import create_app
from modelgate.edge.cors import Cors
from modelgate.settings import CorsSettings, Settings


@pytest.mark.parametrize(
    "origins",
    [["https://app.example.com/"], ["app.example.com"], ["https://app.example.com/x"]],
)
def test_an_origin_is_exactly_scheme_host_and_port(origins: list[str]) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        CorsSettings(allow_origins=origins)


def test_credentials_need_explicit_origins() -> None:
    with pytest.raises(ValidationError, match="explicit origins"):
        CorsSettings(allow_origins=["*"], allow_credentials=True)
    ok = CorsSettings(allow_origins=["http://127.0.0.1:3000"], allow_credentials=True)
    assert ok.allow_origins == ["http://127.0.0.1:3000"]


def test_the_layer_exists_only_when_origins_are_set(
    demo_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    off = create_app(Settings(model_repository=demo_models))
    assert not isinstance(off.edge.app, Cors)  # type: ignore[union-attr]
    monkeypatch.setenv("MODELGATE_CORS__ALLOW_ORIGINS", '["*"]')
    on = create_app(Settings(model_repository=demo_models))
    assert isinstance(on.edge.app, Cors)  # type: ignore[union-attr]
