"""Argo CD resource customizations for LLMDeployment: run them in Argo CD's Lua VM, and say what they should do.

- `harness_binary()` builds (once, cached under `~/.cache/triton-llm-operator/argocd-lua-harness/<source hash>/`)
  the Go program in `gitops/argocd/harness/`: gopher-lua v1.1.2 set up exactly as Argo CD v3.6.1 sets it up, and
  upstream's test-file formats. `Harness` runs it.
- The oracle: which actions `discovery.lua` should offer and which the action scripts should refuse, taken from
  `kubectl llm`'s own checks (`llm_operator.kubectl_plugin.refusal`), and the object an action should return, taken
  from the annotation protocol (`llm_operator.rollout.requests`). Lua and Python are written separately; the tests
  make them agree.
- `regenerate()` writes `health_test.yaml` and `actions/action_test.yaml` (plus the expected action outputs) from
  the captured objects in `testdata/` and `actions/testdata/`: a health case's status is the file name's prefix
  (`degraded_…`), its message what the script says (reviewed in the diff); an action's expected output comes from
  the oracle, never from the script.

`python -m llm_operator.dev.argocd regenerate` runs `regenerate()` and writes gitops/argocd/argocd-cm-patch.yaml;
`… check` runs every case in the harness; `… cli-check PATH/TO/argocd` runs every case through the real `argocd` CLI
(`argocd admin settings resource-overrides`; gitops/argocd/tools/build-argocd-cli.sh builds it).
"""

from __future__ import annotations

import copy
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from llm_operator import kubectl_plugin
from llm_operator.rollout import requests

from ._paths import cache_root, repo_root

CUSTOMIZATION_PATH: Final = "gitops/argocd/resource_customizations/serving.llmops.dev/LLMDeployment"
HARNESS_PATH: Final = "gitops/argocd/harness"
RESTARTED_AT: Final = "serving.llmops.dev/restartedAt"
RESTARTED_AT_PLACEHOLDER: Final = "0001-01-01T00:00:00Z"  # what the harness's normalizer puts in its place
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"

ACTIONS: Final = ("promote", "promote-full", "abort", "retry", "pause", "resume", "restart")
CANARY_ACTIONS: Final = ("promote", "promote-full", "abort", "retry", "pause")
# What the Argo CD UI shows; discovery.lua must return exactly these.
PRESENTATION: Final[dict[str, tuple[str, str]]] = {
    "restart": ("fa fa-fw fa-redo", "Restart model pods"),
    "promote": ("fa fa-fw fa-forward", "Promote to next step"),
    "promote-full": ("fa fa-fw fa-fast-forward", "Promote fully"),
    "abort": ("fa fa-fw fa-times-circle", "Abort canary"),
    "retry": ("fa fa-fw fa-redo-alt", "Retry canary"),
    "pause": ("fa fa-fw fa-pause-circle", "Pause rollout"),
    "resume": ("fa fa-fw fa-play-circle", "Resume rollout"),
}
HEALTH_PREFIXES: Final = {"healthy": "Healthy", "progressing": "Progressing", "suspended": "Suspended",
                          "degraded": "Degraded"}
OUTPUT_MARK: Final = "-after-"  # actions/testdata/<input>-after-<action>.yaml is an expected output


def checkout_root() -> Path:
    root = repo_root()
    if root is None:
        raise FileNotFoundError("gitops/argocd/ is only in a source checkout of triton-llm-operator")
    return root


def customization_dir() -> Path:
    return checkout_root() / CUSTOMIZATION_PATH


# ------------------------------------------------------------------------------------------------ the harness


