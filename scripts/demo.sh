#!/usr/bin/env bash
#
# scripts/demo.sh — the README's first command: set up task_tracker and show
# it at work.
#
#   sudo bash scripts/demo.sh
#
# As root on Debian bookworm it:
#   1. installs what is missing (postgresql-15, postgresql-server-dev-15, make, gcc);
#   2. builds the extension in a temporary copy of this tree and installs it;
#   3. creates three throw-away clusters in $TT_DEMO_DIR (default
#      /var/tmp/task_tracker_demo), a coordinator and two workers, owned by
#      and running as the `postgres` OS user, with
#      shared_preload_libraries = 'task_tracker', on free ports;
#   4. creates sharded sample data on the workers (8 shards, each on both
#      workers), registers the workers on the coordinator and, as alice,
#      runs the same job with both executors, printing their results, the
#      jobs view and a worker's task view while a job runs;
#   5. on worker1, has alice and bob assign tasks directly (queries, an
#      INSERT, failing queries), waits for them with wait_for_tasks and
#      prints the task table, a task's rows and the tracker's state.
#
# Authentication: the clusters listen on no TCP address at all
# (listen_addresses = ''); their sockets live in $TT_DEMO_DIR/socket, a
# directory of mode 0700 owned by postgres, and the coordinator reaches the
# workers through it (a node name may be a socket directory).  Only the
# postgres OS user (and root) can reach those sockets, so `trust` for local
# socket connections lets the trackers and the coordinator log in as alice
# and bob without passwords while nobody else on the machine can connect.  Use peer or .pgpass-backed passwords for a
# real deployment (README "Authentication").
#
# Re-running stops and replaces the previous demo cluster.
#
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO=${TT_DEMO_DIR:-/var/tmp/task_tracker_demo}
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/demo.sh must run as root (sudo bash scripts/demo.sh)" >&2
	exit 2
fi

step() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------- packages
need=()
for pkg in postgresql-15 postgresql-server-dev-15 make gcc; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		need+=("$pkg")
	fi
