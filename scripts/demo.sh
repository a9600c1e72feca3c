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
#   3. creates a throw-away cluster in $TT_DEMO_DIR (default
#      /var/tmp/task_tracker_demo), owned by and running as the `postgres` OS
#      user, with shared_preload_libraries = 'task_tracker', on a free port;
#   4. creates a small table and two login roles with different privileges,
#      has each of them assign tasks (queries, an INSERT, failing queries),
#      waits for them with task_tracker.wait_for_tasks and prints the task
#      table, a task's rows and the tracker's state.
#
# Authentication: the cluster listens on no TCP address at all
# (listen_addresses = ''); its only socket lives in $TT_DEMO_DIR/socket, a
# directory of mode 0700 owned by postgres.  Only the postgres OS user (and
# root) can reach that socket, so `trust` for local socket connections lets
# the tracker log in as alice and bob without passwords while nobody else on
# the machine can connect at all.  Use peer or .pgpass-backed passwords for a
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

step "creating the demo cluster in $DEMO (port $port)"
install -d -o postgres -g postgres -m 0700 "$DEMO" "$DEMO/socket"
as_pg "$PGBIN/initdb" -D "$DEMO/data" -E UTF8 --locale=C.UTF-8 \
	--auth-local=trust --auth-host=reject -U postgres >"$DEMO/initdb.log"
cat >>"$DEMO/data/postgresql.conf" <<EOF

# task_tracker demo
port = $port
listen_addresses = ''
unix_socket_directories = '$DEMO/socket'
shared_preload_libraries = 'task_tracker'
citus.max_running_tasks_per_node = 4
citus.task_max_attempts = 2
EOF
as_pg "$PGBIN/pg_ctl" -D "$DEMO/data" -l "$DEMO/server.log" -w start >/dev/null

# psql as USER in the demo database
sql() {
	local user=$1
	shift
	as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DEMO/socket" -p "$port" \
		-U "$user" -d demo "$@"
}

step "creating a small table and the roles alice and bob"
as_pg "$PGBIN/createdb" -h "$DEMO/socket" -p "$port" demo
sql postgres <<'EOF'
CREATE EXTENSION task_tracker;
CREATE TABLE public.orders (id int PRIMARY KEY, region text, amount numeric);
INSERT INTO public.orders
	SELECT g, (ARRAY['north', 'south', 'east', 'west'])[1 + g % 4], (g * 7) % 100 + 0.5
	FROM generate_series(1, 1000) g;
CREATE TABLE public.order_log (note text, by_user name DEFAULT current_user);
CREATE TABLE public.payroll (name text, salary numeric);
INSERT INTO public.payroll VALUES ('alice', 100), ('bob', 90);

-- alice: reads orders, writes the log; bob: reads orders only
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
GRANT SELECT ON public.orders TO alice, bob;
GRANT INSERT, SELECT ON public.order_log TO alice;
EOF

step "alice and bob assign tasks"
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

==> the demo cluster keeps running
  connect:  sudo -u postgres psql -h $DEMO/socket -p $port -d demo
  log:      $DEMO/server.log
  stop:     sudo -u postgres $PGBIN/pg_ctl -D $DEMO/data stop -m fast
  remove:   (after stopping) sudo rm -rf $DEMO
EOF
