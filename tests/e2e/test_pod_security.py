"""Pod Security Admission `restricted` (issue #13): in namespaces labelled
`pod-security.kubernetes.io/enforce=restricted` (warn and audit too) the real kube-apiserver admits the pods of
every example LLMDeployment (examples/*.yaml and the GitOps example's examples/gitops/models/), created by the
operator's Deployments through their ReplicaSets, and it rejects a pod that is not `restricted`, so the admission
this test relies on is really enforced (PodSecurity is a default admission plugin of the source-built apiserver).
One more LLMDeployment with an oci:// model covers the pod shape no example makes (an `image` volume).

kwok runs the admitted pods as fakes; a pod that cannot be scheduled (the fleet's GPUs are finite) is still
admitted: admission happens when the ReplicaSet creates the pod, before scheduling.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.pytest_plugin import Cluster, Operator
from tests.e2e.test_operator import apply, children, llmd

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "examples" / "gitops" / "models").glob("*.yaml"))
PSA_LABELS = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")} | {
    f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "warn", "audit")}
INSTANCE = "app.kubernetes.io/instance"
CLUSTER_SCOPED = {"PersistentVolume"}  # the 70B example's NFS volume: left out (a PVC without it stays Pending)
# Examples whose pods the `restricted` level cannot admit, with the reason (none today). An entry makes the test
# expect exactly that example's rejection, like xfail(strict=True): a fix that makes it admissible fails the test
# until the entry goes.
NOT_RESTRICTED: dict[str, str] = {}
# A pod with no securityContext at all: admitted by `baseline`, refused by `restricted`.
UNRESTRICTED_POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psa-probe-unrestricted"},
    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
}
RESTRICTED_VIOLATIONS = ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true",
                         "seccompProfile")


def load_examples() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The namespaced documents of every example, and each LLMDeployment's name -> its file. Names repeated across
    files (examples/qwen-7b-autoscaled.yaml and examples/gitops/models/qwen-7b.yaml) get a suffix."""
    docs: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    for path in EXAMPLES:
        source = str(path.relative_to(ROOT / "examples"))
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            if doc["kind"] in CLUSTER_SCOPED:
                continue
            if doc["kind"] == "LLMDeployment":
                name = doc["metadata"]["name"]
                while name in sources:
                    name += "-2"
                doc["metadata"]["name"] = name
                sources[name] = source
            docs.append(doc)
    # The one model source no example uses: an OCI artifact, mounted as an `image` volume.
    docs.append(llmd("oci-model", model={"name": "tiny", "uri": "oci://registry.example.com/models/tiny:1"}))
    sources["oci-model"] = "(an oci:// model)"
    return docs, sources


def restrict(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "--overwrite", *(f"{k}={v}" for k, v in PSA_LABELS.items()))
    labels = cluster.kubectl_json("get", "namespace", namespace)["metadata"]["labels"]
    assert PSA_LABELS.items() <= labels.items(), labels


def snapshot(cluster: Cluster, namespace: str, names: list[str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """One read of the namespace: for each LLMDeployment (pods that exist, pods its Deployments ask for), None
    before it has a Deployment; and the ReplicaSet controller's FailedCreate events (how a pod refused by admission
    shows) by the LLMDeployment whose ReplicaSet failed, one message per ReplicaSet."""
    items = cluster.kubectl_json("get", "deployments,replicasets,pods,events", "-n", namespace)["items"]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_kind.setdefault(item["kind"], []).append(item)

    def instance(obj: dict[str, Any]) -> str:
        return str((obj["metadata"].get("labels") or {}).get(INSTANCE, "?"))

    status: dict[str, Any] = {}
    for name in names:
        deployments = [d for d in by_kind.get("Deployment", []) if instance(d) == name]
        pods = [p for p in by_kind.get("Pod", []) if instance(p) == name]
        want = sum(int(d["spec"].get("replicas", 1)) for d in deployments)
        status[name] = (len(pods), want) if deployments else None
    owner = {rs["metadata"]["name"]: instance(rs) for rs in by_kind.get("ReplicaSet", [])}
    refused: dict[str, list[str]] = {}
    for e in by_kind.get("Event", []):
        obj = e["involvedObject"]
        if e.get("reason") != "FailedCreate":
            continue
        lines = refused.setdefault(owner.get(obj["name"], "?"), [])
        if not any(line.startswith(f"{obj['kind']} {obj['name']}:") for line in lines):
            lines.append(f"{obj['kind']} {obj['name']}: {e['message']}")
    return status, refused


def test_every_examples_pods_pass_pod_security_restricted(cluster: Cluster, operator: Operator,
                                                         namespace: str) -> None:
    restrict(cluster, namespace)

    # The apiserver enforces the label: a pod that is not `restricted` is refused, with the reasons.
    proc = cluster.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(UNRESTRICTED_POD), check=False)
    assert proc.returncode != 0, "the apiserver admitted an unrestricted pod: PodSecurity admission is not enforcing"
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr
    for violation in RESTRICTED_VIOLATIONS:
        assert violation in proc.stderr, proc.stderr

    docs, sources = load_examples()
    with_llmd = {str(p.relative_to(ROOT / "examples")) for p in EXAMPLES if "kind: LLMDeployment" in p.read_text()}
    assert len(with_llmd) >= 7 and with_llmd <= set(sources.values()), (with_llmd, sources)
    apply(cluster, namespace, *docs)

    deadline = time.monotonic() + 90
    while True:
        status, refused = snapshot(cluster, namespace, list(sources))
        pending = [n for n, s in status.items() if n not in NOT_RESTRICTED and (s is None or s[0] < s[1])]
        if set(refused) - set(NOT_RESTRICTED) or (not pending and set(refused) >= set(NOT_RESTRICTED)):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert set(refused) == set(NOT_RESTRICTED), (
        f"pods refused at creation ({sorted(refused)}; expected {sorted(NOT_RESTRICTED)}):\n"
        + "\n".join(line for lines in refused.values() for line in lines))
    not_created = {n: (sources[n], s) for n, s in status.items()
                   if n not in NOT_RESTRICTED and (s is None or s[0] < s[1])}
    assert not not_created, f"(pods, replicas) of examples whose pods were not all created in 90 s: {not_created}"
    assert all(s and s[1] >= 1 for s in status.values()), status  # every example has at least one pod to admit
    oci_volumes = [v for pod in children(cluster, namespace, "pods", "oci-model") for v in pod["spec"]["volumes"]]
    assert any("image" in v for v in oci_volumes), oci_volumes  # the image volume reached the pod, and passed
    # Free the fleet for the next test at once: a terminating namespace admits no new pod, and the force-deleted
    # ones skip their grace period (minutes for a model pod), which the namespace's deletion would wait out.
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force", check=False)