def go_binary() -> str:
    for candidate in (os.environ.get("GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError("the Go toolchain (go >= 1.25) is needed to build gitops/argocd/harness; "
                            "set GO=/path/to/go")


def _source_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file() and (p.suffix == ".go" or p.name in
                                                                          ("go.mod", "go.sum"))):
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def harness_binary() -> Path:
    """The harness binary for the current sources, built on first use (a lock keeps parallel test workers from
    building it twice). The Go module and build caches are Go's own (`go env GOMODCACHE GOCACHE`)."""
    source = checkout_root() / HARNESS_PATH
    folder = cache_root() / "argocd-lua-harness" / _source_digest(source)
    binary = folder / "argocd-lua-harness"
    if binary.is_file():
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        partial = folder / "argocd-lua-harness.partial"
        started = time.monotonic()
        proc = subprocess.run([go_binary(), "build", "-trimpath", "-buildvcs=false", "-o", str(partial), "."],
                              cwd=source, capture_output=True, text=True, check=False,
                              env={**os.environ, "GOFLAGS": "-mod=readonly"}, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"go build of {source} failed:\n{proc.stdout}{proc.stderr}")
        partial.replace(binary)
        (folder / "build-seconds").write_text(f"{time.monotonic() - started:.1f}\n")
    return binary


class ActionError(Exception):
    """The action script refused (Lua `error(...)`); str() is the message Argo CD shows."""


