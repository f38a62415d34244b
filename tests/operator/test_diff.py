"""The drift check decides whether a write is needed; it must agree with how the API server stores objects."""

from __future__ import annotations

import copy

from llm_operator import api, builders
from llm_operator._diff import contains


def test_server_defaults_and_extra_fields_are_not_drift() -> None:
    desired = {"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}
    actual = {"spec": {"replicas": 2, "revisionHistoryLimit": 10,
                       "template": {"spec": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "Always"}],
                                             "dnsPolicy": "ClusterFirst"}}}}
    assert contains(desired, actual)


def test_changed_scalar_is_drift() -> None:
    assert not contains({"spec": {"replicas": 2}}, {"spec": {"replicas": 3}})
    assert not contains({"data": {"k": "v"}}, {"data": {"k": "edited"}})
    assert not contains({"data": {"k": "v"}}, {"data": {}})


def limits(**values: object) -> dict[str, object]:
    return {"spec": {"template": {"spec": {"containers": [{"name": "triton", "resources": {"limits": values}}]}}}}


def test_quantities_compare_by_value_under_resources() -> None:
    # What the API server does to the quantities we send: it canonicalises them.
    assert contains(limits(cpu="1000m", memory="1Gi"), limits(cpu="1", memory="1024Mi"))
    assert contains(limits(memory="8Gi"), limits(memory="8589934592"))
    assert contains(limits(**{"nvidia.com/gpu": 1}), limits(**{"nvidia.com/gpu": "1"}))
    requests = {"resources": {"requests": {"cpu": "500m"}}}
    assert contains(requests, {"resources": {"requests": {"cpu": "0.5"}}})
    assert not contains(limits(cpu="2"), limits(cpu="1500m"))
    assert not contains(limits(memory="8Gi"), limits(memory="8G"))
    assert not contains(limits(**{"nvidia.com/gpu": 1}), limits(**{"nvidia.com/gpu": "2"}))


def test_shared_memory_size_limit_compares_by_value() -> None:
    def dshm(size: str) -> dict[str, object]:
        return {"volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}]}

    assert contains(dshm("1024Mi"), dshm("1Gi"))
    assert not contains(dshm("2Gi"), dshm("1Gi"))


def test_numeric_strings_elsewhere_are_compared_as_strings() -> None:
    env = {"env": [{"name": "TRTLLM_ORCHESTRATOR", "value": "1"}]}
    assert contains(env, {"env": [{"name": "TRTLLM_ORCHESTRATOR", "value": "1"}]})
    assert not contains(env, {"env": [{"name": "TRTLLM_ORCHESTRATOR", "value": "1.0"}]})
    label = {"metadata": {"labels": {"version": "1"}}}
    assert not contains(label, {"metadata": {"labels": {"version": "1.0"}}})
    assert not contains(label, {"metadata": {"labels": {"version": "1000m"}}})
    data = {"data": {"max_batch_size": "1"}}
    assert not contains(data, {"data": {"max_batch_size": "1.0"}})
    # Quantity-looking values that happen to sit under a key named like a resource are still plain strings.
    assert not contains({"data": {"cpu": "1000m"}}, {"data": {"cpu": "1"}})
    assert not contains({"metadata": {"annotations": {"memory": "1Gi"}}},
                        {"metadata": {"annotations": {"memory": "1024Mi"}}})


def test_bool_is_not_a_number() -> None:
    assert not contains({"readOnly": True}, {"readOnly": 1})
    assert not contains({"replicas": 1}, {"replicas": True})
    assert not contains({"enableServiceLinks": False}, {"enableServiceLinks": 0})
    assert contains({"readOnly": True}, {"readOnly": True})
    assert not contains(limits(**{"nvidia.com/gpu": 1}), limits(**{"nvidia.com/gpu": True}))


def test_int_or_string_fields_keep_their_type() -> None:
    # The API server stores an int-or-string as sent (it rejects numeric strings in these fields), so an int
    # comes back an int and a port name comes back a name.
    assert contains({"spec": {"maxUnavailable": 1}}, {"spec": {"maxUnavailable": 1}})
    assert not contains({"spec": {"maxUnavailable": 1}}, {"spec": {"maxUnavailable": 2}})
    assert not contains({"spec": {"maxUnavailable": 1}}, {"spec": {"maxUnavailable": "1"}})
    assert not contains({"spec": {"maxUnavailable": 1}}, {"spec": {"maxUnavailable": "100%"}})
    ports = {"ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}
    assert contains(ports, {"ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]})
    assert not contains(ports, {"ports": [{"name": "http", "port": 8000, "targetPort": 8000}]})
    strategy = {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert contains(strategy, {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
    assert not contains(strategy, {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}})


def test_scalars_keep_plain_equality() -> None:
    assert contains({"port": 8000}, {"port": 8000})
    assert not contains({"image": "a:1"}, {"image": "a:2"})
    assert not contains({"port": 8000}, {"port": "8000"})


def test_keyed_lists_match_by_key_and_tolerate_foreign_entries() -> None:
    desired = {"ports": [{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001}]}
    reordered_with_extra = {"ports": [{"name": "grpc", "port": 8001}, {"name": "debug", "port": 9999},
                                      {"name": "http", "port": 8000, "protocol": "TCP"}]}
    assert contains(desired, reordered_with_extra)
    assert not contains(desired, {"ports": [{"name": "grpc", "port": 8001}]})
    assert not contains(desired, {"ports": [{"name": "http", "port": 9000}, {"name": "grpc", "port": 8001}]})


def test_atomic_lists_must_match_exactly() -> None:
    assert contains({"args": ["--a", "--b"]}, {"args": ["--a", "--b"]})
    assert not contains({"args": ["--a", "--b"]}, {"args": ["--a", "--b", "--c"]})
    assert not contains({"args": ["--a", "--b"]}, {"args": ["--b", "--a"]})
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    extra = {"key": "x", "operator": "Exists"}
    assert not contains({"tolerations": tolerations}, {"tolerations": [*tolerations, extra]})


def test_a_built_deployment_survives_canonicalisation_but_not_a_hand_edit() -> None:
    llmd = api.parse({
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"model": {"name": "m", "uri": "hf://org/m"},
                 "resources": {"gpu": {"count": 2}, "cpu": "8000m", "memory": "65536Mi", "sharedMemory": "4096Mi"},
                 "runtime": {"env": [{"name": "WORKERS", "value": "1"}]}},
    })
    desired = builders.build_deployment(llmd, namespace="ns", revision="r1", owner_uid=None)
    live = copy.deepcopy(desired)
    pod = live["spec"]["template"]["spec"]
    triton, _front = pod["containers"]
    triton["resources"]["limits"] |= {"cpu": "8", "memory": "64Gi", builders.GPU_RESOURCE: "2"}
    triton["resources"]["requests"] |= {"cpu": "8", "memory": "64Gi"}
    (dshm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    dshm["emptyDir"]["sizeLimit"] = "4Gi"
    assert contains(desired, live)

    (workers,) = [e for e in triton["env"] if e["name"] == "WORKERS"]
    workers["value"] = "1.0"
    assert not contains(desired, live)
