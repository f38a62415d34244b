"""Node-profile handling is pure: no cluster needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_operator.dev import NodeProfileError, build_nodes, load_profile

DEFAULT = Path(__file__).resolve().parents[2] / "e2e" / "nodes" / "default.yaml"


def _pools(nodes: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes:
        pool = node["metadata"]["labels"]["llmops.dev/node-pool"]
        counts[pool] = counts.get(pool, 0) + 1
    return counts


def test_default_fleet_matches_the_contract() -> None:
    nodes = build_nodes(load_profile(DEFAULT))
    assert _pools(nodes) == {"gpu-h100": 3, "gpu-a100": 1, "gpu-spot-l4": 2, "cpu": 2}
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert labels["kubernetes.io/hostname"] == node["metadata"]["name"]
        assert node["status"]["capacity"] == node["status"]["allocatable"]
        if "nvidia.com/gpu" in node["status"]["allocatable"]:
            for key in ("nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory"):
                assert key in labels, (node["metadata"]["name"], key)
    assert len({n["metadata"]["name"] for n in nodes}) == len(nodes)


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [(4, {"gpu-h100": 3, "gpu-a100": 1}), (1, {"gpu-h100": 1}), (2, {"gpu-h100": 1, "gpu-a100": 1}),
     (10, {"gpu-h100": 9, "gpu-a100": 1}), (0, {})],
)
def test_gpu_nodes_flag_keeps_one_different_product_when_possible(gpu: int, expected: dict[str, int]) -> None:
    counts = _pools(build_nodes(load_profile(DEFAULT), gpu_nodes=gpu, spot_nodes=0, cpu_nodes=0))
    assert counts == expected


def test_zones_alternate_so_topology_spread_has_two_domains() -> None:
    nodes = build_nodes(load_profile(DEFAULT), gpu_nodes=4)
    zones = {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes}
    assert zones == {"local-a", "local-b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pools: 3", "'pools' list"),
        ("pools: [{name: a, role: gpu}, {name: a, role: cpu}]", "pools[1].name"),
        ("pools: [{name: a, role: tpu}]", "pools[0].role: must be one of gpu, spot, cpu"),
        ("pools: [{name: a, role: cpu, count: -1}]", "pools[0].count"),
        ("pools: [{name: a, role: cpu, allocatable: [1]}]", "pools[0].allocatable"),
    ],
)
def test_bad_profiles_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(NodeProfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_profile(path)


def test_asking_for_a_role_the_profile_lacks_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("pools: [{name: c, role: cpu, count: 1}]")
    with pytest.raises(NodeProfileError, match="no 'gpu' pool"):
        build_nodes(load_profile(path), gpu_nodes=2)
    assert len(build_nodes(load_profile(path), gpu_nodes=0)) == 1
