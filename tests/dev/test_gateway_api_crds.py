"""Fetching and caching the Gateway API CRDs for the local cluster (llm_operator.dev._gateway_api), offline."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from llm_operator.dev import _gateway_api as gw


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


class _Resp(io.BytesIO):
    def __enter__(self) -> _Resp:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def test_h1_is_the_go_dirhash() -> None:
    # golang.org/x/mod/sumdb/dirhash Hash1: sha256 of "<sha256 hex>  <name>\n" lines sorted by name, base64.
    # (On the real v1.7.0 zip it gives the go.sum hash that sum.golang.org publishes, the pinned gw.H1.)
    archive = zipfile.ZipFile(io.BytesIO(_zip({"m@v1/b": b"2", "m@v1/a": b"1"})))
    assert gw.h1(archive) == "h1:QufLy/48+BThzdO2gXBh/HFG76rHkQJ64wvt14glg5A="


def test_a_zip_that_is_not_the_pinned_module_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMCTL_GATEWAY_API_DIR", raising=False)
    monkeypatch.setenv("GOPROXY", "https://mirror.invalid/go,direct")
    fake = {f"{gw.MODULE}@{gw.VERSION}/config/crd/standard/{n}": b"kind: Evil\n" for n in gw.FILES}
    urls: list[str] = []

    def urlopen(url: str, timeout: float) -> _Resp:
        urls.append(url)
        return _Resp(_zip(fake))

    monkeypatch.setattr(gw.urllib.request, "urlopen", urlopen)
    with pytest.raises(gw.GatewayAPIError, match=r"is not the go\.sum hash"):
        gw.crd_dir()
    assert urls == [f"https://mirror.invalid/go/{gw.MODULE}/@v/{gw.VERSION}.zip"]  # $GOPROXY's first URL
    assert not (tmp_path / "crds" / f"gateway-api-{gw.VERSION}").exists()


def test_offline_without_a_cache_says_how_to_provide_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMCTL_GATEWAY_API_DIR", raising=False)

    def urlopen(url: str, timeout: float) -> _Resp:
        raise OSError("network is unreachable")

    monkeypatch.setattr(gw.urllib.request, "urlopen", urlopen)
    with pytest.raises(gw.GatewayAPIError, match="LLMCTL_GATEWAY_API_DIR"):
        gw.crd_dir()
    with pytest.raises(gw.GatewayAPIError, match="fetching is disabled"):
        gw.crd_dir(fetch=False)


def test_a_complete_cache_or_folder_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMCTL_GATEWAY_API_DIR", raising=False)
    cached = tmp_path / "crds" / f"gateway-api-{gw.VERSION}"
    cached.mkdir(parents=True)
    for name in gw.FILES:
        (cached / name).write_text(f"kind: CustomResourceDefinition\nmetadata: {{name: {name}}}\n")
    assert gw.crd_dir(fetch=False) == cached
    assert [c["metadata"]["name"] for c in gw.load_crds(fetch=False)] == list(gw.FILES)
    own = tmp_path / "own"
    own.mkdir()
    monkeypatch.setenv("LLMCTL_GATEWAY_API_DIR", str(own))
    with pytest.raises(gw.GatewayAPIError, match="lacks"):
        gw.crd_dir()
    for name in gw.FILES:
        (own / name).write_text("{}")
    assert gw.crd_dir() == own
