# Two commands for a newcomer: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,runtime
DEMO_NS ?= llm-demo
STATE := $(or $(LLMCTL_STATE_DIR),$(HOME)/.local/state/triton-llm-operator)

.PHONY: install binaries lint test test-unit demo demo-down crd clean bench images images-test

install: $(VENV)/.installed $(VENV)/moto/.installed
# uv installs from its cache (~/.cache/uv) by hard links: about 10 s for the ~3 GB of torch and friends, where pip
# takes about 2.5 minutes unpacking its cache into every fresh clone. It reads pip's find-links if one is set.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(if $(PIP_FIND_LINKS),UV_FIND_LINKS="$(PIP_FIND_LINKS)") $(BIN)/uv pip install --quiet --python $(BIN)/python \
	  -e '.[$(EXTRAS)]'
	touch $@

# moto's S3 server, for the llm-fetch tests (tests/runtime/test_model_fetch.py, images/test_fetch_image.py): in
# its own folder, run with PYTHONPATH, never imported by the project. It cannot join the venv: botocore pins
# python-dateutil<3 and kubernetes>=37 needs >=3. Test-only: not in the images, not in `make audit`'s freeze.
$(VENV)/moto/.installed: $(VENV)/.installed
	rm -rf $(VENV)/moto
	if [ -x $(BIN)/uv ]; then $(if $(PIP_FIND_LINKS),UV_FIND_LINKS="$(PIP_FIND_LINKS)") $(BIN)/uv pip install \
	  --quiet --python $(BIN)/python --target $(VENV)/moto 'moto[server]>=5.1,<6'; \
	  else $(BIN)/pip install --quiet --no-warn-conflicts --target $(VENV)/moto 'moto[server]>=5.1,<6'; fi
	touch $@

# Builds (first time) or reuses kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd,
# kwok and helm under ~/.cache/triton-llm-operator. LLMCTL_BIN_DIR / KUBEBUILDER_ASSETS skip the build.
binaries:
	@bash e2e/build-binaries.sh >/dev/null

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Known vulnerabilities in the installed dependencies: the venv `make test` runs (.[dev,runtime] as pip resolved
# them), frozen to exact versions. A finding fails; a finding is ignored only by an ID with a reason in
# .ci/pip-audit-ignore.txt. Packages the service cannot look up are listed and counted as NOT audited (the mirror
# CI reaches lacks PyPI's per-version JSON); `AUDIT=strict` fails on them too, `AUDIT=off` skips the audit, saying
# so. Policy: docs/security.md.
.PHONY: audit
AUDIT ?= on
AUDIT_IGNORE := .ci/pip-audit-ignore.txt
audit: install
	@set -e; if [ "$(AUDIT)" = off ]; then echo "make audit: SKIPPED (AUDIT=off): dependencies NOT audited" >&2; exit 0; fi; \
	bad=$$(grep -vE '^[[:space:]]*(#|$$)' $(AUDIT_IGNORE) | grep -vE '^[^#[:space:]]+[[:space:]]+#.*[^[:space:]]' || true); \
	if [ -n "$$bad" ]; then echo "$(AUDIT_IGNORE): each entry is 'ID  # reason'; not: $$bad" >&2; exit 1; fi; \
	$(BIN)/pip freeze --all --local --exclude-editable > $(VENV)/audit-requirements.txt; \
	ignore=$$(sed -e 's/#.*//' $(AUDIT_IGNORE) | xargs -r printf -- '--ignore-vuln %s '); set -x; \
	$(BIN)/pip-audit --requirement $(VENV)/audit-requirements.txt --no-deps --disable-pip \
	  $(if $(filter strict,$(AUDIT)),--strict) --progress-spinner off --desc on $$ignore \
	  > $(VENV)/audit-report.txt 2>&1 || { set +x; cat $(VENV)/audit-report.txt >&2; echo "make audit failed: a" \
	  "known vulnerability (or, with AUDIT=strict, packages it could not look up); see docs/security.md." >&2; exit 1; }; \
	set +x; total=$$(wc -l < $(VENV)/audit-requirements.txt); \
	skipped=$$(grep -c 'could not be audited' $(VENV)/audit-report.txt || true); \
	grep -E 'vulnerabilit' $(VENV)/audit-report.txt || true; \
	if [ "$$skipped" -gt 0 ]; then echo "make audit: WARNING: $$skipped of $$total packages NOT audited (the" \
	  "vulnerability service could not look them up; list in $(VENV)/audit-report.txt). AUDIT=strict fails on this." >&2; \
	else echo "make audit: $$total packages audited, no known vulnerabilities"; fi

# The whole suite: lint, type check, audit, unit tests, tests against the real local cluster (three clusters, one
# per xdist worker, and a fourth worker for the rest) and real tritonserver, and the real model and operator pods
# under podman (images built first).
test: install binaries lint audit images
	$(BIN)/pytest -n 4 --dist loadgroup --durations=25 -m "not outage" tests images

test-unit: install
	$(BIN)/pytest tests/dev tests/unit

# The CRD, and the chart's generated files that follow it (CRD template, RBAC rules, values.yaml, docs).
crd: install
	$(BIN)/llmctl crd -o crds/llmdeployments.serving.llmops.dev.yaml
	$(BIN)/llmctl chart

demo: install binaries
	bash e2e/demo.sh

demo-down:
	-@[ -f $(STATE)/demo-operator.pid ] && kill $$(cat $(STATE)/demo-operator.pid) 2>/dev/null; rm -f $(STATE)/demo-operator.pid
	$(BIN)/llmctl dev down

clean: demo-down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (minutes; never part of `make test`). Results and commands are recorded in the README.
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/reconcile.py --n 10,100,1000 --repeat 3
	$(BIN)/python bench/runtime.py

# The operator and runtime images with podman (images/containers.conf, local Debian base from mmdebstrap),
# cached by content hash: an unchanged tree rebuilds nothing. See docs/images.md.
images: install
	$(BIN)/llmctl images build

# Only the podman tests: the rendered manifests of a CPU LLMDeployment under `podman kube play` (real tritonserver,
# tiny model) and the chart's operator Deployment (also part of `make test`).
images-test: images
	$(BIN)/pytest images -p no:xdist -s
