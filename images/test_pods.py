"""Real pods: the operator's rendered ConfigMap + Deployment for a CPU LLMDeployment, run by `podman kube play`.

Not part of `make test` (the runtime image is a multi-GB build on an empty cache): `make images-test` runs it.
Run with `-s` to see the figures (start to Ready, request latency, drain). Everything listens on the podman
bridge (10.88.0.0/16) inside the machine, never on a public address.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_operator import images
from llm_operator.builders import render_file

pytestmark = pytest.mark.xdist_group("podman")

EXIT_TIMEOUT = 20


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=images.podman_env(), text=True, capture_output=True, check=check, timeout=timeout
    )


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def _post(url: str, body: dict[str, Any], timeout: float = 60) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


LLMD = """
apiVersion: serving.llmops.dev/v1alpha1
kind: LLMDeployment
metadata:
  name: {name}
  namespace: default
spec:
  model:
    name: tiny
    pvc:
      claimName: {claim}
  runtime:
    backend: python
    maxBatchSize: 4
    maxQueueSize: 16
    dtype: float32
    exitTimeoutSeconds: {exit_timeout}
  resources:
    cpu: "1"
    memory: 2Gi
    sharedMemory: 256Mi
  replicas: 1
"""


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    rows = images.build_all(["runtime"], log=False)
    return {str(r["image"]): r for r in rows}


@pytest.fixture(scope="module")
def model_volume(built: dict[str, Any]) -> Iterator[str]:
    """A podman volume holding a tiny random-weight model: what podman gives a `persistentVolumeClaim` of that
    name (kube play maps claimName to a named volume)."""
    from llm_runtime.tiny import create_tiny_model

    claim = f"tiny-model-{uuid.uuid4().hex[:6]}"
    podman("volume", "create", claim)
    try:
        mountpoint = Path(podman("volume", "inspect", claim, "--format", "{{.Mountpoint}}").stdout.strip())
        create_tiny_model(mountpoint)
        for p in [mountpoint, *mountpoint.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        yield claim
    finally:
        podman("volume", "rm", "-f", claim, check=False)


# What podman 4.3's `kube play` cannot express, and what this test does instead (docs/images.md lists them all):
# * emptyDir: podman makes an anonymous volume owned by root, mode 0755, and ignores fsGroup; Kubernetes makes
#   it 0777. The non-root server cannot write /tmp or /dev/shm (the python backend's shared memory) there. The
#   test turns each emptyDir into a hostPath on a fresh mode-1777 folder (under /dev/shm for medium: Memory).
# * configMap items with a path in a subfolder (`tiny/config.pbtxt`): podman writes the files into a volume
#   named after the ConfigMap but does not create the subfolders. The test creates that volume and its
#   subfolders first; podman then fills it.
def _manifests(tmp: Path, name: str, claim: str) -> tuple[Path, dict[str, Any], list[str]]:
    src = tmp / "llmd.yaml"
    src.write_text(LLMD.format(name=name, claim=claim, exit_timeout=EXIT_TIMEOUT))
    docs = [d for d in yaml.safe_load_all(render_file(str(src))) if d]
    keep = [d for d in docs if d["kind"] in ("ConfigMap", "Deployment")]
    assert [d["kind"] for d in keep] == ["ConfigMap", "Deployment"], [d["kind"] for d in docs]
    rendered = json.loads(json.dumps(keep[1]))
    made: list[str] = []
    for volume in keep[1]["spec"]["template"]["spec"]["volumes"]:
        if "emptyDir" in volume:
            memory = volume["emptyDir"].get("medium") == "Memory"
            folder = Path("/dev/shm" if memory else tmp) / f"{name}-{volume['name']}"
            folder.mkdir()
            folder.chmod(0o1777)
            made.append(str(folder))
            volume.pop("emptyDir")
            volume["hostPath"] = {"path": str(folder), "type": "Directory"}
        elif "configMap" in volume:
            cm = volume["configMap"]["name"]
            podman("volume", "create", cm)
            made.append(f"volume:{cm}")
            root = Path(podman("volume", "inspect", cm, "--format", "{{.Mountpoint}}").stdout.strip())
            for item in volume["configMap"]["items"]:
                (root / item["path"]).parent.mkdir(parents=True, exist_ok=True)
    out = tmp / "kube.yaml"
    out.write_text(yaml.safe_dump_all(keep, sort_keys=False))
    return out, rendered, made


class Pod:
    def __init__(self, kube: Path, deployment: dict[str, Any]) -> None:
        self.kube = kube
        self.deployment = deployment
        self.play_output = ""
        self.started = 0.0
        self.pod = ""
        self.container = ""
        self.ip = ""

    def play(self) -> None:
        self.started = time.monotonic()
        out = podman("kube", "play", str(self.kube))
        self.play_output = out.stdout + out.stderr
        name = self.deployment["metadata"]["name"]
        # kube play names a Deployment's pod <name>-pod-0 (podman 4.3) and its containers <pod>-<container>.
        pods = json.loads(podman("pod", "ps", "--format", "json", "--filter", f"name={name}").stdout)
        assert len(pods) == 1, pods
        self.pod = pods[0]["Name"]
        self.container = f"{self.pod}-triton"
        info = json.loads(podman("inspect", pods[0]["InfraId"]).stdout)[0]
        # kube play puts pods on its own bridge (podman-default-kube-network, 10.89.0.0/24 here).
        networks = info["NetworkSettings"]["Networks"]
        assert len(networks) == 1, networks
        self.ip = next(iter(networks.values()))["IPAddress"]
        assert re.match(r"^10\.", self.ip), self.ip

    def url(self, port: int, path: str) -> str:
        return f"http://{self.ip}:{port}{path}"

    def logs(self) -> str:
        out = podman("logs", self.container, check=False)
        return out.stdout + out.stderr

    def down(self) -> None:
        podman("kube", "down", str(self.kube), check=False, timeout=120)


def _cleanup(made: list[str]) -> None:
    for thing in made:
        if thing.startswith("volume:"):
            podman("volume", "rm", "-f", thing.removeprefix("volume:"), check=False)
        else:
            shutil.rmtree(thing, ignore_errors=True)


@pytest.fixture(scope="module")
def pod(model_volume: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    tmp = tmp_path_factory.mktemp("pod")
    kube, deployment, made = _manifests(tmp, f"tiny-{uuid.uuid4().hex[:6]}", model_volume)
    p = Pod(kube, deployment)
    try:
        p.play()
        print(f"\nkube play said: {p.play_output.strip()}")
        healthcheck = json.loads(podman("inspect", p.container).stdout)[0]["Config"].get("Healthcheck")
        print(f"podman healthcheck made from the probes: {healthcheck}")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status, _ = _get(p.url(8000, "/v2/health/ready"), timeout=2)
            if status == 200:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"pod never became ready; logs:\n{p.logs()[-4000:]}")
        p.ready_s = time.monotonic() - p.started  # type: ignore[attr-defined]
        print(f"\nFIGURE pod start (kube play) to Ready: {p.ready_s:.1f}s")  # type: ignore[attr-defined]
        yield p
    finally:
        p.down()
        _cleanup(made)


def test_pod_runs_rendered_manifests_and_model_loads_from_configmap(pod: Pod) -> None:
    logs = pod.logs()
    assert re.search(r"successfully loaded 'tiny'", logs), logs[-3000:]
    status, body = _get(pod.url(8000, "/v2/models/tiny/config"))
    assert status == 200 and json.loads(body)["backend"] == "python", body
    # The model directory the operator rendered into config.pbtxt is the volume mount.
    assert '"/mnt/model"' in body


def test_probe_endpoints_answer_as_the_probes_expect(pod: Pod) -> None:
    container = pod.deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        status, _ = _get(pod.url(ports[get["port"]], get["path"]))
        assert status == 200, (probe, get)


def test_generate_and_llm_metrics(pod: Pod) -> None:
    t0 = time.monotonic()
    status, body = _post(pod.url(8000, "/v2/models/tiny/generate"),
                         {"text_input": "Hello", "max_tokens": 16, "temperature": 0})
    latency = time.monotonic() - t0
    assert status == 200, body
    out = json.loads(body)
    assert out["finish_reason"] in ("length", "stop") and int(out["completion_tokens"]) >= 1
    print(f"\nFIGURE generate 16 tokens through the pod's port 8000: {latency * 1000:.0f} ms")
    # The reporter thread publishes every 100 ms and Triton refreshes its metrics page on its own period.
    deadline = time.monotonic() + 15
    while True:
        status, metrics = _get(pod.url(8002, "/metrics"))
        assert status == 200
        tokens = re.search(r'^llm_generation_tokens_total\{[^}]*model="tiny"[^}]*\} (\S+)', metrics, re.M)
        if (tokens and float(tokens[1]) >= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert tokens and float(tokens[1]) >= 1, metrics[-2000:]
    for series in ("llm_queue_depth", "llm_running_requests", "llm_generation_tokens_total",
                   "llm_time_to_first_token_seconds_bucket", "nv_inference_request_success"):
        assert re.search(rf"^{series}\{{", metrics, re.M), series


def test_security_context_in_force(pod: Pod) -> None:
    probe = (
        "import os; s = open('/proc/self/status').read(); "
        "f = {l.split(':')[0]: l.split(':')[1].strip() for l in s.splitlines() if ':' in l}; "
        "print(os.getuid(), os.getgid(), f['NoNewPrivs'], f['CapEff'], f['CapBnd'], f['Seccomp'])"
    )
    out = podman("exec", pod.container, "python3", "-c", probe).stdout.split()
    uid, gid, no_new_privs, cap_eff, cap_bnd, seccomp = out
    assert (uid, gid) == ("1000", "1000")
    assert no_new_privs == "1"  # allowPrivilegeEscalation: false
    assert int(cap_eff, 16) == 0 and int(cap_bnd, 16) == 0  # capabilities: drop ALL
    assert seccomp == "2"  # filter mode: RuntimeDefault
    # tritonserver itself (PID 1 of the container) runs as the same user.
    status = podman("exec", pod.container, "python3", "-c", "print(open('/proc/1/status').read())").stdout
    assert re.search(r"^Uid:\s+1000\s", status, re.M), status


def test_openai_front_as_second_process_answers_the_official_client(pod: Pod) -> None:
    """The runtime image's OpenAI front (`python -m llm_runtime.openai_server`) started as a second process in
    the server's container, as the pod would run it: the official `openai` client through the pod's network.
    The operator does not render it yet (docs/images.md)."""
    from openai import OpenAI

    podman("exec", "-d", pod.container, "python3", "-m", "llm_runtime.openai_server", "--model-dir=/mnt/model",
           "--model-name=tiny", "--host=0.0.0.0", "--port=9000")
    deadline = time.monotonic() + 60
    while _get(pod.url(9000, "/health"), timeout=2)[0] != 200:
        assert time.monotonic() < deadline, pod.logs()[-2000:]
        time.sleep(0.5)
    client = OpenAI(base_url=pod.url(9000, "/v1"), api_key="unused", timeout=60)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    t0 = time.monotonic()
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=16, temperature=0, seed=7
    )
    latency = time.monotonic() - t0
    assert chat.choices[0].finish_reason in ("length", "stop") and chat.usage and chat.usage.completion_tokens >= 1
    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=16, temperature=0, seed=7,
        stream=True,
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content
    print(f"\nFIGURE OpenAI chat completion (16 tokens) through the pod's port 9000: {latency * 1000:.0f} ms")


def test_sigterm_drains_in_flight_requests_within_grace_period(pod: Pod) -> None:
    grace = pod.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    results: list[dict[str, Any]] = []

    def long_request() -> None:
        t0 = time.monotonic()
        status, body = _post(
            pod.url(8000, "/v2/models/tiny/generate"),
            {"text_input": "K", "max_tokens": 480, "ignore_eos": True, "temperature": 0}, timeout=120,
        )
        results.append({"status": status, "body": body, "seconds": time.monotonic() - t0})

    # The tiny model is fast: 16 requests (4 in the batch, 12 queued) keep it busy for a few seconds.
    workers = [threading.Thread(target=long_request) for _ in range(16)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    in_flight = sum(w.is_alive() for w in workers)
    assert in_flight >= 4, results
    t0 = time.monotonic()
    # What the kubelet does after the preStop hook: SIGTERM, then SIGKILL when the grace period is over.
    podman("stop", "-t", str(grace), pod.container, timeout=grace + 30)
    drain = time.monotonic() - t0
    for w in workers:
        w.join(60)
    state = json.loads(podman("inspect", pod.container).stdout)[0]["State"]
    print(f"\nFIGURE SIGTERM to exit with {in_flight} requests in flight: {drain:.1f}s (grace {grace}s); "
          f"slowest request {max(r['seconds'] for r in results):.1f}s")
    assert len(results) == 16
    for r in results:
        assert r["status"] == 200, r
        out = json.loads(r["body"])
        assert int(out["completion_tokens"]) == 480 and out["finish_reason"] == "length"
    assert drain < grace and state["ExitCode"] == 0, (drain, state, pod.logs()[-2000:])


def test_empty_model_volume_fails_the_load_with_a_clear_log_line(
    built: dict[str, Any], tmp_path: Path
) -> None:
    """The same rendered pod on an empty volume: tritonserver exits, the pod never becomes ready, and the log
    says what is wrong (in a cluster: the startup probe fails and the container restarts)."""
    claim = f"empty-model-{uuid.uuid4().hex[:6]}"
    podman("volume", "create", claim)
    kube, deployment, made = _manifests(tmp_path, f"empty-{uuid.uuid4().hex[:6]}", claim)
    p = Pod(kube, deployment)
    try:
        p.play()
        deadline = time.monotonic() + 120
        # Wait for tritonserver's last line: the stub's own error is logged a moment before Triton's summary.
        while "failed to load all models" not in p.logs() and time.monotonic() < deadline:
            assert _get(p.url(8000, "/v2/health/ready"), timeout=2)[0] != 200
            time.sleep(1)
        logs = p.logs()
        assert re.search(
            r"failed to load 'tiny'.*model directory /mnt/model has no config.json \(found: nothing\): the model "
            r"volume is empty", logs), logs[-3000:]
        assert "error: creating server: Internal - failed to load all models" in logs
        assert _get(p.url(8000, "/v2/health/ready"), timeout=2)[0] != 200
    finally:
        p.down()
        _cleanup([*made, f"volume:{claim}"])
