"""Start `llmctl serve` (via `python -m llm_runtime.cli serve`) as a real process and talk to it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    log: Path
    openai_port: int
    http_port: int
    grpc_port: int
    metrics_port: int
    model: str

    @property
    def openai_base(self) -> str:
        return f"http://127.0.0.1:{self.openai_port}/v1"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if m and not line.startswith("#"):
                labels = m.group(2) or ""
                # Keep only the bucket bound as a label: model/version are the same for every series here.
                le = re.search(r'le="([^"]+)"', labels)
                key = m.group(1) + (f"[{le.group(1)}]" if le else "")
                out[key] = out.get(key, 0.0) + float(m.group(3))
        return out

    def stop_cleanly(self) -> None:
        """Stop with SIGINT and require exit status 0, showing the server's last log lines otherwise."""
        code = self.stop()
        assert code == 0, f"llmctl serve exited with {code}:\n{self.log.read_text(errors='replace')[-4000:]}"

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_serve(work: Path, *extra: str, model: str = "tiny", timeout: float = 240) -> Served:
    oa, http, grpc, metrics = free_ports(4)
    log = work / "serve.log"
    cmd = [
        sys.executable,
        "-m",
        "llm_runtime.cli",
        "serve",
        *extra,
        "--model-name",
        model,
        "--work-dir",
        str(work / "serve"),
        "--port",
        str(oa),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
    ]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    served = Served(proc, log, oa, http, grpc, metrics, model)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llmctl serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        if "Press Ctrl-C to stop." in log.read_text(errors="replace"):
            return served
        time.sleep(0.25)
    served.stop(signal.SIGKILL)
    raise RuntimeError(f"llmctl serve not ready in {timeout}s:\n{log.read_text()[-4000:]}")


def post_json(
    url: str, body: Any, *, raw: bytes | None = None, timeout: float = 120
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}"), dict(r.headers)
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            parsed = json.loads(payload or b"{}")
        except json.JSONDecodeError:
            parsed = {"raw": payload.decode(errors="replace")}
        return e.code, parsed, dict(e.headers)


def sse_events(url: str, body: Any, timeout: float = 120) -> list[dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    events = []
    with urllib.request.urlopen(req, timeout=timeout) as r:
        for line in r:
            line = line.strip()
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                events.append(json.loads(line[6:]))
    return events
