"""Pure builders: what the pods, Service, PDB and monitors look like for representative specs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from invalid_specs import merge_patch
from llm_operator import api, builders

UID = "7f6c9a1e-0000-4000-8000-000000000001"


def make(patch: dict[str, Any] | None = None, *, name: str = "llama") -> api.LLMDeployment:
    obj = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": "models"},
        "spec": {
            "model": {"name": "llama-3.1-8b", "uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
            "runtime": {"backend": "vllm"},
            "resources": {
                "gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"},
                "cpu": "8",
                "memory": "64Gi",
            },
        },
    }
    return api.parse(merge_patch(obj, {"spec": patch or {}}))


def children(llmd: api.LLMDeployment, *, monitoring_crds: bool = True) -> dict[str, dict[str, Any]]:
    out = builders.build_children(llmd, namespace="models", owner_uid=UID, monitoring_crds=monitoring_crds)
    return {c["kind"]: c for c in out}


def pod_spec(llmd: api.LLMDeployment) -> dict[str, Any]:
    return children(llmd)["Deployment"]["spec"]["template"]["spec"]


def triton(llmd: api.LLMDeployment) -> dict[str, Any]:
    container, _front = pod_spec(llmd)["containers"]
    assert container["name"] == "triton"
    return container


# ------------------------------------------------------------------------------------------- children


def test_children_in_apply_order_with_controller_owner_refs() -> None:
    out = builders.build_children(make(), namespace="models", owner_uid=UID, monitoring_crds=True)
    assert [c["kind"] for c in out] == [
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "PodMonitor",
    ]
    for child in out:
        assert child["metadata"]["namespace"] == "models"
        assert child["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "serving.llmops.dev/v1alpha1",
                "kind": "LLMDeployment",
                "name": "llama",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "llama"
        assert labels["app.kubernetes.io/managed-by"] == "triton-llm-operator"
        for key in ("name", "component", "part-of", "version"):
            assert labels[f"app.kubernetes.io/{key}"]


def test_no_owner_refs_without_uid() -> None:
    out = builders.build_children(make(), namespace="models", owner_uid=None, monitoring_crds=False)
    assert all("ownerReferences" not in c["metadata"] for c in out)


def test_monitor_only_when_crds_exist_and_enabled() -> None:
    assert "PodMonitor" not in children(make(), monitoring_crds=False)
    assert "PodMonitor" not in children(make({"monitoring": {"enabled": False}}))
    service_monitor = children(make({"monitoring": {"kind": "ServiceMonitor", "labels": {"release": "prom"}}}))
    sm = service_monitor["ServiceMonitor"]
    assert sm["metadata"]["labels"]["release"] == "prom"
    endpoint, front_endpoint = sm["spec"]["endpoints"]
    assert front_endpoint["port"] == "openai" and front_endpoint["path"] == "/metrics"
    assert front_endpoint["relabelings"] == endpoint["relabelings"]
    assert {k: endpoint[k] for k in ("port", "path", "interval")} == {"port": "metrics", "path": "/metrics",
                                                                      "interval": "15s"}
    # The revision label every canonical series keeps (docs/metrics.md), from the pod's revision label.
    assert endpoint["relabelings"] == [{"sourceLabels": ["__meta_kubernetes_pod_label_serving_llmops_dev_revision"],
                                        "targetLabel": "revision", "action": "replace"}]
    # The monitor selects the Service's labels, which carry the same selector labels as the pods.
    svc = service_monitor["Service"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()


def test_revisioned_names_and_selectors() -> None:
    llmd = make()
    revision = builders.revision_hash(llmd)
    kids = children(llmd)
    dep, cm = kids["Deployment"], kids["ConfigMap"]
    assert dep["metadata"]["name"] == cm["metadata"]["name"] == f"llama-{revision}"
    assert dep["metadata"]["labels"]["serving.llmops.dev/revision"] == revision
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector["serving.llmops.dev/revision"] == revision
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    # Service and PDB span revisions, so a rollout keeps serving through the old pods.
    for kind in ("Service", "PodDisruptionBudget"):
        sel = kids[kind]["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        assert "serving.llmops.dev/revision" not in sel
        assert sel.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert builders.selector_string(llmd) == ",".join(
        f"{k}={v}" for k, v in sorted(kids["Service"]["spec"]["selector"].items())
    )


def test_longest_allowed_name_fits_kubernetes_limits() -> None:
    llmd = make(name="a" * 52)
    for child in builders.build_children(llmd, namespace="ns", owner_uid=None, monitoring_crds=True):
        assert len(child["metadata"]["name"]) <= 63
        assert all(len(v) <= 63 for v in child["metadata"]["labels"].values())


# ------------------------------------------------------------------------------------------ deployment


def test_deployment_strategy_never_surges_and_replicas_from_spec() -> None:
    dep = children(make({"replicas": 3}))["Deployment"]
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }


def test_triton_ports_args_and_exit_timeout() -> None:
    c = triton(make({"runtime": {"exitTimeoutSeconds": 120, "args": ["--log-verbose=1"]}}))
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert c["args"][0] == "tritonserver"
    assert "--model-repository=/models" in c["args"]
    assert "--exit-timeout-secs=120" in c["args"]
    assert c["args"][-1] == "--log-verbose=1"


def test_probes_sized_for_slow_loads() -> None:
    c = triton(make({"runtime": {"startupTimeoutSeconds": 3600}}))
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # The liveness probe only starts after the startup probe succeeded; it must tolerate a busy server.
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] >= 30


def test_grace_period_exceeds_prestop_plus_exit_timeout() -> None:
    llmd = make({"runtime": {"exitTimeoutSeconds": 600}})
    spec = pod_spec(llmd)
    c = triton(llmd)
    prestop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert prestop > 0
    assert spec["terminationGracePeriodSeconds"] > prestop + 600


def test_restricted_security_context() -> None:
    spec = pod_spec(make())
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        assert "privileged" not in sc


def test_dev_shm_is_memory_backed_and_sized() -> None:
    spec = pod_spec(make({"resources": {"sharedMemory": "16Gi"}}))
    dshm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in spec["containers"][0]["volumeMounts"]


# --------------------------------------------------------------------------------------------- GPUs


def test_whole_gpus_limits_selector_and_toleration() -> None:
    llmd = make({"runtime": {"tensorParallelSize": 8}, "resources": {"gpu": {"count": 8}}})
    spec = pod_spec(llmd)
    res = triton(llmd)["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 8
    assert "nvidia.com/gpu" not in res["requests"]  # GPUs go in limits only
    assert res["requests"] == {"cpu": "8", "memory": "64Gi"}
    assert spec["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_mig_slice_uses_mig_resource_not_whole_gpus() -> None:
    llmd = make({"resources": {"gpu": None, "mig": {"profile": "3g.40gb", "product": "NVIDIA-A100-SXM4-80GB"}}})
    limits = triton(llmd)["resources"]["limits"]
    assert limits["nvidia.com/mig-3g.40gb"] == 1
    assert "nvidia.com/gpu" not in limits
    assert pod_spec(llmd)["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert builders.gpu_summary(llmd) == "1x mig-3g.40gb (NVIDIA-A100-SXM4-80GB)"


def test_cpu_only_python_backend_has_no_gpu_anything() -> None:
    llmd = make({"runtime": {"backend": "python"}, "resources": {"gpu": None}})
    spec = pod_spec(llmd)
    assert "nvidia.com/gpu" not in json.dumps(spec)
    assert builders.gpu_summary(llmd) == "none"


def test_gpu_summary_for_whole_gpus() -> None:
    assert builders.gpu_summary(make()) == "1x NVIDIA-H100-80GB-HBM3"
    assert builders.gpu_summary(make({"resources": {"gpu": {"product": None}}})) == "1x any"


# -------------------------------------------------------------------------------------------- spot


def _node_affinity(spec: dict[str, Any]) -> dict[str, Any]:
    return spec.get("affinity", {}).get("nodeAffinity", {})


SPOT_TOLERATION = {"key": "llmops.dev/spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}


def test_on_demand_never_tolerates_spot_and_excludes_spot_label() -> None:
    spec = pod_spec(make())
    assert SPOT_TOLERATION not in spec["tolerations"]
    terms = _node_affinity(spec)["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "llmops.dev/capacity-type", "operator": "NotIn", "values": ["spot"]}]}
    ]


def test_spot_requires_spot_nodes() -> None:
    spec = pod_spec(make({"placement": {"capacityType": "Spot"}}))
    assert SPOT_TOLERATION in spec["tolerations"]
    assert spec["nodeSelector"]["llmops.dev/capacity-type"] == "spot"


def test_prefer_spot_tolerates_and_prefers_but_does_not_require() -> None:
    spec = pod_spec(make({"placement": {"capacityType": "PreferSpot"}}))
    assert SPOT_TOLERATION in spec["tolerations"]
    assert "llmops.dev/capacity-type" not in spec.get("nodeSelector", {})
    affinity = _node_affinity(spec)
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in affinity
    (preferred,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["preference"]["matchExpressions"] == [
        {"key": "llmops.dev/capacity-type", "operator": "In", "values": ["spot"]}
    ]


def test_on_demand_constraint_is_anded_into_every_user_term() -> None:
    user_affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                ]
            }
        },
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
    }
    llmd = make({"placement": {"affinity": user_affinity}})
    terms = _node_affinity(pod_spec(llmd))["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2
    for term in terms:
        assert {"key": "llmops.dev/capacity-type", "operator": "NotIn", "values": ["spot"]} in term["matchExpressions"]
        assert term["matchExpressions"][0]["key"] == "zone"
    assert "podAntiAffinity" in pod_spec(llmd)["affinity"]
    # The spec object itself is not mutated by rendering.
    assert llmd.spec.placement.affinity == user_affinity


def test_user_placement_is_kept() -> None:
    spec = pod_spec(
        make(
            {
                "placement": {
                    "nodeSelector": {"pool": "inference"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
                    "priorityClassName": "llm-critical",
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "DoNotSchedule",
                        }
                    ],
                }
            }
        )
    )
    assert spec["nodeSelector"]["pool"] == "inference"
    assert {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["priorityClassName"] == "llm-critical"
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "llama"


# --------------------------------------------------------------------------------------- model source


def test_remote_uri_is_fetched_by_init_container_with_secret() -> None:
    llmd = make({"model": {"revision": "abc123", "secretRef": {"name": "hf-token"}}})
    spec = pod_spec(llmd)
    (fetch,) = spec["initContainers"]
    assert fetch["args"] == ["hf://meta-llama/Llama-3.1-8B-Instruct:abc123", "/mnt/model"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert {"name": "model", "emptyDir": {}} in spec["volumes"]
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["model"]["mountPath"] == "/mnt/model"


def test_s3_without_secret_has_no_env_from() -> None:
    (fetch,) = pod_spec(make({"model": {"uri": "s3://bucket/llama"}}))["initContainers"]
    assert fetch["args"] == ["s3://bucket/llama", "/mnt/model"]
    assert "envFrom" not in fetch


@pytest.mark.parametrize(
    "model",
    [
        {"uri": "pvc://weights/meta/llama"},
        {"uri": None, "pvc": {"claimName": "weights", "path": "meta/llama"}},
    ],
)
def test_pvc_is_mounted_read_only_without_fetch(model: dict[str, Any]) -> None:
    spec = pod_spec(make({"model": model}))
    assert "initContainers" not in spec
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}} in spec["volumes"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/mnt/model", "readOnly": True, "subPath": "meta/llama"}


def test_oci_is_an_image_volume_with_pull_secret() -> None:
    spec = pod_spec(make({"model": {"uri": "oci://registry.example.com/models/llama:1", "secretRef": {"name": "r"}}}))
    assert "initContainers" not in spec
    volume = next(v for v in spec["volumes"] if v["name"] == "model")
    assert volume["image"]["reference"] == "registry.example.com/models/llama:1"
    assert spec["imagePullSecrets"] == [{"name": "r"}]


# ------------------------------------------------------------------------------------- repositories


def _repo(llmd: api.LLMDeployment) -> dict[str, str]:
    cm = children(llmd)["ConfigMap"]
    volume = next(v for v in pod_spec(llmd)["volumes"] if v["name"] == "model-repository")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert cm["immutable"] is True
    # Map ConfigMap keys back to repository paths the way the kubelet does.
    return {item["path"]: cm["data"][item["key"]] for item in volume["configMap"]["items"]}


def test_vllm_repository_has_config_and_model_json() -> None:
    llmd = make(
        {
            "runtime": {
                "tensorParallelSize": 4,
                "maxBatchSize": 32,
                "parameters": {
                    "gpu_memory_utilization": "0.85",
                    "enforce_eager": "true",
                    "quantization": "fp8",
                },
            },
            "resources": {"gpu": {"count": 8}},
        }
    )
    files = _repo(llmd)
    assert set(files) == {"llama-3.1-8b/config.pbtxt", "llama-3.1-8b/1/model.json"}
    assert 'backend: "vllm"' in files["llama-3.1-8b/config.pbtxt"]
    engine = json.loads(files["llama-3.1-8b/1/model.json"])
    assert engine["model"] == "/mnt/model"
    assert engine["tensor_parallel_size"] == 4
    assert engine["data_parallel_size"] == 2
    assert engine["max_num_seqs"] == 32
    assert engine["gpu_memory_utilization"] == 0.85
    assert engine["enforce_eager"] is True
    assert engine["quantization"] == "fp8"


def test_python_repository_comes_from_llm_runtime() -> None:
    llmd = make({"runtime": {"backend": "python", "maxBatchSize": 4, "maxQueueSize": 9, "queueTimeoutSeconds": 2}})
    files = _repo(llmd)
    assert set(files) == {"llama-3.1-8b/config.pbtxt", "llama-3.1-8b/1/model.py"}
    config = files["llama-3.1-8b/config.pbtxt"]
    assert 'backend: "python"' in config
    assert '"/mnt/model"' in config
    assert '"2000000"' in config  # queue timeout in microseconds
    assert "llm_runtime" in files["llama-3.1-8b/1/model.py"]


def test_tensorrtllm_repository_points_at_engine_dir_with_bounded_queue() -> None:
    llmd = make({"runtime": {"backend": "tensorrtllm", "maxQueueSize": 64, "queueTimeoutSeconds": 5}})
    config = _repo(llmd)["llama-3.1-8b/config.pbtxt"]
    assert 'backend: "tensorrtllm"' in config
    assert '"/mnt/model"' in config
    assert "max_queue_size: 64" in config
    assert "default_timeout_microseconds: 5000000" in config
    assert {"name": "TRTLLM_ORCHESTRATOR", "value": "1"} in triton(llmd)["env"]


def test_configmap_keys_are_valid() -> None:
    for backend in ("python", "vllm", "tensorrtllm"):
        cm = children(make({"runtime": {"backend": backend}}))["ConfigMap"]
        for key in cm["data"]:
            assert "/" not in key
            assert all(ch.isalnum() or ch in "-._" for ch in key), key


def test_default_image_per_backend_and_override() -> None:
    assert "vllm" in triton(make())["image"]
    assert "trtllm" in triton(make({"runtime": {"backend": "tensorrtllm"}}))["image"]
    assert triton(make({"runtime": {"image": "example.com/triton:1"}}))["image"] == "example.com/triton:1"


# ------------------------------------------------------------------------------------------ revision


def test_revision_shape() -> None:
    rev = builders.revision_hash(make())
    assert len(rev) == builders.REVISION_LENGTH
    assert rev[0].isalpha()
    assert rev == builders.revision_hash(make())


SCALE_ONLY_PATCHES = [
    {"replicas": 7},
    {"replicas": 0},
    {"autoscaling": {"minReplicas": 1, "maxReplicas": 9, "metrics": {"tokensPerSecond": 1500}}},
    {"rollout": {"strategy": "Canary", "canary": {"steps": [{"setWeight": 10}, {"setWeight": 100}]}}},
    {"service": {"type": "LoadBalancer", "annotations": {"a": "b"}}},
    {"monitoring": {"enabled": False}},
]

TEMPLATE_PATCHES = [
    {"runtime": {"image": "example.com/triton:2"}},
    {"runtime": {"maxBatchSize": 8}},
    {"runtime": {"exitTimeoutSeconds": 10}},
    {"runtime": {"env": [{"name": "X", "value": "1"}]}},
    {"runtime": {"parameters": {"max_model_len": "4096"}}},
    {"model": {"uri": "hf://meta-llama/Llama-3.1-8B"}},
    {"model": {"name": "other"}},
    {"resources": {"gpu": {"product": "NVIDIA-A100-SXM4-80GB"}}},
    {"resources": {"memory": "80Gi"}},
    {"placement": {"capacityType": "PreferSpot"}},
]


@pytest.mark.parametrize("patch", SCALE_ONLY_PATCHES, ids=json.dumps)
def test_scaling_and_non_pod_fields_do_not_change_the_revision(patch: dict[str, Any]) -> None:
    assert builders.revision_hash(make(patch)) == builders.revision_hash(make())


@pytest.mark.parametrize("patch", TEMPLATE_PATCHES, ids=json.dumps)
def test_pod_shaping_fields_change_the_revision(patch: dict[str, Any]) -> None:
    assert builders.revision_hash(make(patch)) != builders.revision_hash(make())


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(min_value=0, max_value=1000),
    max_replicas=st.integers(min_value=1, max_value=1000),
    image_tag=st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
)
def test_revision_properties(replicas: int, max_replicas: int, image_tag: str) -> None:
    """Scaling never moves the revision; any different image always does."""
    base = make({"runtime": {"image": f"example.com/triton:{image_tag}"}})
    scaled = make(
        {
            "runtime": {"image": f"example.com/triton:{image_tag}"},
            "replicas": replicas,
            "autoscaling": {"minReplicas": 1, "maxReplicas": max_replicas, "metrics": {"queueDepth": 4}},
        }
    )
    assert builders.revision_hash(scaled) == builders.revision_hash(base)
    other = make({"runtime": {"image": f"example.com/triton:{image_tag}-x"}})
    assert builders.revision_hash(other) != builders.revision_hash(base)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), st.text(max_size=20), max_size=5))
def test_revision_independent_of_parameter_order(params: dict[str, str]) -> None:
    reversed_params = dict(reversed(list(params.items())))
    a = make({"runtime": {"parameters": params}})
    b = make({"runtime": {"parameters": reversed_params}})
    assert builders.revision_hash(a) == builders.revision_hash(b)


def test_builders_are_pure() -> None:
    llmd = make({"placement": {"capacityType": "PreferSpot"}})
    before = copy.deepcopy(llmd.model_dump())
    first = builders.build_children(llmd, namespace="models", owner_uid=UID, monitoring_crds=True)
    first[2]["spec"]["template"]["spec"]["containers"][0]["args"].append("--mutated")
    second = builders.build_children(llmd, namespace="models", owner_uid=UID, monitoring_crds=True)
    assert "--mutated" not in second[2]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert llmd.model_dump() == before


def test_status_helpers() -> None:
    llmd = make()
    assert builders.ready_text(ready_replicas=1, desired_replicas=3) == "1/3"
    assert builders.endpoints(llmd, namespace="models") == {
        "http": "http://llama.models.svc:8000",
        "grpc": "llama.models.svc:8001",
        "metrics": "http://llama.models.svc:8002/metrics",
        "openai": "http://llama.models.svc:9000/v1",
        "model": "llama-3.1-8b",
    }


# ------------------------------------------------------------------------------ generated valid specs


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    backend = draw(st.sampled_from(["python", "vllm", "tensorrtllm"]))
    tp = 1 if backend == "python" else draw(st.sampled_from([1, 2, 4, 8]))
    accel = draw(st.sampled_from(["gpu", "mig"] + (["cpu"] if backend == "python" else [])))
    if accel == "mig" and tp > 1:
        accel = "gpu"
    resources: dict[str, Any] = {}
    if accel == "gpu":
        resources["gpu"] = {
            "count": tp * draw(st.integers(min_value=1, max_value=16 // tp)),
            "product": draw(st.sampled_from(["NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"])),
        }
    elif accel == "mig":
        resources["mig"] = {"profile": draw(st.sampled_from(["1g.10gb", "3g.40gb"]))}
    uri = draw(
        st.sampled_from(
            ["hf://org/model", "s3://bucket/model", "gs://bucket/m", "oci://r.example/m:1", "pvc://weights/m"]
        )
    )
    model: dict[str, Any] = {"name": draw(st.from_regex(r"[a-z][a-z0-9.-]{0,20}[a-z0-9]", fullmatch=True)), "uri": uri}
    if not uri.startswith("pvc://") and draw(st.booleans()):
        model["secretRef"] = {"name": "creds"}
    return {
        "model": model,
        "runtime": {"backend": backend, "tensorParallelSize": tp},
        "resources": resources,
        "placement": {"capacityType": draw(st.sampled_from(["OnDemand", "Spot", "PreferSpot"]))},
        "replicas": draw(st.integers(min_value=0, max_value=20)),
    }


@settings(max_examples=60, deadline=None)
@given(spec=valid_specs(), name=st.from_regex(r"[a-z][a-z0-9-]{0,50}[a-z0-9]", fullmatch=True))
def test_any_valid_spec_renders_consistent_children(spec: dict[str, Any], name: str) -> None:
    llmd = api.parse({"metadata": {"name": name}, "spec": spec})
    assert api.parse(llmd.to_k8s()) == llmd  # the stored form round-trips
    out = builders.build_children(llmd, namespace="ns", owner_uid=UID, monitoring_crds=True)
    dep = next(c for c in out if c["kind"] == "Deployment")
    template = dep["spec"]["template"]
    assert dep["spec"]["replicas"] == spec["replicas"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    for child in out:
        assert len(child["metadata"]["name"]) <= 63
    pod = template["spec"]
    volume_names = {v["name"] for v in pod["volumes"]}
    for container in pod["containers"] + pod.get("initContainers", []):
        assert {m["name"] for m in container["volumeMounts"]} <= volume_names
    limits = pod["containers"][0].get("resources", {}).get("limits", {})
    gpu_keys = {k for k in limits if k.startswith("nvidia.com/")}
    assert len(gpu_keys) == (0 if not (llmd.spec.resources.gpu or llmd.spec.resources.mig) else 1)
    spot_tolerated = any(t.get("key") == api.SPOT_TAINT_KEY for t in pod.get("tolerations", []))
    assert spot_tolerated == (llmd.spec.placement.capacity_type != "OnDemand")


# Golden revisions. The revision names each model's Deployment, so any change to these values makes the next
# operator release roll every running model in every cluster (a new pod per replica, a full weight download).
# Changing them must be a deliberate act: when a builder change is meant to alter the pods, take the new values
# from the failure of `.venv/bin/pytest tests/unit/test_builders.py -k pinned -vv`, paste them here, and say in
# the release notes that upgrading rolls every model. When the change was not meant to alter the
# pods, the builder change is the bug, not these values.
GOLDEN_REVISIONS = {
    "llama-3.1-70b-tp8.yaml": "r91848cb6c",
    "llama-3.1-8b-1gpu.yaml": "r7ebc5fc8a",
    "mistral-7b-spot.yaml": "r24a97d521",
    "qwen-7b-mig.yaml": "r2dea580f3",
    "smollm-cpu.yaml": "ra5bac4d47",
    "qwen-7b-autoscaled.yaml": "r12f930a3c",
}
MINIMAL = {
    "apiVersion": api.API_VERSION,
    "kind": api.KIND,
    "metadata": {"name": "minimal"},
    "spec": {"model": {"name": "m", "uri": "hf://org/m"}},
}
GOLDEN_MINIMAL_REVISION = "rb5c5f79d0"
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def _example_revisions() -> dict[str, str]:
    out = {}
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        (llmd,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == api.KIND]
        out[path.name] = builders.revision_hash(api.parse(llmd))
    return out


def test_revisions_of_the_examples_are_pinned() -> None:
    # A new example needs its own golden value, so the dicts are compared whole.
    assert _example_revisions() == GOLDEN_REVISIONS


def test_revision_of_a_minimal_spec_is_pinned() -> None:
    assert builders.revision_hash(api.parse(copy.deepcopy(MINIMAL))) == GOLDEN_MINIMAL_REVISION


# ------------------------------------------------------------------------------------------ OpenAI API


def front(llmd: api.LLMDeployment) -> dict[str, Any]:
    _triton, container = pod_spec(llmd)["containers"]
    assert container["name"] == "openai"
    return container


@pytest.mark.parametrize("backend", ["python", "vllm", "tensorrtllm"])
def test_every_model_pod_serves_the_openai_api_on_a_named_port(backend: str) -> None:
    patch: dict[str, Any] = {"runtime": {"backend": backend}}
    if backend == "tensorrtllm":
        patch["model"] = {"uri": "s3://engines/llama"}
    llmd = make(patch)
    c = front(llmd)
    assert c["ports"] == [{"name": "openai", "containerPort": builders.OPENAI_PORT, "protocol": "TCP"}]
    args = c["args"]
    assert args[:3] == ["python", "-m", "llm_runtime.openai_server"]
    assert f"--backend={backend}" in args and "--triton-model=llama-3.1-8b" in args
    assert f"--grpc-url=127.0.0.1:{builders.GRPC_PORT}" in args and "--host=0.0.0.0" in args
    assert f"--exit-timeout={llmd.spec.runtime.exit_timeout_seconds}" in args
    # The front reads the tokenizer from the model volume the Triton container mounts.
    model_mount = next(m for m in triton(llmd)["volumeMounts"] if m["name"] == "model")
    assert model_mount in c["volumeMounts"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "openai"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The front runs from the runtime image: the same image as Triton for python, the project's otherwise.
    runtime_image = builders.DEFAULT_IMAGES["python"]
    assert c["image"] == (builders.image_for(llmd) if backend == "python" else runtime_image)
    ports = {p["name"]: p for p in children(llmd)["Service"]["spec"]["ports"]}
    assert ports["openai"] == {
        "name": "openai", "port": 9000, "targetPort": "openai", "protocol": "TCP", "appProtocol": "http",
    }


def test_served_model_name_is_the_openai_id_and_the_triton_name_stays_a_folder_name() -> None:
    llmd = make({"model": {"servedModelName": "meta-llama/Llama-3.1-8B-Instruct"}})
    args = front(llmd)["args"]
    assert "--model-name=meta-llama/Llama-3.1-8B-Instruct" in args and "--triton-model=llama-3.1-8b" in args
    assert builders.endpoints(llmd, namespace="m")["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    files = builders.repository_files(llmd)
    assert all(p.startswith("llama-3.1-8b/") for p in files)
    # Left out, the id is the Triton name.
    assert "--model-name=llama-3.1-8b" in front(make())["args"]


@pytest.mark.parametrize("bad", ["/leading", "trailing/", "with space", "tab\tname", "a" * 257, "ümlaut/x"])
def test_served_model_name_rejects_what_no_client_sends(bad: str) -> None:
    with pytest.raises(Exception, match=r"servedModelName|served_model_name"):
        make({"model": {"servedModelName": bad}})
