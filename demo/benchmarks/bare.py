"""The ceiling of the serving benchmarks: a bare WSGI app, no Django and no database, served by
the same gunicorn configuration as the engine. `POST /predict` does only the LightGBM work of
one decision: P(act) and the expected effect for the same candidate rows (features captured
from a real decision) with the same model artefact, and the per-feature contributions of the
chosen row for its explanation. `GET /empty` answers a fixed JSON body: the ceiling of HTTP
and gunicorn alone.

Configured by the environment: BENCH_MODEL (the artefact file) and BENCH_FEATURES (a .npy
matrix of candidate rows)."""

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from nudges.recommender import ModelBundle

Respond = Callable[[str, list[tuple[str, str]]], Any]

_bundle = ModelBundle.loads(Path(os.environ["BENCH_MODEL"]).read_bytes())
_features = np.load(os.environ["BENCH_FEATURES"])
EMPTY = json.dumps({"ok": True}).encode()


def predict() -> bytes:
    p_act, effect = _bundle.predict(_features)
    chosen = int(np.argmax(p_act))
    contributions = _bundle.contributions(_features[chosen : chosen + 1])
    return json.dumps(
        {
            "p_act": np.round(p_act, 4).tolist(),
            "effect": np.round(effect, 4).tolist(),
            "chosen": chosen,
            "contributions": np.round(contributions[0], 4).tolist(),
        }
    ).encode()


def application(environ: dict[str, Any], start_response: Respond) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    route = (environ["REQUEST_METHOD"], environ["PATH_INFO"])
    if route == ("POST", "/predict"):
        body = predict()
    elif route == ("GET", "/empty"):
        body = EMPTY
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]
