# task_tracker: PGXS build
MODULE_big = task_tracker
OBJS = \
	src/task_tracker.o \
	src/common/settings.o \
	src/common/remote.o \
	src/common/conn_auth.o \
	src/common/copy_text.o \
	src/worker/worker.o \
	src/worker/shmem.o \
	src/worker/result_file.o \
	src/worker/persist.o \
	src/worker/tracker.o \
	src/worker/task_worker.o \
	src/worker/worker_api.o \
	src/coordinator/coordinator.o \
	src/coordinator/node_registry.o \
	src/coordinator/node_budget.o \
	src/coordinator/connection_cache.o \
	src/coordinator/executor.o \
	src/coordinator/executor_realtime.o \
	src/coordinator/executor_task_tracker.o \
	src/coordinator/executor_task_tracker_cleanup.o \
	src/coordinator/coordinator_api.o

EXTENSION = task_tracker
DATA = sql/task_tracker--1.0.sql sql/task_tracker--1.1.sql sql/task_tracker--1.2.sql \
	sql/task_tracker--1.0--1.1.sql sql/task_tracker--1.1--1.2.sql
PGFILEDESC = "task_tracker - queued SQL tasks across PostgreSQL servers"

PG_CPPFLAGS = -I$(srcdir)/include -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)

REGRESS = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
REGRESS_OPTS = --inputdir=test --temp-config=$(srcdir)/test/regress.conf \
	--temp-instance=./tmp_check --load-extension=task_tracker

ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --temp-config=$(srcdir)/test/regress.conf \
	--temp-instance=./tmp_check_iso --load-extension=task_tracker

TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS resets PROVE_FLAGS; our shared TAP helpers live in test/perl
PROVE_FLAGS += -I ./test/perl

.PHONY: bench demo
bench:
	bench/run

demo:
	scripts/demo.sh
