"""The ``modelgate`` command.

``modelgate serve`` runs one replica: a gunicorn master with W uvicorn workers, each
building its own app with ``create_app()``. Options become ``MODELGATE_*`` environment
variables, so the workers read them through ``Settings`` like any other deployment.

``modelgate stack up|down|status`` runs the whole native stack (see ``stack.py``);
``modelgate stack restart [--rolling] [NAME]`` and ``modelgate stack reload`` change it
while it runs (see ``supervisor.py``).

``modelgate gateway-exporter`` counts the gateway's answers from nginx's metrics log
(see ``gatewaylog.py``).

``modelgate import`` turns a trained checkpoint into a verified repository version
(see ``importer.py``); ``modelgate pull`` fetches one from the MLflow registry
(see ``registry.py``).

``modelgate features load|get`` fills and reads the online feature store of ranking
models (see ``ranking/load.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from modelgate.inference.manifest import Task


def _gunicorn_config() -> Path:
    """services/api/gunicorn.conf.py: next to src/ in a checkout, or named by env."""
    explicit = os.environ.get("MODELGATE_GUNICORN_CONFIG")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def single_model_env(model_dir: Path, name: str) -> dict[str, str]:
    """Settings for single-model mode, the way KServe starts a runtime: its storage
    initializer downloads the InferenceService's ``storageUri`` into ``model_dir``
    (``/mnt/models``), which must then hold ``<name>/<version>/`` — a model repository
    with one model, the layout Triton's KServe runtime expects too. The directory is
    served as that repository restricted to ``name``, which is also the default model."""
    if not (model_dir / name).is_dir():
        found = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
        hint = ""
        if (model_dir / "model.json").is_file() or any(n.isdigit() for n in found):
            hint = (
                f"; it looks like one model's own directory: point storageUri at the "
                f"directory that holds {name}/"
            )
        raise ValueError(
            f"--model-dir {model_dir} must hold {name}/<version>/ (found: "
            f"{', '.join(found) or 'nothing'}){hint}"
        )
    return {
        "MODELGATE_MODEL_REPOSITORY": str(model_dir.resolve()),
        "MODELGATE_MODELS": json.dumps([name]),
        "MODELGATE_DEFAULT_MODEL": name,
    }


def serve(args: argparse.Namespace) -> int:  # returns only on error
    config = _gunicorn_config()
    if not config.is_file():
        sys.stderr.write(f"modelgate: gunicorn config not found at {config}\n")
        return 2
    env = dict(os.environ)
    if args.model_dir or args.model_name:
        if not (args.model_dir and args.model_name):
            sys.stderr.write("modelgate: --model-dir and --model-name go together\n")
            return 2
        try:
            env.update(single_model_env(Path(args.model_dir), args.model_name))
        except ValueError as exc:
            sys.stderr.write(f"modelgate: {exc}\n")
            return 2
    elif args.model_repository:
        env["MODELGATE_MODEL_REPOSITORY"] = str(Path(args.model_repository).resolve())
    if args.instance:
        env["MODELGATE_INSTANCE"] = args.instance
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(config),
        "--bind",
        f"{args.host}:{args.port}",
        "--workers",
        str(args.workers),
        "modelgate.app:create_app()",
    ]
    # exec, so that the caller's PID is gunicorn's master and signals reach it directly.
    os.execve(sys.executable, argv, env)  # noqa: S606 - argv is ours, no shell


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelgate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run one replica (gunicorn + uvicorn workers)")
    p.add_argument("--model-repository", default=os.environ.get("MODELGATE_MODEL_REPOSITORY"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--instance", default="", help="name shown in /health and /models")
    # Single-model mode, as KServe runs a ServingRuntime (deploy/kserve/).
    p.add_argument(
        "--model-dir", help="serve one model from DIR/NAME/<version>/ (KServe: /mnt/models)"
    )
    p.add_argument("--model-name", help="the one model to serve (KServe: the service's name)")
    p.set_defaults(func=serve)

    i = sub.add_parser(
        "import", help="a trained checkpoint or TorchScript file → a verified repository version"
    )
    _import_arguments(i)
    i.set_defaults(func=import_model)

    pl = sub.add_parser("pull", help="fetch a registry version into the repository, verified")
    pl.add_argument("ref", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    pl.add_argument("--into", type=Path, default=Path("models"), help="the model repository")
    pl.add_argument("--mlflow-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    pl.set_defaults(func=pull)

    g = sub.add_parser(
        "gateway-exporter", help="count the gateway's answers from its metrics log (UDP)"
    )
    g.add_argument("--udp", default="127.0.0.1:5140", help="HOST:PORT nginx sends lines to")
    g.add_argument("--listen", default="127.0.0.1:3903", help="HOST:PORT of /metrics")
    g.set_defaults(func=gateway_exporter)

    s = sub.add_parser("stack", help="the native stack: redis, 3 replicas, nginx, prometheus")
    s.add_argument(
        "action",
        choices=["up", "down", "status", "restart", "reload", "supervise"],
        help="restart: drain and restart the replicas (or NAME); reload: the gateway's "
        "configuration, checked first; supervise: what `up --detach` leaves running",
    )
    s.add_argument("name", nargs="?", default=None, help="restart: one process (e.g. api-2)")
    s.add_argument("--detach", action="store_true", help="up: return once everything is ready")
    s.add_argument(
        "--rolling", action="store_true", help="restart: one at a time, each ready first"
    )
    s.add_argument("--model-repository", default=None)
    s.set_defaults(func=stack)

    f = sub.add_parser("features", help="the online feature store (Redis) of ranking models")
    from modelgate.ranking import command as features_command

    features_command.arguments(f)
    f.set_defaults(func=features_command.main)
    return parser


def _import_arguments(p: argparse.ArgumentParser) -> None:
    """``modelgate import`` flags; the work is in ``importer.py``."""
    p.add_argument("name", help="model name in the repository, e.g. churn")
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="torch.save'd state_dict, or a dict with one")
    src.add_argument("--torchscript", type=Path, help="a torch.jit.save'd file")
    p.add_argument("--model-class", help="package.module:ClassName (with --checkpoint)")
    p.add_argument(
        "--python-path",
        type=Path,
        action="append",
        default=[],
        help="where --model-class's package is (repeatable)",
    )
    p.add_argument(
        "--init-args", default="{}", help='constructor arguments, JSON: {"input_dim": 10}'
    )
    p.add_argument(
        "--init-arg-from-checkpoint",
        action="append",
        default=[],
        metavar="KEY",
        help="a constructor argument stored in the checkpoint dict (repeatable)",
    )
    p.add_argument("--state-dict-key", help="where the weights are in the checkpoint dict")
    p.add_argument("--spec", type=Path, help="YAML/JSON file with the manifest's facts")
    p.add_argument("--task", choices=[t.value for t in Task])
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME[:DTYPE[:MIN:MAX]]",
        help="one per input, in the model's column order",
    )
    p.add_argument("--classes", help="class names, comma separated, negative first")
    p.add_argument(
        "--output",
        choices=["probabilities", "logits"],
        help="what the module returns (default: probabilities)",
    )
    p.add_argument("--description")
    p.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument(
        "--reference",
        type=Path,
        metavar="CSV",
        help="training rows (header: input names): the drift reference in the manifest",
    )
    p.add_argument("--mlflow-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    p.add_argument(
        "--register", action="store_true", help="also register it in the MLflow registry"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-5,
        help="largest allowed |served - eager| on the sample rows",
    )


def pull(args: argparse.Namespace) -> int:
    from modelgate.inference import registry  # only this command needs torch in this process

    if not args.mlflow_tracking_uri:
        sys.stderr.write("modelgate pull: --mlflow-tracking-uri (or MLFLOW_TRACKING_URI)\n")
        return 2
    try:
        client = registry.MlflowRegistry(args.mlflow_tracking_uri)
        pulled = registry.pull(client, registry.ModelRef.parse(args.ref), args.into)
    except registry.RegistryError as exc:
        sys.stderr.write(f"modelgate pull: {exc}\n")
        return 1
    m = pulled.manifest
    state = "added" if pulled.added else "already there"
    sys.stdout.write(f"{m.name} version {m.version} ({state}): {pulled.version_dir}\n")
    return 0


def import_model(args: argparse.Namespace) -> int:
    from modelgate.inference import importer  # only this command needs torch in this process

    return importer.command(args)


def gateway_exporter(args: argparse.Namespace) -> int:  # returns only on error
    from modelgate.observability import gatewaylog

    try:
        udp, listen = gatewaylog.address(args.udp), gatewaylog.address(args.listen)
    except ValueError as exc:
        sys.stderr.write(f"modelgate gateway-exporter: {exc}\n")
        return 2
    try:
        gatewaylog.serve(udp, listen)
    except KeyboardInterrupt:
        return 0
    return 1


def stack(args: argparse.Namespace) -> int:
    from modelgate.stack import launch as native_stack  # only this command needs yaml and friends

    return native_stack.main(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # e.g. `modelgate stack status | head -1`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
