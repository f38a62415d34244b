#!/usr/bin/env bash
# `make demo`: local cluster with fake GPU nodes, the CRD, the operator, one example, and `kubectl get llmd`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
STATE="${LLMCTL_STATE_DIR:-$HOME/.local/state/triton-llm-operator}"
EXAMPLE="${DEMO_EXAMPLE:-examples/llama-3.1-8b-1gpu.yaml}"
NS="${DEMO_NS:-llm-demo}"

$BIN/llmctl dev up
export KUBECONFIG="$STATE/dev/kubeconfig"
bindir="$(bash e2e/build-binaries.sh 2>/dev/null)"
kubectl() { "$bindir/kubectl" "$@"; }

echo "== fake GPU fleet"
kubectl get nodes -L nvidia.com/gpu.product,llmops.dev/capacity-type -o wide | cut -c1-160

echo "== CRD"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established crd/llmdeployments.serving.llmops.dev --timeout=60s

if [ -f "$STATE/demo-operator.pid" ] && kill -0 "$(cat "$STATE/demo-operator.pid")" 2>/dev/null; then
  echo "== operator already running (pid $(cat "$STATE/demo-operator.pid"))"
else
  echo "== operator (log: $STATE/demo-operator.log)"
  nohup $BIN/llmctl run >"$STATE/demo-operator.log" 2>&1 &
  echo $! > "$STATE/demo-operator.pid"
fi

echo "== example: $EXAMPLE"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n "$NS" -f "$EXAMPLE"
kubectl wait -n "$NS" --for=condition=Ready llmd --all --timeout=120s
kubectl get llmd -n "$NS"
kubectl get deploy,svc,pdb,configmap,pods -n "$NS" -o wide | cut -c1-180
cat <<MSG

Done. Try:
  export KUBECONFIG=$KUBECONFIG PATH=$bindir:\$PATH
  kubectl explain llmd.spec.runtime
  kubectl get llmd -A
  make demo-down     # stops the operator and the cluster
MSG
