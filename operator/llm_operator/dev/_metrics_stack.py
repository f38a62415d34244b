"""What `llmctl dev up --metrics` adds to the local cluster: Prometheus, the traffic emulator and
prometheus-adapter, registered as the custom metrics API through the apiserver's aggregation layer.

Builders of configuration and manifests, pure but for :func:`adapter_args`, which writes the adapter's config
(the shipped rules plus dev-only ones) into the cluster's state folder; :mod:`llm_operator.dev._cluster` runs
the processes.

Every byte stays on 127.0.0.1: the APIServices point at an ``ExternalName`` Service whose name is ``localhost``.
Endpoints cannot hold loopback addresses, but the aggregator's default routing (``--enable-aggregator-routing=
false``) resolves a Service's DNS name, so ``localhost:<adapter port>`` is what it dials.
"""

from __future__ import annotations

import base64
import importlib
from pathlib import Path
from typing import Any

import yaml

from llm_operator.dev.traffic._exposition import EMULATED_CPU_UTILIZATION

# The timing a test can reason about: a load change is visible through custom.metrics.k8s.io after at most
# one scrape plus one rule evaluation plus one adapter relist (for a new series; a known series is queried live).
SCRAPE_INTERVAL = "2s"
EVALUATION_INTERVAL = "2s"
ADAPTER_RELIST_INTERVAL = "5s"
RETENTION = "2h"

NAMESPACE = "llmops-monitoring"
ADAPTER_SERVICE = "prometheus-adapter"
CUSTOM_METRICS_GROUP = "custom.metrics.k8s.io"
# prometheus-adapter v0.12.0 (custom-metrics-apiserver v1.30) serves both.
CUSTOM_METRICS_VERSIONS = ("v1beta1", "v1beta2")
TRAFFIC_JOB = "llm-traffic-emulator"


def adapter_service_dns() -> str:
    return f"{ADAPTER_SERVICE}.{NAMESPACE}.svc"


def contract_paths() -> tuple[Path, Path]:
    """(recording rules file, adapter config) shipped in ``llm_operator.metrics``, the one metric vocabulary
    that the Helm chart uses too."""
    metrics = importlib.import_module("llm_operator.metrics")
    return Path(metrics.RULES_PATH), Path(metrics.ADAPTER_CONFIG_PATH)


# Real model pods outside the cluster (the runtime image under podman) join the test bed as file_sd targets: a
# JSON file in this folder (next to prometheus.yml) names the pod's 127.0.0.1 ports and the namespace/pod/revision
# labels of the cluster pod it stands for. Prometheus re-reads the folder within seconds.
TARGETS_DIR = "targets"
REAL_PODS_JOB = "real-pods"


def prometheus_config(*, traffic_port: int, rules_path: Path, targets_dir: Path | None = None) -> dict[str, Any]:
    real_pods = [] if targets_dir is None else [{
        "job_name": REAL_PODS_JOB,
        "scrape_interval": SCRAPE_INTERVAL,
        "scrape_timeout": SCRAPE_INTERVAL,
        "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "2s"}],
    }]
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": EVALUATION_INTERVAL},
        "rule_files": [str(rules_path)],
        "scrape_configs": [
            {
                "job_name": TRAFFIC_JOB,
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                # The emulator speaks for many pods: their namespace/pod/revision labels must win over the
                # target's own instance/job labels.
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{traffic_port}"]}],
            },
            *real_pods,
        ],
    }


def prometheus_args(*, port: int, config: Path, data: Path) -> list[str]:
    return [
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]


# Rules only the dev cluster's adapter serves, after the shipped ones: series that exist only because the pods are
# emulated. The emulated CPU utilisation lets bench/autoscale.py run a "CPU at 70 %" HPA beside ours on fake
# pods (kwok pods have no containers for metrics-server to measure). It is read straight from the emulator's
# series, with no recording rule: no real pod exports it, so it has no place in the canonical vocabulary.
DEV_ADAPTER_RULES: list[dict[str, Any]] = [
    {
        "seriesQuery": f'{{__name__="{EMULATED_CPU_UTILIZATION}",namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{EMULATED_CPU_UTILIZATION}$", "as": EMULATED_CPU_UTILIZATION},
        "metricsQuery": "max(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
    },
]
DEV_ADAPTER_CONFIG = "prometheus-adapter-config.yaml"


def dev_adapter_config(shipped: Path) -> dict[str, Any]:
    """The shipped adapter config with :data:`DEV_ADAPTER_RULES` appended (the shipped rules unchanged)."""
    config: dict[str, Any] = yaml.safe_load(shipped.read_text())
    config["rules"] = [*config.get("rules", []), *DEV_ADAPTER_RULES]
    return config


def adapter_args(*, port: int, kubeconfig: Path, pki: Path, prometheus_port: int, config: Path) -> list[str]:
    """The adapter's flags. ``config`` is the shipped config; the adapter reads it plus the dev-only rules from
    a file written next to its ``kubeconfig`` (in the cluster's state folder), since it takes a single --config.
    """
    dev_config = kubeconfig.parent / DEV_ADAPTER_CONFIG
    dev_config.write_text(yaml.safe_dump(dev_adapter_config(config), sort_keys=False))
    return [
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        f"--tls-cert-file={pki / 'prometheus-adapter-serving.crt'}",
        f"--tls-private-key-file={pki / 'prometheus-adapter-serving.key'}",
        f"--lister-kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--prometheus-url=http://127.0.0.1:{prometheus_port}/",
        # The default is 10 min: a new pod's series would be invisible to the HPA for that long.
        f"--metrics-relist-interval={ADAPTER_RELIST_INTERVAL}",
        f"--config={dev_config}",
        "--v=1",
    ]


def adapter_rbac(*, user: str) -> list[dict[str, Any]]:
    """Least privilege for the adapter's own identity (a client cert, CN ``user``), as in its deploy manifests:
    read the objects its rules map series onto, delegate authn/authz, read the front-proxy CA config."""
    subject = [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": "llmctl:prometheus-adapter:resource-reader"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["nodes", "namespaces", "pods", "services"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "llmctl:prometheus-adapter:resource-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "llmctl:prometheus-adapter:resource-reader"},
            "subjects": subject,
        },
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "llmctl:prometheus-adapter:auth-delegator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:auth-delegator"},
            "subjects": subject,
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": {"name": "llmctl:prometheus-adapter:auth-reader", "namespace": "kube-system"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "extension-apiserver-authentication-reader"},
            "subjects": subject,
        },
    ]


def adapter_service(*, port: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        },
    ]


def apiservices(*, port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """The adapter's serving cert is signed by the cluster CA, so the aggregator verifies it (no
    insecureSkipTLSVerify)."""
    return [
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{version}.{CUSTOM_METRICS_GROUP}"},
            "spec": {
                "group": CUSTOM_METRICS_GROUP,
                "version": version,
                "service": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "port": port},
                "caBundle": base64.b64encode(ca_bundle).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 200 if version == "v1beta2" else 100,
            },
        }
        for version in CUSTOM_METRICS_VERSIONS
    ]


def api_path(obj: dict[str, Any]) -> str:
    """The collection URL to POST ``obj`` to."""
    group_version = obj["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    plural = obj["kind"].lower() + "s"  # true for every kind applied here
    namespace = obj["metadata"].get("namespace")
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None
