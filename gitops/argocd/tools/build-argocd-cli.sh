#!/usr/bin/env bash
# Builds the real `argocd` CLI from the Go module proxy, for `python -m llm_operator.dev.argocd cli-check`.
#
# Not part of `make test` (about 12 minutes on 2 cores, a 203 MiB binary). Two things stand in the way of a plain
# `go install github.com/argoproj/argo-cd/v3/cmd@v3.6.1`, and this script works around both:
#   - Argo CD v3.6 needs Go >= 1.27: GOTOOLCHAIN fetches that toolchain from the proxy (golang.org/toolchain).
#   - Its go.mod replaces github.com/argoproj/argo-cd/gitops-engine/v3 with the local path ./gitops-engine, which is
#     not in the module zip, and `go install` refuses modules with replace directives. So the module is copied and
#     built as the main module, with that replace pointed at the separately published gitops-engine/v3 module of the
#     same version. Its other replaces (33 k8s.io modules and a few more) are kept as they are.
#
# Output: ${LLMCTL_CACHE_DIR:-~/.cache/triton-llm-operator}/argocd-cli/$ARGOCD_VERSION/argocd
set -euo pipefail
ARGOCD_VERSION=${ARGOCD_VERSION:-v3.6.1}
GO_TOOLCHAIN=${GO_TOOLCHAIN:-go1.27.4}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
out=${LLMCTL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-llm-operator}/argocd-cli/$ARGOCD_VERSION
if [ -x "$out/argocd" ]; then
  echo "$out/argocd"
  exit 0
fi
mkdir -p "$out"
export GOTOOLCHAIN=$GO_TOOLCHAIN GOFLAGS=-mod=mod
start=$(date +%s)
"$GO" version >&2
dir=$("$GO" mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
rm -rf "$out/src" && cp -r "$dir" "$out/src" && chmod -R u+w "$out/src"
cd "$out/src"
"$GO" mod edit -dropreplace github.com/argoproj/argo-cd/gitops-engine/v3
"$GO" mod edit -replace "github.com/argoproj/argo-cd/gitops-engine/v3=github.com/argoproj/argo-cd/gitops-engine/v3@$ARGOCD_VERSION"
"$GO" build -trimpath -ldflags="-s -w" -o "$out/argocd.partial" ./cmd
mv "$out/argocd.partial" "$out/argocd"
cd "$out" && rm -rf src
echo "built argocd $ARGOCD_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$out/argocd"
