#!/usr/bin/env bash
# Builds the real Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl), etcd, kwok, helm and prometheus-adapter from the Go module proxy into versioned cache folders
# outside the repo.
#
# Why a wrapper module: k8s.io/kubernetes pins its staging modules at v0.0.0 and replaces them with
# ./staging paths; consumers ignore those replaces, so we mirror each one onto the published v0.N.x.
#
# Prints the bin folder on its last line. A second run with the folder complete does nothing.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
PROMETHEUS_ADAPTER_VERSION="${PROMETHEUS_ADAPTER_VERSION:-v0.12.0}"
CACHE_ROOT="${LLMCTL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-llm-operator}"

log() { echo "[build-binaries] $*" >&2; }

# A user-provided folder wins and nothing is built (envtest convention).
for var in LLMCTL_BIN_DIR KUBEBUILDER_ASSETS; do
  dir="${!var:-}"
  if [ -n "$dir" ]; then
    for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
      [ -x "$dir/$b" ] || { log "$var=$dir lacks an executable '$b'"; exit 1; }
    done
    log "using binaries from $var=$dir"
    echo "$dir"
    exit 0
  fi
done

command -v go >/dev/null || { log "go is required (https://go.dev/dl); none found on PATH"; exit 1; }

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
staging_version="v0.${K8S_VERSION#v1.}"
BIN="$CACHE_ROOT/bin/k8s-$K8S_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
mkdir -p "$BIN"

want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing=0; for b in "${want[@]}"; do [ -x "$BIN/$b" ] || missing=1; done

if [ "$missing" = 1 ]; then
  log "building Kubernetes $K8S_VERSION and its etcd (first run: 15-30 min on 2 cores)"
  work="$CACHE_ROOT/build/k8s-$K8S_VERSION"
  mkdir -p "$work"; cd "$work"
  upstream_mod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [ -f "$upstream_mod" ] || { log "could not fetch go.mod of k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  go_line="$(grep -m1 '^go ' "$upstream_mod")"
  etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$upstream_mod")"
  {
    echo "module example.invalid/llmctl-k8sbins"
    echo
    echo "$go_line"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes $K8S_VERSION"
    echo "	go.etcd.io/etcd/server/v3 $etcd_version"
    echo ")"
    echo
    echo "replace ("
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$upstream_mod" \
      | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >&2
  date_now="$(date -u +%FT%TZ)"
  ldf="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldf="$ldf -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date_now"
  done
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldf" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl >&2
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-proxy" \
    -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2
fi

if [ ! -x "$BIN/kwok" ]; then
  log "building kwok $KWOK_VERSION"
  CGO_ENABLED=0 GOBIN="$BIN" go install -trimpath "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
fi

if [ ! -x "$BIN/helm" ] && [ "${LLMCTL_SKIP_HELM:-0}" != 1 ]; then
  log "building helm $HELM_VERSION"
  CGO_ENABLED=0 GOBIN="$BIN" go install -trimpath "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
fi

# The adapter has its own versioned folder so that changing its pin never rebuilds Kubernetes; a link in $BIN
# names the pinned one, so every consumer still finds all binaries in one folder.
# Why a wrapper module: the proxy refuses the adapter's version list (403), and `go install mod@version`
# fails on that list (deprecation lookup); `go get` of the exact version inside a module works.
if [ "${LLMCTL_SKIP_ADAPTER:-0}" != 1 ]; then
  adapter_dir="$CACHE_ROOT/bin/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION"
  if [ ! -x "$adapter_dir/prometheus-adapter" ]; then
    log "building prometheus-adapter $PROMETHEUS_ADAPTER_VERSION (first run: about 10 min on 2 cores)"
    work="$CACHE_ROOT/build/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION"
    rm -rf "$work"; mkdir -p "$work" "$adapter_dir"
    (
      cd "$work"
      go mod init example.invalid/llmctl-adapter >&2
      go get "sigs.k8s.io/prometheus-adapter/cmd/adapter@$PROMETHEUS_ADAPTER_VERSION" >&2
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$adapter_dir/prometheus-adapter.tmp" \
        sigs.k8s.io/prometheus-adapter/cmd/adapter >&2
    )
    mv "$adapter_dir/prometheus-adapter.tmp" "$adapter_dir/prometheus-adapter"
  fi
  ln -sfn "$adapter_dir/prometheus-adapter" "$BIN/prometheus-adapter"
fi

echo "$BIN"
