"""`llmctl serve --tiny` end to end: starts with no model files, and SIGTERM lets in-flight requests finish."""

from __future__ import annotations

import json
import signal
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from runtime_serving_helpers import start_serve

pytestmark = pytest.mark.triton


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_tiny_then_sigterm_finishes_in_flight_stream_and_exits_cleanly(tmp_path: Path) -> None:
    served = start_serve(tmp_path, "--tiny", "--exit-timeout", "20")
    try:
        out = (tmp_path / "serve.log").read_text()
        assert "created a tiny random-weight model" in out
        assert f"http://127.0.0.1:{served.openai_port}/v1" in out
        assert (tmp_path / "serve" / "tiny-model" / "model.safetensors").is_file()

        body = {
            "model": "tiny",
            "prompt": "Keep going",
            "max_tokens": 500,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        req = urllib.request.Request(
            f"{served.openai_base}/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        events: list[dict[str, Any]] = []
        first = threading.Event()

        def read() -> None:
            with urllib.request.urlopen(req, timeout=120) as r:
                for line in r:
                    if line.startswith(b"data: {"):
                        events.append(json.loads(line[6:]))
                        first.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert first.wait(60), "the stream never started"
        served.proc.send_signal(signal.SIGTERM)
        assert events[-1]["choices"][0]["finish_reason"] is None, "the stream ended before the signal"
        reader.join(60)
        assert not reader.is_alive()
        assert events[-1]["choices"][0]["finish_reason"] == "length", "in-flight stream was cut off"
        assert served.proc.wait(60) == 0
        log = (tmp_path / "serve.log").read_text()
        assert "shutting down: finishing in-flight requests" in log
        assert "tritonserver stopped (exit code 0)" in log
        for port in (served.openai_port, served.http_port, served.grpc_port, served.metrics_port):
            assert not _port_open(port), f"port {port} still open after shutdown"
    finally:
        served.stop(signal.SIGKILL)


def test_serve_refuses_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not a Hugging Face model directory"):
        start_serve(tmp_path, "--model-dir", str(tmp_path), timeout=60)
