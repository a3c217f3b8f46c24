"""The model repository: discover ``models/<name>/<version>/``, verify and load versions.

Each worker holds its own ``ModelRepository``. Lookups read an immutable snapshot
(``_models``) that is replaced whole on every change, so a request that already holds a
``LoadedModel`` finishes on it even while a reload swaps in another version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from modelgate.errors import FieldError, InvalidInput, ModelLoadError, ModelNotFound, ModelNotReady
from modelgate.inference.manifest import MODEL_NAME, VERSION, Manifest, Task, read_manifest
from modelgate.inference.runtime import LoadedModel, load_model

log = logging.getLogger("modelgate.repository")

MAX_FAILURES_KEPT = 100


@dataclass(frozen=True)
class ModelEntry:
    """Every loaded version of one model and which of them answers by default."""

    name: str
    versions: dict[str, LoadedModel]
    default_version: str | None
    pinned: bool = False

    @property
    def default(self) -> LoadedModel | None:
        return self.versions.get(self.default_version) if self.default_version else None


@dataclass
class LoadFailure:
    name: str
    version: str
    reason: str


def version_order(version: str) -> int:
    # Only versions that passed check_version are ever keys; anything else sorts first
    # instead of raising, so a listing (/health, /models) can never fail on one.
    return int(version) if VERSION.fullmatch(version) else -1


def valid_name(name: object) -> bool:
    return isinstance(name, str) and MODEL_NAME.fullmatch(name) is not None


def valid_version(version: object) -> bool:
    return isinstance(version, str) and VERSION.fullmatch(version) is not None


def check_name(name: object, field: str = "name") -> str:
    """A model name from outside (URL, body, control stream), or InvalidInput (422)."""
    if not valid_name(name):
        raise InvalidInput.for_fields(
            [FieldError(field, f"must be a model name matching {MODEL_NAME.pattern}")]
        )
    return name  # type: ignore[return-value]


def check_version(version: object, field: str = "version") -> str:
    """A version from outside: ASCII digits without a leading zero (``"2"``; JSON ``2``
    is accepted too), or InvalidInput (422). ``"01"``, ``"2.0"``, ``"²"`` are refused."""
    if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
        version = str(version)
    if not valid_version(version):
        raise InvalidInput.for_fields(
            [FieldError(field, 'must be a version number such as "2" (digits, no leading 0)')]
        )
    return version  # type: ignore[return-value]


def _inside(root: Path, path: Path) -> bool:
    """``path`` resolves (following every symlink) to a place under ``root``."""
    try:
        return path.resolve(strict=True).is_relative_to(root.resolve(strict=True))
    except (OSError, RuntimeError):
        return False


def discover(root: Path) -> dict[str, list[str]]:
    """Model names → version directory names (numeric, ascending) present on disk.

    Only names and versions of the documented formats, and only directories that stay
    under ``root`` (a symlink out of the repository is skipped and logged)."""
    found: dict[str, list[str]] = {}
    if not root.is_dir():
        return found
    for model_dir in sorted(root.iterdir()):
        if not valid_name(model_dir.name) or not model_dir.is_dir():
            continue
        if not _inside(root, model_dir):
            log.error("model directory leaves the repository", extra={"model": model_dir.name})
            continue
        versions = []
        for v in model_dir.iterdir():
            if valid_version(v.name) and v.is_dir():
                if _inside(root, v):
                    versions.append(v.name)
                else:
                    log.error(
                        "version directory leaves the repository",
                        extra={"model": model_dir.name, "version": v.name},
                    )
        if versions:
            found[model_dir.name] = sorted(versions, key=version_order)
    return found


@dataclass
class ModelRepository:
    root: Path
    wanted: list[str] = field(default_factory=list)  # empty: every model on disk
    pinned: dict[str, str] = field(default_factory=dict)
    default_model_name: str = ""
    _models: dict[str, ModelEntry] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)
    # The models /ready waits for: fixed by load_all, shrunk by unloading a whole model.
    configured: list[str] = field(default_factory=list)
    # Called with (model, version, loaded?) after every load attempt, for metrics.
    on_load: Callable[[str, str, bool], None] | None = None

    # --- loading ------------------------------------------------------------------------

    def load_all(self) -> None:
        """Load every wanted model's versions found on disk; failures are logged and kept."""
        on_disk = discover(self.root)
        names = self.wanted or list(on_disk)
        self.configured = list(names)
        models: dict[str, ModelEntry] = {}
        for name in names:
            versions: dict[str, LoadedModel] = {}
            for version in on_disk.get(name, []):
                loaded = self._try_load(name, version)
                if loaded is not None:
                    versions[version] = loaded
            pinned = self.pinned.get(name)
            if pinned is not None and pinned not in versions:
                log.error(
                    "pinned version not loaded",
                    extra={"model": name, "version": pinned},
                )
            default = pinned if pinned in versions else _highest(versions)
            models[name] = ModelEntry(name, versions, default, pinned=pinned is not None)
        self._models = models

    def version_dir(self, name: str, version: str) -> Path:
        """The one way from an outside name and version to a path: both are checked
        (InvalidInput) and the directory must exist under the root without a symlink
        leading out (ModelLoadError)."""
        check_name(name)
        check_version(version)
        path = self.root / name / version
        if not path.is_dir():
            raise ModelLoadError(f"no version {version!r} of model {name!r} on disk")
        if not _inside(self.root, path):
            raise ModelLoadError(f"version {version!r} of {name!r} leaves the repository")
        return path

    def load_dir(self, name: str, version: str, manifest: Manifest) -> Path:
        """The version directory, once its model file is known to stay under the root."""
        path = self.version_dir(name, version) / manifest.file
        if path.exists() and not _inside(self.root, path):
            raise ModelLoadError(f"{manifest.file} of {name!r} v{version} leaves the repository")
        return path.parent

    def _try_load(self, name: str, version: str) -> LoadedModel | None:
        try:
            manifest = self.read_manifest(name, version)
            loaded = load_model(self.load_dir(name, version, manifest), manifest)
        except ModelLoadError as exc:
            self.record_failure(name, version, str(exc))
            return None
        except InvalidInput as exc:  # a configured name of the wrong format
            self.record_failure(name, version, exc.message)
            return None
        self._loaded(name, version, True)
        log.info(
            "model loaded",
            extra={"model": name, "version": version, "sha256": loaded.sha256[:12]},
        )
        return loaded

    def record_failure(self, name: str, version: str, reason: str) -> None:
        log.error("model refused", extra={"model": name, "version": version, "reason": reason})
        self.failures.append(LoadFailure(name, version, reason))
        del self.failures[:-MAX_FAILURES_KEPT]  # a reload loop must not grow it forever
        self._loaded(name, version, False)

    def _loaded(self, name: str, version: str, ok: bool) -> None:
        if self.on_load is not None:
            self.on_load(name, version, ok)

    def read_manifest(self, name: str, version: str) -> Manifest:
        """The manifest of a version on disk; ModelLoadError if absent or invalid."""
        version_dir = self.version_dir(name, version)
        manifest_path = version_dir / "model.json"
        if manifest_path.exists() and not _inside(self.root, manifest_path):
            raise ModelLoadError(f"manifest of {name!r} v{version} leaves the repository")
        try:
            return read_manifest(version_dir)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"bad manifest: {exc}") from exc

    def load_version(self, name: str, version: str, make_default: bool = True) -> LoadedModel:
        """Load (or reload) one version and swap it in; raises ModelLoadError and keeps
        everything as it was if the version can't be verified, loaded and warmed."""
        manifest = self.read_manifest(name, version)
        try:
            loaded = load_model(self.load_dir(name, version, manifest), manifest)
        except ModelLoadError as exc:
            self.record_failure(name, version, str(exc))
            raise
        self._loaded(name, version, True)
        entry = self._models.get(name) or ModelEntry(name, {}, None)
        versions = {**entry.versions, version: loaded}
        default = version if make_default else (entry.default_version or version)
        self._models = {
            **self._models,
            name: replace(entry, versions=versions, default_version=default),
        }
        return loaded

    def make_default(self, name: str, version: str) -> LoadedModel:
        """Answer with ``version`` by default, loading it only when it isn't already loaded
        from the file its manifest names (same sha256). What fleet-wide loads apply."""
        manifest = self.read_manifest(name, version)
        entry = self._models.get(name)
        current = entry.versions.get(version) if entry else None
        if (
            entry is None
            or current is None
            or current.sha256 != manifest.sha256
            or current.manifest.digest != manifest.digest  # a manifest-only edit reloads too
        ):
            loaded = self.load_version(name, version)
        else:
            self._models = {**self._models, name: replace(entry, default_version=version)}
            loaded = current
        if name not in self.configured:
            self.configured = [*self.configured, name]
        return loaded

    def unload_version(self, name: str, version: str | None = None) -> None:
        """Drop one version (or the whole model); the default falls back to the highest left."""
        entry = self.entry(name)
        if version is None:
            self._models = {k: v for k, v in self._models.items() if k != name}
            self.configured = [n for n in self.configured if n != name]
            return
        if version not in entry.versions:
            raise ModelNotFound(f"model {name!r} has no loaded version {version!r}")
        versions = {k: v for k, v in entry.versions.items() if k != version}
        default = entry.default_version
        if default == version:
            default = _highest(versions)
        self._models = {
            **self._models,
            name: replace(entry, versions=versions, default_version=default),
        }

    # --- lookups ------------------------------------------------------------------------

    @property
    def models(self) -> dict[str, ModelEntry]:
        return self._models

    @property
    def default_name(self) -> str:
        """The model ``/predict`` runs: the configured one, else the first by name that is
        not a ranker (a ranker answers ``/rank`` only; protocols/ranking.py picks it)."""
        if self.default_model_name:
            return self.default_model_name
        names = sorted(self._models)
        predictors = (n for n in names if not _ranker(self._models[n]))
        return next(predictors, next(iter(names), ""))

    def entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFound(f"model {name!r} is not served here")
        return entry

    def get(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        """The version to run: a named version, or the model's default."""
        entry = self.entry(name or self.default_name)
        if version is None:
            model = entry.default
            if model is None:
                raise ModelNotReady(f"model {entry.name!r} has no loaded version")
            return model
        model = entry.versions.get(version)
        if model is None:
            raise ModelNotFound(f"model {entry.name!r} has no version {version!r}")
        return model

    def ready(self) -> bool:
        """Every configured model has a default version loaded and warmed."""
        return bool(self.configured) and all(
            n in self._models and self._models[n].default is not None for n in self.configured
        )


def _ranker(entry: ModelEntry) -> bool:
    return any(m.manifest.task is Task.RANKING for m in entry.versions.values())


def _highest(versions: dict[str, LoadedModel]) -> str | None:
    return max(versions, key=version_order) if versions else None
