"""`llm-fetch`, the model pod's fetch init container, run for real (the installed console script, as a
subprocess) against servers on 127.0.0.1 only.

* s3://: moto's S3 server (`moto.server`, from `.venv/moto`) with IAM auth switched on after the setup: every
  request llm-fetch makes must carry an AWS SigV4 signature that moto recomputes with botocore's signer, from a
  key of an IAM user whose policy allows s3:ListBucket and s3:GetObject. What this does not prove: that AWS S3
  itself, MinIO or another store answers exactly as moto does (virtual-hosted addressing, region redirects,
  multipart ETags and real throughput were not exercised: no such store can be reached from here).
* hf:// and gs://: protocol stand-ins (tests/runtime/fetch_servers.py) implementing only the calls llm-fetch
  makes: the Hub's repo_info, recursive tree and resolve (HEAD/GET) endpoints as huggingface_hub's
  snapshot_download uses them, and the GCS JSON API's list and alt=media calls. No model can be downloaded from
  the real Hub or GCS here, so those services' real answers (redirects to a CDN, Xet storage, gated repos,
  OAuth scopes) are not covered.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.fetch_servers import FaultProxy, Moto, StandIn, make_model, moto_server, tree

LLM_FETCH = shutil.which("llm-fetch", path=str(Path(os.sys.executable).parent)) or "llm-fetch"

# Everything the store clients could pick up from the developer's environment is cleared.
_CLEARED = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT",
    "HF_HOME", "HF_HUB_OFFLINE", "GCS_OAUTH_TOKEN", "STORAGE_EMULATOR_HOST", "HTTP_PROXY", "HTTPS_PROXY",
    "http_proxy", "https_proxy",
)


def run_fetch(source: str, dest: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    full = {**base, "NO_PROXY": "127.0.0.1", "LLM_FETCH_BACKOFF_SECONDS": "0.05", **env}
    return subprocess.run([LLM_FETCH, source, str(dest)], env=full, capture_output=True, text=True, timeout=timeout)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, proc
    return lines[-1]


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


def s3_env(moto: Moto, **extra: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key,
            "AWS_ENDPOINT_URL": moto.endpoint, "AWS_REGION": "us-east-1", **extra}


# -------------------------------------------------------------------------------------------------- s3


def test_s3_fetches_the_model_byte_identical_and_a_second_run_is_a_no_op(moto: Moto, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    first = run_fetch("s3://models/tiny", dest, s3_env(moto))
    assert first.returncode == 0, first.stderr
    assert "fetched s3://models/tiny" in first.stdout
    # Every file, nested ones included; nothing from tiny-other/, no folder placeholder, no leftovers.
    assert tree(dest) == moto.files
    assert sorted(p.name for p in dest.iterdir()) == [".llm-fetch.json", "config.json", "model.safetensors",
                                                       "tokenizer"]
    marker = json.loads((dest / ".llm-fetch.json").read_text())
    assert marker["source"] == "s3://models/tiny"
    assert marker["files"] == len(moto.files)
    assert marker["bytes"] == sum(len(b) for b in moto.files.values())
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}

    # A restarted init container: the store is not even asked (a wrong key would fail otherwise).
    second = run_fetch("s3://models/tiny", dest, s3_env(moto, AWS_SECRET_ACCESS_KEY="wrong"))
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before


def test_s3_an_interrupted_fetch_starts_over(moto: Moto, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    (dest / ".partial" / "tokenizer").mkdir(parents=True)
    (dest / ".partial" / "config.json").write_bytes(b"half")
    (dest / "stale.bin").write_bytes(b"moved before the crash")
    proc = run_fetch("s3://models/tiny/", dest, s3_env(moto))
    assert proc.returncode == 0, proc.stderr
    assert tree(dest) == moto.files


def test_s3_wrong_secret_is_a_clear_403(moto: Moto, tmp_path: Path) -> None:
    proc = run_fetch("s3://models/tiny", tmp_path / "m", s3_env(moto, AWS_SECRET_ACCESS_KEY="not-the-secret"))
    assert proc.returncode == 1
    line = error_line(proc)
    assert line.startswith("llm-fetch: s3://models/tiny: access denied (HTTP 403 SignatureDoesNotMatch)"), line
    assert "AWS_SECRET_ACCESS_KEY" in line and "spec.model.secretRef" in line
    assert not any((tmp_path / "m").iterdir()) or [p.name for p in (tmp_path / "m").iterdir()] == [".partial"]


def test_s3_unknown_key_is_a_clear_403(moto: Moto, tmp_path: Path) -> None:
    proc = run_fetch("s3://models/tiny", tmp_path / "m", s3_env(moto, AWS_ACCESS_KEY_ID="AKIAUNKNOWN000000000"))
    assert proc.returncode == 1
    assert "access denied (HTTP 403 InvalidAccessKeyId)" in error_line(proc)


def test_s3_missing_bucket_and_empty_prefix(moto: Moto, tmp_path: Path) -> None:
    proc = run_fetch("s3://no-such-bucket/tiny", tmp_path / "a", s3_env(moto))
    assert proc.returncode == 1
    assert error_line(proc) == (
        "llm-fetch: s3://no-such-bucket/tiny: bucket 'no-such-bucket' does not exist (HTTP 404 NoSuchBucket); "
        "check spec.model.uri"
    )
    proc = run_fetch("s3://models/nothing-here", tmp_path / "b", s3_env(moto))
    assert proc.returncode == 1
    assert error_line(proc) == (
        "llm-fetch: no objects under s3://models/nothing-here/: check the bucket and prefix in spec.model.uri"
    )


def test_s3_a_dotdot_key_is_refused_and_nothing_lands_outside(moto: Moto, tmp_path: Path) -> None:
    dest = tmp_path / "inside" / "model"
    proc = run_fetch("s3://evil/m", dest, s3_env(moto))
    assert proc.returncode == 1
    line = error_line(proc)
    assert "refusing object '../escape.txt'" in line, line
    assert not (tmp_path / "inside" / "escape.txt").exists()
    assert not list(tmp_path.rglob("escape.txt"))
    assert not (dest / ".llm-fetch.json").exists()


def test_s3_server_errors_are_retried(moto: Moto, tmp_path: Path) -> None:
    # The first three requests (the listing and its two retries) get HTTP 500; then the proxy passes through.
    proxy = FaultProxy(moto.endpoint, fail=3)
    try:
        proc = run_fetch("s3://models/tiny", tmp_path / "m", s3_env(moto, AWS_ENDPOINT_URL=proxy.url))
    finally:
        proxy.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("HTTP 500") == 3
    assert "retrying in" in proc.stderr
    assert [s for s, _ in proxy.seen[:4]] == [500, 500, 500, 200]
    assert tree(tmp_path / "m") == moto.files


def test_s3_retries_are_bounded(moto: Moto, tmp_path: Path) -> None:
    proxy = FaultProxy(moto.endpoint, fail=100)
    try:
        proc = run_fetch("s3://models/tiny", tmp_path / "m", s3_env(moto, AWS_ENDPOINT_URL=proxy.url,
                                                                     LLM_FETCH_RETRIES="3"))
    finally:
        proxy.close()
    assert proc.returncode == 1
    assert len(proxy.seen) == 3
    assert error_line(proc).endswith("HTTP 500 from " + proxy.url + "; gave up after 3 attempts")


def test_a_foreign_non_empty_dest_is_not_touched(moto: Moto, tmp_path: Path) -> None:
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / "precious.txt").write_text("mine")
    proc = run_fetch("s3://models/tiny", dest, s3_env(moto))
    assert proc.returncode == 1
    assert "is not empty and holds no earlier llm-fetch download" in error_line(proc)
    assert (dest / "precious.txt").read_text() == "mine"


# -------------------------------------------------------------------------------------------------- hf


@pytest.fixture
def model_files(tmp_path: Path) -> dict[str, bytes]:
    return make_model(tmp_path / "src")


def test_hf_snapshot_through_the_hub_protocol(model_files: dict[str, bytes], tmp_path: Path) -> None:
    hub = StandIn("hf", model_files, repo="llmops/tiny", token="hf_secret", fail=1)
    try:
        dest = tmp_path / "model"
        proc = run_fetch("hf://llmops/tiny:main", dest, {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_secret"})
        assert proc.returncode == 0, proc.stderr
        assert tree(dest) == model_files
        assert not (dest / ".cache").exists()
        assert json.loads((dest / ".llm-fetch.json").read_text())["source"] == "hf://llmops/tiny:main"
        assert any(r.startswith("GET /api/models/llmops/tiny/revision/main") for r in hub.requests)
        again = run_fetch("hf://llmops/tiny:main", dest, {"HF_ENDPOINT": hub.url})
        assert again.returncode == 0 and "nothing to do" in again.stdout

        bad = run_fetch("hf://llmops/tiny", tmp_path / "b", {"HF_ENDPOINT": hub.url, "HF_TOKEN": "wrong"})
        assert bad.returncode == 1
        line = error_line(bad)
        assert line.startswith("llm-fetch: hf://llmops/tiny: ") and "HF_TOKEN" in line, line
    finally:
        hub.close()


def test_hf_missing_repo_and_revision(model_files: dict[str, bytes], tmp_path: Path) -> None:
    hub = StandIn("hf", model_files, repo="llmops/tiny")
    try:
        proc = run_fetch("hf://llmops/nope", tmp_path / "a", {"HF_ENDPOINT": hub.url})
        assert proc.returncode == 1
        assert error_line(proc).startswith("llm-fetch: hf://llmops/nope: repository 'llmops/nope' not found"), proc
        proc = run_fetch("hf://llmops/tiny:v9", tmp_path / "b", {"HF_ENDPOINT": hub.url})
        assert proc.returncode == 1
        assert error_line(proc) == "llm-fetch: hf://llmops/tiny:v9: revision 'v9' not found; check spec.model.revision"
    finally:
        hub.close()


def test_hf_a_dotdot_file_is_refused(model_files: dict[str, bytes], tmp_path: Path) -> None:
    hub = StandIn("hf", {**model_files, "../escape.txt": b"outside"}, repo="llmops/tiny")
    try:
        dest = tmp_path / "inside" / "model"
        proc = run_fetch("hf://llmops/tiny", dest, {"HF_ENDPOINT": hub.url})
        assert proc.returncode == 1
        line = error_line(proc)
        assert line.startswith("llm-fetch: hf://llmops/tiny: refusing the repository: ") and "'..'" in line, line
        assert not list(tmp_path.rglob("escape.txt"))
        assert not (dest / ".llm-fetch.json").exists()
    finally:
        hub.close()


# -------------------------------------------------------------------------------------------------- gs


def test_gcs_paged_listing_md5_and_token(model_files: dict[str, bytes], tmp_path: Path) -> None:
    gcs = StandIn("gs", model_files, bucket="models", prefix="tiny", token="ya29.token", fail=2)
    try:
        host = gcs.url.removeprefix("http://")  # as Google's libraries take it: host:port, no scheme
        dest = tmp_path / "model"
        proc = run_fetch("gs://models/tiny", dest, {"STORAGE_EMULATOR_HOST": host, "GCS_OAUTH_TOKEN": "ya29.token"})
        assert proc.returncode == 0, proc.stderr
        assert tree(dest) == model_files
        assert proc.stderr.count("HTTP 500") == 2
        assert sum("pageToken=" in r for r in gcs.requests) == len(model_files) - 1

        anon = run_fetch("gs://models/tiny", tmp_path / "a", {"STORAGE_EMULATOR_HOST": host})
        assert anon.returncode == 1
        assert "the request was anonymous" in error_line(anon) and "GCS_OAUTH_TOKEN" in error_line(anon)
        missing = run_fetch("gs://other/tiny", tmp_path / "b",
                            {"STORAGE_EMULATOR_HOST": host, "GCS_OAUTH_TOKEN": "ya29.token"})
        assert missing.returncode == 1
        assert "bucket 'other' or object not found (HTTP 404" in error_line(missing)
    finally:
        gcs.close()


def test_unsupported_scheme_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_fetch("oci://registry/model:1", tmp_path / "m", {})
    assert proc.returncode == 1
    assert "oci:// and pvc:// are mounted, not fetched" in error_line(proc)
