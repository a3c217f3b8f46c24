"""Torch execution: verify a model file, load it without unpickling, run batches on it.

Both supported formats are zip archives. Before torch sees a file we check its sha256
against the manifest and inspect the archive (archive.py: every path by which
``torch.export.load`` could unpickle or run code is refused, and a ``.pt2`` is rebuilt
from its checked records). TorchScript archives are read by ``torch.jit.load``'s C++
loader, which only builds TorchScript types; a plain ``torch.save`` pickle of a module is
refused because it has no ``code/`` directory. TorchScript *code* still runs when the
model does (README: what an operator must trust).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import warnings
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelgate.errors import ModelLoadError
from modelgate.inference.archive import check_torchscript, verified_pt2
from modelgate.inference.manifest import Manifest, ModelFormat, Task

log = logging.getLogger("modelgate.runtime")

_PICKLE_PROTOCOL_BYTE = 0x80  # every pickle since protocol 2 starts with PROTO


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def configure_torch(threads: int) -> None:
    """Pin torch's thread pools so that W workers on W cores don't oversubscribe them."""
    torch.set_num_threads(threads)
    # Only settable before the first parallel op; fine if it already was.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def torch_thread_pool(threads: int, max_workers: int | None, name: str) -> ThreadPoolExecutor:
    """A thread pool whose threads run torch with ``threads`` intra-op threads each.

    ``torch.set_num_threads`` sets OpenMP's thread count for the calling thread only (an
    OpenMP setting is per thread); a new thread starts at one per core, and MKL's sgemm,
    which torch calls directly, takes that. Without this every matrix multiply in the
    inference thread forked a team of one thread per core, whose spin barriers stalled
    for milliseconds whenever another process held a core: 25 ms per 21 µs ranking call
    under S6 (bench/RANKING.md).
    """
    return ThreadPoolExecutor(
        max_workers=max_workers,
        thread_name_prefix=name,
        initializer=torch.set_num_threads,
        initargs=(threads,),
    )


def inference_executor(threads: int) -> ThreadPoolExecutor:
    """The worker's one inference thread: torch ops run serially in it."""
    return torch_thread_pool(threads, 1, "inference")


def read_verified(path: Path, manifest: Manifest) -> bytes:
    """The bytes to give torch, once the file's sha256 and archive layout are known good.

    The file is read once into memory and the same bytes are hashed and loaded, so a
    file swapped between the check and the load can't slip through. A ``.pt2`` comes
    back rebuilt from its checked records (archive.py).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path.name}: {exc.strerror}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest.sha256:
        raise ModelLoadError(
            f"sha256 mismatch for {path.name}: manifest {manifest.sha256[:12]}…, "
            f"file {actual[:12]}… ({len(data)} bytes; truncated or replaced?)"
        )
    if data[:1] and data[0] == _PICKLE_PROTOCOL_BYTE:
        raise ModelLoadError(f"{path.name} is a raw pickle; refused")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelLoadError(f"{path.name} is not a zip archive")
    try:
        if manifest.format is ModelFormat.TORCH_EXPORT:
            return verified_pt2(data)
        check_torchscript(data)
    except (zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{path.name}: damaged archive ({exc})") from exc
    return data


def _fast_exported(
    module: Callable[[torch.Tensor], torch.Tensor], manifest: Manifest
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exported graph traced into TorchScript, if it computes the same thing.

    ``ExportedProgram.module()`` dispatches every aten op from Python, behind pytree
    flattening and input guards: about 130 µs per call for the tiny demo MLP, against
    16 µs for the same graph run by TorchScript's interpreter. An exported graph is
    straight-line aten code, which tracing records faithfully; the traced version is kept
    only if it matches the exported one on several batch sizes, else the exported module
    runs as is (e.g. graphs with ``torch.cond``).
    """
    example = manifest.example_features()
    row = torch.tensor([[float(example[n]) for n in manifest.input_names]])
    generator = torch.Generator().manual_seed(0)
    probes = [row, row.repeat(7, 1) * (1 + 0.1 * torch.rand(7, row.shape[1], generator=generator))]
    # The input-constraint guard (a pre-hook) can't be traced; shapes are validated before
    # a batch gets here, so the traced graph goes without it.
    hooks: Any = getattr(module, "_forward_pre_hooks", {})
    saved = dict(hooks)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hooks.clear()
            try:
                traced = torch.jit.trace(module, (row,), check_trace=False)  # type: ignore[no-untyped-call]
            finally:
                hooks.update(saved)
            for probe in (*probes, row.repeat(64, 1)):
                if not torch.allclose(traced(probe), module(probe), rtol=1e-5, atol=1e-6):
                    raise ValueError("traced graph disagrees with the exported one")
    except Exception as exc:  # any failure means: keep the exported module
        log.info(
            "exported module runs untraced", extra={"model": manifest.name, "reason": str(exc)}
        )
        return module
    return traced  # type: ignore[no-any-return]


def _load_module(data: bytes, manifest: Manifest) -> Callable[[torch.Tensor], torch.Tensor]:
    fmt = manifest.format
    if fmt is ModelFormat.TORCH_EXPORT:
        program = torch.export.load(io.BytesIO(data))
        module: Callable[[torch.Tensor], torch.Tensor] = program.module()
        return _fast_exported(module, manifest)
    # TorchScript is deprecated upstream in favour of torch.export, but many trained models
    # exist only in that form; it stays supported here, so its warning is noise in our logs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated")
        scripted = torch.jit.load(io.BytesIO(data), map_location="cpu")  # type: ignore[no-untyped-call]
    scripted.eval()
    return scripted  # type: ignore[no-any-return]


@dataclass
class LoadedModel:
    """One verified, warmed model version, ready to run batches."""

    manifest: Manifest
    module: Callable[[torch.Tensor], torch.Tensor]
    sha256: str
    size_bytes: int
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one (n, features) float32 batch; returns (n,) or (n, classes) float32.

        Called from the inference thread, or on the event loop for calls measured to
        be quicker than the hand-off to that thread (batching.py).
        """
        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch))
        result = out.detach().cpu().numpy().astype(np.float32, copy=False)
        if self.manifest.task is Task.MULTICLASS:
            return result.reshape(batch.shape[0], -1)
        return result.reshape(batch.shape[0])


def load_model(version_dir: Path, manifest: Manifest) -> LoadedModel:
    """Verify, load and warm one version; raises ModelLoadError with a readable reason."""
    data = read_verified(version_dir / manifest.file, manifest)
    try:
        module = _load_module(data, manifest)
    except Exception as exc:  # torch raises many types for a bad archive
        raise ModelLoadError(f"torch could not load {manifest.file}: {exc}") from exc
    model = LoadedModel(manifest, module, manifest.sha256, len(data))
    _warm_up(model)
    return model


def _warm_up(model: LoadedModel) -> None:
    """Run the model on the manifest's example so the first request doesn't pay for setup,
    and check that the output has the shape the task promises."""
    example = model.manifest.example_features()
    row = np.array([[float(example[n]) for n in model.manifest.input_names]], dtype=np.float32)
    for batch in (row, np.repeat(row, 3, axis=0)):
        try:
            out = model.run(batch)
        except Exception as exc:
            raise ModelLoadError(f"warm-up failed: {exc}") from exc
        n_classes = len(model.manifest.outputs.classes)
        if model.manifest.task is Task.MULTICLASS and out.shape != (len(batch), n_classes):
            raise ModelLoadError(f"output shape {out.shape}, expected (n, {n_classes})")
        if not np.all(np.isfinite(out)):
            raise ModelLoadError("warm-up produced non-finite outputs")
