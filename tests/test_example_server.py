"""examples/model_server beside the real daemon, on the example's own config: every request
becomes an event with its preprocess, inference and postprocess seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import free_port, wait_for

pytestmark = [pytest.mark.torch, pytest.mark.timeout(90)]
pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "model_server"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def post(port: int, body: Any) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        e.close()
        return int(e.code)


def test_example_server_sends_its_three_stages(tmp_path: Path, daemon_factory: Any) -> None:
    cfg = yaml.safe_load((EXAMPLE / "sidecar.yaml").read_text())
    assert cfg["models"][0]["stages"] == ["preprocess", "inference", "postprocess"]
    d = daemon_factory({"models": cfg["models"], "drift": cfg["drift"]})
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        command = [sys.executable, str(EXAMPLE / "server.py"), "--socket", d.socket_path]
        server = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def up() -> bool:
            assert server.poll() is None, log.read_text()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return bool(json.loads(r.read())["sidecar"]["connected"])

        wait_for(up, 30, "the example server, connected to the sidecar")
        assert all(post(port, {"features": ROW}) == 200 for _ in range(3))
        assert post(port, {"instances": [ROW] * 4}) == 200
        assert post(port, {"features": {"sepal_length": 1.0}}) == 400  # an errored request
        model = cfg["models"][0]["name"]
        m = d.wait_metric("drift_sidecar_events_accepted_total", 8, model_name=model)
    finally:
        server.terminate()
        server.wait(timeout=15)
    count = "ml_prediction_stage_latency_seconds_count"
    # 3 single requests, 4 rows of a batch (each row's stages are the batch's), and the
    # bad request, which got as far as its preprocess stage
    assert m.value(count, model_name=model, stage="preprocess") == 8
    assert m.value(count, model_name=model, stage="inference") == 7
    assert m.value(count, model_name=model, stage="postprocess") == 7
    stage_sum = sum(
        m.value("ml_prediction_stage_latency_seconds_sum", model_name=model, stage=s) or 0.0
        for s in ("preprocess", "inference", "postprocess")
    )
    # the stages lie within each request's latency
    assert 0 < stage_sum <= m.value("ml_prediction_latency_seconds_sum", model_name=model)
