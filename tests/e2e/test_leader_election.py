"""Two and three `llmctl run --leader-elect` processes on the dev cluster: one writes, failover on SIGKILL within the
lease, hand-over on SIGTERM at the next retry. Short durations (lease 4 s, renew deadline 3 s, retry 1 s).

The figures (takeover after SIGKILL and after SIGTERM) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e import pytest_plugin as plugin
from e2e.pytest_plugin import Cluster, OperatorProcess, ensure_monitoring_crds, wait_for
from tests.e2e.test_operator import apply, assert_render_matches_live, children, llmd, wait_condition

pytestmark = pytest.mark.cluster

LEASE, RENEW, RETRY = 4.0, 3.0, 1.0
LEASE_NAME = "llmop-leader-test"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


def _writes(port: int) -> float:
    samples = _samples(port)
    return sum(samples.get(f'llmop_api_requests_total{{verb="{v}"}}', 0.0) for v in WRITE_VERBS)


class Replica:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.proc = OperatorProcess(tmp / f"operator-{name}.log")
        self.port = _free_port()

    def start(self, cluster: Cluster, namespace: str) -> None:
        self.proc.start("-n", namespace, "--metrics-port", str(self.port), "--leader-elect",
                        f"--leader-election-namespace={namespace}", f"--leader-election-id={LEASE_NAME}",
                        f"--lease-duration={LEASE}", f"--renew-deadline={RENEW}", f"--retry-period={RETRY}",
                        kubeconfig=cluster.kubeconfig, env={"POD_NAME": self.name})

    def signal(self, sig: int) -> float:
        assert self.proc.proc is not None
        at = time.time()
        os.killpg(self.proc.proc.pid, sig)
        return at

    def wait_exit(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.wait(timeout=30)


@pytest.fixture
def replicas(cluster: Cluster, crd: str, namespace: str, tmp_path: Path) -> Iterator[dict[str, Replica]]:
    """Replicas a, b, c (not started). The session's in-process operator is stopped meanwhile, as for the
    operator_process fixture."""
    paused = plugin._in_process.stopped() if plugin._in_process is not None else contextlib.nullcontext()
    with paused:
        made = {n: Replica(n, tmp_path) for n in ("a", "b", "c")}
        try:
            yield made
        finally:
            for r in made.values():
                r.proc.stop()
    for r in made.values():
        crashed = [line for line in r.proc.log.splitlines() if "crashed" in line or "Traceback" in line]
        assert not crashed, f"replica {r.name} logged:\n" + "\n".join(crashed[:20])


def _lease(cluster: Cluster, namespace: str) -> dict[str, Any]:
    proc = cluster.kubectl("get", "lease", LEASE_NAME, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(proc.stdout)["spec"]) if proc.returncode == 0 else {}


def _holder(cluster: Cluster, namespace: str) -> str:
    return str(_lease(cluster, namespace).get("holderIdentity") or "").split("_")[0]


def _ts(micro_time: str) -> float:
    return datetime.fromisoformat(micro_time.replace("Z", "+00:00")).timestamp()


def test_one_leader_writes_sigkill_fails_over_within_the_lease_sigterm_hands_over_at_once(
    cluster: Cluster, replicas: dict[str, Replica], namespace: str, tmp_path: Path
) -> None:
    a, b, c = replicas["a"], replicas["b"], replicas["c"]
    ensure_monitoring_crds(cluster)  # so that the rendering compared at the end matches what the cluster serves
    a.start(cluster, namespace)
    wait_for(lambda: _holder(cluster, namespace) == "a", timeout=30, what="a to acquire the Lease")
    b.start(cluster, namespace)

    # Exactly one writes: a reconciles, b (its watch cache warm) sends nothing.
    apply(cluster, namespace, llmd("ha", replicas=1))
    wait_condition(cluster, namespace, "ha", "Ready", "True", timeout=60)
    wait_for(lambda: _samples(b.port).get("llmop_llmdeployments") == 1, timeout=30, what="b's cache to see ha")
    sa, sb = _samples(a.port), _samples(b.port)
    assert sa["llmop_leader"] == 1 and sb["llmop_leader"] == 0
    assert _writes(a.port) > 0 and _writes(b.port) == 0, (sa, sb)
    assert sb.get('llmop_reconcile_total{result="success"}', 0) == 0

    # Change the spec and SIGKILL the leader right away (mid-reconcile of the change, or just after it): b takes
    # over once a's lease runs out and finishes the job.
    cluster.kubectl("patch", "llmd", "ha", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":2}}')
    killed = a.signal(signal.SIGKILL)
    a.wait_exit()
    last = _lease(cluster, namespace)  # a's last renewal, as the API server holds it
    assert last["holderIdentity"].startswith("a_")
    wait_for(lambda: _holder(cluster, namespace) == "b", timeout=LEASE + 3 * RETRY + 15, interval=0.1,
             what="b to take the Lease over")
    spec = _lease(cluster, namespace)
    after_kill = _ts(spec["acquireTime"]) - killed
    after_last_renewal = _ts(spec["acquireTime"]) - _ts(last["renewTime"])
    print(f"\nSIGKILL takeover: {after_kill:.2f}s after the kill, {after_last_renewal:.2f}s after a's last renewal "
          f"(lease {LEASE}s, retry {RETRY}s); leaseTransitions={spec['leaseTransitions']}")
    # Never before a's lease could expire (b counts from when it saw that renewal, which is after it was stamped)…
    assert after_last_renewal >= LEASE - 0.05
    # …and within the lease plus b's observation lag and one retry (jitter up to 1.2 each), with slack for a loaded CI.
    assert after_kill <= LEASE + 2 * RETRY * 1.2 + 3.0
    # The final state is what the spec says, as without the kill: every child as `llmctl render` prints it, one
    # Deployment, scaled to 2.
    wait_condition(cluster, namespace, "ha", "Ready", "True", timeout=60)
    wait_for(lambda: cluster.kubectl_json("get", "deployment", "-n", namespace, "-l",
                                          "app.kubernetes.io/instance=ha")["items"][0]["spec"]["replicas"] == 2,
             timeout=60, what="the Deployment scaled to 2")
    assert_render_matches_live(cluster, namespace, "ha", tmp_path)
    assert len(children(cluster, namespace, "deployment", "ha")) == 1
    assert _writes(b.port) > 0

    # SIGTERM the leader: it releases the Lease on its way out; c takes over at its next retry.
    c.start(cluster, namespace)
    wait_for(lambda: _samples(c.port).get("llmop_llmdeployments") == 1, timeout=30, what="c's cache to see ha")
    assert _writes(c.port) == 0 and _holder(cluster, namespace) == "b"
    termed = b.signal(signal.SIGTERM)
    wait_for(lambda: _holder(cluster, namespace) == "c", timeout=30, interval=0.1, what="c to take the Lease over")
    after_term = _ts(_lease(cluster, namespace)["acquireTime"]) - termed
    assert b.wait_exit() == 0
    assert "released Lease" in b.proc.log
    print(f"SIGTERM hand-over: {after_term:.2f}s after the signal (retry {RETRY}s)")
    assert after_term <= RETRY * 1.2 + 2.5  # far below the lease: no expiry waited out
    cluster.kubectl("patch", "llmd", "ha", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":1}}')
    wait_condition(cluster, namespace, "ha", "Ready", "True", timeout=60)
    wait_for(lambda: _writes(c.port) > 0, timeout=30, what="c to write")
