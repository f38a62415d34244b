from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from llm_operator.dev._paths import e2e_dir

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
# Only `dev up --metrics` needs it; the build script links the pinned build into the bin folder.
ADAPTER = "prometheus-adapter"


class BinariesError(RuntimeError):
    """The control-plane binaries are missing and could not be built."""


def _check(dir_: Path, source: str) -> Path:
    missing = [b for b in REQUIRED if not os.access(dir_ / b, os.X_OK)]
    if missing:
        raise BinariesError(
            f"{source}={dir_} lacks executable(s) {', '.join(missing)}; "
            "point it at a folder holding all of them, or unset it to build them from the Go module proxy"
        )
    return dir_


def resolve_bin_dir(*, build: bool = True, with_adapter: bool = False) -> Path:
    """Where the binaries are: a user's folder (LLMCTL_BIN_DIR, then KUBEBUILDER_ASSETS) or our cache.

    With ``build`` the cache is filled by ``e2e/build-binaries.sh`` (a no-op once complete); prometheus-adapter
    (about 10 min to build) only ``with_adapter``.
    """
    for var in ("LLMCTL_BIN_DIR", "KUBEBUILDER_ASSETS"):
        value = os.environ.get(var)
        if value:
            return _check(Path(value), var)
    script = e2e_dir() / "build-binaries.sh"
    if not build:
        raise BinariesError("no LLMCTL_BIN_DIR / KUBEBUILDER_ASSETS set and building is disabled")
    env = dict(os.environ)
    if not with_adapter:
        env.setdefault("LLMCTL_SKIP_ADAPTER", "1")
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise BinariesError(f"{script} failed with exit code {proc.returncode} (its log is above)")
    return _check(Path(proc.stdout.strip().splitlines()[-1]), "built")


def adapter_binary(bin_dir: Path) -> Path:
    """prometheus-adapter in ``bin_dir`` (built and linked there by ``e2e/build-binaries.sh``)."""
    path = bin_dir / ADAPTER
    if not os.access(path, os.X_OK):
        raise BinariesError(
            f"{bin_dir} has no executable {ADAPTER}; build it with `bash e2e/build-binaries.sh` "
            "(prometheus-adapter v0.12.0 from the Go module proxy, about 10 min) or put one there"
        )
    return path


def prometheus_binary() -> Path:
    """The Prometheus server: $LLMCTL_PROMETHEUS, else `prometheus` on PATH (Debian's package)."""
    env = os.environ.get("LLMCTL_PROMETHEUS")
    found = env or shutil.which("prometheus")
    if not found or not os.access(found, os.X_OK):
        raise BinariesError(
            f"no Prometheus server ({'LLMCTL_PROMETHEUS=' + env if env else 'none on PATH'}); install it with "
            "`sudo apt-get install -y --no-install-recommends prometheus` (Debian/Ubuntu) or set LLMCTL_PROMETHEUS"
        )
    return Path(found)
