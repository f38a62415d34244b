from __future__ import annotations

import os
import subprocess
from pathlib import Path

from llm_operator.dev._paths import e2e_dir

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")


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


def resolve_bin_dir(*, build: bool = True) -> Path:
    """Where the binaries are: a user's folder (LLMCTL_BIN_DIR, then KUBEBUILDER_ASSETS) or our cache.

    With ``build`` the cache is filled by ``e2e/build-binaries.sh`` (a no-op once complete).
    """
    for var in ("LLMCTL_BIN_DIR", "KUBEBUILDER_ASSETS"):
        value = os.environ.get(var)
        if value:
            return _check(Path(value), var)
    script = e2e_dir() / "build-binaries.sh"
    if not build:
        raise BinariesError("no LLMCTL_BIN_DIR / KUBEBUILDER_ASSETS set and building is disabled")
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise BinariesError(f"{script} failed with exit code {proc.returncode} (its log is above)")
    return _check(Path(proc.stdout.strip().splitlines()[-1]), "built")
