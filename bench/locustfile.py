"""The tutorials' traffic against a running gateway, for locust (``make load``).

Three user shapes, weighted like the tutorials' own load scripts:

* ``SingleUser``: one prediction at a time of a fresh random valid input, for the default
  model (``/predict``) and each named model (``/models/{name}/predict``);
* ``BatchUser``: ``/predict/batch`` with 2-32 random rows;
* a share of repeats: each user sends one of a few fixed inputs ``REPEAT_SHARE`` of the
  time, the requests the prediction cache answers.

Inputs are drawn inside each input's manifest bounds, read from ``GET /models/{name}``
at the start of the run, so no request is a 422 unless the API changed. Runs in locust's
own venv (bench/locust.in); nothing here is imported by modelgate or its tests.
"""

from __future__ import annotations

import os
import random
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment

# Share of requests that repeat a fixed input (cache hits once the stack has seen them).
REPEAT_SHARE = float(os.environ.get("LOAD_REPEAT_SHARE", "0.3"))
REPEATS_PER_MODEL = 5
MAX_BATCH = 32

# Filled once per run from the gateway (on_test_start): model name -> its input specs.
INPUTS: dict[str, list[dict[str, Any]]] = {}
REPEATS: dict[str, list[list[Any]]] = {}
DEFAULT_MODEL: list[str] = []


def random_row(specs: list[dict[str, Any]], rng: random.Random) -> list[Any]:
    """One valid row in manifest order: every value within its input's bounds."""
    row: list[Any] = []
    for spec in specs:
        dtype = spec.get("dtype", "float")
        if dtype == "bool":
            row.append(rng.random() < 0.5)
            continue
        low = spec.get("min", 0.0 if spec.get("max", 1.0) >= 0 else spec["max"] - 1)
        high = spec.get("max", low + 1.0)
        if dtype == "int":
            row.append(rng.randint(int(-(-low // 1)), int(high // 1)))
        else:
            row.append(round(rng.uniform(low, high), 4))
    return row


@events.init.add_listener
def discover_models(environment: Environment, **_: Any) -> None:
    # Runs in every locust process before users spawn; uses the standard library only so
    # that the discovery does not depend on locust's HTTP client internals.
    import json
    import urllib.request

    host = (environment.host or os.environ.get("LOAD_HOST", "")).rstrip("/")
    if not host:
        return
    with urllib.request.urlopen(f"{host}/models", timeout=10) as answer:
        listing = json.load(answer)
    DEFAULT_MODEL[:] = [listing["default_model"]]
    rng = random.Random(24)  # fixed: the repeated inputs are the same in every process
    for model in listing["models"]:
        name = model["name"]
        with urllib.request.urlopen(f"{host}/models/{name}", timeout=10) as answer:
            detail = json.load(answer)
        default = next(v for v in detail["versions"] if v["default"])
        if default["task"] == "ranking":
            continue  # a ranker answers /rank, not the prediction routes this load drives
        INPUTS[name] = default["inputs"]
        REPEATS[name] = [random_row(INPUTS[name], rng) for _ in range(REPEATS_PER_MODEL)]


class _Shapes(HttpUser):
    abstract = True
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.rng = random.Random()

    def row(self, name: str) -> list[Any]:
        if self.rng.random() < REPEAT_SHARE:
            return self.rng.choice(REPEATS[name])
        return random_row(INPUTS[name], self.rng)

    def post(self, path: str, body: dict[str, Any], label: str) -> None:
        with self.client.post(path, json=body, name=label, catch_response=True) as answer:
            if answer.status_code != 200:
                # The error body names the field and reason; keep it in the report.
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")


class SingleUser(_Shapes):
    weight = 3

    @task(3)
    def default_model(self) -> None:
        self.post("/predict", {"features": self.row(DEFAULT_MODEL[0])}, "/predict")

    @task(1)
    def named_model(self) -> None:
        name = self.rng.choice(list(INPUTS))
        self.post(f"/models/{name}/predict", {"features": self.row(name)}, "/models/{name}/predict")


class BatchUser(_Shapes):
    weight = 1

    @task
    def batch(self) -> None:
        name = DEFAULT_MODEL[0]
        rows = [self.row(name) for _ in range(self.rng.randint(2, MAX_BATCH))]
        self.post("/predict/batch", {"instances": rows}, "/predict/batch")
