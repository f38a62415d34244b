"""Certificates for the local control plane, made with the openssl CLI (no Python crypto dependency)."""

from __future__ import annotations

import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _key(name: str, *, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key", cwd=cwd)


def _signed(name: str, *, subject: str, ext: str, cwd: Path, ca: str = "ca") -> None:
    _key(name, cwd=cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=cwd)
    (cwd / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        # A random serial instead of -CAcreateserial: certs are signed in parallel and would race on ca.srl.
        "-set_serial", f"0x{secrets.token_hex(16)}",
        "-days", "365", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=cwd,
    )


def _ca(name: str, *, cn: str, cwd: Path) -> None:
    _key(name, cwd=cwd)
    _openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-days", "365",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", f"{name}.crt", cwd=cwd,
    )


CLIENT_EXT = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
# The user the aggregator presents to aggregated API servers; they trust it by CA *and* by this name
# (--requestheader-allowed-names), so another cert from the front-proxy CA cannot impersonate users.
FRONT_PROXY_CLIENT_CN = "front-proxy-client"
ADAPTER_USER = "llmctl:prometheus-adapter"


def make_pki(dir_: Path, *, adapter_service_dns: str = "prometheus-adapter.llmops-monitoring.svc") -> None:
    """CA, apiserver serving cert, admin client cert (system:masters), the service-account key pair, the
    aggregation layer's front-proxy CA and client cert, and prometheus-adapter's client and serving certs.

    The adapter's serving cert names both ``localhost`` (where it really listens) and the Service DNS name,
    because the aggregator verifies an APIService backend against ``<service>.<namespace>.svc``.
    """
    dir_.mkdir(parents=True, exist_ok=True)
    # openssl calls are ~20-50 ms each and mostly independent: running them in parallel keeps `dev up` fast.
    with ThreadPoolExecutor(max_workers=8) as pool:
        sa = pool.submit(_service_account_keys, dir_)
        front_proxy = pool.submit(_front_proxy, dir_)
        _ca("ca", cn="llmctl-local-ca", cwd=dir_)
        leaves = [
            pool.submit(
                _signed,
                "apiserver",
                subject="/CN=kube-apiserver",
                ext=(
                    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,"
                    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
                ),
                cwd=dir_,
            ),
            pool.submit(_signed, "admin", subject="/O=system:masters/CN=llmctl-admin", ext=CLIENT_EXT, cwd=dir_),
            pool.submit(_signed, "prometheus-adapter-client", subject=f"/CN={ADAPTER_USER}", ext=CLIENT_EXT,
                        cwd=dir_),
            pool.submit(
                _signed,
                "prometheus-adapter-serving",
                subject="/CN=prometheus-adapter",
                ext=(
                    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    f"subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:{adapter_service_dns}\n"
                ),
                cwd=dir_,
            ),
        ]
        for future in [sa, front_proxy, *leaves]:
            future.result()


def _front_proxy(dir_: Path) -> None:
    _ca("front-proxy-ca", cn="llmctl-front-proxy-ca", cwd=dir_)
    _signed("front-proxy-client", subject=f"/CN={FRONT_PROXY_CLIENT_CN}", ext=CLIENT_EXT, cwd=dir_,
            ca="front-proxy-ca")


def _service_account_keys(dir_: Path) -> None:
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=dir_)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=dir_)
