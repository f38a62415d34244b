"""Certificates for the local control plane, made with the openssl CLI (no Python crypto dependency)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _key(name: str, *, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key", cwd=cwd)


def _signed(name: str, *, subject: str, ext: str, cwd: Path) -> None:
    _key(name, cwd=cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=cwd)
    (cwd / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "365", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=cwd,
    )


def make_pki(dir_: Path) -> None:
    """CA, apiserver serving cert, admin client cert (system:masters) and the service-account key pair."""
    dir_.mkdir(parents=True, exist_ok=True)
    _key("ca", cwd=dir_)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=llmctl-local-ca", "-days", "365",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.crt", cwd=dir_,
    )
    _signed(
        "apiserver",
        subject="/CN=kube-apiserver",
        ext=(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,"
            "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
        ),
        cwd=dir_,
    )
    _signed(
        "admin",
        subject="/O=system:masters/CN=llmctl-admin",
        ext="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        cwd=dir_,
    )
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=dir_)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=dir_)
