"""The MLflow Model Registry as a model source, over its REST API.

A registered model version carries modelgate's own artifacts — ``model.pt2`` (or a
TorchScript file) and ``model.json`` under ``modelgate/`` — never an MLflow flavour, so
nothing from the registry is ever unpickled. ``pull`` fetches a version into the
repository as ``<name>/<registry version>/`` after the same checks a replica makes before
loading (manifest schema, sha256, archive rules, warm-up); a version that fails them never
appears in the repository.

Everything the registry answers is untrusted input: each answer is parsed against a strict
schema here, file names come from our own fixed list, and the paths we build are checked
to stay where they belong.

Plain ``urllib`` rather than the ``mlflow`` client: a replica needs four GET calls, and the
client would bring a large dependency tree into every image. (``mlflow`` is a dev
dependency: the tests run a real ``mlflow server``.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelgate.errors import ModelLoadError
from modelgate.inference.manifest import MANIFEST_FILE, MODEL_NAME, Manifest, read_manifest
from modelgate.inference.repository import valid_name, valid_version
from modelgate.inference.runtime import load_model

ARTIFACT_DIR = "modelgate"  # where a version's files live among its run's artifacts
_REF = re.compile(
    r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]{1,255})|/(?P<version>[0-9]{1,9}))$"
)
_MAX_ANSWER = 1 << 20  # registry JSON answers are small
_MAX_ARTIFACT = 2 << 30  # a model file larger than this is refused rather than read


_M = TypeVar("_M", bound=BaseModel)


class RegistryError(Exception):
    """The registry can't be reached, refuses, or answers something we won't use."""


@dataclass(frozen=True)
class ModelRef:
    """``models:/churn@champion`` or ``models:/churn/3``."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        m = _REF.match(text)
        if (
            not m
            or not valid_name(m["name"])
            or not (m["version"] is None or valid_version(m["version"]))
        ):
            raise RegistryError(
                f"{text!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION, "
                f"NAME matching {MODEL_NAME.pattern}"
            )
        return cls(m["name"], m["alias"], m["version"])

    def __str__(self) -> str:
        return (
            f"models:/{self.name}@{self.alias}"
            if self.alias
            else f"models:/{self.name}/{self.version}"
        )


class _VersionInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    version: str

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:  # the repository's own rule: it names a folder
        if not valid_version(value) or value == "0":
            raise ValueError(f"registry version {value!r} is not a version number")
        return value


class _AliasAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_version: _VersionInfo


class _DownloadUri(BaseModel):
    model_config = ConfigDict(extra="ignore")
    artifact_uri: str = Field(min_length=1, max_length=4096)


class _RunInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")
    run_id: str = Field(pattern=r"^[0-9a-f]{8,64}$")
    artifact_uri: str


class _Run(BaseModel):
    model_config = ConfigDict(extra="ignore")
    info: _RunInfo


class _RunAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    run: _Run


class _VersionAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_version: _VersionInfo


