"""Traffic emulator for the fake model pods of the local cluster.

kwok runs no container, so nothing serves the metrics a model pod would export. The emulator watches the
operator's model pods and serves, for each Ready pod past its startup delay, the series its backend (python,
vllm or tensorrtllm) would export under an emulated load. Prometheus scrapes it with ``honor_labels``.

Run it with ``python -m llm_operator.dev.traffic --kubeconfig KUBECONFIG --listen 127.0.0.1:PORT
[--startup-delay SECONDS]`` or ``llmctl dev traffic``; drive it with :class:`TrafficClient`
(``llm_operator.dev.traffic.client``). The queueing model is in :mod:`llm_operator.dev.traffic._model` and
docs/metrics.md.
"""

from llm_operator.dev.traffic._model import (
    DEFAULT_BEHAVIOURS,
    DEFAULT_IMAGE_TAG_SUFFIXES,
    Behaviour,
    Capacity,
    Load,
    PodInfo,
    PodState,
    Tally,
    TrafficModel,
)
from llm_operator.dev.traffic._profile import Step, play, step_profile
from llm_operator.dev.traffic._server import ControlError, ControlFile, Emulator, PodSource, TrafficServer

__all__ = [
    "DEFAULT_BEHAVIOURS",
    "DEFAULT_IMAGE_TAG_SUFFIXES",
    "Behaviour",
    "Capacity",
    "ControlError",
    "ControlFile",
    "Emulator",
    "Load",
    "PodInfo",
    "PodSource",
    "PodState",
    "Step",
    "Tally",
    "TrafficModel",
    "TrafficServer",
    "play",
    "step_profile",
]
