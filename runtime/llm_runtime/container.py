"""`tritonserver` inside the runtime image: the wheel's binary with the environment the launcher sets up.

The pod template runs `args: [tritonserver, --model-repository=/models, ...]` with no `command`, as in the
official Triton images. In our image `tritonserver` on PATH is `runtime/image/tritonserver`, which calls
`main()`: it adds the backend directory with the python backend stub for this interpreter (prepared at build
time, `LLM_RUNTIME_BACKEND_DIR`), the wheel's cache directory, and the library and Python paths of
`launcher.server_env`, then replaces itself with the real binary (no shell, no extra process: SIGTERM from the
kubelet reaches tritonserver directly).
"""

from __future__ import annotations

import os
import sys

from llm_runtime.launcher import backend_dir, pytriton_dist, server_env


def command(argv: list[str]) -> list[str]:
    dist = pytriton_dist()
    args = list(argv)
    if args and os.path.basename(args[0]) == "tritonserver":
        args = args[1:]
    given = {a.split("=", 1)[0] for a in args}
    extra: list[str] = []
    if "--backend-directory" not in given:
        extra.append(f"--backend-directory={os.environ.get('LLM_RUNTIME_BACKEND_DIR') or backend_dir()}")
    if "--cache-directory" not in given:
        extra.append(f"--cache-directory={dist / 'caches'}")
    if "--allow-gpu-metrics" not in given and not os.path.exists("/dev/nvidiactl"):
        extra.append("--allow-gpu-metrics=false")
    return [str(dist / "bin" / "tritonserver"), *extra, *args]


def main() -> None:  # pragma: no cover - replaces the process
    cmd = command(sys.argv)
    os.execve(cmd[0], cmd, server_env())


if __name__ == "__main__":  # pragma: no cover
    main()