done
if [ ${#need[@]} -gt 0 ]; then
	step "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${need[@]}"
fi
PGBIN=$("$PG_CONFIG" --bindir)

# ---------------------------------------------------------------- build
step "building and installing task_tracker"
BUILD=$(mktemp -d /tmp/tt-demo-build.XXXXXX)
trap 'rm -rf "$BUILD"' EXIT
tar -C "$REPO" --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./tmp_check_iso -cf - . | tar -C "$BUILD" -xf -
make -s -C "$BUILD" PG_CONFIG="$PG_CONFIG" with_llvm=no
make -s -C "$BUILD" PG_CONFIG="$PG_CONFIG" with_llvm=no install

# ---------------------------------------------------------------- cluster
as_pg() { (cd / && runuser -u postgres -- "$@"); }

if [ -f "$DEMO/data/postmaster.pid" ]; then
	step "stopping the previous demo cluster"
	as_pg "$PGBIN/pg_ctl" -D "$DEMO/data" stop -m fast -w || true
fi
rm -rf "$DEMO"

# a free port: nothing listening on it and no socket file of that number
port=5433
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || [ -e "/var/run/postgresql/.s.PGSQL.$port" ]; do
	port=$((port + 1))
done
# ---------------------------------------------------------------- clusters
as_pg() { (cd / && runuser -u postgres -- "$@"); }
NODES="coordinator worker1 worker2"

for n in $NODES data; do
	if [ -f "$DEMO/$n/postmaster.pid" ]; then
		step "stopping the previous demo cluster $n"
		as_pg "$PGBIN/pg_ctl" -D "$DEMO/$n" stop -m fast -w || true
	fi
done
rm -rf "$DEMO"
install -d -o postgres -g postgres -m 0700 "$DEMO" "$DEMO/socket"
SOCK=$DEMO/socket

# a free port: nothing listening on it, no socket file of that number, and
# not one we already took
declare -A PORT
free_port() {
	local p=$1 used
	while :; do
		used=0
		for q in "${PORT[@]}"; do [ "$q" = "$p" ] && used=1; done
		if [ $used = 0 ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
			[ ! -e "/var/run/postgresql/.s.PGSQL.$p" ]; then
			echo "$p"
			return
		fi
		p=$((p + 1))
	done
}
next=5433
for n in $NODES; do
	PORT[$n]=$(free_port $next)
	next=$((PORT[$n] + 1))
done

for n in $NODES; do
	step "creating cluster $n in $DEMO/$n (port ${PORT[$n]})"
	as_pg "$PGBIN/initdb" -D "$DEMO/$n" -E UTF8 --locale=C.UTF-8 \
		--auth-local=trust --auth-host=reject -U postgres >"$DEMO/$n.initdb.log"
	cat >>"$DEMO/$n/postgresql.conf" <<CONF

# task_tracker demo
port = ${PORT[$n]}
listen_addresses = ''
unix_socket_directories = '$SOCK'
shared_preload_libraries = 'task_tracker'
citus.max_running_tasks_per_node = 4
citus.task_max_attempts = 2
CONF
	as_pg "$PGBIN/pg_ctl" -D "$DEMO/$n" -l "$DEMO/$n.log" -w start >/dev/null
	as_pg "$PGBIN/createdb" -h "$SOCK" -p "${PORT[$n]}" demo
done

# psql on NODE as USER in the demo database
sql_on() {
	local node=$1 user=$2
	shift 2
	as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "${PORT[$node]}" \
		-U "$user" -d demo "$@"
}

step "roles alice and bob on every node; sharded sample data on the workers"
for n in $NODES; do
	sql_on "$n" postgres <<'SQL'
CREATE EXTENSION task_tracker;
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
SQL
done
for n in worker1 worker2; do
	sql_on "$n" postgres <<'SQL'
-- 8 shards of an events table; every shard is on both workers
DO $$
BEGIN
	FOR s IN 0..7 LOOP
		EXECUTE format('CREATE TABLE public.events_%s (id bigint, region text, amount numeric)', s);
		EXECUTE format($q$INSERT INTO public.events_%s
			SELECT g, (ARRAY['north', 'south', 'east', 'west'])[1 + g %% 4], (g * 7) %% 100 + 0.5
			FROM generate_series(%s, 80000, 8) g$q$, s, s + 1);
		EXECUTE format('GRANT SELECT ON public.events_%s TO alice', s);
	END LOOP;
END $$;
CREATE TABLE public.orders (id int PRIMARY KEY, region text, amount numeric);
INSERT INTO public.orders
	SELECT g, (ARRAY['north', 'south', 'east', 'west'])[1 + g % 4], (g * 7) % 100 + 0.5
	FROM generate_series(1, 1000) g;
CREATE TABLE public.order_log (note text, by_user name DEFAULT current_user);
CREATE TABLE public.payroll (name text, salary numeric);
INSERT INTO public.payroll VALUES ('alice', 100), ('bob', 90);
-- alice: reads orders, writes the log; bob: reads orders only
GRANT SELECT ON public.orders TO alice, bob;
GRANT INSERT, SELECT ON public.order_log TO alice;
SQL
done

step "registering the workers on the coordinator (node name = their socket directory)"
sql_on coordinator postgres <<SQL
SELECT task_tracker.add_node('$SOCK', ${PORT[worker1]});
SELECT task_tracker.add_node('$SOCK', ${PORT[worker2]});
SELECT node_id, node_port, is_active FROM task_tracker.nodes ORDER BY node_id;
SQL

# the job: one task per shard; even shards prefer worker1, odd ones worker2
W1="$SOCK:${PORT[worker1]}"
W2="$SOCK:${PORT[worker2]}"
PLACEMENTS="CASE WHEN s % 2 = 0 THEN ARRAY['$W1', '$W2'] ELSE ARRAY['$W2', '$W1'] END AS placements"
JOB="SELECT region, sum(n) AS events, sum(total) AS amount FROM task_tracker.run_job(\$\$
    SELECT format('SELECT region, count(*), sum(amount) FROM public.events_%s GROUP BY region', s) AS query,
           $PLACEMENTS
    FROM generate_series(0, 7) s \$\$) AS t(region text, n bigint, total numeric)
GROUP BY region ORDER BY region"

for ex in real-time task-tracker; do
	step "alice runs the job on the coordinator with citus.task_executor = '$ex'"
	sql_on coordinator alice -c "SET citus.task_executor = '$ex'" -c "$JOB"
done
step "the same numbers computed directly on worker1 (it has every shard)"
sql_on worker1 alice -c "SELECT region, count(*) AS events, sum(amount) AS amount FROM (
	SELECT * FROM public.events_0 UNION ALL SELECT * FROM public.events_1 UNION ALL
	SELECT * FROM public.events_2 UNION ALL SELECT * FROM public.events_3 UNION ALL
	SELECT * FROM public.events_4 UNION ALL SELECT * FROM public.events_5 UNION ALL
	SELECT * FROM public.events_6 UNION ALL SELECT * FROM public.events_7) e
GROUP BY region ORDER BY region"

step "a slower task-tracker job (16 tasks of 0.5 s), watched from other sessions while it runs"
sql_on coordinator alice >"$DEMO/slow_job.out" 2>&1 <<SQL &
SET citus.task_executor = 'task-tracker';
SELECT count(*) AS tasks_done FROM task_tracker.run_job(\$\$
    SELECT format('SELECT pg_sleep(0.5)::text, %s', s) AS query, $PLACEMENTS
    FROM generate_series(1, 16) s \$\$) AS t(slept text, s int);
SQL
slow_pid=$!
# wait (inside the server, on its own latch) until the job shows up
sql_on coordinator postgres -Atq >/dev/null <<'SQL'
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		EXIT WHEN EXISTS (SELECT 1 FROM task_tracker.jobs WHERE state = 'running');
		PERFORM pg_sleep(0.02);
	END LOOP;
END $$;
SQL
echo "--- coordinator: SELECT * FROM task_tracker.jobs"
sql_on coordinator postgres -c "SELECT job_id, user_name, executor, state, tasks_total, tasks_done, tasks_failed FROM task_tracker.jobs"
echo "--- worker1: SELECT job_id, task_id, status, user_name, query, attempts FROM task_tracker.tasks"
sql_on worker1 postgres -c "SELECT job_id, task_id, status, user_name, query, attempts FROM task_tracker.tasks ORDER BY task_id"
wait "$slow_pid"
cat "$DEMO/slow_job.out"

step "run_on_workers: one command on every worker in parallel"
sql_on coordinator postgres -c "SELECT node_port, success, result FROM task_tracker.run_on_workers('SELECT count(*) FROM public.events_0') ORDER BY node_port"

# ------------------------------------------------ the worker protocol itself
sql() { sql_on worker1 "$@"; }

step "the worker protocol on worker1: alice and bob assign tasks directly"
sql alice <<'EOF'
\o /dev/null
SELECT task_tracker.assign_tasks(1, ARRAY[1, 2, 3], ARRAY[
	'SELECT region, count(*) AS orders, sum(amount) AS total FROM public.orders GROUP BY region ORDER BY region',
	'INSERT INTO public.order_log (note) VALUES (''nightly summary'')',
	'SELECT current_user AS running_as, session_user AS logged_in_as']);
SELECT task_tracker.assign_task(1, 4, 'SELECT * FROM public.payroll');  -- not allowed: fails
\o
SELECT job_id, task_id, user_name, query FROM task_tracker.tasks WHERE job_id = 1 ORDER BY task_id;
EOF
sql bob <<'EOF'
\o /dev/null
SELECT task_tracker.assign_task(2, 1, 'SELECT max(amount) FROM public.orders WHERE region = ''east''');
SELECT task_tracker.assign_task(2, 2, 'SELECT current_user AS running_as');
SELECT task_tracker.assign_task(2, 3, 'SELECT 1 / 0');                  -- fails
\o
SELECT job_id, task_id, user_name, query FROM task_tracker.tasks WHERE job_id = 2 ORDER BY task_id;
EOF

# wait_for_tasks reports each task once, when it reaches a final state
wait_job() {
	local user=$1 job=$2 pending
	while :; do
		sql "$user" -c "SELECT task_id, status, sqlstate, result_rows, error FROM task_tracker.wait_for_tasks($job, 2000)" \
			| sed -n '/^ *[0-9]/p' | sed "s/^/  $user job $job reported: /"
		pending=$(sql "$user" -Atc "SELECT count(*) FROM task_tracker.tasks WHERE job_id = $job AND status NOT IN ('succeeded', 'permanently_failed', 'canceled')")
		[ "$pending" = 0 ] && break
	done
}
step "waiting with task_tracker.wait_for_tasks"
wait_job alice 1
wait_job bob 2

step "SELECT * FROM task_tracker.tasks ORDER BY job_id, task_id   (as postgres)"
sql postgres -x -c "SELECT * FROM task_tracker.tasks ORDER BY job_id, task_id"

step "the rows of alice's task 1 (job 1), read back by alice"
sql alice -c "SELECT * FROM task_tracker.task_result(1, 1) AS t(region text, orders bigint, total numeric)"
step "alice's task 3 ran as alice; bob's task 2 ran as bob"
sql alice -c "SELECT * FROM task_tracker.task_result(1, 3) AS t(running_as name, logged_in_as name)"
sql bob -c "SELECT * FROM task_tracker.task_result(2, 2) AS t(running_as name)"
step "the INSERT task's row"
sql postgres -c "SELECT * FROM public.order_log"
step "bob looks at alice's tasks: no query text, no errors"
sql bob -c "SELECT job_id, task_id, status, user_name, query, error FROM task_tracker.tasks WHERE job_id = 1 ORDER BY task_id"

step "SELECT * FROM task_tracker.tracker"
sql postgres -x -c "SELECT * FROM task_tracker.tracker"

step "cleaning up the jobs (removes their tasks and result files)"
sql alice -Atc "SELECT task_tracker.cleanup_job(1)" >/dev/null
sql bob -Atc "SELECT task_tracker.cleanup_job(2)" >/dev/null
sql postgres -c "SELECT count(*) AS tasks_left FROM task_tracker.tasks"

cat <<EOF

==> the demo clusters keep running: coordinator on port ${PORT[coordinator]}, workers on ${PORT[worker1]} and ${PORT[worker2]}
  connect:  runuser -u postgres -- psql -h $SOCK -p ${PORT[coordinator]} -d demo
  logs:     $DEMO/coordinator.log $DEMO/worker1.log $DEMO/worker2.log
  stop:     for n in coordinator worker1 worker2; do runuser -u postgres -- $PGBIN/pg_ctl -D $DEMO/\$n stop -m fast; done
  remove:   (after stopping) rm -rf $DEMO
EOF
