"""The drift check decides whether a write is needed; it must agree with how the API server stores objects."""

from __future__ import annotations

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


def test_quantities_compare_by_value() -> None:
    assert contains({"cpu": "1000m", "memory": "1Gi"}, {"cpu": "1", "memory": "1024Mi"})
    assert not contains({"cpu": "2"}, {"cpu": "1500m"})
    assert contains({"port": 8000}, {"port": 8000})
    assert not contains({"image": "a:1"}, {"image": "a:2"})


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
