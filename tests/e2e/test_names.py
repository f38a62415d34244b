"""Names on the real API server (issue #13): the longest accepted name in two namespaces, Unicode annotations, and
names the API refuses with a message (dotted, 53 characters, uppercase, a model name with a slash)."""

from __future__ import annotations

import pytest
import yaml

from e2e.pytest_plugin import Cluster, Operator, wait_for
from tests.e2e.test_operator import apply, children, llmd, wait_condition
from tests.unit.test_child_names import MAX_NAME, NAME_MESSAGE

pytestmark = pytest.mark.cluster

LONGEST = "l" + "x" * 50 + "z"  # 52 characters, the CRD's maximum


def test_the_longest_name_in_two_namespaces_and_unicode_annotations(cluster: Cluster, operator: Operator,
                                                                     namespace: str) -> None:
    other = f"{namespace}-b"
    cluster.kubectl("create", "namespace", other)
    try:
        wait_for(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", other, check=False).returncode == 0,
                 timeout=30, what=f"default ServiceAccount in {other}")
        # An emoji in a pod annotation: the operator's server-side apply used to send it as a JSON surrogate
        # pair, which the API server's YAML decoder refused (every apply of the Deployment failed).
        body = llmd(LONGEST, podAnnotations={"example.com/team": "平台 🦙"})
        body["metadata"]["annotations"] = {"example.com/owner": "Zoë ünïcödé"}
        for ns in (namespace, other):
            apply(cluster, ns, body)
        uids = {}
        for ns in (namespace, other):
            ready = wait_condition(cluster, ns, LONGEST, "Ready", "True", timeout=90)
            uids[ns] = ready["metadata"]["uid"]
        for ns in (namespace, other):
            kids = [c for kind in ("deployment", "service", "configmap", "poddisruptionbudget")
                    for c in children(cluster, ns, kind, LONGEST)]
            assert kids and all(len(c["metadata"]["name"]) <= MAX_NAME for c in kids)
            # each namespace's children belong to that namespace's object only
            assert {ref["uid"] for c in kids for ref in c["metadata"]["ownerReferences"]} == {uids[ns]}
            (deploy,) = children(cluster, ns, "deployment", LONGEST)
            assert deploy["metadata"]["name"].startswith(f"{LONGEST}-r") and len(deploy["metadata"]["name"]) == 63
            assert deploy["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "平台 🦙"
    finally:
        cluster.kubectl("delete", "namespace", other, "--ignore-not-found", "--timeout=90s", check=False)


CANNOT_WORK = [
    ("l" + "x" * 52, "tiny", NAME_MESSAGE),  # 53 characters
    ("llama.3", "tiny", NAME_MESSAGE),  # dotted: a valid object name, but not a Service name
    ("Llama", "tiny", "a lowercase RFC 1123 subdomain"),  # uppercase: the API server's own name check
    ("ok", "meta-llama/Llama-3.1-8B-Instruct", "spec.model.name"),
]


def test_names_that_cannot_work_are_rejected_with_a_message(cluster: Cluster, crd: str) -> None:
    # Server-side dry runs create nothing, so no namespace of its own is needed (its deletion costs ~5 s).
    for name, model, message in CANNOT_WORK:
        body = llmd(name, model={"name": model, "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"})
        proc = cluster.kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", input=yaml.safe_dump(body),
                               check=False)
        assert proc.returncode != 0, (name, proc.stdout)
        assert message in proc.stderr, (name, proc.stderr)
