# ctpipe — `make all` runs the DAG that pipeline.toml declares for $(PROFILE).
#
# Make decides *when to ask* a node (its ref is older than its inputs, its settings stamp or its
# binary); the stage's content key decides *whether to work* (a known key is a cache hit in
# milliseconds). The per-profile rules come from `plan`, which writes artifacts/plans/<profile>.mk.
#
#   make all                     check the profile, run every node, then a status table and the report
#   make all SCALE=smoke         the same nodes with their counts cut to minutes on a CPU (a rehearsal)
#   make fetch-data              every node of one stage (SOURCE= / METHOD= narrows it)
#   make fetch-data.toy          one node
#   make -n all                  show the plan;   make -j2 all   run independent nodes in parallel
#   make check | test | test-faults | test-hpc | bench | cuda | mpi | status | gc | clean | clobber | help

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --no-builtin-variables
.DEFAULT_GOAL := all

ROOT      := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
PROFILE   ?= default
# full, or smoke: every node with its counts (steps, samples, rows, seeds) cut to minutes on a CPU;
# its refs, logs, plans and report live under $(PROFILE)@smoke, apart from the full run's.
SCALE     ?= $(or $(CTPIPE_SCALE),full)
NS        := $(if $(filter smoke,$(SCALE)),$(PROFILE)@smoke,$(PROFILE))
PIPELINE  ?= $(ROOT)/pipeline.toml
ARTIFACTS ?= $(ROOT)/artifacts
DATA      ?= $(ROOT)/data
CARGO     ?= cargo
BIN       ?= $(ROOT)/target/release
# BUILD=0: use the binaries in $(BIN) as they are (the end-to-end tests do).
BUILD     ?= 1

STAGE_BINS := fetch-data train-ct distill precompute-encoder evaluate-fid
TOOL_BINS  := artifacts plan bench features fid
BINARIES   := $(addprefix $(BIN)/,$(STAGE_BINS) $(TOOL_BINS))
STORE      := --artifacts $(ARTIFACTS)
PLAN       := $(BIN)/plan --pipeline $(PIPELINE) --profile $(PROFILE) --scale $(SCALE) $(STORE)

.PHONY: all build check plan-check cuda mpi test test-faults test-hpc bench status gc clean clobber help

ifeq ($(BUILD),1)
SOURCES := $(shell find $(ROOT)/stages -name '*.rs' -o -name Cargo.toml) $(ROOT)/Cargo.toml $(wildcard $(ROOT)/Cargo.lock)
# One cargo invocation builds every binary; cargo's own lock keeps parallel recipes safe.
$(BINARIES): $(BIN)/%: $(SOURCES)
	$(CARGO) build --release --bins --manifest-path $(ROOT)/Cargo.toml
	@touch $@
endif

build: $(BINARIES)

# Every binary with candle's CUDA backend, into target/cuda/release (the CPU build stays in
# target/release): with the system's nvcc when it is CUDA 13.0, else with a pinned CUDA 13.0
# toolchain installed from PyPI wheels into $(CUDA_TOOLCHAIN) (scripts/cuda-toolchain.sh).
# Run a profile with them: make all BIN=target/cuda/release BUILD=0. docs/perf.md has more.
CUDA_TOOLCHAIN ?= $(HOME)/.cache/ctpipe-cuda13
CUDA_BIN       := $(ROOT)/target/cuda/release
cuda:
	$(CARGO) fetch --manifest-path $(ROOT)/Cargo.toml
	@set -e; \
	if command -v nvcc >/dev/null && nvcc --version | grep 'release 13\.0,' >/dev/null; then \
	  echo "make cuda: the system's nvcc (CUDA 13.0)"; export CUDA_COMPUTE_CAP=$${CUDA_COMPUTE_CAP:-90}; \
	else \
	  eval "$$($(ROOT)/scripts/cuda-toolchain.sh $(CUDA_TOOLCHAIN))"; \
	fi; \
	$(CARGO) build --release --bins --features cuda --target-dir $(ROOT)/target/cuda --manifest-path $(ROOT)/Cargo.toml
	@echo "CUDA binaries in $(CUDA_BIN)"

# Every binary with data-parallel training over MPI (cargo feature `mpi`), into target/mpi: run
# `train-ct`/`distill` under `mpirun -np W` or `srun`, or give `plan sbatch --bin target/mpi`
# for nodes with `ntasks` > 1. Needs an MPI library and libclang (Debian: libopenmpi-dev
# libclang-dev). Built in target/release (the dependencies are shared), copied out, and the
# default build put back. docs/hpc.md has more.
MPI_BIN := $(ROOT)/target/mpi
mpi:
	$(CARGO) build --release --bins --features ctpipe/mpi --manifest-path $(ROOT)/Cargo.toml
	mkdir -p $(MPI_BIN)
	cp $(addprefix $(ROOT)/target/release/,$(STAGE_BINS) $(TOOL_BINS)) $(MPI_BIN)/
	$(CARGO) build --release --bins --manifest-path $(ROOT)/Cargo.toml
	@echo "MPI binaries in $(MPI_BIN)"

# A stage node: run its binary, log to artifacts/logs/<profile>/<node>.log. The binary writes
# the node's ref (the target) only after publishing or finding its artifact.
define run_node
@mkdir -p $(ARTIFACTS)/logs/$(NS)
$(BIN)/$(1) --pipeline $(PIPELINE) --profile $(PROFILE) --scale $(SCALE) --node $(2) $(STORE) --data-dir $(DATA) 2>&1 | tee $(ARTIFACTS)/logs/$(NS)/$(2).log
endef

# `FORCE` when the ref file $(1) exists but the artifact it names is not in the store (removed
# by hand, its manifest deleted): the node must run again, whatever the ref's time says.
artifact_gone = $(if $(wildcard $(1)),$(if $(wildcard $(ARTIFACTS)/$(strip $(file <$(1)))/manifest.json),,FORCE))
.PHONY: FORCE
FORCE:

# Every node of the profile checked (settings, ranges, that an init or teacher fits its student)
# before any node runs: every node rule waits for it (order-only). Outside files (imported
# weights) are checked for the nodes asked for and what they read: all of them, unless the goals
# are nodes (`make fetch-data.cifar10` need not wait for Inception weights).
CHECK_NODES = $(if $(filter-out $(PLAN_NODES),$(MAKECMDGOALS)),,$(MAKECMDGOALS))
plan-check: $(BIN)/plan
	@$(PLAN) check $(CHECK_NODES)
check: plan-check

# The generated rules are needed by every goal except these.
NO_PLAN_GOALS := build check plan-check cuda mpi test test-faults test-hpc bench status gc clean clobber help
ifneq ($(if $(MAKECMDGOALS),$(filter-out $(NO_PLAN_GOALS),$(MAKECMDGOALS)),all),)
PLAN_MK := $(ARTIFACTS)/plans/$(NS).mk
$(PLAN_MK): $(PIPELINE) $(BIN)/plan
	@$(PLAN) make
include $(PLAN_MK)
endif

# plan-check first also when every node is up to date, so `make all` always says whether the
# profile can run.
all: plan-check $(PLAN_REFS)
	@echo "all $(words $(PLAN_NODES)) nodes of profile $(NS) are up to date"
	@$(PLAN) status --data-dir $(DATA)
	@$(PLAN) report

status: $(BINARIES)
	@$(PLAN) status --data-dir $(DATA)

test:
	$(CARGO) build --release --bins --manifest-path $(ROOT)/Cargo.toml
	$(CARGO) test --release --workspace --manifest-path $(ROOT)/Cargo.toml

# The fault suite's slow part (its fast part runs in `make test`): kill -9 and SIGTERM at
# seeded random moments in every stage, corruption of every file of every artifact kind and of
# checkpoints, `make -j2` racing `gc --delete`, and the fuzz properties at 20 000 cases each.
# The counts it prints are docs/reliability.md's.
test-faults:
	$(CARGO) build --release --bins --manifest-path $(ROOT)/Cargo.toml
	$(CARGO) test --release --manifest-path $(ROOT)/Cargo.toml -p ctpipe-e2e --test faults -- --include-ignored --nocapture --test-threads 2
	CTPIPE_FUZZ_CASES=20000 $(CARGO) test --release --manifest-path $(ROOT)/Cargo.toml -p ctpipe --lib fuzz_tests -- --nocapture

# The HPC suite (tests/hpc.rs): MPI data-parallel training against one process, and a one-node
# SLURM cluster on localhost running profiles through `plan sbatch` (time limit, preemption,
# scancel, failed dependencies). Installs what it needs from Debian when run as root.
HPC_PACKAGES := slurm-wlm munge openmpi-bin libopenmpi-dev libclang-dev
test-hpc:
	@missing=$$(for p in $(HPC_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make test-hpc: installing" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q $$missing >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; }; \
	fi
	$(MAKE) --no-print-directory mpi
	CTPIPE_MPI_BIN=$(MPI_BIN) $(CARGO) test --release --manifest-path $(ROOT)/Cargo.toml -p ctpipe-e2e --test hpc -- --include-ignored --nocapture --test-threads 1

bench: $(BIN)/bench
	$(BIN)/bench

# Dry run by default; `make gc DELETE=1` removes what no ref reaches — a rehearsal's refs
# (`refs/<profile>@smoke`) included: remove that folder first to let its artifacts go.
gc: $(BIN)/artifacts
	$(BIN)/artifacts $(STORE) gc $(if $(DELETE),--delete)

# Build products and generated plans only; artifacts and downloads are never touched.
clean:
	$(CARGO) clean --manifest-path $(ROOT)/Cargo.toml
	rm -rf $(ARTIFACTS)/plans

# Everything generated: build products, every artifact, every download.
clobber: clean
	find $(ARTIFACTS) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	find $(DATA) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +

help:
	@sed -n '2,12p' $(ROOT)/Makefile | sed 's/^# \{0,1\}//'
	@echo
	@echo "Variables: PROFILE=$(PROFILE) SCALE=$(SCALE) PIPELINE=$(PIPELINE)"
	@echo "           ARTIFACTS=$(ARTIFACTS) DATA=$(DATA) BIN=$(BIN)"
	@echo "Profiles:"
	@if [ -x $(BIN)/plan ]; then $(BIN)/plan --pipeline $(PIPELINE) profiles; else grep -E '^\[[A-Za-z0-9_-]+\]' $(PIPELINE); fi
