"""`llmctl images`: build the operator and runtime images with podman, no daemon, no registry.

* podman runs with the project's own `images/containers.conf` (through `CONTAINERS_CONF`; nothing in /etc is
  edited): runtime runc, cgroup manager cgroupfs, default ulimits within this machine's hard limits.
* With no registry to pull from, the base image is made locally: `mmdebstrap` builds a Debian bookworm rootfs
  (python3, venv, libpython) from Debian's packages and `podman import` turns it into `BASE_IMAGE`. Anywhere
  else, the Containerfiles' default `BASE` (a public Python image) is used and this step is not needed.
* Every image carries the sha256 of what went into it (label `dev.llmops.content-hash`): the Containerfile,
  the build context (the files git tracks under the copied paths, and untracked ones there), the build
  arguments and the base image's id. An unchanged tree rebuilds nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from llm_operator import __version__

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "images" / "containers.conf"
HASH_LABEL = "dev.llmops.content-hash"
REGISTRY = "ghcr.io/llmops-dev"
OPERATOR_IMAGE = f"{REGISTRY}/triton-llm-operator:{__version__}"
RUNTIME_IMAGE = f"{REGISTRY}/triton-llm-runtime:{__version__}"

BASE_IMAGE = "localhost/triton-llm-base:bookworm"
BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
# python3 (3.11) with venv and the shared libpython the python backend stub loads; python-is-python3 so that
# `python` works as in the public python image; ca-certificates for pip. minbase keeps apt/dpkg, no more.
BASE_PACKAGES = ("python3", "python3-venv", "libpython3.11", "python-is-python3", "ca-certificates")
BASE_VERSION = "1"  # bump to force a new base when this recipe changes in a way the inputs do not show

# What each image's build context holds (relative to the repository root).
CONTEXT_PATHS = ("pyproject.toml", "README.md", "operator", "runtime")


@dataclass(frozen=True)
class ImageSpec:
    key: str
    name: str
    containerfile: str


IMAGES = {
    "operator": ImageSpec("operator", OPERATOR_IMAGE, "operator/Containerfile"),
    "runtime": ImageSpec("runtime", RUNTIME_IMAGE, "runtime/Containerfile"),
}


class ImageError(RuntimeError):
    pass


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def podman(*args: str, check: bool = True, capture: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise ImageError("podman is not installed: apt-get install podman runc mmdebstrap (.ci/run does)")
    return subprocess.run(  # type: ignore[call-overload]
        ["podman", *args], env=podman_env(), check=check, text=True, capture_output=capture, **kw
    )


def image_inspect(name: str) -> dict[str, object] | None:
    out = podman("image", "inspect", name, check=False)
    if out.returncode != 0:
        return None
    data = json.loads(out.stdout)
    return data[0] if data else None


def image_label(name: str, label: str) -> str | None:
    info = image_inspect(name)
    if info is None:
        return None
    labels = (info.get("Config") or {}).get("Labels") or {}  # type: ignore[attr-defined]
    value = labels.get(label)
    return str(value) if value is not None else None


def image_size(name: str) -> int:
    info = image_inspect(name)
    if info is None:
        raise ImageError(f"no image {name}")
    return int(info["Size"])  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------------ base image


def base_hash() -> str:
    h = hashlib.sha256()
    h.update(json.dumps([BASE_VERSION, BASE_SUITE, BASE_MIRROR, "minbase", list(BASE_PACKAGES)]).encode())
    return h.hexdigest()


def build_base(*, force: bool = False, log: bool = True) -> tuple[str, bool, float]:
    """(image, built, seconds): the local Debian base, rebuilt only when its recipe changed."""
    digest = base_hash()
    if not force and image_label(BASE_IMAGE, HASH_LABEL) == digest:
        return BASE_IMAGE, False, 0.0
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed: apt-get install mmdebstrap (.ci/run does)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llm-base-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        cmd = [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            f"--include={','.join(BASE_PACKAGES)}",
            # No apt lists or caches in the image; documentation and locales are not needed either.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
            BASE_SUITE,
            str(tarball),
            BASE_MIRROR,
        ]
        if log:
            print("+", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if not log else None)
        podman(
            "import",
            "--change", f"LABEL {HASH_LABEL}={digest}",
            "--change", "LABEL org.opencontainers.image.title=triton-llm-base",
            "--change", f"LABEL org.opencontainers.image.description=Debian {BASE_SUITE} minbase with "
            + " ".join(BASE_PACKAGES) + " (mmdebstrap)",
            "--change", "ENV LANG=C.UTF-8",
            "--change", 'CMD ["python3"]',
            str(tarball),
            BASE_IMAGE,
        )
    return BASE_IMAGE, True, time.monotonic() - start


# ------------------------------------------------------------------------------------------ app images


def _context_files() -> list[str]:
    """The files of the build context: what git tracks or would track under CONTEXT_PATHS (a source tree
    without git: every file there)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *CONTEXT_PATHS],
        cwd=ROOT, check=False, text=True, capture_output=True,
    )
    if out.returncode == 0 and out.stdout.strip():
        names = out.stdout.splitlines()
    else:
        names = [str(p.relative_to(ROOT)) for c in CONTEXT_PATHS for p in [ROOT / c, *(ROOT / c).rglob("*")]]
    files = sorted({f for f in names if (ROOT / f).is_file()})
    return [f for f in files if "__pycache__" not in f and ".egg-info" not in f and not f.endswith(".pyc")]


