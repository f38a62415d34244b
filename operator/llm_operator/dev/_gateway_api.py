"""The Gateway API CRDs (standard channel) for the local cluster, from the `sigs.k8s.io/gateway-api` Go module.

The module zip comes from the Go module proxy (``$GOPROXY``'s first URL, else https://proxy.golang.org) and is
checked against its go.sum hash, the one the checksum database publishes
(https://sum.golang.org/lookup/sigs.k8s.io/gateway-api@v1.7.0), so no Go toolchain is needed. Only the CRD files
are kept, in a versioned folder of the binaries' cache: ``<cache>/crds/gateway-api-<version>/``.
``LLMCTL_GATEWAY_API_DIR`` names a folder holding the same files instead (offline machines).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import yaml

from llm_operator.dev._paths import cache_root

MODULE = "sigs.k8s.io/gateway-api"
VERSION = "v1.7.0"
# The go.sum line of the module zip ("dirhash" h1): sha256 over "<sha256 hex>  <path>\n" of every file, sorted.
H1 = "h1:duVnm7nO6oXfMMUWfcDoBph47CYR/ME3NGxccOVglaY="
KINDS = ("gatewayclasses", "gateways", "httproutes")  # the HTTPRoute and what a route's parentRefs name
FILES = tuple(f"gateway.networking.k8s.io_{plural}.yaml" for plural in KINDS)
CRD_NAMES = tuple(f"{plural}.gateway.networking.k8s.io" for plural in KINDS)


class GatewayAPIError(RuntimeError):
    """The CRDs could not be fetched or failed their checksum."""


def h1(archive: zipfile.ZipFile) -> str:
    """The Go checksum database's hash of a module zip (golang.org/x/mod/sumdb/dirhash Hash1)."""
    names = sorted(i.filename for i in archive.infolist() if not i.is_dir())
    lines = "".join(f"{hashlib.sha256(archive.read(n)).hexdigest()}  {n}\n" for n in names)
    return "h1:" + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode()


def _proxy() -> str:
    for entry in os.environ.get("GOPROXY", "").replace("|", ",").split(","):
        if entry.startswith(("https://", "http://")):
            return entry.rstrip("/")
    return "https://proxy.golang.org"


def crd_dir(*, fetch: bool = True) -> Path:
    """A folder holding ``FILES``: $LLMCTL_GATEWAY_API_DIR, else the cache, filled on first use (one 3.4 MB zip)."""
    env = os.environ.get("LLMCTL_GATEWAY_API_DIR")
    if env:
        missing = [f for f in FILES if not (Path(env) / f).is_file()]
        if missing:
            raise GatewayAPIError(f"LLMCTL_GATEWAY_API_DIR={env} lacks {', '.join(missing)}")
        return Path(env)
    target = cache_root() / "crds" / f"gateway-api-{VERSION}"
    if all((target / f).is_file() for f in FILES):
        return target
    if not fetch:
        raise GatewayAPIError(f"{target} lacks the Gateway API CRDs and fetching is disabled")
    url = f"{_proxy()}/{MODULE}/@v/{VERSION}.zip"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise GatewayAPIError(
            f"cannot download {url} ({exc}); put {', '.join(FILES)} from config/crd/standard/ of {MODULE} "
            f"{VERSION} in {target} or in a folder named by LLMCTL_GATEWAY_API_DIR"
        ) from exc
    archive = zipfile.ZipFile(io.BytesIO(data))
    got = h1(archive)
    if got != H1:
        raise GatewayAPIError(f"{url}: checksum {got} is not the go.sum hash {H1}; refusing it")
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        member = f"{MODULE}@{VERSION}/config/crd/standard/{name}"
        tmp = target / f"{name}.tmp"
        tmp.write_bytes(archive.read(member))
        tmp.replace(target / name)  # atomic: a half-written file never looks complete
    return target


def crd_paths(*, fetch: bool = True) -> list[Path]:
    folder = crd_dir(fetch=fetch)
    return [folder / f for f in FILES]


def load_crds(*, fetch: bool = True) -> list[dict[str, Any]]:
    """The CRD objects, ready to create (libyaml parses the 650 kB in 0.04 s, pure Python in 0.6 s)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [yaml.load(path.read_text(), Loader=loader) for path in crd_paths(fetch=fetch)]
