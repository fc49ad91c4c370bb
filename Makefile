# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test cluster-up cluster-down crds bench lint

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/python hack/demo.py

# Builds (once, cached outside the clone) the pinned control plane the integration tests run against.
test: install
	hack/control-plane build
	$(BIN)/python -m pytest

cluster-up: install
	hack/control-plane build
	hack/control-plane up
	hack/node-agent start

cluster-down:
	-hack/node-agent stop
	hack/control-plane down
