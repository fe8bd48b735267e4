# The goals that invoke a function: `invoke` and the cluster-* wrappers (included by the Makefile).
#
# Why they run while make reads the Makefile, not in a recipe: the contract's exit codes are 0
# (success), 1 (function error) and 2 (invocation failed), and GNU make exits 2 for any failed
# recipe. So the invocation happens here, its answer is printed, and a function error switches make
# to question mode (-q), whose exit status is 1.
#
# Running at parse time also escapes make's own dry-run modes, so they are honoured here: with -n,
# -q or -t (also --dry-run, --just-print, --recon, --question, --touch) nothing is invoked, and the
# command that would run is printed instead.

INVOKE_GOALS := invoke cluster-deploy cluster-schedule-destroy cluster-destroy cluster-test cluster-build cluster-cancel runner-image status
invoke_goal := $(filter $(INVOKE_GOALS),$(MAKECMDGOALS))
# The single-letter flags make was given (the documented way to test them while reading).
invoke_modes := $(firstword -$(MAKEFLAGS))

invoke_function_invoke := $(FUNCTION)
invoke_function_cluster-deploy := deploy
invoke_function_cluster-schedule-destroy := schedule_destroy
invoke_function_cluster-destroy := destroy
invoke_function_cluster-test := test
invoke_function_cluster-build := build
invoke_function_cluster-cancel := cancel
invoke_function_runner-image := runner_image
invoke_function_status := status

ifneq ($(invoke_goal),)
ifneq ($(words $(invoke_goal)),1)
$(error give one of $(INVOKE_GOALS) at a time)
endif
invoke_function := $(invoke_function_$(invoke_goal))
invoke_args := $(invoke_function)
invoke_args += $(if $(LOCAL),--local)
invoke_args += $(if $(filter invoke,$(invoke_goal)),--payload $(call quote,$(value PAYLOAD)))
invoke_args += $(if $(filter-out invoke status cluster-cancel runner-image,$(invoke_goal)),--cluster $(call quote,$(value CLUSTER)))
invoke_args += $(if $(and $(ARCH),$(filter runner-image,$(invoke_goal))),--architecture $(call quote,$(value ARCH)))
invoke_args += $(if $(filter cluster-cancel,$(invoke_goal)),--run-id $(call quote,$(value RUN_ID)))
invoke_args += $(if $(filter status,$(invoke_goal)),--table)
invoke_args += $(if $(and $(filter status,$(invoke_goal)),$(CLUSTER)),--cluster $(call quote,$(value CLUSTER)))
invoke_args += $(if $(VERSION),--version $(call quote,$(value VERSION)))
invoke_args += $(if $(AT),--at $(call quote,$(value AT)))
invoke_args += $(if $(TTL),--ttl $(call quote,$(value TTL)))
invoke_args += $(if $(WAIT),--wait-seconds $(call quote,$(value WAIT)))
invoke_args += $(if $(and $(HOLD),$(filter cluster-test cluster-build,$(invoke_goal))),--hold $(call quote,$(value HOLD)))
invoke_args += $(if $(filter cluster-test cluster-build runner-image,$(invoke_goal)),--follow)
invoke_args += $(if $(and $(DRY_RUN),$(filter-out invoke status cluster-cancel,$(invoke_goal))),--dry-run)
# invoke.py needs only the standard library: the venv's Python when there is one, which starts in
# a tenth of the time of a version manager's python3 shim (the tests invoke hundreds of times).
invoke_python := $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
ifneq ($(findstring n,$(invoke_modes))$(findstring q,$(invoke_modes))$(findstring t,$(invoke_modes)),)
$(info would run: LOCAL_LAMBDA_PORT=$(LOCAL_LAMBDA_PORT) $(invoke_python) tools/local/invoke.py $(strip $(invoke_args)))
else
invoke_answer_file := $(shell mktemp)
invoke_status := $(shell LOCAL_LAMBDA_PORT=$(LOCAL_LAMBDA_PORT) $(invoke_python) tools/local/invoke.py $(invoke_args) > $(invoke_answer_file); echo $$?)
$(info $(file < $(invoke_answer_file)))
$(shell rm -f $(invoke_answer_file))
ifeq ($(invoke_status),1)
MAKEFLAGS += -q
else ifneq ($(invoke_status),0)
$(error the invocation failed (exit $(invoke_status)))
endif
endif
endif

# What `make help` shows of them.
invoke: ## FUNCTION= PAYLOAD=: invoke one function (LOCAL=1: on the local stack)
cluster-deploy: ## CLUSTER= [VERSION=] [DRY_RUN=1]: deploy a cluster (DRY_RUN=1 on any cluster-* goal: the plan, nothing done)
cluster-schedule-destroy: ## CLUSTER= AT=|TTL=: schedule its destroy (RFC 3339, or minutes from now)
cluster-destroy: ## CLUSTER=: destroy a cluster now
cluster-test: ## CLUSTER= VERSION= [HOLD=minutes]: run the test suites against a cluster (HOLD keeps a failed run's instance)
cluster-build: ## CLUSTER= VERSION= [HOLD=minutes]: build and push the cluster's images
cluster-cancel: ## RUN_ID=: end a test, build or runner image run now, terminating its instance
runner-image: ## [ARCH=arm64|x86_64] [DRY_RUN=1]: make the runner image TEST runs launch from, following the run to its end
status: ## Every cluster, run and what the sweeper would do, as tables; CLUSTER=: one cluster with its history (LOCAL=1: local)

.PHONY: $(INVOKE_GOALS)
$(INVOKE_GOALS):
	@:

