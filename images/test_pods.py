"""Real pods: the operator's rendered ConfigMap + Deployment for a CPU LLMDeployment, run by `podman kube play`.

Part of `make test`, which builds the images first (`make images`: minutes and a multi-GB runtime image on an
empty cache, nothing when the tree is unchanged); `make images-test` runs only these. Run with `-s` to see the
figures (start to Ready, request latency, drain). The test publishes every container port on 127.0.0.1 only
(hostPort + hostIP) and talks to the pod there, never to the podman bridge's address.
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

# One module, one worker: every test shares the module's pod. The closed-loop test needs the dev cluster, so the
# module runs on the second cluster's worker (e2e/pytest_plugin.py CLUSTER_OF_MODULE).
pytestmark = pytest.mark.cluster

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
    servedModelName: llmops/tiny-random
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
# * ports: kube play's pod sits on a podman bridge; the test adds hostPort (a free port) and hostIP 127.0.0.1 to
#   each containerPort, so every request goes to 127.0.0.1 (a kubelet has no hostPort unless asked).
# * configMap items with a path in a subfolder (`tiny/config.pbtxt`): podman writes the files into a volume
#   named after the ConfigMap but does not create the subfolders. The test creates that volume and its
#   subfolders first; podman then fills it.
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    for container in keep[1]["spec"]["template"]["spec"]["containers"]:
        for port in container.get("ports", []):
            port["hostPort"] = _free_port()
            port["hostIP"] = "127.0.0.1"
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
        self.front = ""
        self.ports: dict[int, int] = {}

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
        self.front = f"{self.pod}-openai"
        played = yaml.safe_load_all(self.kube.read_text())
        deploy = next(d for d in played if d["kind"] == "Deployment")
        self.ports = {p["containerPort"]: p["hostPort"]
                      for c in deploy["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}

    def url(self, port: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def logs(self, container: str = "") -> str:
        out = podman("logs", container or self.container, check=False)
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
        # Ready as the kubelet sees it: both containers' readiness probes answer 200.
        while time.monotonic() < deadline:
            triton = _get(p.url(8000, "/v2/health/ready"), timeout=2)[0]
            front = _get(p.url(9000, "/health"), timeout=2)[0]
            if triton == front == 200:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"pod never became ready; logs:\n{p.logs()[-3000:]}\n{p.logs(p.front)[-2000:]}")
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
    containers = pod.deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["triton", "openai"]
    checked = []
    for container in containers:
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe not in container:
                continue
            get = container[probe]["httpGet"]
            status, _ = _get(pod.url(ports[get["port"]], get["path"]))
            assert status == 200, (container["name"], probe, get)
            checked.append((container["name"], probe))
    assert len(checked) == 4, checked


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
    for container in (pod.container, pod.front):
        out = podman("exec", container, "python3", "-c", probe).stdout.split()
        uid, gid, no_new_privs, cap_eff, cap_bnd, seccomp = out
        assert (uid, gid) == ("1000", "1000")
        assert no_new_privs == "1"  # allowPrivilegeEscalation: false
        assert int(cap_eff, 16) == 0 and int(cap_bnd, 16) == 0  # capabilities: drop ALL
        assert seccomp == "2"  # filter mode: RuntimeDefault
        # tritonserver and the front themselves (PID 1 of each container) run as the same user.
        status = podman("exec", container, "python3", "-c", "print(open('/proc/1/status').read())").stdout
        assert re.search(r"^Uid:\s+1000\s", status, re.M), status


def test_the_openai_container_answers_the_official_client_with_the_served_model_id(pod: Pod) -> None:
    """The rendered `openai` container, unchanged: the official `openai` client through the pod's port 9000,
    with the Hugging Face style id (a slash) that spec.model.servedModelName gives, mapped to Triton's `tiny`."""
    from openai import NotFoundError, OpenAI

    client = OpenAI(base_url=pod.url(9000, "/v1"), api_key="unused", timeout=60)
    assert [m.id for m in client.models.list().data] == ["llmops/tiny-random"]
    t0 = time.monotonic()
    chat = client.chat.completions.create(
        model="llmops/tiny-random", messages=[{"role": "user", "content": "Hi"}], max_tokens=16, temperature=0,
        seed=7,
    )
    latency = time.monotonic() - t0
    assert chat.model == "llmops/tiny-random"
    assert chat.choices[0].finish_reason in ("length", "stop") and chat.usage and chat.usage.completion_tokens >= 1
    chunks = list(client.chat.completions.create(
        model="llmops/tiny-random", messages=[{"role": "user", "content": "Hi"}], max_tokens=16, temperature=0,
        seed=7, stream=True,
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content
    completion = client.completions.create(model="llmops/tiny-random", prompt="Hello", max_tokens=8)
    assert completion.choices[0].text is not None and completion.usage and completion.usage.completion_tokens >= 1
    with pytest.raises(NotFoundError, match="llmops/tiny-random"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
    print(f"\nFIGURE OpenAI chat completion (16 tokens) through the pod's openai port 9000: {latency * 1000:.0f} ms")


@pytest.mark.cluster
def test_one_real_replica_in_the_closed_loop(pod: Pod, cluster: Any, namespace: str) -> None:
    """The dev cluster's real Prometheus scrapes this real pod (Triton's :8002 and the front's :9000, both on
    127.0.0.1) as the cluster pod it stands for; load sent through the OpenAI port raises llm_queue_depth and the
    token rate, and the values come back through custom.metrics.k8s.io, where an HPA reads them."""
    from llm_operator.dev import _metrics_stack as ms
    from openai import OpenAI

    from e2e.pytest_plugin import wait_for
    from tests.e2e.test_metrics_bed import custom_metric, promql

    stand_in = "real-replica-0"
    # The Pod object the adapter answers for (kwok keeps it; no emulated series: it has no model-server label).
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": stand_in, "namespace": namespace, "labels": {"app": "real-replica"}},
        "spec": {"containers": [{"name": "triton", "image": "ghcr.io/llmops-dev/triton-llm-runtime:real"}]},
    }))
    targets = cluster.kubeconfig.parent / "prometheus" / ms.TARGETS_DIR
    assert targets.is_dir(), targets
    target_file = targets / f"{namespace}.json"
    target_file.write_text(json.dumps([{
        "targets": [f"127.0.0.1:{pod.ports[8002]}", f"127.0.0.1:{pod.ports[9000]}"],
        "labels": {"namespace": namespace, "pod": stand_in, "revision": "rreal00000"},
    }]))
    try:
        # Both targets: Triton's metrics and the front's.
        wait_for(lambda: len([r for r in promql(cluster, f'up{{job="{ms.REAL_PODS_JOB}",pod="{stand_in}"}}')
                              if r["value"][1] == "1"]) == 2, timeout=60, what="Prometheus scraping both ports")
        client = OpenAI(base_url=pod.url(9000, "/v1"), api_key="unused", timeout=120, max_retries=0)
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    client.completions.create(model="llmops/tiny-random", prompt="K", max_tokens=200,
                                              extra_body={"ignore_eos": True})
                except Exception:
                    time.sleep(0.1)

        # maxBatchSize 4: twelve clients keep four decoding and up to eight waiting.
        workers = [threading.Thread(target=load, daemon=True) for _ in range(12)]
        for w in workers:
            w.start()
        try:
            queue = wait_for(lambda: (v := custom_metric(cluster, namespace, "llmops_queue_depth").get(stand_in))
                             and v >= 2 and v, timeout=90,
                             what="llmops_queue_depth of the real pod through custom.metrics.k8s.io")
            tokens = wait_for(
                lambda: (v := custom_metric(cluster, namespace, "llmops_generation_tokens_per_second").get(stand_in))
                and v > 1 and v, timeout=90, what="the real pod's token rate through custom.metrics.k8s.io")
        finally:
            stop.set()
            for w in workers:
                w.join(150)
        print(f"\nFIGURE real replica under 12 clients, through custom.metrics.k8s.io: "
              f"llmops_queue_depth {queue:g}, llmops_generation_tokens_per_second {tokens:.0f}")
        # And back down once the load is gone: the gauge follows the pod, it is not stuck.
        wait_for(lambda: custom_metric(cluster, namespace, "llmops_queue_depth").get(stand_in) == 0, timeout=60,
                 what="queue depth back to 0 after the load")
    finally:
        target_file.unlink(missing_ok=True)


def test_sigterm_drains_in_flight_requests_within_grace_period(pod: Pod) -> None:
    """What the kubelet does after the preStop hooks: SIGTERM to both containers, SIGKILL when the grace period
    is over. Requests in flight through Triton's port and through the OpenAI front's all finish."""
    from openai import OpenAI

    grace = pod.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    results: list[dict[str, Any]] = []
    client = OpenAI(base_url=pod.url(9000, "/v1"), api_key="unused", timeout=120, max_retries=0)

    def triton_request() -> None:
        t0 = time.monotonic()
        status, body = _post(
            pod.url(8000, "/v2/models/tiny/generate"),
            {"text_input": "K", "max_tokens": 480, "ignore_eos": True, "temperature": 0}, timeout=120,
        )
        out = json.loads(body) if status == 200 else {}
        results.append({"via": "triton", "status": status, "tokens": int(out.get("completion_tokens", 0)),
                        "finish": out.get("finish_reason"), "seconds": time.monotonic() - t0, "body": body[:300]})

    def openai_stream() -> None:
        t0 = time.monotonic()
        try:
            chunks = list(client.chat.completions.create(
                model="llmops/tiny-random", messages=[{"role": "user", "content": "K"}], max_tokens=480,
                temperature=0, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
            ))
            usage = chunks[-1].usage
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            results.append({"via": "openai", "status": 200, "tokens": usage.completion_tokens if usage else 0,
                            "finish": finish[-1] if finish else None, "seconds": time.monotonic() - t0})
        except Exception as exc:
            results.append({"via": "openai", "status": 0, "tokens": 0, "finish": None, "error": repr(exc),
                            "seconds": time.monotonic() - t0})

    # The tiny model is fast: 16 requests (4 in the batch, 12 queued) keep it busy for a few seconds.
    workers = [threading.Thread(target=triton_request if i % 2 else openai_stream) for i in range(16)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    in_flight = sum(w.is_alive() for w in workers)
    assert in_flight >= 4, results
    t0 = time.monotonic()
    # Both app containers at once, as the kubelet does; not `podman pod stop`, which also stops the infra
    # container and with it the pod's network while requests are still draining (the pause container of a
    # Kubernetes pod lives until every container has exited).
    stoppers = [threading.Thread(target=podman, args=("stop", "-t", str(grace), c), kwargs={"timeout": grace + 30})
                for c in (pod.container, pod.front)]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    drain = time.monotonic() - t0
    for w in workers:
        w.join(60)
    states = {c: json.loads(podman("inspect", c).stdout)[0]["State"] for c in (pod.container, pod.front)}
    print(f"\nFIGURE SIGTERM to exit with {in_flight} requests in flight (half through the OpenAI front): "
          f"{drain:.1f}s (grace {grace}s); slowest request {max(r['seconds'] for r in results):.1f}s")
    assert len(results) == 16
    for r in results:
        assert r["status"] == 200 and r["tokens"] == 480 and r["finish"] == "length", r
    assert drain < grace, (drain, grace)
    for name, state in states.items():
        assert state["ExitCode"] == 0, (name, state, pod.logs(name)[-2000:])


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
