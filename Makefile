# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test cluster-up cluster-down crds bench lint

# Reinstall whenever pyproject.toml changes. A virtualenv left half-made (python but no pip, an
# interrupted first run) is made again.
$(STAMP): pyproject.toml
	test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/python hack/demo.py

# Builds (once, cached outside the clone) the pinned control plane the integration tests run against,
# and installs the headless browser the report tests drive (Debian's chromium, once).
test: install
	hack/control-plane build
	hack/browser
	$(BIN)/python -m pytest

cluster-up: install
	hack/control-plane build
	hack/control-plane up
	hack/node-agent start

cluster-down:
	-hack/node-agent stop
	hack/control-plane down

lint: install
	$(BIN)/ruff check operator hack tests
	$(BIN)/shellcheck --severity=style hack/control-plane hack/node-agent hack/kind-up.sh hack/browser .ci/run
	$(BIN)/hadolint runner_image/Dockerfile

# CRDs (crds/ and the chart's copy) from flageval/api.
crds: install
	$(BIN)/python hack/gen_crds.py

# Figures for the README's benchmark tables (each starts what it needs; the operator's its own control plane).
bench: install
	$(BIN)/python hack/bench_engine.py
	$(BIN)/python hack/bench_mm.py
	$(BIN)/python hack/bench_shim.py
	$(BIN)/python hack/bench_operator.py
