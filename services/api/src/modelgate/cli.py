"""The ``modelgate`` command.

``modelgate serve`` runs one replica: a gunicorn master with W uvicorn workers, each
building its own app with ``create_app()``. Options become ``MODELGATE_*`` environment
variables, so the workers read them through ``Settings`` like any other deployment.

``modelgate stack up|down|status`` runs the whole native stack (see ``stack.py``);
``modelgate stack restart [--rolling] [NAME]`` and ``modelgate stack reload`` change it
while it runs (see ``supervisor.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


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
    return parser


def stack(args: argparse.Namespace) -> int:
    from modelgate import stack as native_stack  # only this command needs yaml and friends

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
