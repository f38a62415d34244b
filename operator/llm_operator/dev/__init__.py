"""A real local Kubernetes control plane with fake GPU nodes, for development and tests.

Public surface: :class:`LocalCluster`, :func:`build_nodes`, :func:`load_profile`, :class:`ClusterError`.
"""

from llm_operator.dev._binaries import BinariesError, resolve_bin_dir
from llm_operator.dev._cluster import ClusterError, ClusterInfo, LocalCluster
from llm_operator.dev._nodes import NodeProfileError, build_nodes, load_profile

__all__ = [
    "BinariesError",
    "ClusterError",
    "ClusterInfo",
    "LocalCluster",
    "NodeProfileError",
    "build_nodes",
    "load_profile",
    "resolve_bin_dir",
]
