"""Start and stop the real ``tritonserver`` binary shipped in the nvidia-pytriton wheel.

Handles the two environment pitfalls of that wheel so callers (``llmctl serve``, tests, benchmarks) need
no setup: the python backend stub must match this interpreter's version, and it must load this
interpreter's own libpython (Debian's system copy of the same major version lacks newer symbols).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import llm_runtime


class LauncherError(RuntimeError):
    pass


def pytriton_dist() -> Path:
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LauncherError(
            "tritonserver comes from the nvidia-pytriton wheel: pip install 'triton-llm-operator[runtime]'"
        ) from exc
    dist = Path(pytriton.__file__).parent / "tritonserver"
    if not (dist / "bin" / "tritonserver").exists():
        raise LauncherError(f"no tritonserver binary under {dist}")
    return dist


def backend_dir() -> Path:
    """A backend directory whose python backend has the stub matching this interpreter.

    Built once per pytriton install in a cache directory (never inside site-packages, which may be
    read-only), with symlinks to the wheel's files.
    """
    dist = pytriton_dist()
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise LauncherError(f"nvidia-pytriton ships no python backend stub for Python {version}")
    key = hashlib.sha256(f"{dist}:{version}:{stub.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm_runtime" / f"backends-{key}"
    py = cache / "python"
    if not (py / "triton_python_backend_stub").exists():
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        (tmp / "python").mkdir(parents=True, exist_ok=True)
        for f in (dist / "backends" / "python").iterdir():
            if f.is_file():
                (tmp / "python" / f.name).symlink_to(f)
        shutil.copy2(stub, tmp / "python" / "triton_python_backend_stub")
        try:
            tmp.rename(cache)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    dist = pytriton_dist()
    libdirs = [str(sysconfig.get_config_var("LIBDIR") or ""), str(dist.parent.parent / "nvidia_pytriton.libs")]
    old = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = os.pathsep.join([d for d in libdirs if d] + ([old] if old else []))
    # The stub embeds libpython with the base interpreter's paths: add this environment's packages and
    # the directory llm_runtime is imported from (a source checkout or site-packages).
    paths = [str(Path(llm_runtime.__file__).resolve().parent.parent), *site.getsitepackages()]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # The stub derives its Python prefix from the `python3` it finds on PATH: make that this interpreter
    # (a virtualenv's python brings the virtualenv's site-packages along).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class TritonServer:
    repository: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    host: str = "127.0.0.1"
    exit_timeout_s: int = 30
    log_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        dist = pytriton_dist()
        return [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir()}",
            f"--cache-directory={dist / 'caches'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--log-verbose=0",
            *self.extra_args,
        ]

    def start(self, *, ready_timeout_s: float = 180.0) -> None:
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command(), env=server_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LauncherError(
                    f"tritonserver exited with {self.proc.returncode} while starting"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            if self.ready():
                return
            time.sleep(0.25)
        self.stop(timeout_s=5)
        raise LauncherError(f"tritonserver was not ready within {ready_timeout_s}s")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, *, timeout_s: float | None = None) -> int:
        """SIGINT (Triton drains in-flight requests for exit_timeout_s), then SIGKILL if it hangs."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s if timeout_s is not None else self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Python stub processes live in tritonserver's own process group (start_new_session above); a
        # server that gave up on its exit timeout can leave them behind, so end whatever is left of it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return int(self.proc.returncode)
