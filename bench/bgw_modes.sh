#!/usr/bin/env bash
#
# bench/bgw_modes.sh — the tracker alone, with tasks over libpq sessions and
# in background workers (citus.task_tracker_use_background_workers), on one
# private server of an installed PostgreSQL 15 with task_tracker installed:
#
#   bench/bgw_modes.sh [PG_CONFIG]      (as the postgres OS user, or root)
#
# For each mode: assign_task -> wait_for_tasks "succeeded" for SELECT 1, one
# at a time (bench/tracker_latency.sql, 1,000 tasks); 10,000 SELECT 1 tasks
# in one job, assign_tasks to the last task final; one task returning
# 1,000,000 rows (~100 MB), assign + wait + count(*) of task_result (row 9c
# of bench/run).  Medians of 5 runs.  TT_BGW_MODES ("off on"), TT_BGW_RUNS (5)
# and TT_BGW_LAT_N (1000) make it shorter.  The server is created under a
# temporary directory (trust on a 0700 socket directory, no TCP) and
# removed at the end, also on failure.
#
set -euo pipefail

PG_CONFIG=${1:-/usr/lib/postgresql/15/bin/pg_config}
BIN=$("$PG_CONFIG" --bindir)
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "$(id -u)" -eq 0 ]; then
	# as postgres, from a copy it can read
	copy=$(mktemp -d /tmp/tt-bgw-bench-src.XXXXXX)
	cp "$BENCH/bgw_modes.sh" "$BENCH/tracker_latency.sql" "$copy"
	chown -R postgres "$copy"
	rc=0
	(cd / && runuser -u postgres -- "$copy/bgw_modes.sh" "$PG_CONFIG") || rc=$?
	rm -rf "$copy"
	exit $rc
fi

WORK=$(mktemp -d /tmp/tt-bgw-bench.XXXXXX)
trap '"$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
chmod 700 "$WORK"
"$BIN/initdb" -D "$WORK/data" -A trust -E UTF8 --locale=C >/dev/null
cat >>"$WORK/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = 5499
shared_preload_libraries = 'task_tracker'
max_worker_processes = 32
max_parallel_workers_per_gather = 0
citus.max_running_tasks_per_node = 8
citus.max_tracked_tasks_per_node = 20000
citus.max_tracked_tasks_per_user = 20000
log_min_messages = warning
EOF
export PGHOST=$WORK PGPORT=5499 PGDATABASE=postgres
Q() { "$BIN/psql" -XAtq "$@"; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for mode in ${TT_BGW_MODES:-off on}; do
	echo "citus.task_tracker_use_background_workers = $mode" >>"$WORK/data/postgresql.conf"
	"$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log.$mode" -w restart >/dev/null 2>&1 ||
		"$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log.$mode" -w start >/dev/null
	Q -c "CREATE EXTENSION IF NOT EXISTS task_tracker"

	lat=$(Q -v n="${TT_BGW_LAT_N:-1000}" -v job=1 -f "$BENCH/tracker_latency.sql" | tail -1)

	tp=()
	for i in $(seq 1 "${TT_BGW_RUNS:-5}"); do
		tp+=("$(Q 2>&1 <<EOF | sed -n 's/^NOTICE:  //p'

DO \$\$
DECLARE t0 timestamptz := clock_timestamp(); r record; n int := 0;
BEGIN
	PERFORM task_tracker.assign_tasks(100 + $i, array_agg(g), array_agg('SELECT 1'::text))
	FROM generate_series(1, 10000) g;
	WHILE n < 10000 LOOP
		SELECT count(*) INTO r FROM task_tracker.wait_for_tasks(100 + $i, 10000);
		n := n + r.count;
	END LOOP;
	RAISE NOTICE '%', round(10000 / extract(epoch FROM clock_timestamp() - t0));
	PERFORM task_tracker.cleanup_job(100 + $i);
END \$\$;
EOF
)")
	done

	big=()
	for i in $(seq 1 "${TT_BGW_RUNS:-5}"); do
		big+=("$(Q 2>&1 <<EOF | sed -n 's/^NOTICE:  //p'

DO \$\$
DECLARE t0 timestamptz := clock_timestamp(); n bigint;
BEGIN
	PERFORM task_tracker.assign_task(200 + $i, 1, 'SELECT g, repeat(''x'', 90) FROM generate_series(1, 1000000) g');
	PERFORM * FROM task_tracker.wait_for_tasks(200 + $i, 120000);
	SELECT count(*) INTO n FROM task_tracker.task_result(200 + $i, 1) AS t(g int, x text);
	IF n <> 1000000 THEN RAISE EXCEPTION 'got % rows', n; END IF;
	RAISE NOTICE '%', round(extract(epoch FROM clock_timestamp() - t0) * 1000);
	PERFORM task_tracker.cleanup_job(200 + $i);
END \$\$;
EOF
)")
	done

	grep -c 'waits for a background worker slot' "$WORK/log.$mode" >&2 || true
	printf 'background workers %-3s | latency (tasks|median ms|p95 ms) %s | 10k SELECT 1: %s tasks/s | 1M rows: %s ms\n' \
		"$mode" "$lat" "$(printf '%s\n' "${tp[@]}" | median)" "$(printf '%s\n' "${big[@]}" | median)"
done
