"""`llm-fetch` inside the built runtime image, as the operator renders the fetch init container.

The init container of an LLMDeployment with an s3:// (and an hf://) model is rendered by the operator's own
builders; its image, command, args and env are run with `podman run` as 1000:1000 with every capability dropped
and no privilege escalation (the rendered securityContext), the Secret's keys given as environment variables
(what `envFrom` does), and the model volume a host folder owned by 1000:1000 (what fsGroup gives an emptyDir).
The container shares the host's network namespace (`--network host`) only to reach the test's servers on
127.0.0.1: moto's S3 server with IAM auth (SigV4 checked by botocore's signer) and the Hub protocol stand-in of
tests/runtime/fetch_servers.py. It talks to no other address. Not proven here: a kubelet running the init
container (podman is no kubelet: no emptyDir, no fsGroup), and the real S3 / Hub services.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_operator import api, builders, images

from tests.runtime.fetch_servers import Moto, StandIn, make_model, moto_server, tree

RUN_AS = f"{builders.RUN_AS_USER}:{builders.RUN_AS_USER}"


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=images.podman_env(), text=True, capture_output=True, check=check, timeout=timeout
    )


@pytest.fixture(scope="module")
def runtime_image() -> str:
    rows = images.build_all(["runtime"], log=False)
    image = builders.DEFAULT_IMAGES["python"]
    assert image in {str(r["image"]) for r in rows}, rows
    return image


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


def rendered_fetch(uri: str, secret: str) -> dict[str, Any]:
    llmd = api.parse({
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "f", "namespace": "default"},
        "spec": {"model": {"name": "m", "uri": uri, "secretRef": {"name": secret}}, "runtime": {"backend": "python"}},
    })
    out = builders.build_children(llmd, namespace="default", owner_uid="u", monitoring_crds=False)
    (dep,) = [c for c in out if c["kind"] == "Deployment"]
    (fetch,) = dep["spec"]["template"]["spec"]["initContainers"]
    return dict(fetch)


def run_init_container(fetch: dict[str, Any], volume: Path, secret: dict[str, str]) -> subprocess.CompletedProcess[str]:
    sec = fetch["securityContext"]
    assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"] == {"drop": ["ALL"]}
    (mount,) = fetch["volumeMounts"]
    env = [f"--env={e['name']}={e['value']}" for e in fetch["env"]]
    env += [f"--env={k}={v}" for k, v in secret.items()]
    return podman(
        "run", "--rm", f"--name=fetch-{uuid.uuid4().hex[:8]}", "--network=host", f"--user={RUN_AS}",
        "--cap-drop=ALL", "--security-opt=no-new-privileges", f"--volume={volume}:{mount['mountPath']}",
        *env, f"--entrypoint={fetch['command'][0]}", fetch["image"], *fetch["args"],
        check=False, timeout=180,
    )


def model_volume(tmp_path: Path) -> Path:
    volume = tmp_path / "model-volume"
    volume.mkdir(parents=True)
    os.chown(volume, builders.RUN_AS_USER, builders.RUN_AS_USER)
    return volume


def test_llm_fetch_in_the_runtime_image_fetches_from_s3_as_the_restricted_user(
    runtime_image: str, moto: Moto, tmp_path: Path
) -> None:
    fetch = rendered_fetch("s3://models/tiny", "s3-creds")
    assert fetch["image"] == runtime_image and fetch["command"] == ["llm-fetch"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    secret = {"AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key,
              "AWS_ENDPOINT_URL": moto.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    volume = model_volume(tmp_path)
    first = run_init_container(fetch, volume, secret)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "fetched s3://models/tiny into /mnt/model" in first.stdout
    assert tree(volume) == moto.files
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in volume.rglob("*")}
    assert owners == {(builders.RUN_AS_USER, builders.RUN_AS_USER)}, owners
    # The init container restarted (pod restart): nothing is fetched again.
    again = run_init_container(fetch, volume, secret)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    # A wrong secret: exit 1 and the one line the termination message carries.
    denied = run_init_container(fetch, model_volume(tmp_path / "b"), {**secret, "AWS_SECRET_ACCESS_KEY": "nope"})
    assert denied.returncode == 1
    assert denied.stderr.strip().splitlines()[-1].startswith(
        "llm-fetch: s3://models/tiny: access denied (HTTP 403 SignatureDoesNotMatch)"
    ), denied.stderr


def test_llm_fetch_in_the_runtime_image_speaks_the_hub_protocol(runtime_image: str, tmp_path: Path) -> None:
    files = make_model(tmp_path / "src")
    hub = StandIn("hf", files, repo="llmops/tiny", token="hf_secret")
    try:
        fetch = rendered_fetch("hf://llmops/tiny", "hf-token")
        volume = model_volume(tmp_path)
        proc = run_init_container(fetch, volume, {"HF_TOKEN": "hf_secret", "HF_ENDPOINT": hub.url})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert tree(volume) == files
    finally:
        hub.close()