def content_hash(spec: ImageSpec, base: str, build_args: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(f"{spec.containerfile}\0{json.dumps(build_args, sort_keys=True)}\0".encode())
    info = image_inspect(base)
    h.update(f"base:{info['Id'] if info else base}\0".encode())
    for f in [spec.containerfile, *_context_files()]:
        h.update(f.encode() + b"\0")
        h.update(hashlib.sha256((ROOT / f).read_bytes()).digest())
    return h.hexdigest()


def _revision() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True, capture_output=True, check=False)
    return out.stdout.strip() or "unknown"


# The build machine's TLS trust and pip settings (e.g. a proxy's CA, an index mirror) are mounted into the
# build's RUN steps only: they never end up in an image layer, and the Containerfiles stay portable.
TRUST_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")


def _trust_mounts() -> list[str]:
    return [f"--volume={f}:{f}:ro" for f in TRUST_FILES if Path(f).is_file()]


def build_image(spec: ImageSpec, *, base: str, force: bool = False, log: bool = True) -> tuple[bool, float, str]:
    """(built, seconds, content hash). A copy of the context (only CONTEXT_PATHS) is built, never the tree."""
    build_args = {"BASE": base}
    digest = content_hash(spec, base, build_args)
    if not force and image_label(spec.name, HASH_LABEL) == digest:
        return False, 0.0, digest
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"llm-{spec.key}-ctx-") as ctx:
        for f in [spec.containerfile, *_context_files()]:
            dest = Path(ctx) / f
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest)
        cmd = [
            "build",
            "--network=host",
            "--layers",
            "-f", str(Path(ctx) / spec.containerfile),
            "-t", spec.name,
            "--build-arg", f"BASE={base}",
            "--build-arg", f"VERSION={__version__}",
            "--build-arg", f"REVISION={_revision()}",
            "--label", f"{HASH_LABEL}={digest}",
            *_trust_mounts(),
            ctx,
        ]
        if log:
            print("+ podman", " ".join(cmd), file=sys.stderr)
        result = podman(*cmd, check=False, capture=not log)
        if result.returncode != 0:
            raise ImageError(f"podman build of {spec.name} failed:\n{(result.stderr or '')[-4000:]}")
    return True, time.monotonic() - start, digest


def build_all(
    keys: list[str], *, local_base: bool = True, force: bool = False, log: bool = True
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    if local_base:
        base, built, secs = build_base(force=force, log=log)
        rows.append({"image": base, "built": built, "seconds": round(secs, 1), "size": image_size(base)})
    else:
        base = "docker.io/library/python:3.11-slim-bookworm"
    for key in keys:
        spec = IMAGES[key]
        built, secs, digest = build_image(spec, base=base, force=force, log=log)
        rows.append(
            {"image": spec.name, "built": built, "seconds": round(secs, 1), "size": image_size(spec.name),
             "content_hash": digest[:12]}
        )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="build the operator and runtime images (cached by content hash)")
    b.add_argument("which", nargs="*", metavar="IMAGE", help="operator, runtime (default: both)")
    b.add_argument("--no-local-base", action="store_true",
                   help="use the Containerfiles' default public python base instead of the mmdebstrap one")
    b.add_argument("--force", action="store_true", help="rebuild even if the content hash is unchanged")
    b.add_argument("-o", "--output", choices=["table", "json"], default="table")
    sub.add_parser("base", help="build only the local Debian base image (mmdebstrap + podman import)")
    sub.add_parser("env", help="print the environment podman needs (CONTAINERS_CONF), for eval")


def run(args: argparse.Namespace) -> int:
    try:
        if args.images_command == "env":
            print(f"export CONTAINERS_CONF={CONTAINERS_CONF}")
            return 0
        if args.images_command == "base":
            base, built, secs = build_base()
            state = f"built in {secs:.1f}s" if built else "cached"
            print(f"{base}  {state}  {image_size(base) / 1e6:.0f} MB")
            return 0
        keys = list(args.which or IMAGES)
        unknown = [k for k in keys if k not in IMAGES]
        if unknown:
            print(f"llmctl images: unknown image(s) {', '.join(unknown)}: choose from {', '.join(IMAGES)}",
                  file=sys.stderr)
            return 2
        rows = build_all(keys, local_base=not args.no_local_base, force=args.force)
    except (ImageError, subprocess.CalledProcessError) as exc:
        print(f"llmctl images: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            state = f"built in {r['seconds']}s" if r["built"] else "cached (content unchanged)"
            print(f"{r['image']:<50} {int(r['size']) / 1e6:>8.0f} MB  {state}")  # type: ignore[call-overload]
    return 0