class MlflowRegistry:
    """The few registry and artifact calls modelgate needs, against one tracking server
    that serves artifacts (``mlflow server``'s default, ``mlflow-artifacts:/`` URIs)."""

    def __init__(self, tracking_uri: str, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(tracking_uri)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise RegistryError(f"tracking URI {tracking_uri!r}: expected http(s)://host:port")
        self.base = tracking_uri.rstrip("/")
        self.timeout = timeout

    # --- HTTP ---------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        limit: int = _MAX_ANSWER,
        content_type: str = "application/json",
    ) -> bytes:
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.base + path, data=body, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                data: bytes = answer.read(limit + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2048).decode(errors="replace")
            raise RegistryError(f"{method} {path}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(f"{method} {path}: {exc}") from exc
        if len(data) > limit:
            raise RegistryError(f"{method} {path}: answer larger than {limit} bytes")
        return data

    def _json(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        try:
            return json.loads(self._call(method, path, body))
        except ValueError as exc:
            raise RegistryError(f"{method} {path}: not JSON") from exc

    def _get(self, path: str, **query: str) -> Any:
        return self._json("GET", f"{path}?{urllib.parse.urlencode(query)}")

    # --- reading ------------------------------------------------------------------------

    def resolve(self, ref: ModelRef) -> str:
        """The registry version a reference names now."""
        if ref.version is not None:
            return ref.version
        answer = self._get(
            "/api/2.0/mlflow/registered-models/alias", name=ref.name, alias=str(ref.alias)
        )
        info = _parse(_AliasAnswer, answer, "alias").model_version
        if info.name != ref.name:
            raise RegistryError(f"{ref}: the registry answered for model {info.name!r}")
        return info.version

    def artifact_path(self, name: str, version: str) -> str:
        answer = self._get(
            "/api/2.0/mlflow/model-versions/get-download-uri", name=name, version=version
        )
        uri = _parse(_DownloadUri, answer, "download URI").artifact_uri
        parsed = urllib.parse.urlsplit(uri)
        if parsed.scheme != "mlflow-artifacts":
            raise RegistryError(
                f"{name}/{version}: artifacts at {uri!r}; modelgate reads registry artifacts "
                "through the tracking server (mlflow server --serve-artifacts)"
            )
        path = parsed.path.strip("/")
        if not path or any(part in ("", ".", "..") for part in path.split("/")):
            raise RegistryError(f"{name}/{version}: artifact path {uri!r} refused")
        return path

    def download(self, artifact_path: str, limit: int) -> bytes:
        quoted = urllib.parse.quote(artifact_path)
        return self._call("GET", f"/api/2.0/mlflow-artifacts/artifacts/{quoted}", limit=limit)

    # --- writing (modelgate import --register) ------------------------------------------

    def register(self, name: str, version_dir: Path, experiment_id: str = "0") -> str:
        """Log a repository version's files as a run's artifacts and register them."""
        manifest = read_manifest(version_dir)
        run = _parse(
            _RunAnswer,
            self._json("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id}),
            "run",
        ).run.info
        base = urllib.parse.urlsplit(run.artifact_uri)
        if base.scheme != "mlflow-artifacts":
            raise RegistryError(f"run artifacts at {run.artifact_uri!r}: not served by the server")
        prefix = f"{base.path.strip('/')}/{ARTIFACT_DIR}"
        for filename in (manifest.file, MANIFEST_FILE):
            target = urllib.parse.quote(f"{prefix}/{filename}")
            self._call(
                "PUT",
                f"/api/2.0/mlflow-artifacts/artifacts/{target}",
                (version_dir / filename).read_bytes(),
                content_type="application/octet-stream",
            )
        self._json(
            "POST", "/api/2.0/mlflow/runs/update", {"run_id": run.run_id, "status": "FINISHED"}
        )
        try:
            self._json("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
        except RegistryError as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
        created = self._json(
            "POST",
            "/api/2.0/mlflow/model-versions/create",
            {"name": name, "source": f"{run.artifact_uri}/{ARTIFACT_DIR}", "run_id": run.run_id},
        )
        return _parse(_VersionAnswer, created, "model version").model_version.version


def _parse(model: type[_M], answer: Any, what: str) -> _M:
    try:
        return model.model_validate(answer)
    except ValidationError as exc:
        raise RegistryError(f"the registry's {what} answer is not what we expect: {exc}") from exc


@dataclass(frozen=True)
class Pulled:
    version_dir: Path
    manifest: Manifest
    added: bool  # False: the repository already held exactly this version


def pull(registry: MlflowRegistry, ref: ModelRef, repository: Path) -> Pulled:
    """Fetch ``ref`` into ``repository/<name>/<registry version>/``, verified, atomically.

    The registry's version number becomes the repository's, so the same registry version
    always lands in the same folder: pulling twice is a no-op, and a folder that holds
    other bytes under that number is refused rather than overwritten.
    """
    version = registry.resolve(ref)
    target = repository / ref.name / version
    artifacts = registry.artifact_path(ref.name, version)
    raw_manifest = registry.download(f"{artifacts}/{MANIFEST_FILE}", _MAX_ANSWER)
    try:
        declared = Manifest.model_validate_json(raw_manifest)
    except ValidationError as exc:
        raise RegistryError(f"{ref} (version {version}): bad manifest: {exc}") from exc
    if declared.name != ref.name:
        raise RegistryError(f"{ref}: the manifest names model {declared.name!r}")
    manifest = declared.model_copy(
        update={
            "version": version,
            "metadata": {
                **declared.metadata,
                "registry": {"uri": registry.base, "name": ref.name, "version": version},
            },
        }
    )
    if target.exists():
        existing = read_manifest(target)
        if existing.sha256 != manifest.sha256:
            raise RegistryError(
                f"{target} exists with another model file (sha256 {existing.sha256[:12]}…, "
                f"registry {manifest.sha256[:12]}…); refusing to overwrite it"
            )
        return Pulled(target, existing, added=False)
    data = registry.download(f"{artifacts}/{manifest.file}", _MAX_ARTIFACT)
    if hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise RegistryError(
            f"{ref} (version {version}): the model file's sha256 is not the manifest's"
        )
    staging = repository / ref.name / f".pull-{os.getpid()}-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        (staging / manifest.file).write_bytes(data)
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        # The replica's own checks, on the staged copy (the folder name is not a version
        # yet, so load the manifest object we wrote rather than read_manifest's check).
        load_model(staging, manifest)
    except ModelLoadError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RegistryError(f"{ref} (version {version}) refused: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if target.exists() and read_manifest(target).sha256 == manifest.sha256:
            return Pulled(target, manifest, added=False)  # another worker won the race
        raise
    return Pulled(target, manifest, added=True)
