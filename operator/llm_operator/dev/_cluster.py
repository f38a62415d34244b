"""Start and stop a real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) on 127.0.0.1,
with the Gateway API CRDs (HTTPRoute, Gateway, GatewayClass), and with ``metrics`` the metrics test bed
(Prometheus, the traffic emulator, prometheus-adapter)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm_operator.dev import _metrics_stack as ms
from llm_operator.dev._binaries import adapter_binary, prometheus_binary, resolve_bin_dir
from llm_operator.dev._gateway_api import CRD_NAMES as GATEWAY_API_CRDS
from llm_operator.dev._gateway_api import GatewayAPIError, load_crds
from llm_operator.dev._nodes import build_nodes, load_profile
from llm_operator.dev._paths import e2e_dir
from llm_operator.dev._pki import ADAPTER_USER, FRONT_PROXY_CLIENT_CN, make_pki

STATE_FILE = "cluster.json"
# Start order; `down` stops them in reverse so nothing reconnects to a dead dependency and logs noise.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
METRICS_COMPONENTS = ("prometheus", "traffic", "prometheus-adapter")
# What stop_component/start_component can take down and bring back (chaos tests).
RESTARTABLE = ("etcd", "kube-apiserver", "kube-controller-manager")


class ClusterError(RuntimeError):
    """The local cluster could not be started or stopped; the message says which component and why."""


@dataclass
class ClusterInfo:
    name: str
    state_dir: str
    kubeconfig: str
    server: str
    bin_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    started_at: float = 0.0
    ready_seconds: float = 0.0
    metrics: bool = False

    @property
    def prometheus_url(self) -> str | None:
        port = self.ports.get("prometheus")
        return f"http://127.0.0.1:{port}" if port else None

    @property
    def traffic_url(self) -> str | None:
        port = self.ports.get("traffic")
        return f"http://127.0.0.1:{port}" if port else None

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterInfo | None:
        try:
            return cls(**json.loads((state_dir / STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalCluster:
    """One local cluster, identified by its state folder (which holds certs, etcd data, logs, kubeconfig)."""

    def __init__(
        self,
        *,
        state_dir: Path,
        kubeconfig: Path | None = None,
        bin_dir: Path | None = None,
        profile: Path | None = None,
        gpu_nodes: int | None = None,
        spot_nodes: int | None = None,
        cpu_nodes: int | None = None,
        extra_apiserver_args: Sequence[str] = (),
        log: Callable[[str], None] = lambda msg: None,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.kubeconfig = (kubeconfig or self.state_dir / "kubeconfig").resolve()
        self._bin_dir = bin_dir
        self._profile = profile
        self._sizes = {"gpu_nodes": gpu_nodes, "spot_nodes": spot_nodes, "cpu_nodes": cpu_nodes}
        self._extra_apiserver_args = tuple(extra_apiserver_args)
        self._log = log
        self._ssl: ssl.SSLContext | None = None

    # ---------------------------------------------------------------- public

    def info(self) -> ClusterInfo | None:
        return ClusterInfo.load(self.state_dir)

    def up(
        self, *, timeout: float = 180.0, metrics: bool = False, traffic_startup_delay: float | None = None
    ) -> ClusterInfo:
        """Start the cluster and return once it is usable.

        With ``metrics`` also start Prometheus, the traffic emulator (``python -m llm_operator.dev.traffic``,
        pods' model load taking ``traffic_startup_delay`` seconds if given) and prometheus-adapter, and return
        once ``custom.metrics.k8s.io`` answers through the apiserver.
        """
        existing = self.info()
        if existing and all(_alive(pid) for pid in existing.pids.values()) and existing.pids:
            if metrics and not existing.metrics:
                raise ClusterError(
                    f"cluster {existing.name} is already running without the metrics test bed; "
                    "stop it first (llmctl dev down) to start it with --metrics"
                )
            self._log(f"cluster already running (state {self.state_dir})")
            return existing
        if existing:
            self.down()
        started = time.monotonic()
        bin_dir = (self._bin_dir or resolve_bin_dir(with_adapter=metrics)).resolve()
        profile = load_profile(self._profile or e2e_dir() / "nodes" / "default.yaml")
        nodes = build_nodes(profile, **self._sizes)  # validate before starting anything
        try:  # cached after the first run; the first fetches one 3.4 MB zip from the Go module proxy
            gateway_crds = load_crds()
        except GatewayAPIError as exc:
            raise ClusterError(f"Gateway API CRDs: {exc}") from exc
        stack: dict[str, Path] = {}
        if metrics:  # every missing piece is reported before anything starts
            rules, adapter_config = ms.contract_paths()
            for path in (rules, adapter_config):
                if not path.is_file():
                    raise ClusterError(f"metrics test bed: {path} is missing")
            stack = {"prometheus": prometheus_binary(), "prometheus-adapter": adapter_binary(bin_dir),
                     "rules": rules, "adapter-config": adapter_config}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        pki = self.state_dir / "pki"
        make_pki(pki)
        ports = {
            "etcd": free_port(),
            "etcd-peer": free_port(),
            "kube-apiserver": free_port(),
            "kube-controller-manager": free_port(),
            "kube-scheduler": free_port(),
            "kwok": free_port(),
        }
        if metrics:
            ports.update({name: free_port() for name in METRICS_COMPONENTS})
        server = f"https://127.0.0.1:{ports['kube-apiserver']}"
        info = ClusterInfo(
            name=self.state_dir.name,
            state_dir=str(self.state_dir),
            kubeconfig=str(self.kubeconfig),
            server=server,
            bin_dir=str(bin_dir),
            ports=ports,
            started_at=time.time(),
            metrics=metrics,
        )
        info.save()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dev-up")
        try:
            self._write_kubeconfig(server=server, pki=pki)
            if metrics:
                # Python's imports make the emulator the slowest to answer: started first, it is ready about
                # when the apiserver is (its pod watch retries until then).
                self._start_scrape_side(info, stack, traffic_startup_delay)
            self._start(info, "etcd", [str(bin_dir / "etcd"), *self._etcd_args(ports)])
            self._wait(info, "etcd", lambda: self._http_ok(f"http://127.0.0.1:{ports['etcd']}/health"), timeout)
            self._start(info, "kube-apiserver", [str(bin_dir / "kube-apiserver"), *self._apiserver_args(ports, pki)])
            self._wait(info, "kube-apiserver", lambda: self._api_ok("/readyz"), timeout)
            for name, args in (
                ("kube-controller-manager", self._kcm_args(ports, pki)),
                ("kube-scheduler", self._scheduler_args(ports)),
                ("kwok", self._kwok_args(ports)),
            ):
                self._start(info, name, [str(bin_dir / name), *args])
            # 1 s of POSTs (the apiserver compiles the schemas' CEL rules) while the controllers start and the
            # nodes are created.
            crds_posted = pool.submit(self._create_all, gateway_crds)
            if metrics:
                self._start_adapter(info, stack, pki)
            for node in nodes:
                self._api("POST", "/api/v1/nodes", node)
            info.nodes = [n["metadata"]["name"] for n in nodes]
            info.save()
            kcm_port = ports["kube-controller-manager"]
            self._wait(info, "kube-controller-manager", lambda: self._healthz(kcm_port), timeout)
            self._wait(info, "kube-scheduler", lambda: self._healthz(ports["kube-scheduler"]), timeout)
            self._wait(info, "kwok (nodes Ready)", lambda: self._nodes_ready(info.nodes), timeout)
            # Pods are refused until the ServiceAccount controller made the namespace's default account.
            self._wait(
                info,
                "kube-controller-manager (default ServiceAccount)",
                lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
                timeout,
            )
            crds_posted.result()
            self._wait(info, "kube-apiserver (Gateway API CRDs served)", self._gateway_api_served, timeout)
            if metrics:
                self._register_adapter(info, pki, timeout)
        except BaseException:
            self.down(keep_logs=True)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        info.ready_seconds = round(time.monotonic() - started, 2)
        info.save()
        return info

    def down(self, *, keep_logs: bool = False) -> None:
        info = self.info()
        if info is not None:
            order = [*reversed(METRICS_COMPONENTS), *reversed(COMPONENTS)]
            for name in [*order, *(n for n in info.pids if n not in order)]:
                pid = info.pids.get(name)
                if pid:
                    self._stop(pid)
        if keep_logs:
            # Leave logs for the error message; drop everything else (etcd data, keys).
            for child in self.state_dir.iterdir() if self.state_dir.exists() else []:
                if child.name != "logs":
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            if self.kubeconfig.parent != self.state_dir:
                self.kubeconfig.unlink(missing_ok=True)

    def stop_component(self, name: str, *, kill: bool = False) -> None:
        """Stop one running component: SIGTERM (SIGKILL after 10 s), or with ``kill`` SIGKILL at once, as a crash.
        Its ports, flags and data stay, so :meth:`start_component` brings it back as it was. For chaos tests: an
        apiserver or etcd outage, a garbage collector that is late."""
        info = self._running_info(name)
        self._stop(info.pids[name], grace=0.0 if kill else 10.0)
        self._log(f"stopped {name} (pid {info.pids[name]}{', SIGKILL' if kill else ''})")

    def start_component(self, name: str, *, timeout: float = 60.0) -> None:
        """Start a component stopped by :meth:`stop_component` again, with the same flags and data dir, and
        return once it answers its health check."""
        info = self._running_info(name, alive=False)
        if _alive(info.pids[name]):
            raise ClusterError(f"{name} is running (pid {info.pids[name]}); stop it first")
        pki, ports = self.state_dir / "pki", info.ports
        argv, check = {
            "etcd": (self._etcd_args(ports), lambda: self._http_ok(f"http://127.0.0.1:{ports['etcd']}/health")),
            "kube-apiserver": (self._apiserver_args(ports, pki), lambda: self._api_ok("/readyz")),
            "kube-controller-manager": (self._kcm_args(ports, pki),
                                        lambda: self._healthz(ports["kube-controller-manager"])),
        }[name]
        self._start(info, name, [str(Path(info.bin_dir) / name), *argv])
        self._wait(info, name, check, timeout)

    def restart_component(self, name: str, *, down_seconds: float = 0.0, kill: bool = False,
                          timeout: float = 60.0) -> float:
        """Stop ``name`` (one of RESTARTABLE), keep it down ``down_seconds``, start it again; return
        the seconds from the stop until it was healthy again."""
        began = time.monotonic()
        self.stop_component(name, kill=kill)
        time.sleep(down_seconds)
        self.start_component(name, timeout=timeout)
        return time.monotonic() - began

    def _running_info(self, name: str, *, alive: bool = True) -> ClusterInfo:
        if name not in RESTARTABLE:
            raise ClusterError(f"cannot restart {name}: only {', '.join(RESTARTABLE)}")
        info = self.info()
        if info is None or name not in info.pids:
            raise ClusterError(f"no cluster with {name} in {self.state_dir}")
        if alive and not _alive(info.pids[name]):
            raise ClusterError(f"{name} (pid {info.pids[name]}) is not running")
        return info

    # ---------------------------------------------------------------- processes

    def _start(self, info: ClusterInfo, name: str, argv: list[str]) -> None:
        logfile = open(self.state_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            argv,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.state_dir,
            # Own session: the cluster outlives `llmctl dev up`, and Ctrl-C in the shell does not hit it.
            start_new_session=True,
        )
        logfile.close()
        info.pids[name] = proc.pid
        info.save()
        self._log(f"started {name} (pid {proc.pid})")

    @staticmethod
    def _stop(pid: int, grace: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def _wait(self, info: ClusterInfo, what: str, check: Callable[[], bool], timeout: float) -> None:
        component = what.split(" ")[0]
        pid = info.pids.get(component)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pid is not None and not _alive(pid):
                raise ClusterError(
                    f"{component} exited during start-up; last log lines "
                    f"({self.state_dir / 'logs' / (component + '.log')}):\n"
                    f"{_tail(self.state_dir / 'logs' / f'{component}.log')}"
                )
            if check():
                self._log(f"{what} ready")
                return
            time.sleep(0.1)
        raise ClusterError(
            f"{what} not ready after {timeout:.0f}s; last log lines:\n"
            f"{_tail(self.state_dir / 'logs' / f'{component}.log')}"
        )

    # ---------------------------------------------------------------- metrics test bed

    def _start_scrape_side(
        self, info: ClusterInfo, stack: Mapping[str, Path], traffic_startup_delay: float | None
    ) -> None:
        """Prometheus and the traffic emulator: they need no apiserver to start."""
        ports = info.ports
        prom_dir = self.state_dir / "prometheus"
        prom_dir.mkdir(exist_ok=True)
        prom_config = prom_dir / "prometheus.yml"
        targets = prom_dir / ms.TARGETS_DIR
        targets.mkdir(exist_ok=True)
        prom_config.write_text(yaml.safe_dump(
            ms.prometheus_config(traffic_port=ports["traffic"], rules_path=stack["rules"], targets_dir=targets),
            sort_keys=False))
        traffic = [sys.executable, "-m", "llm_operator.dev.traffic", "--kubeconfig", str(self.kubeconfig),
                   "--listen", f"127.0.0.1:{ports['traffic']}"]
        if traffic_startup_delay is not None:
            traffic += ["--startup-delay", str(traffic_startup_delay)]
        self._start(info, "traffic", traffic)
        self._start(info, "prometheus", [
            str(stack["prometheus"]),
            *ms.prometheus_args(port=ports["prometheus"], config=prom_config, data=prom_dir / "data"),
        ])

    def _start_adapter(self, info: ClusterInfo, stack: Mapping[str, Path], pki: Path) -> None:
        ports = info.ports
        adapter_kubeconfig = self.state_dir / "prometheus-adapter.kubeconfig"
        self._write_kubeconfig(server=info.server, pki=pki, path=adapter_kubeconfig,
                               user="prometheus-adapter-client")
        # The adapter needs its RBAC before its first request, or it starts up without the front-proxy CA.
        for obj in [*ms.adapter_rbac(user=ADAPTER_USER), *ms.adapter_service(port=ports["prometheus-adapter"])]:
            self._create(obj)
        self._start(info, "prometheus-adapter", [
            str(stack["prometheus-adapter"]),
            *ms.adapter_args(port=ports["prometheus-adapter"], kubeconfig=adapter_kubeconfig, pki=pki,
                             prometheus_port=ports["prometheus"], config=stack["adapter-config"]),
        ])

    def _register_adapter(self, info: ClusterInfo, pki: Path, timeout: float) -> None:
        ports = info.ports
        self._wait(info, "prometheus", lambda: self._http_ok(f"{info.prometheus_url}/-/ready"), timeout)
        self._wait(info, "traffic", lambda: self._http_ok(f"{info.traffic_url}/healthz"), timeout)
        self._wait(info, "prometheus-adapter", lambda: self._healthz(ports["prometheus-adapter"]), timeout)
        # Registered only once the adapter answers: the aggregator then marks the APIServices Available on its
        # first check instead of after a failed one and its back-off.
        for obj in ms.apiservices(port=ports["prometheus-adapter"], ca_bundle=(pki / "ca.crt").read_bytes()):
            self._create(obj)
        for version in ms.CUSTOM_METRICS_VERSIONS:
            group_version = f"{ms.CUSTOM_METRICS_GROUP}/{version}"
            self._wait(info, f"prometheus-adapter (APIService {version}.{ms.CUSTOM_METRICS_GROUP} Available)",
                       functools.partial(lambda v: self.apiservice_available(v)[0], version), timeout)
            self._wait(info, f"prometheus-adapter (/apis/{group_version})",
                       functools.partial(self._api_ok, f"/apis/{group_version}"), timeout)

    def apiservice_available(self, version: str = "v1beta1") -> tuple[bool, str]:
        """(Available, "status reason: message") of the custom metrics APIService of ``version``."""
        name = f"{version}.{ms.CUSTOM_METRICS_GROUP}"
        try:
            obj = self._api("GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
        except (ClusterError, OSError) as exc:
            return False, f"{name}: {exc}"
        cond = ms.condition(obj, "Available")
        if cond is None:
            return False, f"{name}: no Available condition yet"
        return cond.get("status") == "True", f"{cond.get('status')} {cond.get('reason')}: {cond.get('message')}"

    def _create(self, obj: dict[str, Any]) -> None:
        self._api("POST", ms.api_path(obj), obj)  # `up` always starts on an empty etcd

    def _create_all(self, objs: Sequence[dict[str, Any]]) -> None:
        for obj in objs:
            self._create(obj)

    # ---------------------------------------------------------------- flags

    def _etcd_args(self, ports: Mapping[str, int]) -> list[str]:
        client = f"http://127.0.0.1:{ports['etcd']}"
        return [
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd-peer']}",
            f"--initial-cluster=default=http://127.0.0.1:{ports['etcd-peer']}",
            # A throwaway dev/test store: durability is not worth the fsync latency.
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]

    def _apiserver_args(self, ports: Mapping[str, int], pki: Path) -> list[str]:
        return [
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # The aggregation layer (APIService proxying, e.g. custom.metrics.k8s.io from prometheus-adapter):
            # the apiserver forwards the authenticated user in these headers, proven by its front-proxy client
            # cert; aggregated servers read the CA and names from kube-system/extension-apiserver-authentication.
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_CN}",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            # Route to a Service's DNS name (an ExternalName `localhost` keeps every byte on 127.0.0.1), never
            # to Endpoints, which cannot be loopback addresses.
            "--enable-aggregator-routing=false",
            "--allow-privileged=true",
            "--profiling=false",
            "--endpoint-reconciler-type=none",
            "--v=0",
            *self._extra_apiserver_args,
        ]

    def _component_kubeconfig_args(self) -> list[str]:
        kc = str(self.kubeconfig)
        return [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}"]

    def _kcm_args(self, ports: Mapping[str, int], pki: Path) -> list[str]:
        return [
            *self._component_kubeconfig_args(),
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
            # Faster than the 15 s default so autoscaling tests observe decisions quickly.
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--v=0",
        ]

    def _scheduler_args(self, ports: Mapping[str, int]) -> list[str]:
        return [
            *self._component_kubeconfig_args(),
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
            "--v=0",
        ]

    def _kwok_args(self, ports: Mapping[str, int]) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--config={e2e_dir() / 'kwok' / 'stages.yaml'}",
            # Node health comes from Lease renewals (the heartbeat stage only patches status every ~10 min);
            # without leases the node lifecycle controller marks every node NotReady after 40 s.
            "--node-lease-duration-seconds=40",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.0.0.1",
        ]

    def _write_kubeconfig(self, *, server: str, pki: Path, path: Path | None = None, user: str = "admin") -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "llmctl", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}
            ],
            "users": [
                {
                    "name": f"llmctl-{user}",
                    "user": {
                        "client-certificate": str(pki / f"{user}.crt"),
                        "client-key": str(pki / f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": "llmctl", "context": {"cluster": "llmctl", "user": f"llmctl-{user}"}}],
            "current-context": "llmctl",
        }
        target = path or self.kubeconfig
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        self._ssl = None

    # ---------------------------------------------------------------- HTTP

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            pki = self.state_dir / "pki"
            ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
            self._ssl = ctx
        return self._ssl

    def _api(self, method: str, path: str, body: Any = None) -> Any:
        info = self.info()
        assert info is not None
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(info.server + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._context(), timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ClusterError(f"{method} {path} -> {exc.code}: {exc.read().decode(errors='replace')}") from exc
        try:
            return json.loads(raw or b"null")
        except ValueError:  # health endpoints answer plain text
            return raw.decode(errors="replace")

    def _api_ok(self, path: str) -> bool:
        try:
            self._api("GET", path)
        except (ClusterError, OSError):
            return False
        return True

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    @staticmethod
    def _healthz(port: int) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert on loopback; only liveness is read
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _gateway_api_served(self) -> bool:
        """Every Gateway API CRD Established, and HTTPRoute in discovery (kubectl reads it, a moment later)."""
        for name in GATEWAY_API_CRDS:
            try:
                crd = self._api("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            except (ClusterError, OSError):
                return False
            cond = ms.condition(crd, "Established")
            if cond is None or cond.get("status") != "True":
                return False
        try:
            resources = self._api("GET", "/apis/gateway.networking.k8s.io/v1")["resources"]
        except (ClusterError, OSError, KeyError, TypeError):
            return False
        return any(r.get("name") == "httproutes" for r in resources)

    def _nodes_ready(self, names: Sequence[str]) -> bool:
        try:
            items = self._api("GET", "/api/v1/nodes")["items"]
        except (ClusterError, OSError):
            return False
        ready = {
            n["metadata"]["name"]
            for n in items
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        }
        return set(names) <= ready