class Harness:
    def __init__(self, binary: Path | None = None, directory: Path | None = None) -> None:
        self.binary = binary or harness_binary()
        self.directory = directory or customization_dir()

    def _run(self, *args: str, obj: Mapping[str, Any] | None = None) -> tuple[int, str]:
        with tempfile.TemporaryDirectory() as tmp:
            argv = [str(self.binary), *args]
            if obj is not None:
                path = Path(tmp) / "obj.json"
                path.write_text(json.dumps(obj))
                argv.append(str(path))
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
        return proc.returncode, proc.stdout

    def health(self, obj: Mapping[str, Any], *, open_libs: bool = False) -> dict[str, str]:
        args = ["health", "-script", str(self.directory / "health.lua")] + (["-open-libs"] if open_libs else [])
        rc, out = self._run(*args, obj=obj)
        result = json.loads(out) or {}
        if rc:
            raise RuntimeError(f"health.lua failed: {result.get('error')}")
        return {"status": result.get("status", ""), "message": result.get("message", "")}

    def discovery(self, obj: Mapping[str, Any], *, open_libs: bool = False) -> list[dict[str, Any]]:
        args = ["discovery", "-script", str(self.directory / "actions" / "discovery.lua")]
        rc, out = self._run(*args + (["-open-libs"] if open_libs else []), obj=obj)
        result = json.loads(out)
        if rc:
            raise RuntimeError(f"discovery.lua failed: {result.get('error')}")
        # Go's ResourceAction leaves out false and empty fields (omitempty).
        return [{"name": a["name"], "disabled": a.get("disabled", False), "iconClass": a.get("iconClass", ""),
                 "displayName": a.get("displayName", ""), **({"params": a["params"]} if a.get("params") else {})}
                for a in result]

    def action(self, obj: Mapping[str, Any], action: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the object the action returns, the JSON merge patch Argo CD's API server would send for it)."""
        rc, out = self._run("action", "-script", str(self.directory / "actions" / action / "action.lua"), obj=obj)
        result = json.loads(out)
        if rc:
            raise ActionError(result.get("error", out))
        impacted = result["impacted"]
        if len(impacted) != 1 or impacted[0]["operation"] != "patch":
            raise AssertionError(f"{action}: expected one patch of the object itself, got {impacted}")
        return impacted[0]["resource"], result.get("patch") or {}

    def test(self, directory: Path | None = None) -> list[dict[str, Any]]:
        """Every case of health_test.yaml and actions/action_test.yaml: [{name, ok, detail}]."""
        _, out = self._run("test", str(directory or self.directory))
        return [json.loads(line) for line in out.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ the oracle


def _annotations(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def refusal(action: str, obj: Mapping[str, Any]) -> str | None:
    """Why ACTION does not apply to OBJ now (None when it does): `kubectl llm`'s checks for the rollout verbs; for
    restart, a canary in progress (a new revision would replace the one under analysis)."""
    if action == "restart":
        return "a canary rollout is in progress" if kubectl_plugin.in_progress(obj) else None
    return kubectl_plugin.refusal(action, obj)


def listed(action: str, obj: Mapping[str, Any]) -> bool:
    """Whether the Argo CD UI lists ACTION for OBJ at all (it may still be disabled)."""
    canary = kubectl_plugin.strategy(obj) == "Canary"
    if action in CANARY_ACTIONS:
        return canary
    if action == "resume":
        return canary or requests.user_paused(_annotations(obj))
    return True


def expected_discovery(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """discovery.lua's result for OBJ, in action_test.yaml's form, sorted by name."""
    out = []
    for action in sorted(ACTIONS):
        if listed(action, obj):
            icon, display = PRESENTATION[action]
            out.append({"name": action, "disabled": refusal(action, obj) is not None, "iconClass": icon,
                        "displayName": display})
    return out


def request_id(obj: Mapping[str, Any]) -> str:
    """The id an Argo CD action gives a request: the object's resourceVersion, which every write changes (Argo CD
    gives action scripts neither random numbers nor a clock precise enough to tell two clicks apart)."""
    return f"argocd-rv{obj['metadata']['resourceVersion']}"


def expected_after(action: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object ACTION returns for OBJ (when it applies): the annotations `kubectl llm ACTION` would write, with
    Argo CD's request id; restart's timestamp is the harness's placeholder."""
    out = copy.deepcopy(dict(obj))
    annotations: dict[str, Any] = out.setdefault("metadata", {}).setdefault("annotations", {})
    if action == "restart":
        annotations[RESTARTED_AT] = RESTARTED_AT_PLACEHOLDER
        return out
    if action not in requests.VERBS:
        raise ValueError(f"unknown action {action!r}")
    # The same merge patch `kubectl llm` sends, with Argo CD's id in place of the time and random digits.
    patch = requests.patch_for(action, now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))["metadata"]["annotations"]
    for key, value in patch.items():
        if value is None:
            annotations.pop(key, None)
        elif key == requests.REQUEST_ANNOTATION:
            annotations[key] = f"{action}/{request_id(obj)}"
        else:
            annotations[key] = value
    return out


def strip(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A live object as testdata keeps it: without managedFields and kubectl's last-applied-configuration (noise,
    and the latter would turn upstream's two-way diff of action results into a three-way one)."""
    out = copy.deepcopy(dict(obj))
    meta = out.get("metadata") or {}
    meta.pop("managedFields", None)
    annotations = meta.get("annotations") or {}
    annotations.pop(LAST_APPLIED, None)
    if "annotations" in meta and not annotations:
        del meta["annotations"]
    return out


# ------------------------------------------------------------------------------------------------ test files


def _dump(path: Path, data: Any, header: str = "") -> None:
    text = yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True)
    path.write_text(header + text)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def expected_status(path: Path) -> str:
    prefix = path.name.split("_", 1)[0]
    if prefix not in HEALTH_PREFIXES:
        raise ValueError(f"{path.name}: health testdata is named <healthy|progressing|suspended|degraded>_<what>.yaml")
    return HEALTH_PREFIXES[prefix]


def action_inputs(directory: Path) -> list[Path]:
    return sorted(p for p in (directory / "actions" / "testdata").glob("*.yaml") if OUTPUT_MARK not in p.name)


GENERATED: Final = ("# Generated by `python -m llm_operator.dev.argocd regenerate` from the captured objects "
                    "(tests/e2e/test_argocd_capture.py).\n")


def regenerate(directory: Path | None = None, harness: Harness | None = None) -> None:
    directory = directory or customization_dir()
    harness = harness or Harness(directory=directory)
    tests = []
    for path in sorted((directory / "testdata").glob("*.yaml")):
        result = harness.health(_load(path))
        want = expected_status(path)
        if result["status"] != want:
            raise AssertionError(f"{path.name}: health.lua says {result}, the file name says {want}")
        tests.append({"healthStatus": result, "inputPath": f"testdata/{path.name}"})
    _dump(directory / "health_test.yaml", {"tests": tests}, GENERATED)

    testdata = directory / "actions" / "testdata"
    for old in testdata.glob(f"*{OUTPUT_MARK}*.yaml"):
        old.unlink()
    discovery_tests: list[dict[str, Any]] = []
    action_tests: list[dict[str, Any]] = []
    for path in action_inputs(directory):
        obj = _load(path)
        discovery_tests.append({"inputPath": f"testdata/{path.name}", "result": expected_discovery(obj)})
        for action in ACTIONS:
            case: dict[str, Any] = {"action": action, "inputPath": f"testdata/{path.name}"}
            try:
                harness.action(obj, action)
            except ActionError as exc:
                if refusal(action, obj) is None:
                    raise AssertionError(f"{action} on {path.name} refused by Lua ({exc}) but applies") from exc
                case["expectedErrorMessage"] = str(exc)
            else:
                if refusal(action, obj) is not None:
                    raise AssertionError(f"{action} on {path.name} ran in Lua but should be refused: "
                                         f"{refusal(action, obj)}")
                output = testdata / f"{path.stem}{OUTPUT_MARK}{action}.yaml"
                _dump(output, expected_after(action, obj))
                case["expectedOutputPath"] = f"testdata/{output.name}"
            action_tests.append(case)
    _dump(directory / "actions" / "action_test.yaml",
          {"discoveryTests": discovery_tests, "actionTests": action_tests}, GENERATED)


# ------------------------------------------------------------------------------------------------ argocd-cm


def argocd_cm(directory: Path | None = None, *, namespace: str = "argocd") -> dict[str, Any]:
    """The argocd-cm entries that install these customizations in a running Argo CD (split keys, so they merge
    with the keys already there): the health script and the actions (discovery plus one definition per action)."""
    directory = directory or customization_dir()
    actions = {
        "discovery.lua": (directory / "actions" / "discovery.lua").read_text(),
        "definitions": [{"name": path.parent.name, "action.lua": path.read_text()}
                        for path in sorted((directory / "actions").glob("*/action.lua"))],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}},
        "data": {
            "resource.customizations.health.serving.llmops.dev_LLMDeployment": (directory / "health.lua").read_text(),
            "resource.customizations.actions.serving.llmops.dev_LLMDeployment": yaml.safe_dump(
                actions, sort_keys=False, width=120),
        },
    }


ARGOCD_CM_PATCH: Final = "gitops/argocd/argocd-cm-patch.yaml"


def write_argocd_cm_patch() -> Path:
    path = checkout_root() / ARGOCD_CM_PATCH
    _dump(path, argocd_cm(),
          "# Generated by `python -m llm_operator.dev.argocd regenerate` from resource_customizations/.\n"
          "# kubectl patch configmap argocd-cm -n argocd --type merge \\\n"
          "#   --patch-file gitops/argocd/argocd-cm-patch.yaml\n")
    return path


def _parse_status(out: str) -> dict[str, str]:
    result = {"status": "", "message": ""}
    for line in out.splitlines():
        if line.startswith("STATUS: "):
            result["status"] = line.removeprefix("STATUS: ")
        elif line.startswith("MESSAGE: "):
            result["message"] = line.removeprefix("MESSAGE: ")
    return result


def _fatal(stderr: str) -> str:
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("level") == "fatal":
            return str(record.get("msg", ""))
    return stderr


def cli_check(argocd: Path, directory: Path | None = None) -> list[dict[str, Any]]:
    """Every case of health_test.yaml and actions/action_test.yaml through the real `argocd` CLI:
    `argocd admin settings resource-overrides health|list-actions|run-action FILE --argocd-cm-path CM`, with CM the
    argocd-cm that installs the customizations (so the health script runs as an argocd-cm script does: without
    Lua's standard libraries). run-action's result is read through KUBECTL_EXTERNAL_DIFF."""
    directory = directory or customization_dir()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cm = Path(tmp) / "argocd-cm.yaml"
        _dump(cm, argocd_cm(directory))

        def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(argocd), "admin", "settings", "resource-overrides", *args,
                                   "--argocd-cm-path", str(cm)], capture_output=True, text=True, check=False,
                                  timeout=120, env={**os.environ, **(env or {})})

        def record(name: str, problem: str | None) -> None:
            results.append({"name": name, "ok": problem is None, **({"detail": problem} if problem else {})})

        for case in _load(directory / "health_test.yaml")["tests"]:
            proc = run("health", str(directory / case["inputPath"]))
            got = _parse_status(proc.stdout)
            want = {"status": case["healthStatus"]["status"], "message": case["healthStatus"].get("message", "")}
            record(f"health/{case['inputPath']}",
                   None if proc.returncode == 0 and got == want else f"want {want}, got {got} {proc.stderr[-500:]}")
        suite = _load(directory / "actions" / "action_test.yaml")
        for case in suite["discoveryTests"]:
            proc = run("list-actions", str(directory / "actions" / case["inputPath"]))
            rows = [line.split() for line in proc.stdout.splitlines()[1:] if line.strip()]
            offered = {row[0]: row[1] == "true" for row in rows}
            wanted = {a["name"]: bool(a.get("disabled", False)) for a in case["result"]}
            record(f"list-actions/{case['inputPath']}", None if proc.returncode == 0 and offered == wanted
                   else f"want {wanted}, got {offered} {proc.stderr[-500:]}")
        for case in suite["actionTests"]:
            name = f"run-action/{case['action']}/{case['inputPath']}"
            source = _load(directory / "actions" / case["inputPath"])
            out = Path(tmp) / "diff"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            proc = run("run-action", str(directory / "actions" / case["inputPath"]), case["action"],
                       env={"KUBECTL_EXTERNAL_DIFF": f"cp -t {out}"})
            if "expectedErrorMessage" in case:
                got_error = _fatal(proc.stderr)
                record(name, None if proc.returncode != 0 and got_error == case["expectedErrorMessage"]
                       else f"want error {case['expectedErrorMessage']!r}, got rc {proc.returncode}: {got_error!r}")
                continue
            target = out / source["metadata"]["name"]
            if proc.returncode != 0 or not target.is_file():
                record(name, f"rc {proc.returncode}: {proc.stdout[-300:]} {_fatal(proc.stderr)}")
                continue
            got_obj = _load(target)
            annotations = (got_obj.get("metadata") or {}).get("annotations") or {}
            if RESTARTED_AT in annotations:
                annotations[RESTARTED_AT] = RESTARTED_AT_PLACEHOLDER
            want_obj = _load(directory / "actions" / case["expectedOutputPath"])
            same = json.loads(json.dumps(got_obj)) == json.loads(json.dumps(want_obj))
            record(name, None if same else "the object run-action returns differs from " + case["expectedOutputPath"])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["regenerate"]:
        regenerate()
        write_argocd_cm_patch()
        return 0
    if args == ["check"] or (len(args) == 2 and args[0] == "cli-check"):
        results = Harness().test() if args == ["check"] else cli_check(Path(args[1]))
        for r in results:
            print(("ok    " if r["ok"] else "FAIL  ") + r["name"] + (f": {r['detail']}" if r.get("detail") else ""))
        failed = sum(not r["ok"] for r in results)
        print(f"{len(results) - failed} passed, {failed} failed", file=sys.stderr)
        return 0 if results and not failed else 1
    print("usage: python -m llm_operator.dev.argocd regenerate | check | cli-check PATH/TO/argocd", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
